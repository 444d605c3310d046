// The slice of the CUDA runtime that kernel launchers and their headers use: cudaError_t, cudaStream_t, dim3,
// the vector types. Under nvcc or a CUDA build of the torch glue it is the real runtime; in the
// executor build (LEDIT_EMULATED_DEVICE: the .cu kernels compiled by the host compiler, see csrc/common/device.h)
// it is a small stand-in, so that build needs no CUDA toolkit.
#pragma once

#if defined(LEDIT_EMULATED_DEVICE)
#include "emulator/runtime.h"
#else
#include <cuda_runtime_api.h>
#endif
