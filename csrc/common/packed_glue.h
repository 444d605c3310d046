// Host side of a packed call to GPU kernels (common/packed_images.h describes the layout): the grids' shape
// checked and the prefix-sum offsets computed with tensor ops on the grids' device, so nothing is read on the host
// and a launch is sized from shapes alone. The grids' values are the caller's contract, as flash-attn's cu_seqlens
// (ledit/ops/packing.py checks them for CPU grids in eager calls).
#pragma once

#include <ATen/ATen.h>

namespace ledit {

// The (n_images, 2) int32 grids of a packed call on x's device, x being (1, total_tokens, ...).
inline at::Tensor checked_device_grids(const at::Tensor& grids, const at::Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() >= 2 && x.size(0) == 1, op, ": a packed sequence is (1, total_tokens, ...), got ", x.sizes());
  TORCH_CHECK(grids.dim() == 2 && grids.size(1) == 2 && grids.size(0) >= 1, op,
              ": packed grids must be (n_images, 2) with n_images >= 1, got ", grids.sizes());
  TORCH_CHECK(grids.scalar_type() == at::kInt, op, ": packed grids must be int32, got ", grids.scalar_type());
  TORCH_CHECK(grids.device() == x.device(), op, ": packed grids are on ", grids.device(), " but the sequence is on ",
              x.device(), "; put them on its device");
  return grids.contiguous();
}

// (n + 1,) int32 exclusive prefix sums of n per-image counts, ending with their total (packing.py: prefix_offsets).
inline at::Tensor prefix_offsets(const at::Tensor& counts) {
  return at::constant_pad_nd(counts.cumsum(0, at::kInt), {1, 0});
}

// The tiles of tile_rows x tile_cols tokens that cover each image: ceil(h / tile_rows) * ceil(w / tile_cols).
inline at::Tensor tiles_per_image(const at::Tensor& grids, int tile_rows, int tile_cols) {
  const at::Tensor h = grids.select(1, 0), w = grids.select(1, 1);
  return (h + (tile_rows - 1)).div(tile_rows, "floor") * (w + (tile_cols - 1)).div(tile_cols, "floor");
}

// Image i's first token (flash-attn's cu_seqlens), then the total.
inline at::Tensor token_offsets(const at::Tensor& grids) { return prefix_offsets(grids.select(1, 0) * grids.select(1, 1)); }

}  // namespace ledit
