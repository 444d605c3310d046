"""Triton twin of csrc/common/packed_images.h: how a program of a packed call finds its image. Imported only by the
Triton kernel modules (``*_triton_kernels.py``), so only when triton is installed.

A packed call's kernels split each image into work units (an attention tile, a block of dwconv tokens) laid end to
end; ``unit_offsets`` (n_images + 1, int32, on the device) holds each image's first unit, and the launch covers a
bound that depends on shapes only, so a program finds its image by binary search and a program past the last
unit finds none (n_images) and does nothing.
"""

import triton
import triton.language as tl


@triton.jit
def segment_of(offsets_ptr, n, x, STEPS: tl.constexpr):
    """The largest i < n with offsets[i] <= x (skipping empty segments), or n when x >= offsets[n]. STEPS >= the
    bit length of n, a compile-time constant (it changes only when n crosses a power of two)."""
    lo = 0
    hi = n - 1
    for _ in tl.static_range(STEPS):  # invariant: offsets[lo] <= x < offsets[hi + 1]
        mid = (lo + hi + 1) // 2
        up = tl.load(offsets_ptr + mid) <= x
        lo = tl.where(up, mid, lo)
        hi = tl.where(up, hi, mid - 1)
    return tl.where(x >= tl.load(offsets_ptr + n), n, lo)
