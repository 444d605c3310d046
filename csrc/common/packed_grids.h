// Host side of packed sequences for the CPU kernels: the images of a call, read from its (n_images, 2) grids tensor
// (common/packed_images.h describes the layout; ledit/ops/packing.py is the Python side).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <vector>

namespace ledit {

// One image of a packed sequence: its grid and its first token.
struct ImageGrid {
  int64_t h, w, token0;
};

// The images of a packed call from its int32 CPU grids tensor, checked against the sequence's token count. Python
// checks the same values for CPU grids in eager calls; under torch.compile this is the only check.
inline std::vector<ImageGrid> read_packed_grids(const at::Tensor& grids, int64_t tokens, const char* op) {
  TORCH_CHECK(grids.dim() == 2 && grids.size(1) == 2 && grids.size(0) >= 1, op,
              ": packed grids must be (n_images, 2) with n_images >= 1, got ", grids.sizes());
  TORCH_CHECK(grids.scalar_type() == at::kInt, op, ": packed grids must be int32, got ", grids.scalar_type());
  TORCH_CHECK(grids.device().is_cpu(), op, ": the CPU kernel reads the packed grids on the CPU, got ",
              grids.device());
  const at::Tensor contiguous = grids.contiguous();
  const int32_t* sides = contiguous.const_data_ptr<int32_t>();
  std::vector<ImageGrid> images(contiguous.size(0));
  int64_t token0 = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    const int64_t h = sides[2 * i], w = sides[2 * i + 1];
    TORCH_CHECK(h >= 1 && w >= 1, op, ": packed image ", i, " has grid (", h, ", ", w,
                "); every h and w must be >= 1");
    images[i] = {h, w, token0};
    token0 += h * w;
  }
  TORCH_CHECK(token0 == tokens, op, ": the packed grids hold ", token0, " tokens but the sequence has ", tokens,
              "; the images' tokens must fill it exactly, back to back");
  return images;
}

}  // namespace ledit
