// The Python module ledit._C_emulated: the CUDA kernels on the CPU executor (their torch.library ops register in
// ops_*.cpp as ledit_cuda_emulated::*), the counters of recent launches, and the executor's own probes.
#include <torch/extension.h>

#include "emulator/executor.h"
#include "emulator/probe_kernels.h"

namespace ledit {
namespace emulator {
namespace {

pybind11::dict counters_dict(const Counters& c) {
  pybind11::dict d;
  auto shared = [&](const char* name, const SharedTraffic& s) {
    d[(std::string(name) + "_instructions").c_str()] = s.instructions;
    d[(std::string(name) + "_wavefronts").c_str()] = s.wavefronts;
    d[(std::string(name) + "_ideal_wavefronts").c_str()] = s.ideal_wavefronts;
  };
  auto global = [&](const char* name, const GlobalTraffic& g) {
    d[(std::string(name) + "_instructions").c_str()] = g.instructions;
    d[(std::string(name) + "_bytes").c_str()] = g.bytes;
    d[(std::string(name) + "_sectors").c_str()] = g.sectors;
  };
  shared("shared_load", c.shared_loads);
  shared("shared_store", c.shared_stores);
  shared("ldmatrix", c.ldmatrix);
  shared("cp_async_shared", c.cp_async_shared);
  global("global_load", c.global_loads);
  global("global_store", c.global_stores);
  d["global_atomics"] = c.global_atomics;
  d["mma"] = c.mma;
  d["block_barriers"] = c.block_barriers;
  d["warp_syncs"] = c.warp_syncs;
  d["shuffles"] = c.shuffles;
  d["votes"] = c.votes;
  d["blocks"] = c.blocks;
  d["threads"] = c.threads;
  return d;
}

pybind11::list launches() {
  pybind11::list out;
  for (const LaunchRecord& r : launch_records()) {
    pybind11::dict d;
    d["kernel"] = r.kernel;
    d["grid"] = pybind11::make_tuple(r.grid.x, r.grid.y, r.grid.z);
    d["block"] = pybind11::make_tuple(r.block.x, r.block.y, r.block.z);
    d["shared_bytes"] = r.shared_bytes;
    d["counters"] = counters_dict(r.counters);
    out.append(d);
  }
  return out;
}

// Runs a probe with its tensors registered; executor errors become Python RuntimeErrors.
template <typename Launch>
void run_probe(std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors, Launch launch) {
  for (const auto& [name, t] : tensors) {
    TORCH_CHECK(t->device().is_cpu() && t->is_contiguous(), "probe tensor ", name, " must be contiguous on the CPU");
    push_allocation(t->data_ptr(), t->nbytes(), name);
  }
  struct Pop {
    size_t n;
    ~Pop() { pop_allocations(n); }
  } pop{tensors.size()};
  try {
    TORCH_CHECK(launch() == cudaSuccess, "probe launch failed");
  } catch (const EmulatorError& error) {
    throw std::runtime_error(error.what());
  }
}

at::Tensor probe_mma(const at::Tensor& a, const at::Tensor& b, bool b_is_transposed) {
  TORCH_CHECK(a.scalar_type() == at::kHalf || a.scalar_type() == at::kBFloat16, "a must be float16 or bfloat16");
  at::Tensor c = at::empty({16, 8}, a.options().dtype(at::kFloat));
  run_probe({{"a", &a}, {"b", &b}, {"c", &c}}, [&] {
    return emulator_probes::launch_mma(a.data_ptr(), b.data_ptr(), c.data_ptr<float>(),
                                       a.scalar_type() == at::kBFloat16, b_is_transposed);
  });
  return c;
}

at::Tensor probe_ldmatrix(const at::Tensor& m, int64_t matrices, bool transpose) {
  TORCH_CHECK(m.scalar_type() == at::kShort && m.numel() == 256, "m must be 32 x 8 int16 values");
  at::Tensor registers = at::zeros({32, 4}, m.options().dtype(at::kInt));
  run_probe({{"m", &m}, {"registers", &registers}}, [&] {
    return emulator_probes::launch_ldmatrix(reinterpret_cast<const uint16_t*>(m.data_ptr()),
                                            reinterpret_cast<uint32_t*>(registers.data_ptr()),
                                            static_cast<int>(matrices), transpose);
  });
  return registers;
}

at::Tensor probe_fault(int64_t fault) {
  at::Tensor out = at::arange(64, at::TensorOptions().dtype(at::kFloat));
  run_probe({{"out", &out}}, [&] { return emulator_probes::launch_fault(out.data_ptr<float>(), static_cast<int>(fault)); });
  return out;
}

// Element-wise float -> 16-bit bits -> float through the executor's conversions (for tests against torch).
at::Tensor round_trip(const at::Tensor& x, bool bf16) {
  at::Tensor y = x.contiguous().clone();
  float* p = y.data_ptr<float>();
  for (int64_t i = 0; i < y.numel(); ++i) {
    p[i] = bf16 ? bfloat16_bits_to_float(float_to_bfloat16_bits(p[i])) : half_bits_to_float(float_to_half_bits(p[i]));
  }
  return y;
}

}  // namespace
}  // namespace emulator
}  // namespace ledit

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace em = ledit::emulator;
  m.doc() = "ledit's CUDA kernels on the CPU executor (ops under torch.ops.ledit_cuda_emulated)";
  m.def("launches", &em::launches, "Kernel, grid, block, shared bytes and counters of each launch since the last clear.");
  m.def("clear_launches", [] { em::launch_records().clear(); });
  m.def("probe_mma", &em::probe_mma);
  m.def("probe_ldmatrix", &em::probe_ldmatrix);
  m.def("probe_fault", &em::probe_fault);
  m.def("round_trip", &em::round_trip);
  namespace probes = ledit::emulator_probes;
  m.attr("FAULTS") = pybind11::dict(
      pybind11::arg("none") = int(probes::kNone), pybind11::arg("race_across_warps") = int(probes::kRaceAcrossWarps),
      pybind11::arg("race_in_warp") = int(probes::kRaceInWarp),
      pybind11::arg("global_out_of_bounds") = int(probes::kGlobalOutOfBounds),
      pybind11::arg("shared_out_of_bounds") = int(probes::kSharedOutOfBounds),
      pybind11::arg("uninitialised") = int(probes::kUninitialised),
      pybind11::arg("missing_wait") = int(probes::kMissingWait), pybind11::arg("with_wait") = int(probes::kWithWait),
      pybind11::arg("barrier_divergence") = int(probes::kBarrierDivergence),
      pybind11::arg("missing_lanes") = int(probes::kMissingLanes));
}
