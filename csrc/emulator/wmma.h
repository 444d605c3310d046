// The executor's whole-warp model of WMMA 16x16x16 on shared memory (see common/device_wmma.h).
#pragma once

#include <stdexcept>

#include "emulator/device_emulated.h"

namespace ledit {
namespace emulator {

enum class WmmaOperand : uint8_t { kA, kB, kAccumulator };

// Hooks in wmma.cpp: warp collectives that fill or read every lane's copy of the tile.
void wmma_load(WmmaOperand operand, bool transposed, bool bf16, const void* address, unsigned ldm,
               float (*tile)[16], Site site);
void wmma_store_accumulator(void* address, unsigned ldm, const float (*tile)[16], Site site);
void wmma_mma(float (*d)[16], const float (*a)[16], const float (*b)[16], const float (*c)[16], Site site);

namespace api {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the executor models 16x16x16 WMMA fragments only");
  float tile[16][16];  // the whole tile, in logical (row, column) order, as every lane of the warp holds it
};

template <typename Use, typename T, typename Layout, typename P>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, SharedPtr<P> p, unsigned ldm,
                      Site site = Site::here()) {
  static_assert(sizeof(T) == 2 && std::is_same_v<std::remove_const_t<P>, T>, "16-bit operand tiles");
  constexpr WmmaOperand operand = std::is_same_v<Use, matrix_a> ? WmmaOperand::kA : WmmaOperand::kB;
  // Memory rows are A's rows or B's rows (row_major), or their columns (col_major).
  constexpr bool transposed = std::is_same_v<Layout, col_major>;
  wmma_load(operand, transposed, std::is_same_v<T, bfloat16>, p.raw(), ldm, f.tile, site);
}

template <typename P>
void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, SharedPtr<P> p, unsigned ldm, layout_t layout,
                      Site site = Site::here()) {
  static_assert(std::is_same_v<std::remove_const_t<P>, float>, "fp32 accumulator tiles");
  if (layout != mem_row_major) throw std::logic_error("the executor models row-major accumulator tiles only");
  wmma_load(WmmaOperand::kAccumulator, false, false, p.raw(), ldm, f.tile, site);
}

inline void store_matrix_sync(SharedPtr<float> p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout, Site site = Site::here()) {
  if (layout != mem_row_major) throw std::logic_error("the executor models row-major accumulator tiles only");
  wmma_store_accumulator(p.raw(), ldm, f.tile, site);
}

template <typename Use, typename T, typename Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, float value) {
  for (auto& row : f.tile)
    for (float& x : row) x = value;
}

template <typename T, typename LayoutA, typename LayoutB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LayoutA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LayoutB>& b, const fragment<accumulator, 16, 16, 16, float>& c,
              Site site = Site::here()) {
  wmma_mma(d.tile, a.tile, b.tile, c.tile, site);
}

}  // namespace wmma
}  // namespace api
}  // namespace emulator
}  // namespace ledit
