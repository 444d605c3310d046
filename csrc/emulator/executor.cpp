// Launches: the block loop, the fiber scheduler, block barriers, warp collectives and the diagnosis of a block
// that can make no progress (barrier divergence, collectives with missing lanes).
#include "emulator/executor.h"

#include <algorithm>
#include <mutex>
#include <sstream>

namespace ledit {
namespace emulator {
namespace {

constexpr size_t kMaxLaunchRecords = 10000;
// The emulated device is an H100 (sm_90): dynamic shared memory per block with the opt-in attribute raised.
constexpr size_t kMaxSharedBytesPerBlock = 227 * 1024;
constexpr int kMaxThreadsPerBlock = 1024;

std::mutex launch_mutex;
Launch* running = nullptr;

std::string format_index(uint3 v) {
  std::ostringstream out;
  out << "(" << v.x << ", " << v.y << ", " << v.z << ")";
  return out.str();
}

std::string format_site(Site site) {
  const std::string file = site.file;
  const size_t csrc = file.rfind("csrc/");
  return (csrc == std::string::npos ? file : file.substr(csrc + 5)) + ":" + std::to_string(site.line);
}

// "forward_kernel<64, half>" from "... kernel_signature() [with auto kKernel = ledit::...::forward_kernel<64,
// ledit::emulator::api::half>]".
std::string kernel_name(const char* signature) {
  std::string s = signature;
  const size_t start = s.find("kKernel = ");
  if (start == std::string::npos) return s;
  s = s.substr(start + 10);
  s = s.substr(0, s.find_first_of(";]"));
  for (const std::string prefix : {"ledit::emulator::api::", "{anonymous}::"}) {
    for (size_t at; (at = s.find(prefix)) != std::string::npos;) s.erase(at, prefix.size());
  }
  const size_t name_end = s.find('<');
  const size_t scope = s.rfind("::", name_end);
  return scope == std::string::npos ? s : s.substr(scope + 2);
}

void release_warp(WarpState& warp, Launch& launch, int first_thread) {
  warp.arrived = 0;
  warp.collective = nullptr;
  warp.step = launch.next_step++;
  for (int lane = 0; lane < 32; ++lane) launch.threads[first_thread + lane]->status = ThreadStatus::kRunnable;
}

void thread_main(void* argument) {
  auto* thread = static_cast<ThreadState*>(argument);
  Launch& launch = launch_state();
  try {
    (*launch.body)();
  } catch (...) {
    if (!launch.error) launch.error = std::current_exception();
  }
  drop_copies(*thread);  // copies never waited for: their data is unused, as on the GPU
  thread->status = ThreadStatus::kExited;
  thread->fiber->suspend();
}

std::string lanes_text(uint32_t mask) {
  std::ostringstream out;
  bool first = true;
  for (int lane = 0; lane < 32;) {
    if (!(mask >> lane & 1u)) {
      ++lane;
      continue;
    }
    int end = lane;
    while (end + 1 < 32 && (mask >> (end + 1) & 1u)) ++end;
    out << (first ? "" : ", ") << lane;
    if (end > lane) out << "-" << end;
    first = false;
    lane = end + 1;
  }
  return out.str();
}

// No thread can run and not all have exited: say why, naming the first stuck thread.
[[noreturn]] void diagnose_stall(Launch& launch) {
  for (WarpState& warp : launch.warps) {
    if (warp.arrived == 0) continue;
    const int first = static_cast<int>(&warp - launch.warps.data()) * 32;
    uint32_t waiting = 0, exited = 0, at_barrier = 0;
    for (int lane = 0; lane < 32; ++lane) {
      const ThreadState& t = *launch.threads[first + lane];
      if (t.status == ThreadStatus::kAtWarpCollective) waiting |= 1u << lane;
      if (t.status == ThreadStatus::kExited) exited |= 1u << lane;
      if (t.status == ThreadStatus::kAtBlockBarrier) at_barrier |= 1u << lane;
    }
    std::string missing;
    if (exited) missing += "lanes " + lanes_text(exited) + " exited";
    if (at_barrier) missing += std::string(missing.empty() ? "" : "; ") + "lanes " + lanes_text(at_barrier) +
                               " wait at sync_threads";
    const int first_waiting = first + __builtin_ctz(waiting);
    fail(*launch.threads[first_waiting], warp.collective_site,
         std::string("warp collective ") + warp.collective + " with missing lanes: lanes " + lanes_text(waiting) +
             " arrived, " + missing + " (every collective needs all 32 lanes)");
  }
  const ThreadState* waiting = nullptr;
  int exited = 0;
  for (const auto& t : launch.threads) {
    if (t->status == ThreadStatus::kAtBlockBarrier && waiting == nullptr) waiting = t.get();
    exited += t->status == ThreadStatus::kExited;
  }
  if (waiting != nullptr) {
    fail(*waiting, waiting->wait_site,
         "barrier divergence: " + std::to_string(launch.barrier_arrived) + " of " +
             std::to_string(launch.threads_per_block) + " threads wait at sync_threads, " + std::to_string(exited) +
             " exited without reaching it");
  }
  throw EmulatorError(launch.kernel + ": the block made no progress");
}

void run_block(Launch& launch) {
  launch.interval += 1;
  launch.block_first_interval = launch.interval;
  launch.barrier_arrived = 0;
  for (WarpState& warp : launch.warps) {
    warp.step = launch.next_step++;
    warp.arrived = 0;
    warp.collective = nullptr;
    warp.groups.clear();
  }
  for (auto& t : launch.threads) {
    t->status = ThreadStatus::kRunnable;
    t->site_counts.clear();
    t->group_cursor = 0;
    t->uncommitted.clear();
    t->committed.clear();
    t->fiber->start(&thread_main, t.get());
  }
  for (;;) {
    bool ran = false, all_exited = true;
    for (auto& t : launch.threads) {
      if (t->status == ThreadStatus::kRunnable) {
        launch.current = t.get();
        t->fiber->resume();
        ran = true;
        if (launch.error) std::rethrow_exception(launch.error);
      }
      all_exited = all_exited && t->status == ThreadStatus::kExited;
    }
    if (all_exited) break;
    if (!ran) diagnose_stall(launch);
  }
  for (WarpState& warp : launch.warps) close_warp_step(warp);
}

// Fibers outlive launches: their stacks are mapped once.
Fiber* pooled_fiber(size_t index) {
  static std::vector<std::unique_ptr<Fiber>> pool;
  while (pool.size() <= index) pool.push_back(std::make_unique<Fiber>());
  return pool[index].get();
}

}  // namespace

Launch& launch_state() { return *running; }
ThreadState& current_thread() { return *running->current; }

std::string describe_thread(const ThreadState& thread) {
  return "thread " + format_index(thread.index) + " (warp " + std::to_string(thread.warp) + ", lane " +
         std::to_string(thread.lane) + ")";
}

void fail(const ThreadState& thread, Site site, const std::string& what) {
  const Launch& launch = *running;
  throw EmulatorError("cuda_emulated: kernel " + launch.kernel + ", block " + format_index(launch.block_index) +
                      ", " + describe_thread(thread) + " at " + format_site(site) + ": " + what);
}

cudaError_t run_launch(const char* kernel_signature, dim3 grid, dim3 block, size_t shared_bytes,
                       const KernelBody& body) {
  const std::lock_guard<std::mutex> lock(launch_mutex);
  Launch launch;
  launch.kernel = kernel_name(kernel_signature);
  launch.grid = grid;
  launch.block = block;
  launch.shared_bytes = shared_bytes;
  launch.body = &body;
  const int64_t threads = int64_t{block.x} * block.y * block.z;
  auto reject = [&](const std::string& why) {
    throw EmulatorError("cuda_emulated: launch of " + launch.kernel + " " + why);
  };
  if (threads <= 0 || threads > kMaxThreadsPerBlock || threads % 32 != 0) {
    reject("with " + std::to_string(threads) + " threads per block: the executor runs whole warps, 32 to " +
           std::to_string(kMaxThreadsPerBlock) + " threads");
  }
  if (block.y != 1 || block.z != 1) {
    reject("with a block of (" + std::to_string(block.x) + ", " + std::to_string(block.y) + ", " +
           std::to_string(block.z) + ") threads: device.h's blocks are one-dimensional (lane_id and warp_id read "
           "threadIdx.x alone); use (threads, 1, 1)");
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) {
    reject("with grid (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) + ", " + std::to_string(grid.z) +
           "): CUDA needs every extent >= 1 and y, z <= 65535");
  }
  if (shared_bytes > kMaxSharedBytesPerBlock) {
    reject("with " + std::to_string(shared_bytes) + " bytes of dynamic shared memory: an sm_90 block has at most " +
           std::to_string(kMaxSharedBytesPerBlock));
  }
  launch.threads_per_block = static_cast<int>(threads);
  launch.shared.assign(shared_bytes, 0xA5);  // never-written bytes read as garbage (and fail initcheck)
  launch.shadow.assign(shared_bytes, ShadowByte{});
  launch.warps.resize(threads / 32);
  for (int i = 0; i < threads; ++i) {
    auto t = std::make_unique<ThreadState>();
    t->fiber = pooled_fiber(i);
    t->linear = i;
    t->index = {static_cast<unsigned>(i % block.x), static_cast<unsigned>(i / block.x % block.y),
                static_cast<unsigned>(i / (block.x * block.y))};
    t->lane = i % 32;
    t->warp = i / 32;
    launch.threads.push_back(std::move(t));
  }
  launch.interval = 0;
  launch.next_step = 1;
  running = &launch;
  struct Reset {
    ~Reset() { running = nullptr; }
  } reset;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        launch.block_index = {x, y, z};
        run_block(launch);
      }
    }
  }
  launch.counters.global_loads.unique_sectors = launch.load_sectors.size();
  launch.counters.global_stores.unique_sectors = launch.store_sectors.size();
  launch.counters.blocks = uint64_t{grid.x} * grid.y * grid.z;
  launch.counters.threads = launch.counters.blocks * static_cast<uint64_t>(threads);
  std::vector<LaunchRecord>& records = launch_records();
  if (records.size() >= kMaxLaunchRecords) records.erase(records.begin());
  records.push_back({launch.kernel, grid, block, shared_bytes, launch.counters});
  return cudaSuccess;
}

