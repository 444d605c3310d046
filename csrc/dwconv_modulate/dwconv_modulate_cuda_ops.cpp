// torch.library glue of the dwconv_modulate CUDA kernels (dwconv_modulate_cuda.cu). Compiled in every build but
// empty unless setup.py builds the CUDA kernels (LEDIT_WITH_CUDA), and compiled again for the CPU executor
// (LEDIT_EMULATED_DEVICE, ledit._C_emulated); schemas in dwconv_modulate_ops.cpp.
#if defined(LEDIT_WITH_CUDA) || defined(LEDIT_EMULATED_DEVICE)

#include <ATen/ATen.h>

#include "common/device_glue.h"
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

cuda::Shape kernel_shape(const at::Tensor& x, int64_t h, int64_t w, int k, int64_t dilation) {
  TORCH_CHECK(x.dim() == 3 && x.size(1) == h * w, "dwconv_modulate: x must be (B, h*w, C)");
  return {x.size(0), static_cast<int>(h), static_cast<int>(w), static_cast<int>(x.size(2)), k,
          static_cast<int>(dilation)};
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

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_cuda(const at::Tensor& x_in, int64_t h, int64_t w,
                                                            const at::Tensor& weight,
                                                            const std::optional<at::Tensor>& bias,
                                                            const at::Tensor& shift, const at::Tensor& scale,
                                                            const std::optional<at::Tensor>& gate,
                                                            const std::optional<at::Tensor>& residual_in,
                                                            int64_t dilation, bool norm) {
  const device_glue::DeviceGuard guard(x_in.device());
  const int k = kernel_size(weight, dilation);
  check_launch_limits(x_in, k, dilation, false);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor residual =
      residual_in.has_value() ? residual_in->to(x.scalar_type()).contiguous() : at::Tensor();  // read as x's dtype
  const at::Tensor weight_taps = taps_by_channel(weight), bias_f = optional_float(bias), gate_f = optional_float(gate);
  const at::Tensor shift_f = float_contiguous(shift), scale_f = float_contiguous(scale);
  at::Tensor out = at::empty_like(x), mean = empty_stats(x, norm), rstd = empty_stats(x, norm);
  const cuda::ForwardArgs args{kernel_shape(x, h, w, k, dilation),
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
  const device_glue::LaunchTensors tensors{{"x", &x},           {"mean", &mean},   {"rstd", &rstd},
                                          {"weight", &weight_taps}, {"bias", &bias_f}, {"shift", &shift_f},
                                          {"scale", &scale_f},  {"gate", &gate_f},  {"residual", &residual},
                                          {"out", &out}};
  device_glue::check(cuda::launch_forward(args, kernel_dtype(x), device_glue::current_stream()));
  return {out, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_out_in, const at::Tensor& x_in, int64_t h,
                                                 int64_t w, const at::Tensor& weight, const at::Tensor& shift,
                                                 const at::Tensor& scale, const std::optional<at::Tensor>& gate,
                                                 const at::Tensor& mean_in, const at::Tensor& rstd_in,
                                                 int64_t dilation, bool norm) {
  const device_glue::DeviceGuard guard(x_in.device());
  const int k = kernel_size(weight, dilation);
  check_launch_limits(x_in, k, dilation, true);
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
  const cuda::Shape shape = kernel_shape(x, h, w, k, dilation);
  const auto f32 = x.options().dtype(at::kFloat);
  at::Tensor dx = at::empty_like(x);
  at::Tensor du = norm ? at::empty(x.sizes(), f32) : at::Tensor();
  at::Tensor token_channel_sums =
      norm ? at::empty({cuda::channel_tiles(shape.channels), x.size(0) * x.size(1), 2}, f32) : at::Tensor();
  at::Tensor cta_sums = at::empty({x.size(0), cuda::ctas_per_sample(shape.h, shape.w), sum_rows(k), x.size(2)}, f32);
  const cuda::BackwardArgs args{shape,
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
  if (x.numel() == 0) return {dx, cta_sums.sum(1)};  // no blocks to launch
  const device_glue::LaunchTensors tensors{
      {"grad_out", &grad_out}, {"x", &x},         {"mean", &mean},   {"rstd", &rstd},
      {"weight", &weight_taps}, {"shift", &shift_f}, {"scale", &scale_f}, {"gate", &gate_f},
      {"du", &du},              {"token_channel_sums", &token_channel_sums}, {"dx", &dx}, {"cta_sums", &cta_sums}};
  device_glue::check(cuda::launch_backward(args, kernel_dtype(x), device_glue::current_stream()));
  // The small second pass over the CTAs' token sums: a fixed-order sum, so the gradients are deterministic.
  return {dx, cta_sums.sum(1)};
}

}  // namespace
}  // namespace cuda
}  // namespace dwconv_modulate
}  // namespace ledit

LEDIT_DEVICE_LIBRARY_IMPL(m) {
  m.impl("dwconv_modulate_fwd", &ledit::dwconv_modulate::cuda::forward_cuda);
  m.impl("dwconv_modulate_bwd", &ledit::dwconv_modulate::cuda::backward_cuda);
}

#endif  // LEDIT_WITH_CUDA || LEDIT_EMULATED_DEVICE
