// Scan-mask predicate shared by the CPU (.cpp) and CUDA (.cu) kernels, so the CPU tests exercise the same code
// the GPU runs. Python twin: ledit/ops/masks.py. Tokens are in raster order on an (h, w) grid; a query at
// (qr, qc) sees a key at (kr, kc) iff the predicate holds. A token always sees itself.
#pragma once

#include "common/host_device.h"

namespace ledit {

// Values match the index of the scan name in ledit.ops.masks.SCANS.
enum class Scan : int { kFull = 0, kRaster = 1, kLowerRight = 2, kNeighborhood = 3, kCorner = 4 };

LEDIT_HOST_DEVICE bool scan_visible(Scan scan, int qr, int qc, int kr, int kc, int w) {
  switch (scan) {
    case Scan::kFull:
      return true;
    case Scan::kRaster:
      return kr * w + kc <= qr * w + qc;
    case Scan::kLowerRight:
      return kr <= qr && kc <= qc;
    case Scan::kNeighborhood: {
      const int dr = kr - qr, dc = kc - qc;
      return (kr <= qr && kc <= qc) || (dr >= -1 && dr <= 1 && dc >= -1 && dc <= 1);
    }
    case Scan::kCorner:
    default:
      return !(kr > qr && kc > qc);
  }
}

}  // namespace ledit
