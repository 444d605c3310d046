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
}
