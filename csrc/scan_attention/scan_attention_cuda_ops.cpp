// torch.library glue of the scan_attention CUDA kernels (scan_attention_cuda_{forward,backward}.cu). Compiled in
// every build but
// empty unless setup.py builds the CUDA kernels (LEDIT_WITH_CUDA), and compiled again for the CPU executor
// (LEDIT_EMULATED_DEVICE, ledit._C_emulated); schemas in scan_attention_ops.cpp.
#if defined(LEDIT_WITH_CUDA) || defined(LEDIT_EMULATED_DEVICE)

#include <ATen/ATen.h>

#include <cstdint>
#include <initializer_list>
#include <tuple>
#include <utility>

#include "common/device_glue.h"
#include "common/packed_glue.h"
#include "scan_attention/scan_attention.h"
#include "scan_attention/scan_attention_cuda.h"

namespace ledit {
namespace scan_attention {
namespace cuda {
namespace {

DType kernel_dtype(const at::Tensor& q) {
  TORCH_CHECK(device_glue::on_kernel_device(q), "scan_attention (CUDA kernel): tensors must be on ",
              device_glue::kDeviceName, ", got ", q.device());
  switch (q.scalar_type()) {
    case at::kHalf:
      return DType::kFloat16;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      TORCH_CHECK(false, "scan_attention (CUDA kernel): dtype must be float16 or bfloat16 (tensor cores), got ",
                  q.scalar_type(), "; float32 runs on the triton or reference backend");
  }
}

// The launch grid is (tiles, batch, heads); CUDA allows at most 65535 blocks along y and z.
void check_launch_limits(const at::Tensor& q) {
  TORCH_CHECK(q.size(0) <= 65535 && q.size(2) <= 65535,
              "scan_attention (CUDA kernel): batch and heads must each be at most 65535, got B=", q.size(0),
              ", H=", q.size(2), "; split the batch");
}

// The kernels take raw pointers: every tensor must live on q's GPU.
void check_devices(const at::Tensor& q, std::initializer_list<std::pair<const char*, const at::Tensor*>> others) {
  for (const auto& [name, t] : others) {
    TORCH_CHECK(t->device() == q.device(), "scan_attention (CUDA kernel): ", name, " is on ", t->device(),
                " but q is on ", q.device());
  }
}

// q, k, v, dout as the kernels read them: in place when the head dim is contiguous, every stride a multiple of 8
// elements (16-byte rows) with token and head strides below 2^31, and the data 16-byte aligned, which covers views
// of a fused (B, N, 3, H, D) projection; otherwise a contiguous copy (cloned once more if even that is misaligned).
at::Tensor kernel_operand(const at::Tensor& x) {
  auto readable = [](const at::Tensor& t) {
    if (reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 != 0 || t.stride(3) != 1) return false;
    for (int d = 0; d < 3; ++d) {
      if (t.size(d) > 1 && (t.stride(d) % 8 != 0 || t.stride(d) < 0)) return false;
    }
    return t.stride(1) < (int64_t{1} << 31) && t.stride(2) < (int64_t{1} << 31);
  };
  if (readable(x)) return x;
  const at::Tensor y = x.contiguous();
  return readable(y) ? y : y.clone();
}

Layout layout_of(const at::Tensor& x) {
  return {x.stride(0), static_cast<int>(x.stride(1)), static_cast<int>(x.stride(2))};
}

Problem problem_of(const at::Tensor& q, int64_t h, int64_t w, c10::string_view scan, double softmax_scale) {
  return {static_cast<int>(h), static_cast<int>(w), parse_scan(scan), static_cast<int>(q.size(1)),
          static_cast<int>(q.size(2)), static_cast<int>(q.size(3)), static_cast<float>(softmax_scale)};
}

// Whether the blocks double-buffer their tiles: when the GPU allows that much shared memory per block (sm_80 and
// sm_90 always do; sm_86/sm_89's 99 KB not at every head dim), else single-buffered, else an error naming the limit.
bool double_buffer(const at::Tensor& q, int64_t dim, Pass pass) {
  const size_t limit = static_cast<size_t>(device_glue::max_shared_per_block(q));
  if (shared_memory_bytes(static_cast<int>(dim), pass, true) <= limit) return true;
  const size_t single = shared_memory_bytes(static_cast<int>(dim), pass, false);
  TORCH_CHECK(single <= limit, "scan_attention (CUDA kernel): the ", pass == Pass::kForward ? "forward" : "backward",
              " at head dim D=", dim, " needs ", single, " bytes of shared memory per block, this GPU allows ", limit,
              "; use backend='triton'");
  return false;
}

// The images of a call: a batch of B images of one (h, w) grid, or a packed sequence (then `packed()` points to its
// device offsets, kept alive by the tensors here, and computed on the device: no host read).
struct Images {
  at::Tensor grids, token_offsets, forward_units, key_units, dq_units;
  PackedGrids packed_grids{};
  const PackedGrids* packed() const { return grids.defined() ? &packed_grids : nullptr; }
};

// Tiles per image as make_tile_grid(h, w, capacity) splits it (scan_tiles.h), in tensor ops on the grids' device.
at::Tensor scan_tiles_per_image(const at::Tensor& grids, int capacity) {
  const at::Tensor h = grids.select(1, 0), w = grids.select(1, 1), tokens = at::full_like(h, capacity);
  const at::Tensor first_h = h.clamp_max(square_tile_side(capacity));
  const at::Tensor tile_w = at::minimum(w, tokens.div(first_h, "floor"));
  const at::Tensor tile_h = at::minimum(h, tokens.div(tile_w, "floor"));
  return (h + tile_h - 1).div(tile_h, "floor") * (w + tile_w - 1).div(tile_w, "floor");
}

Images packed_images(const at::Tensor& q, const at::Tensor& grids_in) {
  TORCH_CHECK(q.size(1) < (int64_t{1} << 31), "scan_attention (CUDA kernel): a packed sequence holds at most 2**31 - 1 ",
              "tokens, got ", q.size(1), "; pack fewer images");
  Images images;
  images.grids = checked_device_grids(grids_in, q, "scan_attention");
  images.token_offsets = token_offsets(images.grids);
  with_padded_dim(static_cast<int>(q.size(3)), [&](auto padded) {
    constexpr int kDim = decltype(padded)::value;
    images.forward_units = prefix_offsets(scan_tiles_per_image(images.grids, ForwardShape<kDim>::kBlockM));
    images.key_units = prefix_offsets(scan_tiles_per_image(images.grids, BackwardShape<kDim>::kBlockN));
    images.dq_units = prefix_offsets(scan_tiles_per_image(images.grids, BackwardShape<kDim>::kQBlockM));
  });
  images.packed_grids = {images.grids.const_data_ptr<int32_t>(),         images.token_offsets.const_data_ptr<int32_t>(),
                         images.forward_units.const_data_ptr<int32_t>(), images.key_units.const_data_ptr<int32_t>(),
                         images.dq_units.const_data_ptr<int32_t>(),      static_cast<int>(images.grids.size(0))};
  return images;
}

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                           const Images& images, const Problem& problem) {
  const DType dtype = kernel_dtype(q_in);
  check_launch_limits(q_in);
  check_devices(q_in, {{"k", &k_in}, {"v", &v_in}});
  const device_glue::DeviceGuard guard(q_in.device());
  const at::Tensor q = kernel_operand(q_in), k = kernel_operand(k_in), v = kernel_operand(v_in);
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = at::empty({q.size(0), q.size(2), q.size(1)}, q.options().dtype(at::kFloat));
  if (q.numel() == 0) return {out, lse};  // B = 0 or H = 0: no blocks to launch
  const ForwardArgs args{q.data_ptr(),    k.data_ptr(),    v.data_ptr(),      out.data_ptr(),   lse.data_ptr<float>(),
                         layout_of(q),    layout_of(k),    layout_of(v),      layout_of(out),   q.size(0),
                         double_buffer(q, problem.dim, Pass::kForward)};
  const device_glue::LaunchTensors tensors{{"q", &q},
                                          {"k", &k},
                                          {"v", &v},
                                          {"out", &out},
                                          {"lse", &lse},
                                          {"grids", &images.grids},
                                          {"token_offsets", &images.token_offsets},
                                          {"forward_units", &images.forward_units}};
  device_glue::check(launch_forward(args, problem, dtype, images.packed(), device_glue::current_stream()));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                int64_t h, int64_t w, c10::string_view scan, double softmax_scale) {
  check_qkv(q, k, v, h, w);
  return forward(q, k, v, Images{}, problem_of(q, h, w, scan, softmax_scale));
}

std::tuple<at::Tensor, at::Tensor> packed_forward_cuda(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                       const at::Tensor& grids, c10::string_view scan,
                                                       double softmax_scale) {
  check_qkv_tensors(q, k, v);
  const Images images = packed_images(q, grids);
  return forward(q, k, v, images, problem_of(q, 1, q.size(1), scan, softmax_scale));
}

// dQ comes from fp32 atomics in the dK/dV kernel, or, under torch.use_deterministic_algorithms(True), from a
// second kernel that recomputes S and dP per query tile: bitwise reproducible, about 1.4x the backward's products.
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& dout_in, const at::Tensor& q_in,
                                                        const at::Tensor& k_in, const at::Tensor& v_in,
                                                        const at::Tensor& out, const at::Tensor& lse_in,
                                                        const Images& images, const Problem& problem) {
  const int64_t dim = problem.dim;
  const DType dtype = kernel_dtype(q_in);
  check_launch_limits(q_in);
  TORCH_CHECK(dout_in.sizes() == q_in.sizes() && out.sizes() == q_in.sizes(),
              "scan_attention_bwd: dout and out must have q's shape");
  TORCH_CHECK(lse_in.sizes() == at::IntArrayRef({q_in.size(0), q_in.size(2), q_in.size(1)}),
              "scan_attention_bwd: lse must be the forward's (B, H, N) normaliser, got ", lse_in.sizes(),
              " for q of shape ", q_in.sizes());
  check_devices(q_in, {{"k", &k_in}, {"v", &v_in}, {"dout", &dout_in}, {"out", &out}, {"lse", &lse_in}});
  const device_glue::DeviceGuard guard(q_in.device());
  const at::Tensor q = kernel_operand(q_in), k = kernel_operand(k_in), v = kernel_operand(v_in);
  const at::Tensor dout = kernel_operand(dout_in.to(q.scalar_type()));
  const at::Tensor lse = lse_in.to(at::kFloat).contiguous();
  const at::Tensor delta = (dout.to(at::kFloat) * out.to(at::kFloat)).sum(-1).transpose(1, 2).contiguous();
  const bool deterministic = at::globalContext().deterministicAlgorithms();
  at::Tensor dq = at::empty(q.sizes(), q.options()), dk = at::empty(q.sizes(), q.options());
  at::Tensor dv = at::empty(q.sizes(), q.options());
  at::Tensor dq_accum = deterministic ? at::Tensor()
                                      : at::zeros({q.size(0), q.size(1), q.size(2), padded_dim(static_cast<int>(dim))},
                                                  q.options().dtype(at::kFloat));
  if (q.numel() == 0) return {dq, dk, dv};
  const BackwardArgs args{q.data_ptr(),
                          k.data_ptr(),
                          v.data_ptr(),
                          dout.data_ptr(),
                          lse.data_ptr<float>(),
                          delta.data_ptr<float>(),
                          dq.data_ptr(),
                          dk.data_ptr(),
                          dv.data_ptr(),
                          deterministic ? nullptr : dq_accum.data_ptr<float>(),
                          layout_of(q),
                          layout_of(k),
                          layout_of(v),
                          layout_of(dout),
                          layout_of(dq),
                          layout_of(dk),
                          layout_of(dv),
                          q.size(0),
                          double_buffer(q, dim, deterministic ? Pass::kBackwardDeterministic : Pass::kBackward)};
  {
    const device_glue::LaunchTensors tensors{{"q", &q},
                                            {"k", &k},
                                            {"v", &v},
                                            {"dout", &dout},
                                            {"lse", &lse},
                                            {"delta", &delta},
                                            {"dq", &dq},
                                            {"dk", &dk},
                                            {"dv", &dv},
                                            {"dq_accum", &dq_accum},
                                            {"grids", &images.grids},
                                            {"token_offsets", &images.token_offsets},
                                            {"key_units", &images.key_units},
                                            {"dq_units", &images.dq_units}};
    device_glue::check(launch_backward(args, problem, dtype, images.packed(), device_glue::current_stream()));
  }
  if (!deterministic) dq.copy_(dq_accum.narrow(3, 0, dim).mul_(problem.softmax_scale));
  return {dq, dk, dv};
}

// dQ comes from fp32 atomics in the dK/dV kernel, or, under torch.use_deterministic_algorithms(True), from a
// second kernel that recomputes S and dP per query tile: bitwise reproducible, about 1.4x the backward's products.
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(const at::Tensor& dout, const at::Tensor& q,
                                                             const at::Tensor& k, const at::Tensor& v,
                                                             const at::Tensor& out, const at::Tensor& lse, int64_t h,
                                                             int64_t w, c10::string_view scan, double softmax_scale) {
  check_qkv(q, k, v, h, w);
  return backward(dout, q, k, v, out, lse, Images{}, problem_of(q, h, w, scan, softmax_scale));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> packed_backward_cuda(const at::Tensor& dout, const at::Tensor& q,
                                                                    const at::Tensor& k, const at::Tensor& v,
                                                                    const at::Tensor& out, const at::Tensor& lse,
                                                                    const at::Tensor& grids, c10::string_view scan,
                                                                    double softmax_scale) {
  check_qkv_tensors(q, k, v);
  const Images images = packed_images(q, grids);
  return backward(dout, q, k, v, out, lse, images, problem_of(q, 1, q.size(1), scan, softmax_scale));
}

}  // namespace
}  // namespace cuda
}  // namespace scan_attention
}  // namespace ledit

LEDIT_DEVICE_LIBRARY_IMPL(m) {
  m.impl("scan_attention_fwd", &ledit::scan_attention::cuda::forward_cuda);
  m.impl("scan_attention_bwd", &ledit::scan_attention::cuda::backward_cuda);
  m.impl("scan_attention_packed_fwd", &ledit::scan_attention::cuda::packed_forward_cuda);
  m.impl("scan_attention_packed_bwd", &ledit::scan_attention::cuda::packed_backward_cuda);
}

#endif  // LEDIT_WITH_CUDA || LEDIT_EMULATED_DEVICE
