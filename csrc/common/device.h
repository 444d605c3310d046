// The device layer: every primitive a ledit CUDA kernel (.cu) uses to reach the hardware. Under nvcc each is the
// real intrinsic or inline PTX, inlined to nothing more. Compiled by a host compiler with LEDIT_EMULATED_DEVICE
// (ledit._C_emulated) each is a call into the CPU executor (csrc/emulator/), which runs the same kernel source
// block by block with its threads as fibers and checks every access (docs/cuda-executor.md). Kernels therefore
// never touch threadIdx, __shfl_*, raw pointers to global or shared memory, or asm directly.
//
//   namespace dev = ::ledit::device;
//
//   Indices      dev::thread_idx(), block_idx(), block_dim(), grid_dim() (uint3 / dim3), lane_id(), warp_id().
//                Blocks are one-dimensional (block_dim().y == z == 1; the executor refuses others), so a thread's
//                lane and warp come from threadIdx.x alone, as cheaply as the raw code.
//   Barriers     dev::sync_threads()  (bar.sync 0; every thread of the block, same call site)
//                dev::sync_warp()     (all 32 lanes; orders the warp's shared-memory accesses)
//   Warp         dev::shfl(v, src_lane), shfl_xor(v, lane_mask), shfl_up(v, delta), shfl_down(v, delta) for 4-byte
//                v; dev::vote_any(p), vote_all(p), ballot(p). All 32 lanes take part (full mask); each is a warp
//                barrier.
//   Pointers     dev::Global<T>, dev::Shared<T>: T* under nvcc; under the executor, pointers that know their
//                allocation (global: the tensor's real extent) and cannot be dereferenced directly.
//                dev::cast<U>(p) reinterprets either kind, keeping its allocation.
//                dev::dynamic_shared<T>() is the block's dynamic shared memory (extern __shared__, 128-byte
//                aligned), sized by LaunchConfig::shared_bytes.
//   Memory       dev::ld_global(p), st_global(p, v), ld_shared(p), st_shared(p, v) for scalars and 16-byte
//                vectors (uint4, float4; naturally aligned); dev::atomic_add(Global<float>, float) (fp32, global).
//                dev::ld_global_if(pred, p) (zero when pred is false) and st_global_if(pred, p, v): a global
//                access that some lanes skip in the middle of a sequence (e.g. columns past D in a loop over a
//                tile), written predicated so the executor's counters keep the warp's lanes in step.
//   Tensor core  dev::ldmatrix<kMatrices, kTranspose>(uint32_t (&r)[kMatrices], Shared<const b16> row):
//                ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16; lane i gives the address of row i % 8 of
//                matrix i / 8 (lanes past 8 * kMatrices are ignored).
//                dev::mma_m16n8k16<T>(float (&acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]):
//                mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32, acc += A * B, fragment layouts
//                of the PTX ISA ("Matrix fragments for mma.m16n8k16 with floating point type").
//   Async copy   dev::cp_async_16(Shared<T> dst, Global<const T> src, bool fill): cp.async.cg 16 bytes; with
//                fill = false nothing is read and 16 zero bytes land (edge tiles). dev::cp_async_commit(),
//                dev::cp_async_wait<N>() (wait_group N), dev::cp_async_wait_all(). Data lands at the wait.
//   Types        dev::half, dev::bfloat16 (storage types); dev::to_float(h), dev::from_float<T>(f) (round to
//                nearest even), dev::pack2<T>(lo, hi) -> uint32_t (two 16-bit values, lo in the low half, as the
//                mma fragments hold them), dev::unpack2<T>(u, lo, hi).
//   Math         dev::exp2(x), dev::log2(x) (exp2f/log2f), dev::exp2_approx(x) (ex2.approx.ftz.f32).
//   Launch       dev::launch<kernel>(dev::LaunchConfig{grid, block, shared_bytes, stream}, args...) ->
//                cudaError_t; raises the kernel's dynamic shared-memory limit first when shared_bytes > 48 KB.
//
// Kernel parameters that point to memory are dev::Global<T>; LEDIT_RESTRICT marks the ones that alias nothing
// (__restrict__ under nvcc). Example: a warp of a 32-thread block multiplies a 16 x 16 A (row-major, shared) by
// a 16 x 8 B (stored as B^T, row-major) on the tensor cores and writes C row-major to global memory:
//
//   __global__ void tile_mma(dev::Global<const dev::half> a, dev::Global<const dev::half> b_t,
//                            dev::Global<float> c) {
//     const dev::Shared<dev::half> s = dev::dynamic_shared<dev::half>();  // A [16][16], then B^T [8][16]
//     const int lane = dev::lane_id();
//     dev::cp_async_16(s + 8 * lane, a + 8 * lane, true);                     // 32 chunks of 16 bytes
//     if (lane < 16) dev::cp_async_16(s + 256 + 8 * lane, b_t + 8 * lane, true);
//     dev::cp_async_commit();
//     dev::cp_async_wait<0>();
//     dev::sync_warp();
//     uint32_t fa[4], fb[2];
//     dev::ldmatrix<4>(fa, s + (lane % 16) * 16 + (lane / 16) * 8);
//     dev::ldmatrix<2>(fb, s + 256 + (lane % 8) * 16 + ((lane / 8) % 2) * 8);
//     float acc[4] = {0.f, 0.f, 0.f, 0.f};
//     dev::mma_m16n8k16<dev::half>(acc, fa, fb);
//     const int row = lane / 4, col = 2 * (lane % 4);
//     for (int i = 0; i < 4; ++i) dev::st_global(c + (row + 8 * (i / 2)) * 8 + col + i % 2, acc[i]);
//   }
//   dev::launch<tile_mma>(dev::LaunchConfig{dim3(1), dim3(32), 768, stream}, a, b_t, c);
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "common/device_runtime.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define LEDIT_RESTRICT __restrict__
#elif defined(LEDIT_EMULATED_DEVICE)
#include "emulator/device_emulated.h"
#else
#error "common/device.h is for kernels: compile with nvcc, or with LEDIT_EMULATED_DEVICE for the CPU executor"
#endif

