// WMMA 16x16x16 as whole-warp collectives (common/device_wmma.h). Each lane's accesses are those of the
// instruction nvcc emits: ldmatrix.x4 for a 16-bit tile (lane l gives memory row l % 16, columns 8 (l / 16) ..
// +7), and for an fp32 accumulator four 64-bit accesses per lane at (g + 8 (i % 2), 2t + 8 (i / 2)), g = l / 4,
// t = l % 4: the mma.m16n8k16 accumulator layout of the two 16 x 8 halves.
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
  int element_bytes;
  unsigned char* address;
  unsigned ldm;
  Site site;
};

using Tile = float[16][16];

// Memory (row, column) of accumulator access i of lane.
void accumulator_position(int lane, int i, int& row, int& col) {
  row = lane / 4 + 8 * (i % 2);
  col = 2 * (lane % 4) + 8 * (i / 2);
}

void load_compute(const void* const* operands, void* const* results) {
  Launch& launch = launch_state();
  const int first = current_thread().warp * 32;
  const auto* op = static_cast<const TileOperand*>(operands[0]);
  Tile memory;
  for (int lane = 0; lane < 32; ++lane) {
    const auto* own = static_cast<const TileOperand*>(operands[lane]);
    ThreadState& thread = *launch.threads[first + lane];
    if (own->operand != WmmaOperand::kAccumulator) {
      const int row = lane % 16, col = 8 * (lane / 16);
      const unsigned char* p = own->address + (static_cast<size_t>(row) * own->ldm + col) * 2;
      shared_access_by(thread, p, 16, AccessKind::kLdmatrix, own->site);
      for (int j = 0; j < 8; ++j) {
        uint16_t bits;
        std::memcpy(&bits, p + 2 * j, 2);
        memory[row][col + j] = own->bf16 ? bfloat16_bits_to_float(bits) : half_bits_to_float(bits);
      }
    } else {
      for (int i = 0; i < 4; ++i) {
        int row, col;
        accumulator_position(lane, i, row, col);
        const unsigned char* p = own->address + (static_cast<size_t>(row) * own->ldm + col) * 4;
        shared_access_by(thread, p, 8, AccessKind::kSharedLoad, own->site);
        std::memcpy(&memory[row][col], p, 8);
      }
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
      accumulator_position(lane, i, row, col);
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

void wmma_load(WmmaOperand operand, bool transposed, int element_bytes, bool bf16, const void* address,
               unsigned ldm, float (*tile)[16], Site site) {
  const TileOperand op{operand, transposed, bf16, element_bytes,
                       static_cast<unsigned char*>(const_cast<void*>(address)), ldm, site};
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
