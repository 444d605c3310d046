// ledit._C_emulated's scan_attention kernels: the .cu source compiled as C++ against the executor
// (LEDIT_EMULATED_DEVICE). No torch here: the glue is in torch_ops.cpp, as nvcc and the host compiler split it.
#include "scan_attention/scan_attention_cuda.cu"
