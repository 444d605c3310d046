// Host-side tensor preparation shared by the CPU kernel and the CUDA glue of dwconv_modulate.
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>
#include <optional>
#include <vector>

namespace ledit {
namespace dwconv_modulate {

inline at::Tensor float_contiguous(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

inline at::Tensor optional_float(const std::optional<at::Tensor>& t) {
  return t.has_value() ? float_contiguous(*t) : at::Tensor();
}

inline const float* optional_data(const at::Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; }

// Weights as (k*k, C) fp32, so each tap's weights are contiguous over channels. The tap count is spelled out: with
// C = 0 a -1 in reshape would be ambiguous.
inline at::Tensor taps_by_channel(const at::Tensor& weight) {
  return weight.reshape({weight.size(0), weight.size(-2) * weight.size(-1)}).t().to(at::kFloat).contiguous();
}

// The forward's saved LayerNorm stats: (B, N) fp32, or (0,) without LN (ledit/ops/dwconv_modulate.py: stats_like).
inline at::Tensor empty_stats(const at::Tensor& x, bool norm) {
  const auto shape = norm ? std::vector<int64_t>{x.size(0), x.size(1)} : std::vector<int64_t>{0};
  return at::empty(shape, x.options().dtype(at::kFloat));
}

// shift, scale and gate have one row per image: B of a batch, n_images of a packed sequence (undefined: absent).
inline void check_modulation_rows(int64_t images, const at::Tensor& x,
                                  std::initializer_list<const at::Tensor*> rows) {
  for (const at::Tensor* t : rows) {
    TORCH_CHECK(!t->defined() || (t->dim() == 2 && t->size(0) == images && t->size(1) == x.size(2)),
                "dwconv_modulate: shift, scale and gate must be (", images, ", ", x.size(2),
                "), one row per sample or packed image, got ", t->sizes());
  }
}

inline int kernel_size(const at::Tensor& weight, int64_t dilation) {
  const int k = static_cast<int>(weight.size(-1));
  TORCH_CHECK(weight.dim() == 4 && weight.size(-2) == k && (k == 3 || k == 5 || k == 7),
              "dwconv_modulate: weight must be (C, 1, k, k) with k in {3, 5, 7}");
  TORCH_CHECK(dilation == 1 || dilation == 2, "dwconv_modulate: dilation must be 1 or 2");
  return k;
}

}  // namespace dwconv_modulate
}  // namespace ledit
