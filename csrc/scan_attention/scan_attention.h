// Host-side declarations shared by the scan_attention kernels (CPU .cpp and CUDA .cu): argument parsing and the
// checks every kernel relies on. Python validates user input first (ledit/ops/scan_attention.py); these checks
// guard direct torch.ops.ledit calls.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string_view>

#include "common/scan_mask.h"

namespace ledit {
namespace scan_attention {

inline Scan parse_scan(std::string_view scan) {
  if (scan == "full") return Scan::kFull;
  if (scan == "raster") return Scan::kRaster;
  if (scan == "lower_right") return Scan::kLowerRight;
  if (scan == "neighborhood") return Scan::kNeighborhood;
  TORCH_CHECK(scan == "corner", "scan_attention: unknown scan '", scan,
              "'; valid scans: full, raster, lower_right, neighborhood, corner");
  return Scan::kCorner;
}

// Checks q/k/v as the kernels need them; returns D.
inline int64_t check_qkv_tensors(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 4, "scan_attention: q must be (B, N, H, D), got ", q.sizes());
  TORCH_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes(), "scan_attention: q, k, v shapes differ: ",
              q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "scan_attention: q, k, v dtypes differ");
  const int64_t d = q.size(3);
  TORCH_CHECK(d % 8 == 0 && d >= 8 && d <= 256, "scan_attention: head dim D=", d,
              " must be a multiple of 8 in [8, 256]");
  return d;
}

// Checks q/k/v and the (h, w) grid of a batched call; returns D.
inline int64_t check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t h, int64_t w) {
  const int64_t d = check_qkv_tensors(q, k, v);
  TORCH_CHECK(h > 0 && w > 0 && h * w == q.size(1), "scan_attention: grid (", h, ", ", w, ") does not hold N=",
              q.size(1), " tokens");
  return d;
}

}  // namespace scan_attention
}  // namespace ledit
