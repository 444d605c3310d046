// The device layer (csrc/common/device.h) on the CPU executor: the same names as the nvcc side, each a call into
// the executor (executor.cpp and its parts), which checks it, counts it and carries it out for the calling thread
// (a fiber). Included by device.h in the LEDIT_EMULATED_DEVICE build only.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>

#include "emulator/runtime.h"

// CUDA's function and variable qualifiers mean nothing to the host compiler.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define LEDIT_RESTRICT

namespace ledit {
namespace emulator {

// Where a device primitive was called: reported by every check, and the key that groups the 32 lanes' accesses of
// one warp instruction into wavefronts (memory.cpp).
struct Site {
  const char* file;
  int line;
  static constexpr Site here(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    return {file, line};
  }
};

// A tensor a launch may touch: the glue registers each one (ScopedAllocations) before it launches.
struct Allocation {
  const unsigned char* begin;
  size_t bytes;
  std::string name;
};

// ---- hooks into the executor (one CPU thread runs one launch at a time; "this thread" is the running fiber) ------
const Allocation* find_allocation(const void* address);  // the registered tensor holding address; throws if none
// The glue registers the tensors of its next launch (ScopedAllocations in emulator/torch_glue.h).
void push_allocation(const void* begin, size_t bytes, const char* name);
void pop_allocations(size_t count);
void global_access(const void* address, size_t bytes, const Allocation* allocation, bool write, Site site);
// A global access this lane skips (a false predicate): it keeps the lane in step with the warp's other lanes when
// the counters group their accesses into warp instructions.
void global_access_skipped(bool write, Site site);
void shared_access(const void* address, size_t bytes, bool write, Site site);
void atomic_add_f32(float* address, const Allocation* allocation, float value, Site site);
unsigned char* dynamic_shared_base();
uint3 thread_index();
uint3 block_index();
dim3 block_dimensions();
dim3 grid_dimensions();
int linear_thread_index();

enum class Shuffle { kIndex, kXor, kUp, kDown };
enum class Vote { kAny, kAll, kBallot };
void block_barrier(Site site);
void warp_barrier(Site site);
uint32_t warp_shuffle(Shuffle kind, uint32_t value, int argument, Site site);
uint32_t warp_vote(Vote kind, bool predicate, Site site);
void warp_ldmatrix(int matrices, bool transpose, const void* row, uint32_t* registers, Site site);
void warp_mma_m16n8k16(bool bf16, float* acc, const uint32_t* a, const uint32_t* b, Site site);
void cp_async_16(void* shared_dst, const void* global_src, const Allocation* allocation, bool fill, Site site);
void cp_async_commit();
void cp_async_wait(int pending_groups, Site site);

uint16_t float_to_half_bits(float value);  // round to nearest even, as cvt.rn.f16.f32
float half_bits_to_float(uint16_t bits);
uint16_t float_to_bfloat16_bits(float value);  // round to nearest even, as cvt.rn.bf16.f32
float bfloat16_bits_to_float(uint16_t bits);

using KernelBody = std::function<void()>;
// Runs body on every thread of every block; throws EmulatorError (executor.h) when a check fails.
cudaError_t run_launch(const char* kernel_signature, dim3 grid, dim3 block, size_t shared_bytes,
                       const KernelBody& body);

namespace api {

struct half {
  uint16_t bits;
};
struct bfloat16 {
  uint16_t bits;
};

// ---- pointers ----------------------------------------------------------------------------------------------------
template <typename T>
class GlobalPtr {
 public:
  GlobalPtr() = default;
  GlobalPtr(std::nullptr_t) {}  // NOLINT: implicit, as a T* would be
  // A kernel argument: the tensor it points into must have been registered for the launch.
  GlobalPtr(T* p) : p_(p), allocation_(p == nullptr ? nullptr : find_allocation(p)) {}  // NOLINT
  GlobalPtr(T* p, const Allocation* allocation) : p_(p), allocation_(allocation) {}
  template <typename U, typename = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  GlobalPtr(const GlobalPtr<U>& other) : p_(other.raw()), allocation_(other.allocation()) {}  // NOLINT

  T* raw() const { return p_; }
  const Allocation* allocation() const { return allocation_; }
  explicit operator bool() const { return p_ != nullptr; }
  template <typename I>
  GlobalPtr operator+(I offset) const { return {p_ + offset, allocation_}; }
  template <typename I>
  GlobalPtr operator-(I offset) const { return {p_ - offset, allocation_}; }
  template <typename I>
  GlobalPtr& operator+=(I offset) { p_ += offset; return *this; }
  ptrdiff_t operator-(const GlobalPtr& other) const { return p_ - other.p_; }
  friend bool operator==(const GlobalPtr& a, std::nullptr_t) { return a.p_ == nullptr; }
  friend bool operator!=(const GlobalPtr& a, std::nullptr_t) { return a.p_ != nullptr; }

