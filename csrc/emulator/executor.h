// The executor's state, shared by its parts: executor.cpp (launches, the block scheduler, barriers, warp
// collectives, diagnostics), memory.cpp (global and shared accesses, their checks, cp.async, counters) and
// warp_ops.cpp (shuffles, votes, ldmatrix, mma, fp16/bf16). The kernels see none of this, only device.h.
//
// Model. A launch runs its blocks one after another on the calling CPU thread. A block's threads are fibers run
// in order of their index; each runs until it reaches a barrier or a warp collective (or exits). A warp collective
// completes when its 32nd lane arrives: that lane computes it from every lane's operands (PTX fragment layouts),
// then all lanes go on. A block barrier completes when every thread of the block has arrived at the same one.
// Accesses are ordered by these events only: each thread's accesses carry the block's barrier interval and its
// warp's step (the warp's count of collectives), which is what racecheck compares.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_set>
#include <vector>

#include "emulator/device_emulated.h"
#include "emulator/fiber.h"

namespace ledit {
namespace emulator {

// A failed check; the message names the kernel, block, thread, site and address.
class EmulatorError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Per-launch counters. Shared-memory accesses are counted per warp instruction: wavefronts are the passes the
// 32 banks need (per phase of lanes that can be served together: 32 lanes for accesses up to 4 bytes, 16 for 8,
// 8 for 16 bytes and for ldmatrix rows; in each phase, the most distinct 4-byte words any one bank must deliver),
// ideal is the fewest passes the same bytes could take (distinct words / 32 per phase, at least one).
struct SharedTraffic {
  uint64_t instructions = 0, wavefronts = 0, ideal_wavefronts = 0;
};
// Per warp instruction with at least one lane accessing: the distinct bytes it reads or writes (a word several
// lanes read counts once) and the distinct 32-byte sectors they lie in; and the distinct sectors of the whole
// launch (what a cache holding everything would fetch or write back).
struct GlobalTraffic {
  uint64_t instructions = 0, bytes = 0, sectors = 0, unique_sectors = 0;
};
struct Counters {
  SharedTraffic shared_loads, shared_stores, ldmatrix, cp_async_shared;
  GlobalTraffic global_loads, global_stores;
  uint64_t global_atomics = 0;
  uint64_t mma = 0;  // mma.sync m16n8k16
  uint64_t block_barriers = 0, warp_syncs = 0, shuffles = 0, votes = 0;
  uint64_t blocks = 0, threads = 0;
};

struct LaunchRecord {
  std::string kernel;
  dim3 grid, block;
  size_t shared_bytes;
  Counters counters;
};

enum class ThreadStatus : uint8_t { kRunnable, kAtBlockBarrier, kAtWarpCollective, kExited };

// What a warp collective does once all 32 lanes are in: operands[lane] and results[lane] point into each lane's
// own frame (valid while it waits).
using CollectiveCompute = void (*)(const void* const* operands, void* const* results);

enum class AccessKind : uint8_t { kSharedLoad, kSharedStore, kLdmatrix, kCpAsyncShared, kGlobalLoad, kGlobalStore };

// The lanes' accesses of one warp instruction in the current warp step (grouped by call site and per-lane
// occurrence), turned into wavefronts or sectors when the step ends.
struct InstructionGroup {
  Site site;
  int occurrence;
  AccessKind kind;
  uint32_t lanes;  // bit per lane present
  uint64_t address[32];
  uint32_t bytes[32];
};

struct SiteCount {
  Site site;
  AccessKind kind;
  int count;
};

struct PendingCopy {
  uint32_t shared_offset;
  Site site;
  unsigned char data[16];
};

struct ThreadState {
  Fiber* fiber;  // pooled across launches
  uint3 index;
  int linear, lane, warp;
  ThreadStatus status;
  Site wait_site;
  const void* operand;
  void* result;
  // Occurrences of each call site in the current warp step, and the group this lane used last.
  std::vector<SiteCount> site_counts;
  size_t group_cursor;
  // cp.async: copies not yet committed, then committed groups, oldest first.
  std::vector<PendingCopy> uncommitted;
  std::vector<std::vector<PendingCopy>> committed;
};

struct WarpState {
  uint32_t step;  // advances at every collective and barrier (block-wide counter, so steps never repeat)
  int arrived;
  const char* collective;  // name of the collective the arrived lanes wait at
  Site collective_site;
  CollectiveCompute compute;
  std::vector<InstructionGroup> groups;
};

// Shadow of one byte of shared memory, for initcheck and racecheck (intervals count up across the whole launch,
// so entries from earlier blocks are simply stale and need no clearing).
struct ShadowByte {
  uint32_t write_interval, write_step;
  uint32_t read_interval, read_step;
  uint16_t writer, reader;
  uint8_t readers;  // 0 none, 1 one thread, 2 several threads of one warp and step, 3 several warps
  uint8_t pending;  // a cp.async to this byte has not landed
  Site write_site, read_site;
};

struct Launch {
  std::string kernel;
  dim3 grid, block;
  size_t shared_bytes;
  const KernelBody* body;
  uint3 block_index;
  int threads_per_block;
  std::vector<std::unique_ptr<ThreadState>> threads;
  std::vector<WarpState> warps;
  std::vector<unsigned char> shared;
  std::vector<ShadowByte> shadow;
  uint32_t interval;            // current barrier interval of the running block
  uint32_t block_first_interval;
  uint32_t next_step;
  int barrier_arrived;
  Site barrier_site;
  ThreadState* current;
  std::exception_ptr error;
  Counters counters;
  std::unordered_set<uint64_t> load_sectors, store_sectors;  // every global sector the launch read or wrote
};

// The launch being run (one at a time, under a process-wide lock) and its running thread.
Launch& launch_state();
ThreadState& current_thread();

// Throws EmulatorError for `thread` at `site`: "<kernel>: block (..), thread (..) (warp w, lane l) at file:line:
// <what>".
[[noreturn]] void fail(const ThreadState& thread, Site site, const std::string& what);
std::string describe_thread(const ThreadState& thread);

// Arrive at a warp collective; the 32nd lane runs compute, and every lane returns with its result.
void warp_collective(const char* name, Site site, const void* operand, void* result, CollectiveCompute compute);

// memory.cpp
void shared_access_by(ThreadState& thread, const void* address, size_t bytes, AccessKind kind, Site site);
void record_access(ThreadState& thread, AccessKind kind, uint64_t address, uint32_t bytes, Site site);
void close_warp_step(WarpState& warp);  // folds the step's instruction groups into the counters
void land_copies(ThreadState& thread, std::vector<PendingCopy>& copies);
void drop_copies(ThreadState& thread);

// The records of the launches since the last clear (kept for ledit._C_emulated.launches()).
std::vector<LaunchRecord>& launch_records();

}  // namespace emulator
}  // namespace ledit
