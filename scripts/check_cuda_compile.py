"""Prove the CUDA sources compile without a GPU or a CUDA build of torch: run nvcc -c on every csrc/*/*.cu for
each arch in LEDIT_CUDA_ARCHS (default "80;90") with the flags a real build uses (setup.py's plus torch's
COMMON_NVCC_FLAGS, which remove the implicit half/bfloat16 conversions), and syntax-check the torch glue of the
CUDA kernels (csrc/*/*_cuda_ops.cpp, empty in CPU builds) with LEDIT_WITH_CUDA defined.

The CPU wheel of torch ships the ATen/c10 CUDA headers (all but one generated header, stubbed here), so compiling
works; only linking would need the CUDA libraries, which is what `LEDIT_FORCE_CUDA=1 pip install
--no-build-isolation .` does on a CUDA build of torch.
"""

from __future__ import annotations

import concurrent.futures
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    from torch.utils import cpp_extension

    from build_utils import DEFAULT_CUDA_ARCHS, NVCC_FLAGS, cuda_gencode_flags

    nvcc = shutil.which("nvcc") or (cpp_extension.CUDA_HOME and os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc"))
    if not nvcc or not os.path.exists(nvcc):
        print("check_cuda_compile: nvcc not found (set CUDA_HOME or put nvcc on PATH)", file=sys.stderr)
        return 1
    sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "*", "*.cu")))
    if not sources:
        print("check_cuda_compile: no .cu sources under csrc/", file=sys.stderr)
        return 1
    archs = os.environ.get("LEDIT_CUDA_ARCHS", DEFAULT_CUDA_ARCHS)
    includes = [os.path.join(ROOT, "csrc"), sysconfig.get_paths()["include"]]
    includes += cpp_extension.include_paths()  # nvcc adds its own CUDA include dir; a CPU torch has no CUDA_HOME
    defines = ["-DLEDIT_WITH_CUDA=1", "-D_GLIBCXX_USE_CXX11_ABI=1"]
    flags = cpp_extension.COMMON_NVCC_FLAGS + NVCC_FLAGS + cuda_gencode_flags(archs) + defines
    flags += [f"-I{p}" for p in includes]
    glue_sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "*", "*_cuda_ops.cpp")))
    jobs = int(os.environ.get("MAX_JOBS", os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as out_dir, concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        # nvcc hands a .cpp to the host compiler with CUDA's include dir; -fsyntax-only skips code generation.
        glue_flags = ["-std=c++17", "-w", "-Xcompiler", "-fsyntax-only"] + defines + [f"-I{p}" for p in includes]
        glue_flags.append(f"-I{_stub_cuda_cmake_macros(out_dir)}")  # last: a CUDA torch's own header wins

        def compile_one(src: str):
            obj = os.path.join(out_dir, os.path.basename(src) + ".o")
            extra = glue_flags if src.endswith(".cpp") else flags + ["-Xcompiler", "-fPIC"]
            return src, subprocess.run([nvcc, "-c", src, "-o", obj] + extra, capture_output=True, text=True)

        failed = 0
        for src, result in pool.map(compile_one, sources + glue_sources):
            rel = os.path.relpath(src, ROOT)
            if result.returncode != 0:
                failed += 1
                print(f"FAILED {rel}\n{result.stdout}{result.stderr}", file=sys.stderr)
            else:
                print(f"ok     {rel}" + ("" if src.endswith(".cpp") else f" (arches {archs})"))
    return 1 if failed else 0


def _stub_cuda_cmake_macros(out_dir: str) -> str:
    """An include dir with c10/cuda/impl/cuda_cmake_macros.h, which only CUDA builds of torch generate."""
    stub = os.path.join(out_dir, "stub", "c10", "cuda", "impl")
    os.makedirs(stub)
    with open(os.path.join(stub, "cuda_cmake_macros.h"), "w") as f:
        f.write("#pragma once\n")
    return os.path.join(out_dir, "stub")


if __name__ == "__main__":
    sys.exit(main())
