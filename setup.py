"""Build ledit, with the compiled extension ledit._C when torch is importable at build time.

Environment variables (all documented in README.md):
  LEDIT_SKIP_EXT=1     pure-Python install: no ledit._C (every op falls back to its reference/Triton backend).
  LEDIT_FORCE_CUDA=1   add the CUDA kernels even with no GPU visible (compile-only machines); needs a CUDA
                       build of torch and nvcc. Without it, CUDA kernels are built when torch has CUDA and nvcc
                       is found.
  LEDIT_CUDA_ARCHS     CUDA architectures, default "80;90" (a trailing "a", e.g. "90a", is allowed).
  LEDIT_BUILD_EMULATED=1  also build ledit._C_emulated: the CUDA kernels compiled as C++ for the CPU executor
                       (backend "cuda_emulated"; tests and CI). About 35 CPU-seconds more; no CUDA needed.
  MAX_JOBS             parallel compile jobs (ninja), as in torch.utils.cpp_extension.
"""

import os
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)

from build_utils import (  # noqa: E402
    CXX_FLAGS,
    DEFAULT_CUDA_ARCHS,
    NVCC_FLAGS,
    cuda_gencode_flags,
    emulated_sources,
    env_flag,
    extension_sources,
)

# The executor's speed sets CI's test time; -O2 builds faster than -O3 and runs as fast here. -g0 drops the -g that
# Python's build flags add: debug info for torch's templates was a third of this module's build time. The kernels'
# `#pragma unroll` is nvcc's: the host compiler ignores it, without a warning per loop.
EMULATOR_CXX_FLAGS = ["-O2", "-g0", "-fvisibility=hidden", "-ffp-contract=fast", "-Wno-unknown-pragmas"]


def extension_modules():
    if env_flag("LEDIT_SKIP_EXT"):
        print("ledit: LEDIT_SKIP_EXT=1, building without ledit._C (pure Python)")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        print(
            "ledit: WARNING: torch is not importable at build time, so ledit._C is NOT built (pure Python).\n"
            "ledit: install torch first, then `pip install --no-build-isolation .` to build the kernels."
        )
        return [], {}

    # Not csrc/emulator/ (ledit._C_emulated, below) nor csrc/tests/ (CMake's C++ unit tests).
    cpp_sources, cuda_sources = extension_sources(ROOT)
    include_dirs = [os.path.join(ROOT, "csrc")]
    force_cuda = env_flag("LEDIT_FORCE_CUDA")
    with_cuda = bool(cuda_sources) and (force_cuda or (torch.version.cuda is not None and cpp_extension.CUDA_HOME))
    if with_cuda and torch.version.cuda is None:
        sys.exit(
            "ledit: LEDIT_FORCE_CUDA=1 needs a CUDA build of torch (this torch is CPU-only). "
            "To only check that the CUDA sources compile, run `python scripts/check_cuda_compile.py`."
        )
    if not with_cuda:
        print("ledit: building ledit._C with the CPU kernels only "
              f"(torch CUDA: {torch.version.cuda}, CUDA_HOME: {cpp_extension.CUDA_HOME})")
        ext = cpp_extension.CppExtension(
            "ledit._C", cpp_sources, include_dirs=include_dirs, extra_compile_args={"cxx": CXX_FLAGS}
        )
    else:
        archs = os.environ.get("LEDIT_CUDA_ARCHS", DEFAULT_CUDA_ARCHS)
        print(f"ledit: building ledit._C with CPU and CUDA kernels for arches {archs}")
        ext = cpp_extension.CUDAExtension(
            "ledit._C",
            cpp_sources + cuda_sources,
            include_dirs=include_dirs,
            define_macros=[("LEDIT_WITH_CUDA", "1")],
            extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS + cuda_gencode_flags(archs)},
        )
    extensions = [ext]
    if env_flag("LEDIT_BUILD_EMULATED"):
        print("ledit: building ledit._C_emulated (the CUDA kernels on the CPU executor)")
        extensions.append(cpp_extension.CppExtension(
            "ledit._C_emulated",
            emulated_sources(ROOT),
            include_dirs=include_dirs,
            define_macros=[("LEDIT_EMULATED_DEVICE", "1")],
            extra_compile_args={"cxx": EMULATOR_CXX_FLAGS},
        ))
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=True)
    return extensions, {"build_ext": build_ext}


ext_modules, cmdclass = extension_modules()

setup(
    packages=find_packages(include=["ledit", "ledit.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
