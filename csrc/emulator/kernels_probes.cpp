// The executor's probe kernels (probe_kernels.cu) compiled as C++ against the executor.
#include "emulator/probe_kernels.cu"
