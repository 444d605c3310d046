// Schema of the scan_attention ops. Kernels register per device in scan_attention_cpu.cpp and
// scan_attention_cuda.cu; fake (meta) implementations and autograd live in ledit/ops/scan_attention_compiled.py.
#include "common/torch_library.h"

LEDIT_LIBRARY_FRAGMENT(m) {
  // Returns (out (B, N, H, D) in q's dtype, lse (B, H, N) float32: the natural-log softmax normaliser per query).
  m.def("scan_attention_fwd(Tensor q, Tensor k, Tensor v, int h, int w, str scan, float softmax_scale)"
        " -> (Tensor, Tensor)");
  // Recomputes the probabilities from lse; returns (dq, dk, dv) in q's dtype.
  m.def("scan_attention_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, int h, int w,"
        " str scan, float softmax_scale) -> (Tensor, Tensor, Tensor)");
  // A packed sequence: q, k, v (1, total_tokens, H, D), grids (n_images, 2) int32 per-image (h, w), images back to
  // back (common/packed_images.h); lse (1, H, total_tokens). Attention never crosses images.
  m.def("scan_attention_packed_fwd(Tensor q, Tensor k, Tensor v, Tensor grids, str scan, float softmax_scale)"
        " -> (Tensor, Tensor)");
  m.def("scan_attention_packed_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse,"
        " Tensor grids, str scan, float softmax_scale) -> (Tensor, Tensor, Tensor)");
}
