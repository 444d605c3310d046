"""The committed GPU resource budgets (scripts/gpu_budgets.toml) and the targets' shared-memory limits, shared by
check_triton_compile.py and check_cuda_compile.py."""

from __future__ import annotations

import os

BUDGET_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_budgets.toml")

# cudaDevAttrMaxSharedMemoryPerBlockOptin: the most dynamic shared memory one block may opt in to.
SHARED_MEMORY_OPTIN_BYTES = {80: 163 * 1024, 90: 227 * 1024}


def shared_memory_limit(arch: int) -> int:
    if arch not in SHARED_MEMORY_OPTIN_BYTES:
        raise SystemExit(f"no shared-memory limit known for sm_{arch}; add it to SHARED_MEMORY_OPTIN_BYTES")
    return SHARED_MEMORY_OPTIN_BYTES[arch]


def load_budgets(path: str = BUDGET_FILE) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    with open(path, "rb") as f:
        return tomllib.load(f)
