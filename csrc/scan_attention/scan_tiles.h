// 2D tiling of the token grid, shared by the CPU (.cpp) and CUDA (.cu) scan-attention kernels so the CPU tests
// exercise the index and tile-classification math the GPU runs.
//
// A tile is a rectangle of the (h, w) grid holding at most `capacity` tokens. Tiles are enumerated row-major
// over the tile grid; tokens inside a tile row-major. A tile pair (query tile, key tile) is classified once
// from the two rectangles: fully masked pairs are skipped, fully visible pairs run without per-element mask
// tests, and only partial pairs evaluate scan_visible() per element. 1D tiles of the raster order would leave
// almost every `corner` tile partial; 2D tiles skip ~25% of the pairs for `corner` and ~50% for `raster` and
// `lower_right` (see docs/kernels-attention.md).
#pragma once

#include <cstdint>

#include "common/scan_mask.h"

namespace ledit {
namespace scan_attention {

enum class TileVisibility : int { kMasked = 0, kPartial = 1, kVisible = 2 };

struct TileRect {
  int row0, col0, rows, cols;  // top-left token and extent, in grid coordinates
  LEDIT_HOST_DEVICE int size() const { return rows * cols; }
  LEDIT_HOST_DEVICE int row1() const { return row0 + rows - 1; }
  LEDIT_HOST_DEVICE int col1() const { return col0 + cols - 1; }
};

struct TileGrid {
  int h, w;            // token grid
  int tile_h, tile_w;  // full tile extent; tiles on the bottom / right edge may be smaller
  int tiles_h, tiles_w;

  LEDIT_HOST_DEVICE int num_tiles() const { return tiles_h * tiles_w; }

  LEDIT_HOST_DEVICE TileRect rect(int tile) const { return rect_at(tile / tiles_w, tile % tiles_w); }

  // The tile in tile row ti, tile column tj.
  LEDIT_HOST_DEVICE TileRect rect_at(int ti, int tj) const {
    const int r0 = ti * tile_h, c0 = tj * tile_w;
    const int rows = (h - r0 < tile_h) ? h - r0 : tile_h;
    const int cols = (w - c0 < tile_w) ? w - c0 : tile_w;
    return {r0, c0, rows, cols};
  }

  // Raster token index (row * w + col) of the i-th token of a tile (row-major inside the tile).
  LEDIT_HOST_DEVICE int token(const TileRect& r, int i) const {
    return (r.row0 + i / r.cols) * w + r.col0 + i % r.cols;
  }
};

// Tile shape for a grid: about sqrt(capacity) rows (squarish tiles skip the most work), widened to use the
// whole capacity when the grid is narrow or short (a 1 x N grid gets 1 x capacity tiles).
// The largest power of two whose square fits in capacity: the rows of a tile before make_tile_grid fits it to a grid.
LEDIT_HOST_DEVICE int square_tile_side(int capacity) {
  int side = 1;
  while ((side * 2) * (side * 2) <= capacity) side *= 2;
  return side;
}

LEDIT_HOST_DEVICE TileGrid make_tile_grid(int h, int w, int capacity) {
  const int side = square_tile_side(capacity);
  int tile_h = h < side ? h : side;
  const int tile_w = w < capacity / tile_h ? w : capacity / tile_h;
  tile_h = h < capacity / tile_w ? h : capacity / tile_w;
  return {h, w, tile_h, tile_w, (h + tile_h - 1) / tile_h, (w + tile_w - 1) / tile_w};
}

// An upper bound on the tiles of a packed sequence that depends only on its shape (tokens, images), so a GPU launch
// needs no host read of the grids (common/packed_images.h). Per image of n tokens make_tile_grid gives one tile, or
// at most 4n / capacity: along each side either the tile spans the grid, or it is floor(capacity / other side) >=
// half that many tokens long (or `side`, >= half of sqrt(capacity)), and ceil(length / tile) <= 2 * length / tile
// once there are two tiles. Summed over the images: images + 4 * tokens / capacity.
LEDIT_HOST_DEVICE int64_t max_packed_tiles(int64_t tokens, int64_t images, int capacity) {
  return images + 4 * tokens / capacity;
}

// Classify a (query tile, key tile) pair from the two rectangles only.
LEDIT_HOST_DEVICE TileVisibility classify_tiles(Scan scan, const TileRect& q, const TileRect& k, int w) {
  switch (scan) {
    case Scan::kFull:
      return TileVisibility::kVisible;
    case Scan::kRaster: {
      // Visible iff key index <= query index: compare the extreme indices of the two rectangles.
      const int k_first = k.row0 * w + k.col0, k_last = k.row1() * w + k.col1();
      const int q_first = q.row0 * w + q.col0, q_last = q.row1() * w + q.col1();
      if (k_first > q_last) return TileVisibility::kMasked;
      return k_last <= q_first ? TileVisibility::kVisible : TileVisibility::kPartial;
    }
    case Scan::kLowerRight:
    case Scan::kNeighborhood: {
      const bool lr_visible = k.row1() <= q.row0 && k.col1() <= q.col0;
      if (lr_visible) return TileVisibility::kVisible;
      const bool lr_masked = k.row0 > q.row1() || k.col0 > q.col1();
      if (!lr_masked) return TileVisibility::kPartial;
      if (scan == Scan::kLowerRight) return TileVisibility::kMasked;
      // Neighborhood adds keys within one row and one column of the query.
      const bool near = k.row0 <= q.row1() + 1 && k.row1() >= q.row0 - 1 && k.col0 <= q.col1() + 1 &&
                        k.col1() >= q.col0 - 1;
      return near ? TileVisibility::kPartial : TileVisibility::kMasked;
    }
    case Scan::kCorner:
    default: {
      // Masked iff the key is strictly below and strictly right of the query.
      if (k.row0 > q.row1() && k.col0 > q.col1()) return TileVisibility::kMasked;
      return (k.row1() <= q.row0 || k.col1() <= q.col0) ? TileVisibility::kVisible : TileVisibility::kPartial;
    }
  }
}

}  // namespace scan_attention
}  // namespace ledit
