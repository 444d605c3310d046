// torch.library glue of the dwconv_modulate CUDA kernels (dwconv_modulate_cuda.cu). Compiled in every build but
// empty unless setup.py builds the CUDA kernels (LEDIT_WITH_CUDA), and compiled again for the CPU executor
// (LEDIT_EMULATED_DEVICE, ledit._C_emulated); schemas in dwconv_modulate_ops.cpp.
#if defined(LEDIT_WITH_CUDA) || defined(LEDIT_EMULATED_DEVICE)

#include <ATen/ATen.h>

#include "common/device_glue.h"
#include "common/packed_glue.h"
#include "dwconv_modulate/dwconv_modulate.h"
#include "dwconv_modulate/dwconv_modulate_cuda.h"
#include "dwconv_modulate/tensor_prep.h"

namespace ledit {
namespace dwconv_modulate {
namespace cuda {
namespace {

cuda::DType kernel_dtype(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat:
      return cuda::DType::kFloat32;
    case at::kHalf:
      return cuda::DType::kFloat16;
    case at::kBFloat16:
      return cuda::DType::kBFloat16;
    default:
      TORCH_CHECK(false, "dwconv_modulate: x.dtype must be float32, float16 or bfloat16, got ", x.scalar_type());
  }
}

// Limits of the tile kernels' launch that the CUDA runtime would otherwise report as a bare "invalid argument".
void check_launch_limits(const at::Tensor& x, int k, int64_t dilation, bool backward) {
  const int64_t blocks_z = x.size(0) * cuda::channel_tiles(static_cast<int>(x.size(2)));
  TORCH_CHECK(blocks_z <= 65535, "dwconv_modulate (CUDA kernel): B * ceil(C / 32) must be at most 65535 (a CUDA ",
              "launch limit), got B=", x.size(0), ", C=", x.size(2), "; split the batch");
  const int limit = device_glue::max_shared_per_block(x);
  const size_t needed = cuda::shared_memory_bytes(k, static_cast<int>(dilation), backward);
  TORCH_CHECK(needed <= static_cast<size_t>(limit), "dwconv_modulate (CUDA kernel): the ",
              backward ? "backward" : "forward", " with k=", k, ", dilation=", dilation, " needs ", needed,
              " bytes of shared memory per block, this GPU allows ", limit, "; use backend='triton'");
}

// The images of a call: a batch of B images of one (h, w) grid, or a packed sequence (then `packed` points to its
// device offsets, kept alive by the tensors here).
struct Images {
  cuda::Shape shape;
  int64_t count;  // B, or n_images
  at::Tensor grids, token_offsets, unit_offsets;
  cuda::PackedGrids packed_grids;
  const cuda::PackedGrids* packed() const { return grids.defined() ? &packed_grids : nullptr; }
  int64_t ctas_per_image() const {
    return grids.defined() ? packed_grids.max_tiles : cuda::ctas_per_sample(shape.h, shape.w);
  }
};

Images batch_images(const at::Tensor& x, int64_t h, int64_t w, int k, int64_t dilation) {
  TORCH_CHECK(x.dim() == 3 && x.size(1) == h * w, "dwconv_modulate: x must be (B, h*w, C)");
  TORCH_CHECK(x.size(0) * h <= INT32_MAX, "dwconv_modulate (CUDA kernel): B * h must be below 2**31 (the tiles ",
              "index grid rows in 32 bits), got B=", x.size(0), ", h=", h, "; split the batch");
  return {{x.size(0), static_cast<int>(h), static_cast<int>(w), static_cast<int>(x.size(2)), k,
           static_cast<int>(dilation)},
          x.size(0)};
}

// A packed sequence: shape (1, 1, total tokens), and its images' tiles laid end to end (no host read).
Images packed_images(const at::Tensor& x, const at::Tensor& grids_in, int k, int64_t dilation) {
  TORCH_CHECK(x.dim() == 3, "dwconv_modulate: a packed x must be (1, total_tokens, C), got ", x.sizes());
  const at::Tensor grids = checked_device_grids(grids_in, x, "dwconv_modulate");
  Images images{{1, 1, static_cast<int>(x.size(1)), static_cast<int>(x.size(2)), k, static_cast<int>(dilation)},
                grids.size(0),
                grids,
                token_offsets(grids),
                prefix_offsets(tiles_per_image(grids, cuda::kTileRows, cuda::kTileCols))};
  images.packed_grids = {images.grids.const_data_ptr<int32_t>(), images.token_offsets.const_data_ptr<int32_t>(),
                         images.unit_offsets.const_data_ptr<int32_t>(), static_cast<int>(images.count),
                         cuda::max_packed_tiles(x.size(1), images.count)};
  return images;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& x_in, const Images& images,
                                                       const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                                       const at::Tensor& shift, const at::Tensor& scale,
                                                       const std::optional<at::Tensor>& gate,
                                                       const std::optional<at::Tensor>& residual_in, bool norm) {
  const device_glue::DeviceGuard guard(x_in.device());
  check_launch_limits(x_in, images.shape.k, images.shape.dilation, false);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor residual =
      residual_in.has_value() ? residual_in->to(x.scalar_type()).contiguous() : at::Tensor();  // read as x's dtype
  const at::Tensor weight_taps = taps_by_channel(weight), bias_f = optional_float(bias), gate_f = optional_float(gate);
  const at::Tensor shift_f = float_contiguous(shift), scale_f = float_contiguous(scale);
  check_modulation_rows(images.count, x, {&shift_f, &scale_f, &gate_f});
  at::Tensor out = at::empty_like(x), mean = empty_stats(x, norm), rstd = empty_stats(x, norm);
  const cuda::ForwardArgs args{images.shape,
                               x.data_ptr(),
                               norm ? mean.data_ptr<float>() : nullptr,
                               norm ? rstd.data_ptr<float>() : nullptr,
                               weight_taps.data_ptr<float>(),
                               optional_data(bias_f),
                               shift_f.data_ptr<float>(),
                               scale_f.data_ptr<float>(),
                               optional_data(gate_f),
                               residual.defined() ? residual.data_ptr() : nullptr,
                               out.data_ptr()};
  if (x.numel() == 0) return {out, mean.fill_(NAN), rstd.fill_(NAN)};  // no blocks to launch; LN of C = 0 is NaN
  const device_glue::LaunchTensors tensors{
      {"x", &x},         {"mean", &mean},       {"rstd", &rstd},     {"weight", &weight_taps},
      {"bias", &bias_f}, {"shift", &shift_f},   {"scale", &scale_f}, {"gate", &gate_f},
      {"residual", &residual}, {"out", &out}, {"grids", &images.grids}, {"token_offsets", &images.token_offsets},
      {"unit_offsets", &images.unit_offsets}};
  device_glue::check(cuda::launch_forward(args, kernel_dtype(x), images.packed(), device_glue::current_stream()));
  return {out, mean, rstd};
}

// The per-image (B or n_images, k*k + 3, C) sums from the CTAs' rows: a fixed-order sum, so the gradients are
// deterministic. A packed call's rows past its last tile are never written and never read.
at::Tensor image_sums(const at::Tensor& cta_sums, const Images& images) {
  if (images.packed() == nullptr) return cta_sums.sum(1);
  return at::segment_reduce(cta_sums, "sum", /*lengths=*/std::nullopt, /*indices=*/std::nullopt,
                            images.unit_offsets, /*axis=*/0, /*unsafe=*/true);  // unsafe: no host-side checks
}

std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                            const Images& images, const at::Tensor& weight, const at::Tensor& shift,
                                            const at::Tensor& scale, const std::optional<at::Tensor>& gate,
                                            const at::Tensor& mean_in, const at::Tensor& rstd_in, bool norm) {
  const device_glue::DeviceGuard guard(x_in.device());
  const int k = images.shape.k;
  check_launch_limits(x_in, k, images.shape.dilation, true);
  TORCH_CHECK(grad_out_in.sizes() == x_in.sizes(), "dwconv_modulate_bwd: grad_out must have x's shape ", x_in.sizes(),
              ", got ", grad_out_in.sizes());
  TORCH_CHECK(!norm || (mean_in.sizes() == rstd_in.sizes() && mean_in.dim() == 2 &&
                        mean_in.size(0) == x_in.size(0) && mean_in.size(1) == x_in.size(1)),
              "dwconv_modulate_bwd: mean and rstd must be the forward's (B, N) LayerNorm stats, got ",
              mean_in.sizes(), " and ", rstd_in.sizes());
  // The kernels read grad_out as x's dtype and the stats as fp32.
  const at::Tensor x = x_in.contiguous(), grad_out = grad_out_in.to(x_in.scalar_type()).contiguous();
  const at::Tensor mean = float_contiguous(mean_in), rstd = float_contiguous(rstd_in);
  const at::Tensor weight_taps = taps_by_channel(weight), gate_f = optional_float(gate);
  const at::Tensor shift_f = float_contiguous(shift), scale_f = float_contiguous(scale);
  check_modulation_rows(images.count, x, {&shift_f, &scale_f, &gate_f});
  const auto f32 = x.options().dtype(at::kFloat);
  at::Tensor dx = at::empty_like(x);
  at::Tensor du = norm ? at::empty(x.sizes(), f32) : at::Tensor();
  at::Tensor token_channel_sums =
      norm ? at::empty({cuda::channel_tiles(images.shape.channels), x.size(0) * x.size(1), 2}, f32) : at::Tensor();
  at::Tensor cta_sums = images.packed() != nullptr
                            ? at::empty({images.ctas_per_image(), sum_rows(k), x.size(2)}, f32)
                            : at::empty({x.size(0), images.ctas_per_image(), sum_rows(k), x.size(2)}, f32);
  const cuda::BackwardArgs args{images.shape,
                                grad_out.data_ptr(),
                                x.data_ptr(),
                                norm ? mean.data_ptr<float>() : nullptr,
                                norm ? rstd.data_ptr<float>() : nullptr,
                                weight_taps.data_ptr<float>(),
                                shift_f.data_ptr<float>(),
                                scale_f.data_ptr<float>(),
                                optional_data(gate_f),
                                norm ? du.data_ptr<float>() : nullptr,
                                norm ? token_channel_sums.data_ptr<float>() : nullptr,
                                dx.data_ptr(),
                                cta_sums.data_ptr<float>()};
  if (x.numel() == 0) {  // no blocks to launch: every sum is over no tokens
    return {dx, at::zeros({images.count, sum_rows(k), x.size(2)}, f32)};
  }
  const device_glue::LaunchTensors tensors{
      {"grad_out", &grad_out}, {"x", &x},         {"mean", &mean},   {"rstd", &rstd},
      {"weight", &weight_taps}, {"shift", &shift_f}, {"scale", &scale_f}, {"gate", &gate_f},
      {"du", &du},              {"token_channel_sums", &token_channel_sums}, {"dx", &dx}, {"cta_sums", &cta_sums},
      {"grids", &images.grids}, {"token_offsets", &images.token_offsets}, {"unit_offsets", &images.unit_offsets}};
  device_glue::check(cuda::launch_backward(args, kernel_dtype(x), images.packed(), device_glue::current_stream()));
  return {dx, image_sums(cta_sums, images)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cuda(const at::Tensor& x, int64_t h, int64_t w,
                                                            const at::Tensor& weight,
                                                            const std::optional<at::Tensor>& bias,
                                                            const at::Tensor& shift, const at::Tensor& scale,
                                                            const std::optional<at::Tensor>& gate,
                                                            const std::optional<at::Tensor>& residual,
                                                            int64_t dilation, bool norm) {
  const Images images = batch_images(x, h, w, kernel_size(weight, dilation), dilation);
  return forward(x, images, weight, bias, shift, scale, gate, residual, norm);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> packed_forward_cuda(
    const at::Tensor& x, const at::Tensor& grids, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    const at::Tensor& shift, const at::Tensor& scale, const std::optional<at::Tensor>& gate,
    const std::optional<at::Tensor>& residual, int64_t dilation, bool norm) {
  const Images images = packed_images(x, grids, kernel_size(weight, dilation), dilation);
  return forward(x, images, weight, bias, shift, scale, gate, residual, norm);
}

std::tuple<at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_out, const at::Tensor& x, int64_t h,
                                                 int64_t w, const at::Tensor& weight, const at::Tensor& shift,
                                                 const at::Tensor& scale, const std::optional<at::Tensor>& gate,
                                                 const at::Tensor& mean, const at::Tensor& rstd, int64_t dilation,
                                                 bool norm) {
  const Images images = batch_images(x, h, w, kernel_size(weight, dilation), dilation);
  return backward(grad_out, x, images, weight, shift, scale, gate, mean, rstd, norm);
}

std::tuple<at::Tensor, at::Tensor> packed_backward_cuda(const at::Tensor& grad_out, const at::Tensor& x,
                                                        const at::Tensor& grids, const at::Tensor& weight,
                                                        const at::Tensor& shift, const at::Tensor& scale,
                                                        const std::optional<at::Tensor>& gate, const at::Tensor& mean,
                                                        const at::Tensor& rstd, int64_t dilation, bool norm) {
  const Images images = packed_images(x, grids, kernel_size(weight, dilation), dilation);
  return backward(grad_out, x, images, weight, shift, scale, gate, mean, rstd, norm);
}

}  // namespace
}  // namespace cuda
}  // namespace dwconv_modulate
}  // namespace ledit

LEDIT_DEVICE_LIBRARY_IMPL(m) {
  m.impl("dwconv_modulate_fwd", &ledit::dwconv_modulate::cuda::forward_cuda);
  m.impl("dwconv_modulate_bwd", &ledit::dwconv_modulate::cuda::backward_cuda);
  m.impl("dwconv_modulate_packed_fwd", &ledit::dwconv_modulate::cuda::packed_forward_cuda);
  m.impl("dwconv_modulate_packed_bwd", &ledit::dwconv_modulate::cuda::packed_backward_cuda);
}

#endif  // LEDIT_WITH_CUDA || LEDIT_EMULATED_DEVICE