std::vector<LaunchRecord>& launch_records() {
  static std::vector<LaunchRecord> records;
  return records;
}

void block_barrier(Site site) {
  Launch& launch = *running;
  ThreadState& thread = *launch.current;
  if (launch.barrier_arrived == 0) {
    launch.barrier_site = site;
  } else if (site.line != launch.barrier_site.line || std::string(site.file) != launch.barrier_site.file) {
    fail(thread, site,
         "barrier divergence: this thread reached a different sync_threads than the threads already waiting at " +
             format_site(launch.barrier_site));
  }
  thread.status = ThreadStatus::kAtBlockBarrier;
  thread.wait_site = site;
  if (++launch.barrier_arrived < launch.threads_per_block) {
    thread.fiber->suspend();
    return;
  }
  // Every thread is here: the barrier interval ends for all warps.
  launch.barrier_arrived = 0;
  launch.interval += 1;
  launch.counters.block_barriers += 1;
  for (size_t w = 0; w < launch.warps.size(); ++w) {
    close_warp_step(launch.warps[w]);
    release_warp(launch.warps[w], launch, static_cast<int>(w) * 32);
  }
  for (auto& t : launch.threads) t->site_counts.clear();
}

void warp_collective(const char* name, Site site, const void* operand, void* result, CollectiveCompute compute) {
  Launch& launch = *running;
  ThreadState& thread = *launch.current;
  WarpState& warp = launch.warps[thread.warp];
  if (warp.arrived == 0) {
    warp.collective = name;
    warp.collective_site = site;
    warp.compute = compute;
  } else if (warp.compute != compute) {
    fail(thread, site,
         std::string("warp divergence: this lane reached ") + name + " while other lanes wait at " +
             warp.collective + " (" + format_site(warp.collective_site) + ")");
  }
  thread.status = ThreadStatus::kAtWarpCollective;
  thread.wait_site = site;
  thread.operand = operand;
  thread.result = result;
  if (++warp.arrived < 32) {
    thread.fiber->suspend();
    return;
  }
  // The 32nd lane: the step before the collective ends, the collective runs as a step of its own.
  const int first = thread.warp * 32;
  close_warp_step(warp);
  warp.step = launch.next_step++;
  const void* operands[32];
  void* results[32];
  for (int lane = 0; lane < 32; ++lane) {
    ThreadState& t = *launch.threads[first + lane];
    operands[lane] = t.operand;
    results[lane] = t.result;
    t.site_counts.clear();
  }
  compute(operands, results);
  close_warp_step(warp);
  release_warp(warp, launch, first);
  for (int lane = 0; lane < 32; ++lane) launch.threads[first + lane]->site_counts.clear();
}

void warp_barrier(Site site) {
  warp_collective("sync_warp", site, nullptr, nullptr,
                  [](const void* const*, void* const*) { running->counters.warp_syncs += 1; });
}

unsigned char* dynamic_shared_base() { return running->shared.data(); }
uint3 thread_index() { return running->current->index; }
uint3 block_index() { return running->block_index; }
dim3 block_dimensions() { return running->block; }
dim3 grid_dimensions() { return running->grid; }
int linear_thread_index() { return running->current->linear; }

}  // namespace emulator
}  // namespace ledit

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess:
      return "no error";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorInvalidConfiguration:
      return "invalid configuration argument";
    default:
      return "unspecified launch failure";
  }
}