 private:
  T* p_ = nullptr;
  const Allocation* allocation_ = nullptr;
};

template <typename T>
class SharedPtr {
 public:
  SharedPtr() = default;
  explicit SharedPtr(T* p) : p_(p) {}
  template <typename U, typename = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  SharedPtr(const SharedPtr<U>& other) : p_(other.raw()) {}  // NOLINT

  T* raw() const { return p_; }
  template <typename I>
  SharedPtr operator+(I offset) const { return SharedPtr(p_ + offset); }
  template <typename I>
  SharedPtr operator-(I offset) const { return SharedPtr(p_ - offset); }
  template <typename I>
  SharedPtr& operator+=(I offset) { p_ += offset; return *this; }
  ptrdiff_t operator-(const SharedPtr& other) const { return p_ - other.p_; }

 private:
  T* p_ = nullptr;
};

template <typename T>
using Global = GlobalPtr<T>;
template <typename T>
using Shared = SharedPtr<T>;

template <typename U, typename T>
GlobalPtr<U> cast(GlobalPtr<T> p) { return {reinterpret_cast<U*>(p.raw()), p.allocation()}; }
template <typename U, typename T>
SharedPtr<U> cast(SharedPtr<T> p) { return SharedPtr<U>(reinterpret_cast<U*>(p.raw())); }

template <typename T>
SharedPtr<T> dynamic_shared() { return SharedPtr<T>(reinterpret_cast<T*>(dynamic_shared_base())); }

// ---- indices -----------------------------------------------------------------------------------------------------
inline uint3 thread_idx() { return thread_index(); }
inline uint3 block_idx() { return block_index(); }
inline dim3 block_dim() { return block_dimensions(); }
inline dim3 grid_dim() { return grid_dimensions(); }
inline int lane_id() { return static_cast<int>(thread_index().x) % 32; }
inline int warp_id() { return linear_thread_index() / 32; }

// ---- barriers and warp collectives -------------------------------------------------------------------------------
inline void sync_threads(Site site = Site::here()) { block_barrier(site); }
inline void sync_warp(Site site = Site::here()) { warp_barrier(site); }

template <typename T>
T shuffle_as(Shuffle kind, T v, int argument, Site site) {
  static_assert(sizeof(T) == 4 && std::is_trivially_copyable_v<T>, "warp shuffles move 4-byte values");
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits = warp_shuffle(kind, bits, argument, site);
  std::memcpy(&v, &bits, 4);
  return v;
}
template <typename T>
T shfl(T v, int src_lane, Site site = Site::here()) { return shuffle_as(Shuffle::kIndex, v, src_lane, site); }
template <typename T>
T shfl_xor(T v, int lane_mask, Site site = Site::here()) { return shuffle_as(Shuffle::kXor, v, lane_mask, site); }
template <typename T>
T shfl_up(T v, int delta, Site site = Site::here()) { return shuffle_as(Shuffle::kUp, v, delta, site); }
template <typename T>
T shfl_down(T v, int delta, Site site = Site::here()) { return shuffle_as(Shuffle::kDown, v, delta, site); }
inline bool vote_any(bool p, Site site = Site::here()) { return warp_vote(Vote::kAny, p, site) != 0; }
inline bool vote_all(bool p, Site site = Site::here()) { return warp_vote(Vote::kAll, p, site) != 0; }
inline uint32_t ballot(bool p, Site site = Site::here()) { return warp_vote(Vote::kBallot, p, site); }

// ---- memory ------------------------------------------------------------------------------------------------------
template <typename T>
std::remove_cv_t<T> ld_global(GlobalPtr<T> p, Site site = Site::here()) {
  global_access(p.raw(), sizeof(T), p.allocation(), false, site);
  std::remove_cv_t<T> value;
  std::memcpy(&value, p.raw(), sizeof(T));
  return value;
}
template <typename T, typename V>
void st_global(GlobalPtr<T> p, const V& v, Site site = Site::here()) {
  static_assert(!std::is_const_v<T>, "st_global through a pointer to const");
  const T value = v;
  global_access(p.raw(), sizeof(T), p.allocation(), true, site);
  std::memcpy(p.raw(), &value, sizeof(T));
}
template <typename T>
std::remove_cv_t<T> ld_global_if(bool predicate, GlobalPtr<T> p, Site site = Site::here()) {
  if (predicate) return ld_global(p, site);
  global_access_skipped(false, site);
  return std::remove_cv_t<T>{};
}
template <typename T, typename V>
void st_global_if(bool predicate, GlobalPtr<T> p, const V& v, Site site = Site::here()) {
  if (predicate) {
    st_global(p, v, site);
  } else {
    global_access_skipped(true, site);
  }
}
template <typename T>
std::remove_cv_t<T> ld_shared(SharedPtr<T> p, Site site = Site::here()) {
  shared_access(p.raw(), sizeof(T), false, site);
  std::remove_cv_t<T> value;
  std::memcpy(&value, p.raw(), sizeof(T));
  return value;
}
template <typename T, typename V>
void st_shared(SharedPtr<T> p, const V& v, Site site = Site::here()) {
  static_assert(!std::is_const_v<T>, "st_shared through a pointer to const");
  const T value = v;
  shared_access(p.raw(), sizeof(T), true, site);
  std::memcpy(p.raw(), &value, sizeof(T));
}
inline void atomic_add(GlobalPtr<float> p, float v, Site site = Site::here()) {
  atomic_add_f32(p.raw(), p.allocation(), v, site);
}

// ---- tensor cores ------------------------------------------------------------------------------------------------
template <int kMatrices, bool kTranspose = false, typename T>
void ldmatrix(uint32_t (&r)[kMatrices], SharedPtr<T> row, Site site = Site::here()) {
  static_assert(sizeof(T) == 2, "ldmatrix loads 16-bit elements");
  static_assert(kMatrices == 1 || kMatrices == 2 || kMatrices == 4, "ldmatrix loads 1, 2 or 4 matrices");
  warp_ldmatrix(kMatrices, kTranspose, row.raw(), r, site);
}

template <typename T>
void mma_m16n8k16(float (&acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], Site site = Site::here()) {
  static_assert(std::is_same_v<T, half> || std::is_same_v<T, bfloat16>,
                "mma_m16n8k16 takes half or bfloat16 operands");
  warp_mma_m16n8k16(std::is_same_v<T, bfloat16>, acc, a, b, site);
}

// ---- asynchronous copies -----------------------------------------------------------------------------------------
template <typename D, typename S>
void cp_async_16(SharedPtr<D> dst, GlobalPtr<S> src, bool fill, Site site = Site::here()) {
  ::ledit::emulator::cp_async_16(dst.raw(), src.raw(), src.allocation(), fill, site);
}
inline void cp_async_commit() { ::ledit::emulator::cp_async_commit(); }
template <int kPendingGroups>
void cp_async_wait(Site site = Site::here()) { ::ledit::emulator::cp_async_wait(kPendingGroups, site); }
inline void cp_async_wait_all(Site site = Site::here()) {
  ::ledit::emulator::cp_async_commit();
  ::ledit::emulator::cp_async_wait(0, site);
}

// ---- 16-bit types ------------------------------------------------------------------------------------------------
inline float to_float(float v) { return v; }
inline float to_float(half v) { return half_bits_to_float(v.bits); }
inline float to_float(bfloat16 v) { return bfloat16_bits_to_float(v.bits); }
template <typename T>
T from_float(float v) {
  if constexpr (std::is_same_v<T, half>) {
    return {float_to_half_bits(v)};
  } else if constexpr (std::is_same_v<T, bfloat16>) {
    return {float_to_bfloat16_bits(v)};
  } else {
    return v;
  }
}
template <typename T>
uint32_t pack2(float lo, float hi) {
  return static_cast<uint32_t>(from_float<T>(lo).bits) | (static_cast<uint32_t>(from_float<T>(hi).bits) << 16);
}
template <typename T>
void unpack2(uint32_t packed, float& lo, float& hi) {
  lo = to_float(T{static_cast<uint16_t>(packed & 0xffffu)});
  hi = to_float(T{static_cast<uint16_t>(packed >> 16)});
}

// ---- math --------------------------------------------------------------------------------------------------------
inline float exp2(float x) { return ::exp2f(x); }
inline float log2(float x) { return ::log2f(x); }
inline float exp2_approx(float x) { return ::exp2f(x); }  // ex2.approx is within 2 ulp of this

// ---- launch ------------------------------------------------------------------------------------------------------
template <typename Function>
struct KernelParameters;
template <typename... Params>
struct KernelParameters<void (*)(Params...)> {
  using Tuple = std::tuple<std::decay_t<Params>...>;
};

// The kernel's name with its template arguments, from this function's own signature.
template <auto kKernel>
const char* kernel_signature() { return __PRETTY_FUNCTION__; }

template <auto kKernel, typename Config, typename... Args>
cudaError_t launch(const Config& config, Args... args) {
  using Tuple = typename KernelParameters<decltype(kKernel)>::Tuple;
  const Tuple parameters(args...);  // kernel arguments become Global<T> here, once per launch
  return run_launch(kernel_signature<kKernel>(), config.grid, config.block, config.shared_bytes,
                    [&parameters] { std::apply(kKernel, parameters); });
}

}  // namespace api
}  // namespace emulator
}  // namespace ledit
