// ledit._C_emulated's scan_attention: the schema, the CUDA kernels and their torch glue, compiled as C++ against the
// executor (LEDIT_EMULATED_DEVICE), as ledit_cuda_emulated::scan_attention_{fwd,bwd} for CPU tensors. The backward
// kernels compile in their own file (ops_scan_attention_backward.cpp), in parallel.
#include "scan_attention/scan_attention_ops.cpp"
#include "scan_attention/scan_attention_cuda_forward.cu"
#include "scan_attention/scan_attention_cuda_ops.cpp"
