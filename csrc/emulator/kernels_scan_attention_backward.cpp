// ledit._C_emulated's scan_attention backward kernels: the .cu source compiled as C++ against the executor
// (LEDIT_EMULATED_DEVICE); their launcher is called by the glue in torch_ops.cpp.
#include "scan_attention/scan_attention_cuda_backward.cu"
