// Packed sequences: n images back to back along the token axis of one (1, total_tokens, ...) sequence, each in
// raster order. The index math every kernel of a packed call shares, CPU (.cpp) and CUDA (.cu), so the CPU tests
// exercise what the GPU runs. Python twin: ledit/ops/packing.py.
//
// The metadata of a call, int32 arrays on the tensors' device:
//   grids          (n, 2)   h and w of image i at [2i], [2i + 1]
//   token_offsets  (n + 1)  first token of image i; [n] = total tokens (flash-attn's cu_seqlens)
//   unit_offsets   (n + 1)  first work unit of image i; [n] = total units
// A kernel splits each image into work units of its own choosing (a scan_attention query tile, a dwconv block of
// rows) and lays the images' units end to end; unit u belongs to image segment_of(unit_offsets, n, u). So a unit
// (a CPU task, a GPU block) finds its image by binary search, with no per-unit table, and a GPU launch can cover
// a bound that depends on shapes only (scan_tiles.h: max_packed_tiles): units past the total find no image and
// exit. The offsets are prefix sums over the images, computed on the tensors' device, so nothing is read on the
// host. A batch of B images of one grid is the same thing with unit_offsets[i] = i * units per image.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace ledit {

// The segment holding x among n segments with ascending starts offsets[0..n] (offsets[0] = 0, offsets[n] = the
// end): the largest i < n with offsets[i] <= x, skipping empty segments; n when x >= offsets[n]. offset_at(i)
// reads offsets[i]: an array on the host, a kernel's checked global loads on the GPU (common/device.h).
template <typename OffsetAt>
LEDIT_HOST_DEVICE int segment_of_at(OffsetAt offset_at, int n, int64_t x) {
  if (x >= offset_at(n)) return n;
  int lo = 0, hi = n - 1;  // invariant: offsets[lo] <= x < offsets[hi + 1]
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (offset_at(mid) <= x) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

LEDIT_HOST_DEVICE int segment_of(const int32_t* offsets, int n, int64_t x) {
  return segment_of_at([offsets](int i) { return offsets[i]; }, n, x);
}

}  // namespace ledit
