// ledit._C_emulated's scan_attention forward kernel: the .cu source compiled as C++ against the executor
// (LEDIT_EMULATED_DEVICE). No torch here: the glue is in torch_ops.cpp, as nvcc and the host compiler split it. The
// backward kernels compile in kernels_scan_attention_backward.cpp, in parallel.
#include "scan_attention/scan_attention_cuda_forward.cu"