namespace ledit {
namespace device {

constexpr int kWarpSize = 32;
// Dynamic shared memory a kernel may use without raising its limit (cudaFuncAttributeMaxDynamicSharedMemorySize).
constexpr size_t kDefaultSharedBytes = 48 * 1024;

struct LaunchConfig {
  dim3 grid;
  dim3 block;
  size_t shared_bytes;
  cudaStream_t stream;
};

#if defined(__CUDACC__)

using half = __half;
using bfloat16 = __nv_bfloat16;
template <typename T>
using Global = T*;
template <typename T>
using Shared = T*;

#define LEDIT_DEVICE_INLINE __device__ __forceinline__

// ---- indices -------------------------------------------------------------------------------------------------
LEDIT_DEVICE_INLINE uint3 thread_idx() { return threadIdx; }
LEDIT_DEVICE_INLINE uint3 block_idx() { return blockIdx; }
LEDIT_DEVICE_INLINE dim3 block_dim() { return blockDim; }
LEDIT_DEVICE_INLINE dim3 grid_dim() { return gridDim; }
// Unsigned arithmetic, then int: a shift and a mask, no signed-division fix-up (which cost the dwconv kernels up
// to 8 registers).
LEDIT_DEVICE_INLINE int lane_id() { return static_cast<int>(threadIdx.x % kWarpSize); }
LEDIT_DEVICE_INLINE int warp_id() { return static_cast<int>(threadIdx.x / kWarpSize); }

// ---- barriers and warp collectives ---------------------------------------------------------------------------
LEDIT_DEVICE_INLINE void sync_threads() { __syncthreads(); }
LEDIT_DEVICE_INLINE void sync_warp() { __syncwarp(); }
template <typename T>
LEDIT_DEVICE_INLINE T shfl(T v, int src_lane) { return __shfl_sync(0xffffffffu, v, src_lane); }
template <typename T>
LEDIT_DEVICE_INLINE T shfl_xor(T v, int lane_mask) { return __shfl_xor_sync(0xffffffffu, v, lane_mask); }
template <typename T>
LEDIT_DEVICE_INLINE T shfl_up(T v, int delta) { return __shfl_up_sync(0xffffffffu, v, delta); }
template <typename T>
LEDIT_DEVICE_INLINE T shfl_down(T v, int delta) { return __shfl_down_sync(0xffffffffu, v, delta); }
LEDIT_DEVICE_INLINE bool vote_any(bool p) { return __any_sync(0xffffffffu, p); }
LEDIT_DEVICE_INLINE bool vote_all(bool p) { return __all_sync(0xffffffffu, p); }
LEDIT_DEVICE_INLINE uint32_t ballot(bool p) { return __ballot_sync(0xffffffffu, p); }

// ---- memory --------------------------------------------------------------------------------------------------
template <typename U, typename T>
LEDIT_DEVICE_INLINE U* cast(T* p) { return reinterpret_cast<U*>(p); }

// One declaration for every T (all extern __shared__ arrays share one address). Declared float, not unsigned char
// or uint4: with those, ptxas gave dwconv's k = 3 forward 40 registers instead of the raw kernel's 32.
template <typename T>
LEDIT_DEVICE_INLINE T* dynamic_shared() {
  extern __shared__ __align__(128) float ledit_dynamic_shared_memory[];
  return reinterpret_cast<T*>(ledit_dynamic_shared_memory);
}

template <typename T>
LEDIT_DEVICE_INLINE T ld_global(const T* p) { return *p; }
template <typename T, typename V>
LEDIT_DEVICE_INLINE void st_global(T* p, const V& v) { *p = v; }
template <typename T>
LEDIT_DEVICE_INLINE T ld_global_if(bool predicate, const T* p) { return predicate ? *p : T{}; }
template <typename T, typename V>
LEDIT_DEVICE_INLINE void st_global_if(bool predicate, T* p, const V& v) {
  if (predicate) *p = v;
}
template <typename T>
LEDIT_DEVICE_INLINE T ld_shared(const T* p) { return *p; }
template <typename T, typename V>
LEDIT_DEVICE_INLINE void st_shared(T* p, const V& v) { *p = v; }
LEDIT_DEVICE_INLINE void atomic_add(float* p, float v) { atomicAdd(p, v); }

LEDIT_DEVICE_INLINE uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- tensor cores --------------------------------------------------------------------------------------------
template <int kMatrices, bool kTranspose = false, typename T>
LEDIT_DEVICE_INLINE void ldmatrix(uint32_t (&r)[kMatrices], const T* row) {
  static_assert(sizeof(T) == 2, "ldmatrix loads 16-bit elements");
  static_assert(kMatrices == 1 || kMatrices == 2 || kMatrices == 4, "ldmatrix loads 1, 2 or 4 matrices");
  const uint32_t address = shared_address(row);
  if constexpr (kMatrices == 1 && !kTranspose) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(address));
  } else if constexpr (kMatrices == 1) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(address));
  } else if constexpr (kMatrices == 2 && !kTranspose) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(address));
  } else if constexpr (kMatrices == 2) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(address));
  } else if constexpr (!kTranspose) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
  }
}

