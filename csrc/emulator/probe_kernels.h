// Launchers of the executor's probe kernels (probe_kernels.cu).
#pragma once

#include <cstdint>

#include "common/device_runtime.h"

namespace ledit {
namespace emulator_probes {

enum Fault : int {
  kNone = 0,
  kRaceAcrossWarps = 1,
  kRaceInWarp = 2,
  kGlobalOutOfBounds = 3,
  kSharedOutOfBounds = 4,
  kUninitialised = 5,
  kMissingWait = 6,
  kWithWait = 7,
  kBarrierDivergence = 8,
  kMissingLanes = 9,
  kTwoDimensionalBlock = 10,  // a correct kernel launched with a (32, 2) block, which the executor refuses
};

cudaError_t launch_mma(const void* a, const void* b, float* c, bool bf16, bool b_is_transposed);
cudaError_t launch_ldmatrix(const uint16_t* m, uint32_t* registers, int matrices, bool transpose);
cudaError_t launch_fault(float* out, int fault);
cudaError_t launch_predicated(const float* x, float* out);

}  // namespace emulator_probes
}  // namespace ledit
