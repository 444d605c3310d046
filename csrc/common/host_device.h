// LEDIT_HOST_DEVICE marks index math that the CPU kernels, the CUDA kernels and the CPU executor share: a device
// function under nvcc, a plain inline function under a host compiler.
#pragma once

#if defined(__CUDACC__)
#define LEDIT_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LEDIT_HOST_DEVICE inline
#endif