template <typename T>
LEDIT_DEVICE_INLINE void mma_m16n8k16(float (&acc)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    static_assert(std::is_same_v<T, bfloat16>, "mma_m16n8k16 takes half or bfloat16 operands");
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

// ---- asynchronous copies -------------------------------------------------------------------------------------
template <typename D, typename S>
LEDIT_DEVICE_INLINE void cp_async_16(D* dst, const S* src, bool fill) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)), "l"(src),
               "r"(fill ? 16 : 0));
}
LEDIT_DEVICE_INLINE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPendingGroups>
LEDIT_DEVICE_INLINE void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPendingGroups) : "memory");
}
LEDIT_DEVICE_INLINE void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

// ---- 16-bit types --------------------------------------------------------------------------------------------
LEDIT_DEVICE_INLINE float to_float(float v) { return v; }
LEDIT_DEVICE_INLINE float to_float(half v) { return __half2float(v); }
LEDIT_DEVICE_INLINE float to_float(bfloat16 v) { return __bfloat162float(v); }
template <typename T>
LEDIT_DEVICE_INLINE T from_float(float v) {
  if constexpr (std::is_same_v<T, half>) {
    return __float2half_rn(v);
  } else if constexpr (std::is_same_v<T, bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return v;
  }
}
template <typename T>
LEDIT_DEVICE_INLINE uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, half>) {
    const __half2 pair = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&pair);
  } else {
    const __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&pair);
  }
}
template <typename T>
LEDIT_DEVICE_INLINE void unpack2(uint32_t packed, float& lo, float& hi) {
  const T* pair = reinterpret_cast<const T*>(&packed);
  lo = to_float(pair[0]);
  hi = to_float(pair[1]);
}

// ---- math ----------------------------------------------------------------------------------------------------
LEDIT_DEVICE_INLINE float exp2(float x) { return exp2f(x); }
LEDIT_DEVICE_INLINE float log2(float x) { return log2f(x); }
LEDIT_DEVICE_INLINE float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// ---- launch --------------------------------------------------------------------------------------------------
template <auto kKernel, typename... Args>
inline cudaError_t launch(const LaunchConfig& config, Args... args) {
  if (config.shared_bytes > kDefaultSharedBytes) {
    const cudaError_t error = cudaFuncSetAttribute(kKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   static_cast<int>(config.shared_bytes));
    if (error != cudaSuccess) return error;
  }
  kKernel<<<config.grid, config.block, config.shared_bytes, config.stream>>>(args...);
  return cudaGetLastError();
}

#undef LEDIT_DEVICE_INLINE

#else  // the CPU executor: the same names, defined in emulator/device_emulated.h

using namespace ::ledit::emulator::api;  // NOLINT: the executor's implementation of this layer

#endif

}  // namespace device
}  // namespace ledit
