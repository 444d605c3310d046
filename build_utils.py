"""Build settings shared by setup.py and scripts/check_cuda_compile.py (one place for the nvcc flags and for which
sources each extension compiles)."""

from __future__ import annotations

import glob
import os
import sys

NVCC_FLAGS = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo"]
# -ffp-contract=fast: under -std=c++NN (ISO mode) GCC otherwise never fuses a*b+c into one FMA in the CPU kernels.
# -fopenmp: at::parallel_for's OpenMP loop is compiled inline into our code (ATen/ParallelOpenMP.h), and without the
# flag every CPU kernel runs on one thread whatever torch.set_num_threads says. Compile-only: the GOMP symbols
# resolve to the libgomp that torch itself loads, so there is one OpenMP runtime and one thread count.
CXX_FLAGS = ["-O3", "-fvisibility=hidden", "-ffp-contract=fast"] + (["-fopenmp"] if sys.platform == "linux" else [])
DEFAULT_CUDA_ARCHS = "80;90"

# csrc/ folders that are not an op's: the CPU executor's units (ledit._C_emulated) and the C++ unit tests (programs
# with their own main(), built by CMake for ctest: never part of an extension).
EMULATOR_DIR = os.path.join("csrc", "emulator")
NOT_IN_EXTENSION = (EMULATOR_DIR, os.path.join("csrc", "tests"))


def extension_sources(root: str) -> tuple[list[str], list[str]]:
    """ledit._C's (C++, CUDA) sources, relative to root: csrc/*.cpp and every op folder's csrc/<op>/*.cpp, *.cu."""

    def sources(*pattern: str) -> list[str]:
        paths = (os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "csrc", *pattern)))
        return sorted(p for p in paths if os.path.dirname(p) not in NOT_IN_EXTENSION)

    return sources("*.cpp") + sources("*", "*.cpp"), sources("*", "*.cu")


def emulated_sources(root: str) -> list[str]:
    """ledit._C_emulated's C++ sources, relative to root (the kernels' .cu files reach it through kernels_*.cpp)."""
    return sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, EMULATOR_DIR, "*.cpp")))


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def cuda_gencode_flags(archs: str) -> list[str]:
    """-gencode for each arch (SASS), plus PTX for the newest so later GPUs can JIT it.

    Explicit -gencode flags also stop torch from probing for a GPU to pick arches."""
    arch_list = [a.strip() for a in archs.replace(",", ";").split(";") if a.strip()]
    if not arch_list or not all(a.rstrip("a").isdigit() for a in arch_list):
        raise SystemExit(f"LEDIT_CUDA_ARCHS={archs!r} is not valid: use a list like '80;90' or '80;90a'")
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in arch_list]
    flags.append(f"-gencode=arch=compute_{arch_list[-1]},code=compute_{arch_list[-1]}")
    return flags
