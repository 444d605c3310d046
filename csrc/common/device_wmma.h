// WMMA (nvcuda::wmma) through the device layer, for the kernels that still use it (scan_attention_cuda.cu until the
// mma.sync rewrite). WMMA leaves the lane layout of a fragment undefined, so the executor models each call as a
// whole-warp tile operation: every lane's fragment holds the whole 16 x 16 tile, loads and stores are warp
// collectives whose shared-memory traffic is counted as the instructions nvcc emits for them (ldmatrix.x4 for an
// fp16 operand, four 32-bit loads per lane for bf16, 64-bit accesses in the mma.m16n8k16 accumulator layout for
// fp32; emulator/wmma.cpp), and a 16x16x16 product counts as two mma.sync m16n8k16. Only 16x16x16 shapes on shared memory are modelled; fragment elements (x[]) are not.
#pragma once

#include "common/device.h"

#if defined(__CUDACC__)
#include <mma.h>
namespace ledit {
namespace device {
namespace wmma = ::nvcuda::wmma;
}  // namespace device
}  // namespace ledit
#else
#include "emulator/wmma.h"
#endif
