// torch.library glue of the scan_attention CUDA kernels (scan_attention_cuda.cu). Compiled in every build but
// empty unless setup.py builds the CUDA kernels (LEDIT_WITH_CUDA), and compiled again for the CPU executor
// (LEDIT_EMULATED_DEVICE, ledit._C_emulated); schemas in scan_attention_ops.cpp.
#if defined(LEDIT_WITH_CUDA) || defined(LEDIT_EMULATED_DEVICE)

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <tuple>
#include <utility>

#include "common/device_glue.h"
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

// Contiguous and 16-byte aligned: the kernels load 8 elements per access.
at::Tensor prepare(const at::Tensor& x) {
  at::Tensor y = x.contiguous();
  return reinterpret_cast<uintptr_t>(y.data_ptr()) % 16 == 0 ? y : y.clone();
}

// The kernels' shapes for this call, with the largest tile whose blocks fit the shared memory q's GPU allows.
Params params_for(const at::Tensor& q, int64_t h, int64_t w, c10::string_view scan, double softmax_scale,
                  int64_t dim, bool backward) {
  const int smem_limit = device_glue::max_shared_per_block(q);
  int tile = choose_tile(static_cast<int>(dim), backward, static_cast<size_t>(smem_limit));
  // Test hook: LEDIT_CUDA_ATTENTION_TILE=32 runs the 32-token kernels where 64-token ones would be chosen (a 32-token
  // block always fits where a 64-token one does); the GPU tests and the executor's use it at D = 72.
  const char* forced_tile = std::getenv("LEDIT_CUDA_ATTENTION_TILE");
  if (tile == 64 && forced_tile != nullptr && std::string(forced_tile) == "32") tile = 32;
  TORCH_CHECK(tile != 0, "scan_attention (CUDA kernel): the ", backward ? "backward" : "forward", " at head dim D=",
              dim, " needs ", shared_memory_bytes(32, static_cast<int>(dim), backward),
              " bytes of shared memory per block, this GPU allows ", smem_limit, "; use backend='triton'");
  return make_params(static_cast<int>(h), static_cast<int>(w), parse_scan(scan), static_cast<int>(q.size(1)),
                     static_cast<int>(q.size(2)), static_cast<int>(dim), static_cast<float>(softmax_scale), tile);
}

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& q_in, const at::Tensor& k_in,
                                                const at::Tensor& v_in, int64_t h, int64_t w, c10::string_view scan,
                                                double softmax_scale) {
  const int64_t dim = check_qkv(q_in, k_in, v_in, h, w);
  const DType dtype = kernel_dtype(q_in);
  check_launch_limits(q_in);
  check_devices(q_in, {{"k", &k_in}, {"v", &v_in}});
  const device_glue::DeviceGuard guard(q_in.device());
  const at::Tensor q = prepare(q_in), k = prepare(k_in), v = prepare(v_in);
  at::Tensor out = at::empty_like(q);
  at::Tensor lse = at::empty({q.size(0), q.size(2), q.size(1)}, q.options().dtype(at::kFloat));
  if (q.numel() == 0) return {out, lse};  // B = 0 or H = 0: no blocks to launch
  const ForwardArgs args{q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr<float>(), q.size(0)};
  const device_glue::LaunchTensors tensors{{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}, {"lse", &lse}};
  device_glue::check(launch_forward(args, params_for(q, h, w, scan, softmax_scale, dim, false), dtype,
                                    device_glue::current_stream()));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(const at::Tensor& dout_in, const at::Tensor& q_in,
                                                             const at::Tensor& k_in, const at::Tensor& v_in,
                                                             const at::Tensor& out, const at::Tensor& lse_in,
                                                             int64_t h, int64_t w, c10::string_view scan,
                                                             double softmax_scale) {
  const int64_t dim = check_qkv(q_in, k_in, v_in, h, w);
  const DType dtype = kernel_dtype(q_in);
  check_launch_limits(q_in);
  TORCH_CHECK(dout_in.sizes() == q_in.sizes() && out.sizes() == q_in.sizes(),
              "scan_attention_bwd: dout and out must have q's shape");
  TORCH_CHECK(lse_in.sizes() == at::IntArrayRef({q_in.size(0), q_in.size(2), q_in.size(1)}),
              "scan_attention_bwd: lse must be the forward's (B, H, N) normaliser, got ", lse_in.sizes(),
              " for q of shape ", q_in.sizes());
  check_devices(q_in, {{"k", &k_in}, {"v", &v_in}, {"dout", &dout_in}, {"out", &out}, {"lse", &lse_in}});
  const device_glue::DeviceGuard guard(q_in.device());
  const at::Tensor q = prepare(q_in), k = prepare(k_in), v = prepare(v_in);
  const at::Tensor dout = prepare(dout_in.to(q.scalar_type()));
  const at::Tensor lse = lse_in.to(at::kFloat).contiguous();
  const at::Tensor delta = (dout.to(at::kFloat) * out.to(at::kFloat)).sum(-1).transpose(1, 2).contiguous();
  at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  if (q.numel() == 0) return {dq, dk, dv};
  const BackwardArgs args{q.data_ptr(),          k.data_ptr(),  v.data_ptr(),  dout.data_ptr(),
                          lse.data_ptr<float>(), delta.data_ptr<float>(),      dq.data_ptr(),
                          dk.data_ptr(),         dv.data_ptr(), q.size(0)};
  const device_glue::LaunchTensors tensors{{"q", &q},        {"k", &k},         {"v", &v},
                                          {"dout", &dout},  {"lse", &lse},     {"delta", &delta},
                                          {"dq", &dq},      {"dk", &dk},       {"dv", &dv}};
  device_glue::check(launch_backward(args, params_for(q, h, w, scan, softmax_scale, dim, true), dtype,
                                     device_glue::current_stream()));
  return {dq, dk, dv};
}

}  // namespace
}  // namespace cuda
}  // namespace scan_attention
}  // namespace ledit

LEDIT_DEVICE_LIBRARY_IMPL(m) {
  m.impl("scan_attention_fwd", &ledit::scan_attention::cuda::forward_cuda);
  m.impl("scan_attention_bwd", &ledit::scan_attention::cuda::backward_cuda);
}

#endif  // LEDIT_WITH_CUDA || LEDIT_EMULATED_DEVICE
