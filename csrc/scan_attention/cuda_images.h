// Where a scan_attention CUDA block's tile lies: in one image of a batch of B images of one grid (ImageBatch: the
// launch grid's y is the batch row), or in one image of a packed sequence (PackedImages, common/packed_images.h: the
// images' tiles are laid end to end along the launch grid's x, and a block finds its image by binary search over
// unit_offsets). The kernels take the policy as a template parameter: ImageBatch's fields are the call's constants,
// so its instantiations compile to the kernels of a batched call, and only packed instantiations pay for the search.
#pragma once

#include <cstdint>

#include "common/packed_images.h"
#include "scan_attention/cuda_tile_math.h"

namespace ledit {
namespace scan_attention {
namespace cuda {

// One block's image: its grid, the batch row and first token its rows start at, and the block's tile in it.
struct ImageSite {
  bool real;  // false: past the last image's tiles (a packed launch covers a bound that depends on shapes only)
  int64_t batch, token0;
  int h, w, tile;
};

// Element offset of the image's first token at `head` in a (B, N, H, D) tensor of layout x.
LEDIT_TILE_INLINE int64_t first_row(const Layout& x, const ImageSite& site, int64_t head) {
  return site.batch * x.batch + head * x.head + site.token0 * x.token;
}

// B images of one (h, w) grid; unit = the block's tile, the launch grid's y = the image.
struct ImageBatch {
  int h, w;
  LEDIT_TILE_INLINE ImageSite locate(int unit) const { return {true, dev::block_idx().y, 0, h, w, unit}; }
  // The call's tile grid of `capacity` tokens, which KernelParams already holds.
  LEDIT_TILE_INLINE TileGrid tiles(const TileGrid& call_tiles, const ImageSite&, int) const { return call_tiles; }
};

// A packed sequence in batch row 0: image i's tiles of the kernel's unit size, row-major over its tile grid, are the
// units [unit_offsets[i], unit_offsets[i + 1]).
struct PackedImages {
  dev::Global<const int32_t> grids, token_offsets, unit_offsets;
  int count;
  LEDIT_TILE_INLINE ImageSite locate(int unit) const {
    const int i = segment_of_at([this](int j) { return dev::ld_global(unit_offsets + j); }, count, unit);
    if (i == count) return {false, 0, 0, 1, 1, 0};
    return {true, 0, dev::ld_global(token_offsets + i), dev::ld_global(grids + 2 * i),
            dev::ld_global(grids + (2 * i + 1)), unit - dev::ld_global(unit_offsets + i)};
  }
  // The image's own tile grid of `capacity` tokens (the same make_tile_grid a batched call of that grid uses).
  LEDIT_TILE_INLINE TileGrid tiles(const TileGrid&, const ImageSite& site, int capacity) const {
    return make_tile_grid(site.h, site.w, capacity);
  }
};

}  // namespace cuda
}  // namespace scan_attention
}  // namespace ledit
