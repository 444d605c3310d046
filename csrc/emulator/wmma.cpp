// WMMA 16x16x16 as whole-warp collectives (common/device_wmma.h). Each lane's accesses are those of the
// instructions nvcc 13.0 emits for sm_80 and sm_90 (read off cuobjdump -sass, docs/cuda-executor.md):
//   - an fp16 tile: one ldmatrix.x4 (LDSM.16.M88.4, or .MT88.4 for a row-major B); lane l gives memory row l % 16,
//     columns 8 (l / 16) .. +7;
//   - a bf16 tile: four 32-bit generic loads (LD.E) per lane, load i at memory row g + 8 (i % 2), columns
//     2t + 8 (i / 2) .. +1 with g = l / 4, t = l % 4 (then MOVM transposes for a row-major B): each load is the
//     same 8 rows x 16 bytes as one ldmatrix phase, so the wavefronts match fp16, in four instructions, not one;
//   - an fp32 accumulator: four 64-bit accesses per lane (LDS.64 / STS.64) at (g + 8 (i % 2), 2t + 8 (i / 2)),
//     the mma.m16n8k16 accumulator layout of the two 16 x 8 halves.
#include "emulator/wmma.h"

#include <cmath>
#include <cstring>

#include "emulator/executor.h"

namespace ledit {
namespace emulator {
namespace {

struct TileOperand {
  WmmaOperand operand;
  bool transposed, bf16;
  unsigned char* address;
  unsigned ldm;
  Site site;
};

using Tile = float[16][16];

// Memory (row, column) of access i of lane for a bf16 operand or an accumulator: the first of its two elements.
void pair_position(int lane, int i, int& row, int& col) {
  row = lane / 4 + 8 * (i % 2);
  col = 2 * (lane % 4) + 8 * (i / 2);
}

// The `count` 16-bit values at p, as floats.
void read_b16(const unsigned char* p, int count, bool bf16, float* out) {
  for (int j = 0; j < count; ++j) {
    uint16_t bits;
    std::memcpy(&bits, p + 2 * j, 2);
    out[j] = bf16 ? bfloat16_bits_to_float(bits) : half_bits_to_float(bits);
  }
}

void load_compute(const void* const* operands, void* const* results) {
  Launch& launch = launch_state();
  const int first = current_thread().warp * 32;
  const auto* op = static_cast<const TileOperand*>(operands[0]);
  Tile memory;
  for (int lane = 0; lane < 32; ++lane) {
    const auto* own = static_cast<const TileOperand*>(operands[lane]);
    ThreadState& thread = *launch.threads[first + lane];
    if (own->operand == WmmaOperand::kAccumulator) {
      for (int i = 0; i < 4; ++i) {
        int row, col;
        pair_position(lane, i, row, col);
        const unsigned char* p = own->address + (static_cast<size_t>(row) * own->ldm + col) * 4;
        shared_access_by(thread, p, 8, AccessKind::kSharedLoad, own->site);
        std::memcpy(&memory[row][col], p, 8);
      }
    } else if (own->bf16) {
      for (int i = 0; i < 4; ++i) {
        int row, col;
        pair_position(lane, i, row, col);
        const unsigned char* p = own->address + (static_cast<size_t>(row) * own->ldm + col) * 2;
        shared_access_by(thread, p, 4, AccessKind::kSharedLoad, own->site);
        read_b16(p, 2, true, &memory[row][col]);
      }
    } else {
      const int row = lane % 16, col = 8 * (lane / 16);
      const unsigned char* p = own->address + (static_cast<size_t>(row) * own->ldm + col) * 2;
      shared_access_by(thread, p, 16, AccessKind::kLdmatrix, own->site);
      read_b16(p, 8, false, &memory[row][col]);
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    auto* tile = static_cast<float(*)[16]>(results[lane]);
    for (int r = 0; r < 16; ++r)
      for (int c = 0; c < 16; ++c) tile[r][c] = op->transposed ? memory[c][r] : memory[r][c];
  }
}

struct StoreOperand {
  unsigned char* address;
  unsigned ldm;
  const float (*tile)[16];
  Site site;
};

void store_compute(const void* const* operands, void* const*) {
  Launch& launch = launch_state();
  const int first = current_thread().warp * 32;
  for (int lane = 0; lane < 32; ++lane) {
    const auto* own = static_cast<const StoreOperand*>(operands[lane]);
    for (int i = 0; i < 4; ++i) {
      int row, col;
      pair_position(lane, i, row, col);
      unsigned char* p = own->address + (static_cast<size_t>(row) * own->ldm + col) * 4;
      shared_access_by(*launch.threads[first + lane], p, 8, AccessKind::kSharedStore, own->site);
      std::memcpy(p, &own->tile[row][col], 8);
    }
  }
}

struct MmaOperand {
  const float (*a)[16];
  const float (*b)[16];
  const float (*c)[16];
};

void mma_compute(const void* const* operands, void* const* results) {
  launch_state().counters.mma += 2;
  const auto* op = static_cast<const MmaOperand*>(operands[0]);
  Tile d;
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16; ++j) {
      float sum = op->c[i][j];
      for (int k = 0; k < 16; ++k) sum = std::fma(op->a[i][k], op->b[k][j], sum);
      d[i][j] = sum;
    }
  }
  for (int lane = 0; lane < 32; ++lane) std::memcpy(results[lane], d, sizeof(d));
}

}  // namespace

void wmma_load(WmmaOperand operand, bool transposed, bool bf16, const void* address, unsigned ldm,
               float (*tile)[16], Site site) {
  const TileOperand op{operand, transposed, bf16, static_cast<unsigned char*>(const_cast<void*>(address)), ldm,
                       site};
  warp_collective("wmma::load_matrix_sync", site, &op, tile, &load_compute);
}

void wmma_store_accumulator(void* address, unsigned ldm, const float (*tile)[16], Site site) {
  const StoreOperand op{static_cast<unsigned char*>(address), ldm, tile, site};
  warp_collective("wmma::store_matrix_sync", site, &op, nullptr, &store_compute);
}

void wmma_mma(float (*d)[16], const float (*a)[16], const float (*b)[16], const float (*c)[16], Site site) {
  const MmaOperand op{a, b, c};
  warp_collective("wmma::mma_sync", site, &op, d, &mma_compute);
}

}  // namespace emulator
}  // namespace ledit
