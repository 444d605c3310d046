// Small kernels that test the executor itself (tests/ops/test_cuda_executor.py): tensor-core fragments against a
// plain matmul and hand-worked lane/element cases, and one faulty kernel per check, each of which must fail.
// Written against the device layer like every kernel, so nvcc compiles them too (scripts/check_cuda_compile.py).
#include "emulator/probe_kernels.h"

#include "common/device.h"

namespace ledit {
namespace emulator_probes {
namespace {

namespace dev = ::ledit::device;

// C (16 x 8, fp32) = A (16 x 16, row-major) * B (16 x 8): A by ldmatrix.x4, B by ldmatrix.x2.trans from B stored
// row-major [k][n] (b_is_transposed = false) or by ldmatrix.x2 from B^T stored row-major [n][k].
template <typename T>
__global__ void mma_kernel(dev::Global<const T> a, dev::Global<const T> b, dev::Global<float> c,
                           bool b_is_transposed) {
  const dev::Shared<T> s = dev::dynamic_shared<T>();  // A: 256 elements, then B: 128
  const int lane = dev::lane_id();
  dev::cp_async_16(s + 8 * lane, a + 8 * lane, true);
  if (lane < 16) dev::cp_async_16(s + 256 + 8 * lane, b + 8 * lane, true);
  dev::cp_async_commit();
  dev::cp_async_wait<0>();
  dev::sync_warp();
  uint32_t fa[4], fb[2];
  dev::ldmatrix<4>(fa, s + (lane % 16) * 16 + (lane / 16) * 8);
  if (b_is_transposed) {
    dev::ldmatrix<2>(fb, s + 256 + (lane % 8) * 16 + ((lane / 8) % 2) * 8);
  } else {
    dev::ldmatrix<2, true>(fb, s + 256 + (lane % 16) * 8);
  }
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  dev::mma_m16n8k16<T>(acc, fa, fb);
  const int row = lane / 4, col = 2 * (lane % 4);
  for (int i = 0; i < 4; ++i) dev::st_global(c + (row + 8 * (i / 2)) * 8 + col + i % 2, acc[i]);
}

// The registers ldmatrix gives each lane: lane l points at row l of m (32 rows of 8 16-bit values).
template <int kMatrices, bool kTranspose>
__global__ void ldmatrix_kernel(dev::Global<const uint16_t> m, dev::Global<uint32_t> registers) {
  const dev::Shared<uint16_t> s = dev::dynamic_shared<uint16_t>();
  const int lane = dev::lane_id();
  dev::st_shared(dev::cast<uint4>(s + 8 * lane), dev::ld_global(dev::cast<const uint4>(m + 8 * lane)));
  dev::sync_warp();
  uint32_t r[kMatrices];
  dev::ldmatrix<kMatrices, kTranspose>(r, s + 8 * lane);
  for (int i = 0; i < kMatrices; ++i) dev::st_global(registers + lane * 4 + i, r[i]);
}

// Faults, by the check that must catch them. `out` has 64 floats; shared memory 128 floats, the upper 64 never
// written.
__global__ void fault_kernel(dev::Global<float> out, int fault) {
  const dev::Shared<float> s = dev::dynamic_shared<float>();
  const int t = dev::thread_idx().x, lane = dev::lane_id();
  dev::st_shared(s + t, static_cast<float>(t));
  dev::sync_threads();
  if (fault == kRaceAcrossWarps) dev::st_shared(s + t, 2.f * t);  // while the other warp reads it
  float v = dev::ld_shared(s + (t + 32) % 64);  // the other warp's value
  if (fault == kRaceInWarp) {
    dev::st_shared(s + t, v);
    v += dev::ld_shared(s + (t ^ 1));  // a neighbour lane's write, no sync_warp between
  }
  if (fault == kGlobalOutOfBounds) v += dev::ld_global(out + 64 + t);
  if (fault == kSharedOutOfBounds) v += dev::ld_shared(s + 128 + t);
  if (fault == kUninitialised) v += dev::ld_shared(s + 64 + t);
  if (fault == kMissingWait || fault == kWithWait) {
    dev::sync_threads();
    if (t < 16) dev::cp_async_16(s + 4 * t, dev::Global<const float>(out) + 4 * t, true);
    dev::cp_async_commit();
    if (fault == kWithWait) dev::cp_async_wait<0>();
    dev::sync_threads();
    v += dev::ld_shared(s + t % 16);
  }
  if (fault == kBarrierDivergence && t >= 32) return;
  if (fault == kBarrierDivergence) dev::sync_threads();
  if (fault == kMissingLanes && lane < 16) v = dev::shfl_xor(v, 1);
  if (fault == kMissingLanes) v = dev::shfl_xor(v, 2);
  dev::st_global(out + t, v);
}

// Counting under divergence: lane 0 skips the first of two warp instructions (ld_global_if, cp_async_16 without
// fill), every other lane runs both. x has 256 floats; out gets each lane's sum.
__global__ void predicated_kernel(dev::Global<const float> x, dev::Global<float> out) {
  const dev::Shared<float> s = dev::dynamic_shared<float>();  // 256 floats
  const int lane = dev::lane_id();
  float sum = 0.f;
  for (int i = 0; i < 2; ++i) sum += dev::ld_global_if(lane != 0 || i != 0, x + 32 * i + lane);
  for (int i = 0; i < 2; ++i) {
    const int offset = 4 * (32 * i + lane);
    dev::cp_async_16(s + offset, x + offset, lane != 0 || i != 0);
  }
  dev::cp_async_wait_all();
  sum += dev::ld_shared(s + 4 * lane);
  dev::st_global(out + lane, sum);
}

}  // namespace

cudaError_t launch_mma(const void* a, const void* b, float* c, bool bf16, bool b_is_transposed) {
  const dev::LaunchConfig config{dim3(1), dim3(32), 768, nullptr};
  if (bf16) {
    return dev::launch<mma_kernel<dev::bfloat16>>(config, static_cast<const dev::bfloat16*>(a),
                                                  static_cast<const dev::bfloat16*>(b), c, b_is_transposed);
  }
  return dev::launch<mma_kernel<dev::half>>(config, static_cast<const dev::half*>(a), static_cast<const dev::half*>(b),
                                            c, b_is_transposed);
}

cudaError_t launch_ldmatrix(const uint16_t* m, uint32_t* registers, int matrices, bool transpose) {
  const dev::LaunchConfig config{dim3(1), dim3(32), 512, nullptr};
  switch (matrices * 2 + (transpose ? 1 : 0)) {
    case 2: return dev::launch<ldmatrix_kernel<1, false>>(config, m, registers);
    case 3: return dev::launch<ldmatrix_kernel<1, true>>(config, m, registers);
    case 4: return dev::launch<ldmatrix_kernel<2, false>>(config, m, registers);
    case 5: return dev::launch<ldmatrix_kernel<2, true>>(config, m, registers);
    case 8: return dev::launch<ldmatrix_kernel<4, false>>(config, m, registers);
    case 9: return dev::launch<ldmatrix_kernel<4, true>>(config, m, registers);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t launch_fault(float* out, int fault) {
  const dim3 block = fault == kTwoDimensionalBlock ? dim3(32, 2) : dim3(64);
  return dev::launch<fault_kernel>(dev::LaunchConfig{dim3(1), block, 128 * sizeof(float), nullptr}, out, fault);
}

cudaError_t launch_predicated(const float* x, float* out) {
  return dev::launch<predicated_kernel>(dev::LaunchConfig{dim3(1), dim3(32), 256 * sizeof(float), nullptr}, x, out);
}

}  // namespace emulator_probes
}  // namespace ledit
