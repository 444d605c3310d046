// The Python module ledit._C_emulated: the counters of recent launches and the probes' fault codes. Importing it
// registers the ops of torch_ops.cpp (the CUDA kernels on the CPU executor, and the executor's probes) as
// torch.ops.ledit_cuda_emulated.*. Plain pybind11, no torch headers: they would double this module's build time.
#include <pybind11/pybind11.h>

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
    d[(std::string(name) + "_unique_sectors").c_str()] = g.unique_sectors;
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

}  // namespace
}  // namespace emulator
}  // namespace ledit

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace em = ledit::emulator;
  m.doc() = "ledit's CUDA kernels on the CPU executor (ops under torch.ops.ledit_cuda_emulated)";
  m.def("launches", &em::launches, "Kernel, grid, block, shared bytes and counters of each launch since the last clear.");
  m.def("clear_launches", [] { em::launch_records().clear(); });
  namespace probes = ledit::emulator_probes;
  m.attr("FAULTS") = pybind11::dict(
      pybind11::arg("none") = int(probes::kNone), pybind11::arg("race_across_warps") = int(probes::kRaceAcrossWarps),
      pybind11::arg("race_in_warp") = int(probes::kRaceInWarp),
      pybind11::arg("global_out_of_bounds") = int(probes::kGlobalOutOfBounds),
      pybind11::arg("shared_out_of_bounds") = int(probes::kSharedOutOfBounds),
      pybind11::arg("uninitialised") = int(probes::kUninitialised),
      pybind11::arg("missing_wait") = int(probes::kMissingWait), pybind11::arg("with_wait") = int(probes::kWithWait),
      pybind11::arg("barrier_divergence") = int(probes::kBarrierDivergence),
      pybind11::arg("missing_lanes") = int(probes::kMissingLanes),
      pybind11::arg("two_dimensional_block") = int(probes::kTwoDimensionalBlock));
}
