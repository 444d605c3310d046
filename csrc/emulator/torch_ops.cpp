// ledit._C_emulated's torch.library ops, as ledit_cuda_emulated::* for CPU tensors: both ops' schemas and the torch
// glue of their CUDA kernels (compiled against the executor; the kernels themselves are in kernels_*.cpp), and the
// executor's probes. One translation unit on purpose: parsing the torch headers is most of this module's build
// time, so it happens once (docs/cuda-executor.md, "Build cost").
#include "scan_attention/scan_attention_ops.cpp"
#include "scan_attention/scan_attention_cuda_ops.cpp"
#include "dwconv_modulate/dwconv_modulate_ops.cpp"
#include "dwconv_modulate/dwconv_modulate_cuda_ops.cpp"

#include "emulator/probe_kernels.h"

namespace ledit {
namespace emulator_probes {
namespace {

void check_probe_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), "probe tensor ", name, " must be contiguous on the CPU");
}

void check_launch(cudaError_t error) { TORCH_CHECK(error == cudaSuccess, "probe launch failed"); }

// C (16 x 8, fp32) = A (16 x 16) * B (16 x 8) through ldmatrix and one mma.sync; B is given as B^T (8 x 16) when
// b_is_transposed.
at::Tensor probe_mma(const at::Tensor& a, const at::Tensor& b, bool b_is_transposed) {
  TORCH_CHECK(a.scalar_type() == at::kHalf || a.scalar_type() == at::kBFloat16, "a must be float16 or bfloat16");
  TORCH_CHECK(b.scalar_type() == a.scalar_type() && a.numel() == 256 && b.numel() == 128,
              "a must be 16 x 16 and b 16 x 8 (or 8 x 16 transposed), both of a's dtype");
  check_probe_tensor(a, "a");
  check_probe_tensor(b, "b");
  at::Tensor c = at::empty({16, 8}, a.options().dtype(at::kFloat));
  const device_glue::LaunchTensors tensors{{"a", &a}, {"b", &b}, {"c", &c}};
  check_launch(launch_mma(a.data_ptr(), b.data_ptr(), c.data_ptr<float>(), a.scalar_type() == at::kBFloat16,
                          b_is_transposed));
  return c;
}

// The (32, 4) int32 registers each lane gets from ldmatrix.x{matrices}[.trans] of m (32 rows of 8 int16 values).
at::Tensor probe_ldmatrix(const at::Tensor& m, int64_t matrices, bool transpose) {
  TORCH_CHECK(m.scalar_type() == at::kShort && m.numel() == 256, "m must be 32 x 8 int16 values");
  check_probe_tensor(m, "m");
  at::Tensor registers = at::zeros({32, 4}, m.options().dtype(at::kInt));
  const device_glue::LaunchTensors tensors{{"m", &m}, {"registers", &registers}};
  check_launch(launch_ldmatrix(reinterpret_cast<const uint16_t*>(m.data_ptr()),
                               reinterpret_cast<uint32_t*>(registers.data_ptr()), static_cast<int>(matrices),
                               transpose));
  return registers;
}

// Runs fault_kernel with one fault (ledit._C_emulated.FAULTS); the executor's check raises.
at::Tensor probe_fault(int64_t fault) {
  at::Tensor out = at::arange(64, at::TensorOptions().dtype(at::kFloat));
  const device_glue::LaunchTensors tensors{{"out", &out}};
  check_launch(launch_fault(out.data_ptr<float>(), static_cast<int>(fault)));
  return out;
}

// Each lane's sum of x[lane] (but lane 0), x[32 + lane] and x[4 lane] (zero for lane 0), read with predicated loads
// and copies that lane 0 skips once (x: 256 floats).
at::Tensor probe_predicated(const at::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.numel() == 256, "x must be 256 float32 values");
  check_probe_tensor(x, "x");
  at::Tensor out = at::empty({32}, x.options());
  const device_glue::LaunchTensors tensors{{"x", &x}, {"out", &out}};
  check_launch(launch_predicated(x.data_ptr<float>(), out.data_ptr<float>()));
  return out;
}

// Element-wise float -> 16-bit bits -> float through the executor's conversions (for tests against torch).
at::Tensor round_trip(const at::Tensor& x, bool bf16) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "x must be float32");
  at::Tensor y = x.contiguous().clone();
  float* p = y.data_ptr<float>();
  for (int64_t i = 0; i < y.numel(); ++i) {
    p[i] = bf16 ? emulator::bfloat16_bits_to_float(emulator::float_to_bfloat16_bits(p[i]))
                : emulator::half_bits_to_float(emulator::float_to_half_bits(p[i]));
  }
  return y;
}

}  // namespace
}  // namespace emulator_probes
}  // namespace ledit

LEDIT_LIBRARY_FRAGMENT(m) {
  namespace probes = ledit::emulator_probes;
  m.def("probe_mma(Tensor a, Tensor b, bool b_is_transposed) -> Tensor", &probes::probe_mma);
  m.def("probe_ldmatrix(Tensor m, int matrices, bool transpose) -> Tensor", &probes::probe_ldmatrix);
  m.def("probe_fault(int fault) -> Tensor", &probes::probe_fault);
  m.def("probe_predicated(Tensor x) -> Tensor", &probes::probe_predicated);
  m.def("round_trip(Tensor x, bool bf16) -> Tensor", &probes::round_trip);
}
