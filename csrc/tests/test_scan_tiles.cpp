// Unit test of csrc/scan_attention/scan_tiles.h (run by ctest): the tiling covers every token exactly once, and
// the tile-pair classification agrees with the per-element scan_visible() predicate on every pair, for every scan,
// on square, odd and degenerate grids and several tile capacities. Also the packed-sequence index math: the
// shape-only tile bound of scan_tiles.h and segment_of of common/packed_images.h. Plain C++: no torch needed.
#include <cstdio>
#include <vector>

#include "common/packed_images.h"
#include "scan_attention/scan_tiles.h"

namespace {

int failures = 0;

void expect(bool ok, const char* what, int h, int w, int capacity, int scan) {
  if (!ok) {
    ++failures;
    std::printf("FAIL %s: grid %dx%d capacity %d scan %d\n", what, h, w, capacity, scan);
  }
}

void check_grid(int h, int w, int capacity) {
  const ledit::scan_attention::TileGrid grid = ledit::scan_attention::make_tile_grid(h, w, capacity);
  std::vector<int> seen(h * w, 0);
  for (int t = 0; t < grid.num_tiles(); ++t) {
    const ledit::scan_attention::TileRect rect = grid.rect(t);
    expect(rect.size() > 0 && rect.size() <= capacity, "tile size within capacity", h, w, capacity, -1);
    for (int i = 0; i < rect.size(); ++i) ++seen[grid.token(rect, i)];
  }
  for (int n = 0; n < h * w; ++n) expect(seen[n] == 1, "every token in exactly one tile", h, w, capacity, -1);

  for (int s = 0; s <= static_cast<int>(ledit::Scan::kCorner); ++s) {
    const auto scan = static_cast<ledit::Scan>(s);
    for (int qt = 0; qt < grid.num_tiles(); ++qt) {
      const ledit::scan_attention::TileRect q = grid.rect(qt);
      for (int kt = 0; kt < grid.num_tiles(); ++kt) {
        const ledit::scan_attention::TileRect k = grid.rect(kt);
        int visible = 0;
        for (int i = 0; i < q.size(); ++i) {
          const int qn = grid.token(q, i);
          for (int j = 0; j < k.size(); ++j) {
            const int kn = grid.token(k, j);
            visible += ledit::scan_visible(scan, qn / w, qn % w, kn / w, kn % w, w);
          }
        }
        const ledit::scan_attention::TileVisibility cls = ledit::scan_attention::classify_tiles(scan, q, k, w);
        // Masked and visible must be exact; partial is allowed to be conservative (it still tests each element).
        if (cls == ledit::scan_attention::TileVisibility::kMasked) expect(visible == 0, "masked tile has no visible pair", h, w, capacity, s);
        if (cls == ledit::scan_attention::TileVisibility::kVisible)
          expect(visible == q.size() * k.size(), "visible tile has every pair visible", h, w, capacity, s);
        if (qt == kt) expect(cls != ledit::scan_attention::TileVisibility::kMasked, "a tile sees itself", h, w, capacity, s);
      }
    }
  }
}

// max_packed_tiles(tokens, images, capacity) bounds the tiles of every image (so of every pack of them).
void check_packed_tile_bound() {
  for (int capacity : {16, 32, 64, 128, 256})
    for (int h = 1; h <= 120; ++h)
      for (int w = 1; w <= 120; ++w) {
        const int tiles = ledit::scan_attention::make_tile_grid(h, w, capacity).num_tiles();
        expect(tiles <= ledit::scan_attention::max_packed_tiles(int64_t{h} * w, 1, capacity),
               "max_packed_tiles bounds an image's tiles", h, w, capacity, -1);
      }
}

// segment_of finds the segment of every unit, skipping empty segments, and n past the end.
void check_segment_of() {
  const int32_t offsets[] = {0, 3, 3, 4, 9, 9};  // segments of 3, 0, 1, 5, 0 units
  const int expected[] = {0, 0, 0, 2, 3, 3, 3, 3, 3, 5, 5};
  for (int unit = 0; unit < 11; ++unit)
    expect(ledit::segment_of(offsets, 5, unit) == expected[unit], "segment_of", unit, 0, 0, -1);
}

}  // namespace

int main() {
  check_packed_tile_bound();
  check_segment_of();
  const int grids[][2] = {{1, 1}, {3, 5}, {7, 7}, {5, 7}, {16, 16}, {24, 40}, {1, 37}, {37, 1}, {13, 3}, {9, 33}};
  for (const auto& g : grids)
    for (int capacity : {16, 32, 64, 128}) check_grid(g[0], g[1], capacity);
  // The work 2D tiles skip on the 64 x 64 grid of LEDiT-XL/2 at 1024^2 (documented in docs/kernels-attention.md).
  const ledit::scan_attention::TileGrid grid = ledit::scan_attention::make_tile_grid(64, 64, 64);
  for (int s = 0; s <= static_cast<int>(ledit::Scan::kCorner); ++s) {
    int counts[3] = {0, 0, 0};
    for (int qt = 0; qt < grid.num_tiles(); ++qt)
      for (int kt = 0; kt < grid.num_tiles(); ++kt)
        ++counts[static_cast<int>(ledit::scan_attention::classify_tiles(static_cast<ledit::Scan>(s), grid.rect(qt), grid.rect(kt), 64))];
    const double total = grid.num_tiles() * grid.num_tiles();
    std::printf("64x64 grid, 8x8 tiles, scan %d: skipped %.1f%%, partial %.1f%%, mask-free %.1f%%\n", s,
                100 * counts[0] / total, 100 * counts[1] / total, 100 * counts[2] / total);
  }
  std::printf(failures ? "%d FAILURES\n" : "all tile checks passed\n", failures);
  return failures ? 1 : 0;
}
