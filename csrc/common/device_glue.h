// What the torch glue of the CUDA kernels (*_cuda_ops.cpp) needs from the device: a device guard, the current
// stream, the shared-memory limit, error checks, and (for the executor's bounds checks) the tensors of a launch.
// On a CUDA build these are c10::cuda's; in the executor build (LEDIT_EMULATED_DEVICE) the kernels run on CPU
// tensors and every launch's tensors are registered with their real extents.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <initializer_list>
#include <utility>

#include "common/device_runtime.h"
#include "common/torch_library.h"

#if defined(LEDIT_EMULATED_DEVICE)
#include "emulator/device_emulated.h"
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace ledit {
namespace device_glue {

// LEDIT_MAX_SHARED_BYTES, when set, caps the shared memory per block the glue believes the device allows (101376
// models sm_86/sm_89), so tests reach the choices kernels make for smaller GPUs on any device.
inline int shared_bytes_cap(int device_limit) {
  const char* cap = std::getenv("LEDIT_MAX_SHARED_BYTES");
  return cap != nullptr && *cap != '\0' ? std::min(device_limit, std::atoi(cap)) : device_limit;
}

#if defined(LEDIT_EMULATED_DEVICE)

constexpr const char* kDeviceName = "cpu (cuda_emulated: the CUDA kernels on the CPU executor)";
inline bool on_kernel_device(const at::Tensor& t) { return t.device().is_cpu(); }
struct DeviceGuard {
  explicit DeviceGuard(const c10::Device&) {}
};
inline cudaStream_t current_stream() { return nullptr; }
// The executor models an H100 (sm_90): 227 KB of shared memory per block.
inline int max_shared_per_block(const at::Tensor&) { return shared_bytes_cap(227 * 1024); }
inline void check(cudaError_t error) { TORCH_CHECK(error == cudaSuccess, "cuda_emulated: ", cudaGetErrorString(error)); }

// Bytes from a tensor's first element to the end of its last: a strided view (q of a fused qkv projection) spans
// more than numel * itemsize, and the kernels may read all of it.
inline size_t span_bytes(const at::Tensor& t) {
  if (t.numel() == 0) return 0;
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
  return static_cast<size_t>(last + 1) * t.element_size();
}

// The tensors a launch may touch, by name, for the executor's global bounds check.
class LaunchTensors {
 public:
  LaunchTensors(std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors) {
    for (const auto& [name, t] : tensors) {
      if (!t->defined()) continue;
      emulator::push_allocation(t->data_ptr(), span_bytes(*t), name);
      ++count_;
    }
  }
  ~LaunchTensors() { emulator::pop_allocations(count_); }
  LaunchTensors(const LaunchTensors&) = delete;
  LaunchTensors& operator=(const LaunchTensors&) = delete;

 private:
  size_t count_ = 0;
};

#else

constexpr const char* kDeviceName = "a CUDA device";
inline bool on_kernel_device(const at::Tensor& t) { return t.is_cuda(); }
using DeviceGuard = c10::cuda::CUDAGuard;
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream(); }
inline int max_shared_per_block(const at::Tensor& t) {
  int limit = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, t.get_device()));
  return shared_bytes_cap(limit);
}
inline void check(cudaError_t error) { C10_CUDA_CHECK(error); }
struct LaunchTensors {
  LaunchTensors(std::initializer_list<std::pair<const char*, const at::Tensor*>>) {}
};

#endif

}  // namespace device_glue
}  // namespace ledit
