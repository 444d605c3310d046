// The probe kernels compiled for the executor.
#include "emulator/probe_kernels.cu"
