// The Python module ledit._C. Each op registers its schema and kernels with TORCH_LIBRARY_FRAGMENT(ledit, ...)
// in its own folder; importing this module runs those registrations. The module itself only reports build facts.
#include <torch/extension.h>

namespace {

bool cuda_compiled() {
#ifdef LEDIT_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "ledit compiled kernels (ops are registered under torch.ops.ledit)";
  m.def("cuda_compiled", &cuda_compiled, "Whether this build carries the CUDA kernels.");
}
