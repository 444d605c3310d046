// ledit._C_emulated's scan_attention backward kernels (their launcher is called by the glue in
// ops_scan_attention.cpp), compiled as C++ against the executor (LEDIT_EMULATED_DEVICE).
#include "scan_attention/scan_attention_cuda_backward.cu"
