// Warp-level tile primitives of the scan_attention CUDA kernels, written on the device layer (common/device.h), so
// the same source runs on a GPU and on the CPU executor: the shared-memory tile layout, asynchronous tile copies from a
// strided (B, N, H, D) tensor, mma.sync m16n8k16 products with operands in registers or read by ldmatrix, the walk
// over the tiles a scan does not mask, and the grid coordinates behind the per-element mask of partial tile pairs.
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16"), lane = 4 g + t: an m16 x k16 A fragment is four
// registers of two 16-bit values, (row g, cols 2t, 2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..); a k16 x n8 B
// fragment is two, (rows 2t, 2t+1, col g), (rows 2t+8.., col g); an m16 x n8 fp32 accumulator is four floats,
// (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1). Two accumulators side by side (n16), rounded to 16 bits, are exactly
// one A fragment: that is how P = softmax(S) feeds P V, and dS feeds dS^T Q, without leaving registers.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "common/device.h"
#include "scan_attention/cuda_kernel_shapes.h"

namespace ledit {
namespace scan_attention {
namespace cuda {

namespace dev = ::ledit::device;

#define LEDIT_TILE_INLINE __device__ __forceinline__
// Loops over fragment arrays must unroll: a register array indexed at run time moves to local memory.
#if defined(__CUDACC__)
#define LEDIT_UNROLL _Pragma("unroll")
#else
#define LEDIT_UNROLL
#endif

constexpr int kThreads = 32 * kWarps;

// A kRows x kCols 16-bit tile in shared memory. Rows are padded to an odd number of 16-byte chunks, so the 8 rows an
// ldmatrix phase reads, and the 8 rows of accumulator pairs a warp stores, start in 8 different 4-bank groups: no
// bank conflicts, at a cost of one chunk per row (80 -> 88 columns).
template <typename T, int kRows, int kCols>
struct SmemTile {
  static constexpr int kStride = smem_stride(kCols);
  static constexpr int kElements = kRows * kStride;
  static constexpr size_t kBytes = sizeof(T) * kElements;
  dev::Shared<T> base;
  LEDIT_TILE_INLINE dev::Shared<T> at(int row, int col) const { return base + row * kStride + col; }
};

// The tokens of one 2D tile: position i (row-major inside the tile rectangle) is grid point (row0 + i / cols,
// col0 + i % cols). The division is a float reciprocal: (i + 0.5) / cols stays at least 1/256 away from an integer
// for i, cols <= 256, far above float rounding, so truncation is exact.
struct TileTokens {
  TileRect rect;
  int w;
  float inv_cols;
  LEDIT_TILE_INLINE TileTokens(const TileRect& r, int grid_w) : rect(r), w(grid_w), inv_cols(1.f / r.cols) {}
  LEDIT_TILE_INLINE int size() const { return rect.size(); }
  LEDIT_TILE_INLINE int row_in_tile(int i) const { return static_cast<int>((static_cast<float>(i) + 0.5f) * inv_cols); }
  LEDIT_TILE_INLINE int token(int i) const {
    const int r = row_in_tile(i);
    return (rect.row0 + r) * w + rect.col0 + i - r * rect.cols;
  }
};

// Grid coordinates of one position of a tile; positions past the tile's tokens have row > rect.row1().
struct GridPoint {
  int row, col;
};

LEDIT_TILE_INLINE GridPoint grid_point(const TileTokens& tokens, int i) {
  const int r = tokens.row_in_tile(i);
  return {tokens.rect.row0 + r, tokens.rect.col0 + i - r * tokens.rect.cols};
}

// The next position of a tile after p, without division or branch.
LEDIT_TILE_INLINE GridPoint next_point(GridPoint p, const TileRect& rect) {
  const bool wrap = p.col == rect.col1();
  return {wrap ? p.row + 1 : p.row, wrap ? rect.col0 : p.col + 1};
}

// Calls f(std::integral_constant<Scan, s>{}) for the call's scan s, so a predicate evaluated per element in an
// unrolled loop is specialised for one scan instead of switching on it every time.
template <typename F>
LEDIT_TILE_INLINE void with_scan(Scan scan, F&& f) {
  switch (scan) {
    case Scan::kFull:
      return f(std::integral_constant<Scan, Scan::kFull>{});
    case Scan::kRaster:
      return f(std::integral_constant<Scan, Scan::kRaster>{});
    case Scan::kLowerRight:
      return f(std::integral_constant<Scan, Scan::kLowerRight>{});
    case Scan::kNeighborhood:
      return f(std::integral_constant<Scan, Scan::kNeighborhood>{});
    default:
      return f(std::integral_constant<Scan, Scan::kCorner>{});
  }
}

// Which of a thread's accumulator elements the scan lets through: bit 2n + e of bits[m][h] for row (m, h) (m16
// block m of the warp's rows from row0, half h: row g or g + 8) and column 8n + 2t + e, set when the column is one of
// the tile's tokens and the scan shows it to the row (rows_are_queries: rows are queries and columns keys, else the
// reverse). Computed before the product it masks, so the accumulators are not live meanwhile; the grid points come
// from one reciprocal multiply per column pair, not a division per element.
template <int kM, int kN, Scan kScan>
LEDIT_TILE_INLINE void visibility_bits(uint32_t (&bits)[kM][2], const TileTokens& rows, int row0,
                                       const TileTokens& cols, bool rows_are_queries, int w, int lane) {
  static_assert(2 * kN <= 32, "one bit per column of a thread");
  GridPoint row_point[kM][2];
  LEDIT_UNROLL
  for (int m = 0; m < kM; ++m) {
    LEDIT_UNROLL
    for (int h = 0; h < 2; ++h) {
      row_point[m][h] = grid_point(rows, row0 + 16 * m + 8 * h + lane / 4);
      bits[m][h] = 0;
    }
  }
  LEDIT_UNROLL
  for (int n = 0; n < kN; ++n) {
    const int first = 8 * n + 2 * (lane % 4);
    const GridPoint col = grid_point(cols, first);
    const GridPoint pair[2] = {col, next_point(col, cols.rect)};
    LEDIT_UNROLL
    for (int e = 0; e < 2; ++e) {
      const bool real = first + e < cols.size();
      LEDIT_UNROLL
      for (int m = 0; m < kM; ++m) {
        LEDIT_UNROLL
        for (int h = 0; h < 2; ++h) {
          const GridPoint& q = rows_are_queries ? row_point[m][h] : pair[e];
          const GridPoint& k = rows_are_queries ? pair[e] : row_point[m][h];
          if (real && scan_visible(kScan, q.row, q.col, k.row, k.col, w)) bits[m][h] |= 1u << (2 * n + e);
        }
      }
    }
  }
}

// Sets the accumulator elements whose visibility bit is clear to -inf.
template <int kM, int kN>
LEDIT_TILE_INLINE void apply_mask(float (&acc)[kM][kN][4], const uint32_t (&bits)[kM][2]) {
  LEDIT_UNROLL
  for (int m = 0; m < kM; ++m) {
    LEDIT_UNROLL
    for (int n = 0; n < kN; ++n) {
      LEDIT_UNROLL
      for (int i = 0; i < 4; ++i) {
        if (!((bits[m][i / 2] >> (2 * n + i % 2)) & 1u)) acc[m][n][i] = -INFINITY;
      }
    }
  }
}

// Calls f(row, col) for each 16-byte chunk (col a multiple of 8) of a kRows x kCols 16-bit tile that thread `first`
// of kCount threads handles. Consecutive threads take consecutive chunks in shared-memory order, so the 8 lanes of a
// 16-byte access phase hit 8 different 4-bank groups and each row's chunks stay contiguous in global memory. When
// rows are not a multiple of 8 chunks (80 columns: 10 chunks in 11), the padding chunk keeps its slot in that order
// and its thread idles: otherwise a phase spanning two rows would put two chunks in one bank group.
template <int kRows, int kCols, int kCount, typename F>
LEDIT_TILE_INLINE void for_each_chunk(int first, F&& f) {
  constexpr int kChunks = kCols / 8;
  constexpr int kSlotsPerRow = kChunks % 8 == 0 ? kChunks : smem_stride(kCols) / 8;
  constexpr int kSlots = kRows * kSlotsPerRow;
  LEDIT_UNROLL
  for (int i = 0; i < (kSlots + kCount - 1) / kCount; ++i) {
    const int slot = first + i * kCount;
    if (kSlots % kCount != 0 && slot >= kSlots) break;
    const int row = slot / kSlotsPerRow, chunk = slot % kSlotsPerRow;
    if (chunk < kChunks) f(row, 8 * chunk);
  }
}

// Where a tensor's rows of one head start: element (b, 0, h, 0), and the stride between tokens.
template <typename T>
struct HeadRows {
  dev::Global<const T> head;
  int token_stride;
};

// cp.async copies of the same tile of kCount tensors (K and V, or Q and dO): row i of tiles[j] <- token
// tokens.token(i) of rows[j], its `dim` real columns; rows past the tile and columns past dim (72 of an 80-column
// tile) are zero-filled. Each chunk's token is found once for all tensors. Every thread of the block takes part; the
// caller commits the group.
template <int kCount, typename T, int kRows, int kCols>
LEDIT_TILE_INLINE void copy_tiles_async(const SmemTile<T, kRows, kCols> (&tiles)[kCount],
                                        const HeadRows<T> (&rows)[kCount], const TileTokens& tokens, int dim,
                                        int thread) {
  for_each_chunk<kRows, kCols, kThreads>(thread, [&](int row, int col) {
    const bool real = row < tokens.size() && col < dim;
    const int64_t token = tokens.token(real ? row : 0);
    LEDIT_UNROLL
    for (int j = 0; j < kCount; ++j) {
      dev::cp_async_16(tiles[j].at(row, col), rows[j].head + (token * rows[j].token_stride + col), real);
    }
  });
}

// ---- fragments -------------------------------------------------------------------------------------------------

// A fragment (m16 x k16) at (row0, col0) of a row-major tile.
template <typename T, int R, int C>
LEDIT_TILE_INLINE void load_a(uint32_t (&a)[4], const SmemTile<T, R, C>& x, int row0, int col0, int lane) {
  dev::ldmatrix<4>(a, x.at(row0 + lane % 16, col0 + 8 * (lane / 16)));
}

// A fragment (m16 x k16) at (row0, col0) of A = X^T, X a row-major tile (A's rows are X's columns).
template <typename T, int R, int C>
LEDIT_TILE_INLINE void load_a_of_transpose(uint32_t (&a)[4], const SmemTile<T, R, C>& x, int row0, int col0,
                                           int lane) {
  dev::ldmatrix<4, true>(a, x.at(col0 + lane % 8 + 8 * (lane / 16), row0 + 8 * ((lane / 8) % 2)));
}

template <typename T>
LEDIT_TILE_INLINE void mma_pair(float (&c0)[4], float (&c1)[4], const uint32_t (&a)[4], const uint32_t (&b)[4]) {
  const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
  dev::mma_m16n8k16<T>(c0, a, b0);
  dev::mma_m16n8k16<T>(c1, a, b1);
}

// acc[m][n] += A_m B_n over kSteps k16 steps for every m and n: A's fragments from a_fragment(m, step, a)
// (registers or ldmatrix), B's from load_b(b, step, n, matrices): n8 blocks n and n + 1 in one ldmatrix.x4 (or n
// alone with .x2 when kN is odd), each B fragment serving all kM row blocks.
template <typename T, int kM, int kN, int kSteps, typename AFragment, typename LoadB>
LEDIT_TILE_INLINE void mma_blocks(float (&acc)[kM][kN][4], AFragment&& a_fragment, LoadB&& load_b) {
  LEDIT_UNROLL
  for (int step = 0; step < kSteps; ++step) {
    uint32_t a[kM][4];
    LEDIT_UNROLL
    for (int m = 0; m < kM; ++m) a_fragment(m, step, a[m]);
    LEDIT_UNROLL
    for (int n = 0; n + 1 < kN; n += 2) {
      uint32_t b[4];
      load_b(b, step, n);
      LEDIT_UNROLL
      for (int m = 0; m < kM; ++m) mma_pair<T>(acc[m][n], acc[m][n + 1], a[m], b);
    }
    if constexpr (kN % 2 == 1) {
      uint32_t b[2];
      load_b(b, step, kN - 1);
      LEDIT_UNROLL
      for (int m = 0; m < kM; ++m) dev::mma_m16n8k16<T>(acc[m][kN - 1], a[m], b);
    }
  }
}

// acc[m][n] += A_m (X^T)_n: X row-major [n][k] in shared memory (K in S = Q K^T), rows from n0, columns from k0.
template <typename T, int kM, int kN, int kSteps, typename AFragment, int R, int C>
LEDIT_TILE_INLINE void mma_a_xt(float (&acc)[kM][kN][4], AFragment&& a_fragment, const SmemTile<T, R, C>& x, int n0,
                                int k0, int lane) {
  mma_blocks<T, kM, kN, kSteps>(acc, a_fragment, [&](auto& b, int step, int n) {
    dev::ldmatrix<sizeof(b) / 4>(b, x.at(n0 + 8 * n + lane % 8 + 8 * (lane / 16), k0 + 16 * step + 8 * ((lane / 8) % 2)));
  });
}

// acc[m][n] += A_m X_n: X row-major [k][n] in shared memory (V in O = P V), rows from k0, columns from n0.
template <typename T, int kM, int kN, int kSteps, typename AFragment, int R, int C>
LEDIT_TILE_INLINE void mma_a_x(float (&acc)[kM][kN][4], AFragment&& a_fragment, const SmemTile<T, R, C>& x, int k0,
                               int n0, int lane) {
  mma_blocks<T, kM, kN, kSteps>(acc, a_fragment, [&](auto& b, int step, int n) {
    dev::ldmatrix<sizeof(b) / 4, true>(
        b, x.at(k0 + 16 * step + lane % 8 + 8 * ((lane / 8) % 2), n0 + 8 * n + 8 * (lane / 16)));
  });
}

// The A fragments of an fp32 accumulator block rounded to T: k16 step j is accumulator blocks 2j and 2j + 1.
template <typename T, int kM, int kN>
LEDIT_TILE_INLINE void to_a_fragments(uint32_t (&a)[kM][kN / 2][4], const float (&acc)[kM][kN][4]) {
  LEDIT_UNROLL
  for (int m = 0; m < kM; ++m) {
    LEDIT_UNROLL
    for (int j = 0; j < kN / 2; ++j) {
      a[m][j][0] = dev::pack2<T>(acc[m][2 * j][0], acc[m][2 * j][1]);
      a[m][j][1] = dev::pack2<T>(acc[m][2 * j][2], acc[m][2 * j][3]);
      a[m][j][2] = dev::pack2<T>(acc[m][2 * j + 1][0], acc[m][2 * j + 1][1]);
      a[m][j][3] = dev::pack2<T>(acc[m][2 * j + 1][2], acc[m][2 * j + 1][3]);
    }
  }
}

template <int kM, int kN>
LEDIT_TILE_INLINE void zero(float (&acc)[kM][kN][4]) {
  LEDIT_UNROLL
  for (int m = 0; m < kM; ++m)
    LEDIT_UNROLL
    for (int n = 0; n < kN; ++n)
      LEDIT_UNROLL
      for (int i = 0; i < 4; ++i) acc[m][n][i] = 0.f;
}

// Writes a warp's accumulator rows (kM m16 blocks from row0, kN n8 blocks; row (m, h) times scale[m][h]) as T to
// the tokens of a tile, columns [col0, col0 + 8 kN) up to dim: through the warp's own rows of `staging` (conflict-free
// 4-byte stores), then 16 bytes per global store (for_each_chunk's order).
template <typename T, int kM, int kN, int R, int C>
LEDIT_TILE_INLINE void store_rows(const float (&acc)[kM][kN][4], const float (&scale)[kM][2],
                                  const SmemTile<T, R, C>& staging, int row0, dev::Global<T> head,
                                  int64_t token_stride, const TileTokens& tokens, int col0, int dim, int lane) {
  static_assert(C >= 8 * kN, "the staging tile is narrower than the rows");
  LEDIT_UNROLL
  for (int m = 0; m < kM; ++m) {
    LEDIT_UNROLL
    for (int n = 0; n < kN; ++n) {
      LEDIT_UNROLL
      for (int h = 0; h < 2; ++h) {
        const uint32_t pair = dev::pack2<T>(acc[m][n][2 * h] * scale[m][h], acc[m][n][2 * h + 1] * scale[m][h]);
        dev::st_shared(dev::cast<uint32_t>(staging.at(row0 + 16 * m + 8 * h + lane / 4, 8 * n + 2 * (lane % 4))),
                       pair);
      }
    }
  }
  dev::sync_warp();
  for_each_chunk<16 * kM, 8 * kN, 32>(lane, [&](int r, int col) {
    const int row = row0 + r;
    const bool real = row < tokens.size() && col0 + col < dim;
    dev::st_global_if(real, dev::cast<uint4>(head + tokens.token(real ? row : 0) * token_stride + col0 + col),
                      dev::ld_shared(dev::cast<uint4>(staging.at(row, col))));
  });
}

// ---- the walk over visible tiles -------------------------------------------------------------------------------

// Calls body(rect, visibility, stage) for every tile of `others` that the scan does not mask against `own` (a query
// tile against key tiles, or a key tile against query tiles), in order. issue(rect, stage) starts the cp.async
// copies of a tile into buffer `stage`; with double_buffer the next visible tile's copies run while body works on
// the current one (stages 0 and 1), else each tile is copied into stage 0 and waited for. The caller has issued
// its own tile's copies, uncommitted: they land with the first group.
template <typename Issue, typename Body>
LEDIT_TILE_INLINE void for_each_visible_tile(const TileGrid& others, const TileRect& own, bool own_is_query,
                                             Scan scan, int w, bool double_buffer, Issue&& issue, Body&& body) {
  // Tiles in row-major order as (tile row, tile column), so no tile's rectangle needs a division.
  struct Cursor {
    int index, ti, tj;
  };
  auto visibility = [&](const Cursor& c) {
    const TileRect other = others.rect_at(c.ti, c.tj);
    return own_is_query ? classify_tiles(scan, own, other, w) : classify_tiles(scan, other, own, w);
  };
  auto next_visible = [&](Cursor c) {
    while (c.index < others.num_tiles() && visibility(c) == TileVisibility::kMasked) {
      ++c.index;
      if (++c.tj == others.tiles_w) c.tj = 0, ++c.ti;
    }
    return c;
  };
  auto after = [&](Cursor c) {
    ++c.index;
    if (++c.tj == others.tiles_w) c.tj = 0, ++c.ti;
    return next_visible(c);
  };
  Cursor tile = next_visible({0, 0, 0});
  // Double-buffered, the first tile's copies go with the caller's own; single-buffered, each tile's are issued
  // at the top of its own iteration.
  if (double_buffer && tile.index < others.num_tiles()) issue(others.rect_at(tile.ti, tile.tj), 0);
  dev::cp_async_commit();
  for (int stage = 0; tile.index < others.num_tiles();) {
    const Cursor next = after(tile);
    const Cursor load = double_buffer ? next : tile;
    if (load.index < others.num_tiles()) issue(others.rect_at(load.ti, load.tj), double_buffer ? stage ^ 1 : stage);
    dev::cp_async_commit();
    if (double_buffer) {
      dev::cp_async_wait<1>();
    } else {
      dev::cp_async_wait<0>();
    }
    dev::sync_threads();
    body(others.rect_at(tile.ti, tile.tj), visibility(tile), stage);
    dev::sync_threads();  // every warp is done with this stage before it is refilled
    if (double_buffer) stage ^= 1;
    tile = next;
  }
  dev::cp_async_wait<0>();
}

}  // namespace cuda
}  // namespace scan_attention
}  // namespace ledit
