// What the torch glue of the CUDA kernels (*_cuda_ops.cpp) needs from the device: a device guard, the current
// stream, the shared-memory limit, error checks, and (for the executor's bounds checks) the tensors of a launch.
// On a CUDA build these are c10::cuda's; in the executor build (LEDIT_EMULATED_DEVICE) the kernels run on CPU
// tensors and every launch's tensors are registered with their real extents.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

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

#if defined(LEDIT_EMULATED_DEVICE)

constexpr const char* kDeviceName = "cpu (cuda_emulated: the CUDA kernels on the CPU executor)";
inline bool on_kernel_device(const at::Tensor& t) { return t.device().is_cpu(); }
struct DeviceGuard {
  explicit DeviceGuard(const c10::Device&) {}
};
inline cudaStream_t current_stream() { return nullptr; }
// The executor models an H100 (sm_90): 227 KB of shared memory per block.
inline int max_shared_per_block(const at::Tensor&) { return 227 * 1024; }
inline void check(cudaError_t error) { TORCH_CHECK(error == cudaSuccess, "cuda_emulated: ", cudaGetErrorString(error)); }

// The tensors a launch may touch, by name, for the executor's global bounds check.
class LaunchTensors {
 public:
  LaunchTensors(std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors) {
    for (const auto& [name, t] : tensors) {
      if (!t->defined()) continue;
      emulator::push_allocation(t->data_ptr(), t->nbytes(), name);
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
  return limit;
}
inline void check(cudaError_t error) { C10_CUDA_CHECK(error); }
struct LaunchTensors {
  LaunchTensors(std::initializer_list<std::pair<const char*, const at::Tensor*>>) {}
};

#endif

}  // namespace device_glue
}  // namespace ledit
