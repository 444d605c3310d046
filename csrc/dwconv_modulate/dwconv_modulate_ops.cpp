// Schema of the dwconv_modulate ops. Kernels register per device in dwconv_modulate_cpu.cpp and
// dwconv_modulate_cuda_ops.cpp; fake (meta) implementations and autograd live in ledit/ops/dwconv_modulate_compiled.py
// and ledit/ops/dwconv_modulate.py.
#include "common/torch_library.h"

LEDIT_LIBRARY_FRAGMENT(m) {
  m.def(
      "dwconv_modulate_fwd(Tensor x, int h, int w, Tensor weight, Tensor? bias, Tensor shift, Tensor scale, "
      "Tensor? gate, Tensor? residual, int dilation, bool norm) -> (Tensor out, Tensor mean, Tensor rstd)");
  m.def(
      "dwconv_modulate_bwd(Tensor grad_out, Tensor x, int h, int w, Tensor weight, Tensor shift, Tensor scale, "
      "Tensor? gate, Tensor mean, Tensor rstd, int dilation, bool norm) -> (Tensor grad_x, Tensor sums)");
  // A packed sequence: x and residual (1, total_tokens, C), grids (n_images, 2) int32 per-image (h, w), images back
  // to back (common/packed_images.h), shift/scale/gate (n_images, C); sums (n_images, k*k + 3, C).
  m.def(
      "dwconv_modulate_packed_fwd(Tensor x, Tensor grids, Tensor weight, Tensor? bias, Tensor shift, Tensor scale, "
      "Tensor? gate, Tensor? residual, int dilation, bool norm) -> (Tensor out, Tensor mean, Tensor rstd)");
  m.def(
      "dwconv_modulate_packed_bwd(Tensor grad_out, Tensor x, Tensor grids, Tensor weight, Tensor shift, "
      "Tensor scale, Tensor? gate, Tensor mean, Tensor rstd, int dilation, bool norm) -> (Tensor grad_x, Tensor sums)");
}
