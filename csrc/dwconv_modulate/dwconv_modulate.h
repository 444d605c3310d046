// Index math and per-element formulas of dwconv_modulate, shared by the CPU (.cpp) and CUDA (.cu) kernels so the
// CPU tests exercise the same code the GPU runs. Python twin: ledit/ops/dwconv_modulate.py (dwconv_modulate_reference).
//
//   u = LN(x) (no affine, eps 1e-6) or x;  y = u * (1 + scale) + shift;  z = DWConv_{k x k, dilation}(y) + bias;
//   out = residual + gate * z.
//
// Tokens are in raster order on an (h, w) grid, channels last. Tap t of a kernel row (or column) reads the source
// position pos + (t - k/2) * dilation; sources outside the grid are the conv's zero padding.
#pragma once

#if !defined(__CUDACC__)
#include <cmath>
#endif
#include "common/host_device.h"

namespace ledit {
namespace dwconv_modulate {

constexpr float kLayerNormEps = 1e-6f;

LEDIT_HOST_DEVICE int tap_offset(int tap, int k, int dilation) { return (tap - k / 2) * dilation; }

LEDIT_HOST_DEVICE float layer_norm_rstd(float variance) {
#if defined(__CUDACC__)
  return rsqrtf(variance + kLayerNormEps);
#else
  return 1.0f / sqrtf(variance + kLayerNormEps);
#endif
}

// LayerNorm backward for one token (no affine): du is dL/du, mean_du and mean_du_u are its channel means of du
// and du * u. T is float, or a vector of channels (the CPU kernel's 16-float Vec16).
template <typename T>
LEDIT_HOST_DEVICE T layer_norm_backward(T du, T u, float mean_du, float mean_du_u, float rstd) {
  return rstd * (du - mean_du - u * mean_du_u);
}

// The backward returns per-sample fp32 sums over tokens, shape (B, k*k + 3, C), from which ledit/ops/dwconv_modulate.py
// forms the parameter gradients (every backend shares that step): with g = dout (the gradient of out),
//   rows [0, k*k): G_t = sum_n g[n] * y[n + offset(t)]   (dweight_t = sum_b gate_b * G_t; dgate gets w_t * G_t)
//   row k*k:       S = sum_n g[n]                         (dbias = sum_b gate_b * S; dgate gets bias * S)
//   row k*k + 1:   sum_n e[n], e = sum_t w_t * g[n - offset(t)]  (dshift = gate * this)
//   row k*k + 2:   sum_n e[n] * u[n]                             (dscale = gate * this)
LEDIT_HOST_DEVICE int sum_row_dout(int k) { return k * k; }
LEDIT_HOST_DEVICE int sum_row_e(int k) { return k * k + 1; }
LEDIT_HOST_DEVICE int sum_row_e_u(int k) { return k * k + 2; }
LEDIT_HOST_DEVICE int sum_rows(int k) { return k * k + 3; }

// Rows [first, last) of the grid that one work item (a CPU task or a CUDA CTA) owns; every item gets
// rows_per_item rows except the last.
struct RowBlock {
  int first;
  int last;
};

LEDIT_HOST_DEVICE RowBlock row_block(int item, int rows_per_item, int h) {
  const int first = item * rows_per_item;
  const int last = first + rows_per_item;
  return {first, last < h ? last : h};
}

}  // namespace dwconv_modulate
}  // namespace ledit
