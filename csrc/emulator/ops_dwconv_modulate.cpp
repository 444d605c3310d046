// ledit._C_emulated's dwconv_modulate: the schema, the CUDA kernels and their torch glue, compiled as C++ against the
// executor (LEDIT_EMULATED_DEVICE), as ledit_cuda_emulated::dwconv_modulate_{fwd,bwd} for CPU tensors.
#include "dwconv_modulate/dwconv_modulate_ops.cpp"
#include "dwconv_modulate/dwconv_modulate_cuda.cu"
#include "dwconv_modulate/dwconv_modulate_cuda_ops.cpp"
