// Memory on the executor: global accesses checked against the registered tensors' real extents, shared accesses
// checked for bounds, alignment, initialisation (initcheck) and races (racecheck) through a per-byte shadow,
// cp.async copies that land at wait_group, and the per-instruction grouping that gives wavefronts and sectors.
#include <algorithm>
#include <sstream>

#include "emulator/executor.h"

namespace ledit {
namespace emulator {
namespace {

enum Readers : uint8_t { kNoReader = 0, kOneReader = 1, kOneWarpStep = 2, kSeveralWarps = 3 };

// The tensors registered by the calling CPU thread's glue for its next launch.
thread_local std::vector<Allocation> allocations;

bool is_write(AccessKind kind) {
  return kind == AccessKind::kSharedStore || kind == AccessKind::kCpAsyncShared || kind == AccessKind::kGlobalStore;
}

const char* access_name(AccessKind kind) { return is_write(kind) ? "write" : "read"; }

std::string hex(uint64_t value) {
  std::ostringstream out;
  out << "0x" << std::hex << value;
  return out.str();
}

std::string site_text(Site site) {
  const std::string file = site.file;
  const size_t csrc = file.rfind("csrc/");
  return (csrc == std::string::npos ? file : file.substr(csrc + 5)) + ":" + std::to_string(site.line);
}

std::string other_thread(const Launch& launch, int linear) {
  return describe_thread(*launch.threads[linear]);
}

// Two accesses of one barrier interval are ordered only if they are by one thread, or by one warp in different
// steps (a collective or sync_warp between them).
bool unordered(int thread_a, uint32_t step_a, int thread_b, uint32_t step_b) {
  return thread_a != thread_b && (thread_a / 32 != thread_b / 32 || step_a == step_b);
}

void check_read(Launch& launch, ThreadState& t, uint32_t offset, Site site) {
  ShadowByte& s = launch.shadow[offset];
  const uint32_t step = launch.warps[t.warp].step;
  if (s.pending) {
    fail(t, site, "shared-memory read at offset " + hex(offset) +
                      " of bytes a cp.async has not landed yet (missing cp_async_wait before this read?)");
  }
  if (s.write_interval < launch.block_first_interval) {
    fail(t, site, "initcheck: shared-memory read at offset " + hex(offset) +
                      " of a byte no thread of this block has written");
  }
  if (s.write_interval == launch.interval && unordered(s.writer, s.write_step, t.linear, step)) {
    fail(t, site, "racecheck: shared-memory read at offset " + hex(offset) + " of a byte written by " +
                      other_thread(launch, s.writer) + " at " + site_text(s.write_site) +
                      " with no barrier between (read-after-write hazard)");
  }
  if (s.read_interval != launch.interval || s.readers == kNoReader) {
    s.readers = kOneReader;
  } else if (s.readers != kSeveralWarps) {
    if (s.reader / 32 != t.warp) {
      s.readers = kSeveralWarps;
    } else if (s.read_step != step) {
      s.readers = kOneReader;  // the earlier step's reads are ordered before anything this warp does from now
    } else if (s.reader != t.linear) {
      s.readers = kOneWarpStep;
    }
  }
  if (s.readers == kOneReader) {
    s.reader = static_cast<uint16_t>(t.linear);
    s.read_step = step;
  }
  s.read_interval = launch.interval;
  s.read_site = site;
}

void check_write(Launch& launch, ThreadState& t, uint32_t offset, Site site, bool landing) {
  ShadowByte& s = launch.shadow[offset];
  const uint32_t step = launch.warps[t.warp].step;
  if (s.pending && !landing) {
    fail(t, site, "shared-memory write at offset " + hex(offset) + " of bytes a cp.async has not landed yet");
  }
  if (s.write_interval == launch.interval && unordered(s.writer, s.write_step, t.linear, step)) {
    fail(t, site, "racecheck: shared-memory write at offset " + hex(offset) + " of a byte also written by " +
                      other_thread(launch, s.writer) + " at " + site_text(s.write_site) +
                      " with no barrier between (write-after-write hazard)");
  }
  if (s.read_interval == launch.interval && s.readers != kNoReader) {
    const bool hazard = s.readers == kSeveralWarps ||
                        (s.readers == kOneReader && unordered(s.reader, s.read_step, t.linear, step)) ||
                        (s.readers == kOneWarpStep && (s.reader / 32 != t.warp || s.read_step == step));
    if (hazard) {
      fail(t, site, "racecheck: shared-memory write at offset " + hex(offset) + " of a byte read by " +
                        (s.readers == kOneReader ? other_thread(launch, s.reader) : std::string("other threads")) +
                        " at " + site_text(s.read_site) + " with no barrier between (write-after-read hazard)");
    }
  }
  s.readers = kNoReader;
  s.write_interval = launch.interval;
  s.write_step = step;
  s.writer = static_cast<uint16_t>(t.linear);
  s.write_site = site;
}

uint32_t shared_offset(Launch& launch, ThreadState& t, const void* address, size_t bytes, AccessKind kind,
                       Site site) {
  const auto* p = static_cast<const unsigned char*>(address);
  const unsigned char* base = launch.shared.data();
  if (p < base || p + bytes > base + launch.shared_bytes) {
    fail(t, site, std::string("shared-memory out-of-bounds ") + access_name(kind) + " of " + std::to_string(bytes) +
                      " bytes at offset " + std::to_string(p - base) + " (the block has " +
                      std::to_string(launch.shared_bytes) + " bytes of dynamic shared memory)");
  }
  const auto offset = static_cast<uint32_t>(p - base);
  if (offset % bytes != 0) {
    fail(t, site, std::string("misaligned shared-memory ") + access_name(kind) + " of " + std::to_string(bytes) +
                      " bytes at offset " + std::to_string(offset));
  }
  return offset;
}

void check_global(ThreadState& t, const void* address, size_t bytes, const Allocation* allocation, AccessKind kind,
                  Site site) {
  const char* what = access_name(kind);
  if (address == nullptr) fail(t, site, std::string("global ") + what + " through a null pointer");
  if (allocation == nullptr) {
    fail(t, site, std::string("global ") + what + " through a pointer that comes from no registered tensor");
  }
  const auto* p = static_cast<const unsigned char*>(address);
  if (p < allocation->begin || p + bytes > allocation->begin + allocation->bytes) {
    fail(t, site, std::string("global out-of-bounds ") + what + " of " + std::to_string(bytes) + " bytes at byte " +
                      std::to_string(p - allocation->begin) + " of tensor '" + allocation->name + "' (" +
                      std::to_string(allocation->bytes) + " bytes)");
  }
  if (reinterpret_cast<uintptr_t>(p) % bytes != 0) {
    fail(t, site, std::string("misaligned global ") + what + " of " + std::to_string(bytes) + " bytes at byte " +
                      std::to_string(p - allocation->begin) + " of tensor '" + allocation->name + "'");
  }
}

// Wavefronts of one shared-memory warp instruction, and the fewest its bytes could take. Lanes with no bytes were
// predicated off.
void count_wavefronts(const InstructionGroup& g, SharedTraffic& traffic) {
  uint32_t width = 0;
  for (int lane = 0; lane < 32; ++lane) {
    if (g.lanes >> lane & 1u) width = std::max(width, g.bytes[lane]);
  }
  if (width == 0) return;
  const int lanes_per_phase = g.kind == AccessKind::kLdmatrix ? 8 : width <= 4 ? 32 : width <= 8 ? 16 : 8;
  traffic.instructions += 1;
  for (int phase = 0; phase < 32; phase += lanes_per_phase) {
    uint64_t words[32 * 4];
    int n = 0;
    for (int lane = phase; lane < phase + lanes_per_phase; ++lane) {
      if (!(g.lanes >> lane & 1u) || g.bytes[lane] == 0) continue;
      const uint64_t first = g.address[lane] / 4, last = (g.address[lane] + g.bytes[lane] - 1) / 4;
      for (uint64_t w = first; w <= last; ++w) words[n++] = w;
    }
    if (n == 0) continue;
    std::sort(words, words + n);
    n = static_cast<int>(std::unique(words, words + n) - words);
    int per_bank[32] = {};
    int most = 0;
    for (int i = 0; i < n; ++i) most = std::max(most, ++per_bank[words[i] % 32]);
    traffic.wavefronts += most;
    traffic.ideal_wavefronts += (n + 31) / 32;
  }
}

// Distinct bytes and 32-byte sectors of one global warp instruction (lanes reading the same word count it once).
void count_sectors(const InstructionGroup& g, GlobalTraffic& traffic, std::unordered_set<uint64_t>& launch_sectors) {
  std::pair<uint64_t, uint64_t> ranges[32];  // [begin, end) of each lane that accessed
  int n = 0;
  for (int lane = 0; lane < 32; ++lane) {
    if ((g.lanes >> lane & 1u) && g.bytes[lane] != 0) ranges[n++] = {g.address[lane], g.address[lane] + g.bytes[lane]};
  }
  if (n == 0) return;
  std::sort(ranges, ranges + n);
  traffic.instructions += 1;
  uint64_t covered = ranges[0].first, last_sector = ~uint64_t{0};
  for (int i = 0; i < n; ++i) {
    const uint64_t begin = std::max(ranges[i].first, covered), end = ranges[i].second;
    if (end <= begin) continue;
    traffic.bytes += end - begin;
    for (uint64_t s = begin / 32; s <= (end - 1) / 32; ++s) {
      if (s != last_sector) traffic.sectors += 1;
      last_sector = s;
      launch_sectors.insert(s);
    }
    covered = end;
  }
}

}  // namespace

const Allocation* find_allocation(const void* address) {
  // A kernel argument is a tensor's first element; views of one fused tensor overlap, so the tensor that starts
  // exactly there is the one, and containment only decides for other pointers.
  const auto* p = static_cast<const unsigned char*>(address);
  for (const Allocation& a : allocations) {
    if (p == a.begin) return &a;
  }
  for (const Allocation& a : allocations) {
    if (p >= a.begin && p <= a.begin + a.bytes) return &a;
  }
  throw EmulatorError("cuda_emulated: a kernel argument points into no tensor registered for the launch "
                      "(register each tensor with ScopedAllocations before launching)");
}

void push_allocation(const void* begin, size_t bytes, const char* name) {
  allocations.push_back({static_cast<const unsigned char*>(begin), bytes, name});
}
void pop_allocations(size_t count) { allocations.resize(allocations.size() - std::min(count, allocations.size())); }

void record_access(ThreadState& t, AccessKind kind, uint64_t address, uint32_t bytes, Site site) {
  int occurrence = 0;
  auto count = std::find_if(t.site_counts.begin(), t.site_counts.end(), [&](const SiteCount& c) {
    return c.kind == kind && c.site.line == site.line && c.site.file == site.file;
  });
  if (count == t.site_counts.end()) {
    t.site_counts.push_back({site, kind, 1});
  } else {
    occurrence = count->count++;
  }
  std::vector<InstructionGroup>& groups = launch_state().warps[t.warp].groups;
  auto matches = [&](const InstructionGroup& g) {
    return g.occurrence == occurrence && g.kind == kind && g.site.line == site.line && g.site.file == site.file &&
           !(g.lanes >> t.lane & 1u);
  };
  size_t index = t.group_cursor;
  if (index >= groups.size() || !matches(groups[index])) {
    index = std::find_if(groups.begin(), groups.end(), matches) - groups.begin();
    if (index == groups.size()) {
      groups.emplace_back();
      InstructionGroup& g = groups.back();
      g.site = site;
      g.occurrence = occurrence;
      g.kind = kind;
      g.lanes = 0;
    }
  }
  InstructionGroup& g = groups[index];
  g.lanes |= 1u << t.lane;
  g.address[t.lane] = address;
  g.bytes[t.lane] = bytes;
  t.group_cursor = index + 1;
}

void close_warp_step(WarpState& warp) {
  Launch& launch = launch_state();
  Counters& c = launch.counters;
  for (const InstructionGroup& g : warp.groups) {
    switch (g.kind) {
      case AccessKind::kSharedLoad:
        count_wavefronts(g, c.shared_loads);
        break;
      case AccessKind::kSharedStore:
        count_wavefronts(g, c.shared_stores);
        break;
      case AccessKind::kLdmatrix:
        count_wavefronts(g, c.ldmatrix);
        break;
      case AccessKind::kCpAsyncShared:
        count_wavefronts(g, c.cp_async_shared);
        break;
      case AccessKind::kGlobalLoad:
        count_sectors(g, c.global_loads, launch.load_sectors);
        break;
      case AccessKind::kGlobalStore:
        count_sectors(g, c.global_stores, launch.store_sectors);
        break;
    }
  }
  warp.groups.clear();
}

void shared_access_by(ThreadState& t, const void* address, size_t bytes, AccessKind kind, Site site) {
  Launch& launch = launch_state();
  const uint32_t offset = shared_offset(launch, t, address, bytes, kind, site);
  for (uint32_t i = 0; i < bytes; ++i) {
    if (is_write(kind)) {
      check_write(launch, t, offset + i, site, false);
    } else {
      check_read(launch, t, offset + i, site);
    }
  }
  record_access(t, kind, offset, static_cast<uint32_t>(bytes), site);
}

void shared_access(const void* address, size_t bytes, bool write, Site site) {
  shared_access_by(current_thread(), address, bytes, write ? AccessKind::kSharedStore : AccessKind::kSharedLoad,
                   site);
}

void global_access(const void* address, size_t bytes, const Allocation* allocation, bool write, Site site) {
  ThreadState& t = current_thread();
  const AccessKind kind = write ? AccessKind::kGlobalStore : AccessKind::kGlobalLoad;
  check_global(t, address, bytes, allocation, kind, site);
  record_access(t, kind, reinterpret_cast<uintptr_t>(address), static_cast<uint32_t>(bytes), site);
}

void global_access_skipped(bool write, Site site) {
  record_access(current_thread(), write ? AccessKind::kGlobalStore : AccessKind::kGlobalLoad, 0, 0, site);
}

void atomic_add_f32(float* address, const Allocation* allocation, float value, Site site) {
  ThreadState& t = current_thread();
  check_global(t, address, sizeof(float), allocation, AccessKind::kGlobalStore, site);
  launch_state().counters.global_atomics += 1;
  *address += value;
}

// ---- cp.async ----------------------------------------------------------------------------------------------------

void cp_async_16(void* shared_dst, const void* global_src, const Allocation* allocation, bool fill, Site site) {
  Launch& launch = launch_state();
  ThreadState& t = current_thread();
  const uint32_t offset = shared_offset(launch, t, shared_dst, 16, AccessKind::kCpAsyncShared, site);
  PendingCopy copy{offset, site, {}};
  if (fill) {
    check_global(t, global_src, 16, allocation, AccessKind::kGlobalLoad, site);
    record_access(t, AccessKind::kGlobalLoad, reinterpret_cast<uintptr_t>(global_src), 16, site);
    std::memcpy(copy.data, global_src, 16);
  } else {
    record_access(t, AccessKind::kGlobalLoad, 0, 0, site);  // reads nothing, but keeps this lane in step
  }
  for (uint32_t i = 0; i < 16; ++i) {
    ShadowByte& s = launch.shadow[offset + i];
    if (s.pending) fail(t, site, "cp.async to shared offset " + hex(offset + i) + " while an earlier one to it has "
                                 "not landed");
    s.pending = 1;
  }
  record_access(t, AccessKind::kCpAsyncShared, offset, 16, site);
  t.uncommitted.push_back(copy);
}

void cp_async_commit() {
  ThreadState& t = current_thread();
  t.committed.push_back(std::move(t.uncommitted));
  t.uncommitted.clear();
}

void land_copies(ThreadState& t, std::vector<PendingCopy>& copies) {
  Launch& launch = launch_state();
  for (const PendingCopy& copy : copies) {
    for (uint32_t i = 0; i < 16; ++i) {
      launch.shadow[copy.shared_offset + i].pending = 0;
      check_write(launch, t, copy.shared_offset + i, copy.site, true);
    }
    std::memcpy(launch.shared.data() + copy.shared_offset, copy.data, 16);
  }
}

void cp_async_wait(int pending_groups, Site) {
  ThreadState& t = current_thread();
  while (static_cast<int>(t.committed.size()) > pending_groups) {
    land_copies(t, t.committed.front());
    t.committed.erase(t.committed.begin());
  }
}

void drop_copies(ThreadState& t) {
  Launch& launch = launch_state();
  auto drop = [&](const std::vector<PendingCopy>& copies) {
    for (const PendingCopy& copy : copies) {
      for (uint32_t i = 0; i < 16; ++i) launch.shadow[copy.shared_offset + i].pending = 0;
    }
  };
  drop(t.uncommitted);
  for (const auto& group : t.committed) drop(group);
  t.uncommitted.clear();
  t.committed.clear();
}

}  // namespace emulator
}  // namespace ledit
