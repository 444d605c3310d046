// The torch.library namespace this module's ops live in: `ledit` (ledit._C), or `ledit_cuda_emulated`
// (ledit._C_emulated: the CUDA kernels run by the CPU executor, registered for CPU tensors). Op sources define and
// implement their ops through these macros so the executor build can compile the same files.
#pragma once

#include <torch/library.h>

#if defined(LEDIT_EMULATED_DEVICE)
#define LEDIT_LIBRARY ledit_cuda_emulated
#define LEDIT_DEVICE_DISPATCH_KEY CPU
#else
#define LEDIT_LIBRARY ledit
#define LEDIT_DEVICE_DISPATCH_KEY CUDA
#endif

// One level of indirection so LEDIT_LIBRARY expands before torch pastes it into names.
#define LEDIT_LIBRARY_FRAGMENT_(ns, m) TORCH_LIBRARY_FRAGMENT(ns, m)
#define LEDIT_LIBRARY_FRAGMENT(m) LEDIT_LIBRARY_FRAGMENT_(LEDIT_LIBRARY, m)
#define LEDIT_LIBRARY_IMPL_(ns, key, m) TORCH_LIBRARY_IMPL(ns, key, m)
// The device kernels' implementations: CUDA tensors in ledit._C, CPU tensors in ledit._C_emulated.
#define LEDIT_DEVICE_LIBRARY_IMPL(m) LEDIT_LIBRARY_IMPL_(LEDIT_LIBRARY, LEDIT_DEVICE_DISPATCH_KEY, m)
