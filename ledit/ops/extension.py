"""Lazy access to the compiled extension ``ledit._C``: importing ledit never fails because it is missing."""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Optional

import torch

# sm_80+: bf16 mma.sync and the async copies of the CUDA kernels (built for sm_80 and sm_90 by default).
MIN_CUDA_CAPABILITY = (8, 0)
REBUILD_HINT = "reinstall with `pip install --no-build-isolation -e .` (and without LEDIT_SKIP_EXT=1)"


EMULATED_LIBRARY = "ledit_cuda_emulated"
EMULATED_BUILD_HINT = ("build it with `LEDIT_BUILD_EMULATED=1 pip install --no-build-isolation -e .` "
                       "(CI and the test setup do)")


@functools.lru_cache(maxsize=None)
def load_emulated_extension() -> tuple[Optional[ModuleType], Optional[str]]:
    """(ledit._C_emulated, None) when it imports, else (None, why not): the CUDA kernels compiled for the CPU
    executor (csrc/emulator/), registering torch.ops.ledit_cuda_emulated.*."""
    try:
        from ledit import _C_emulated
    except ImportError as error:
        return None, f"ledit._C_emulated is not built ({error}); {EMULATED_BUILD_HINT}"
    return _C_emulated, None


def emulated_op_unavailable_reason(op_name: str, tensor, argument: str) -> Optional[str]:
    """Why the executor's ``op_name`` (the CUDA kernel run on the CPU) cannot take ``tensor``, or None."""
    if tensor.device.type != "cpu":
        return f"cuda_emulated runs the CUDA kernels on CPU tensors, {argument} is on {tensor.device}"
    ext, reason = load_emulated_extension()
    if ext is None:
        return reason
    if not hasattr(getattr(torch.ops, EMULATED_LIBRARY), f"{op_name}_fwd"):
        return f"ledit._C_emulated was built before {op_name} existed; {EMULATED_BUILD_HINT}"
    return None


@functools.lru_cache(maxsize=None)
def load_extension() -> tuple[Optional[ModuleType], Optional[str]]:
    """(ledit._C, None) when it imports, else (None, why not). Importing it registers its torch.library ops."""
    try:
        from ledit import _C
    except ImportError as error:
        return None, f"ledit._C is not built ({error}); {REBUILD_HINT}"
    return _C, None


def extension_unavailable_reason(device_type: str) -> Optional[str]:
    """Why the compiled kernels cannot run on this device type, or None if they can."""
    ext, reason = load_extension()
    if ext is None:
        return reason
    if device_type == "cuda" and not ext.cuda_compiled():
        return f"ledit._C was built without CUDA kernels (torch had no CUDA or nvcc was not found); {REBUILD_HINT}"
    if device_type not in ("cpu", "cuda"):
        return f"no compiled kernels for device type {device_type!r}"
    return None


def compiled_op_unavailable_reason(op_name: str, device_type: str, tensor, argument: str) -> Optional[str]:
    """Why ledit._C's ``op_name`` kernel for ``device_type`` cannot take ``tensor`` (the ``argument``), or None."""
    if tensor.device.type != device_type:
        return f"this backend runs {device_type} tensors, {argument} is on {tensor.device}"
    reason = extension_unavailable_reason(device_type)
    if reason is None and not hasattr(torch.ops.ledit, f"{op_name}_fwd"):
        reason = f"ledit._C was built before {op_name} existed; {REBUILD_HINT}"
    if reason is None and device_type == "cuda":
        capability = torch.cuda.get_device_capability(tensor.device)
        if capability < MIN_CUDA_CAPABILITY:
            reason = (f"the CUDA kernels need compute capability >= 8.0 (Ampere; they use bf16 tensor cores), "
                      f"{tensor.device} is {capability[0]}.{capability[1]}")
    return reason


def packed_op_unavailable_reason(op_name: str, backend: str) -> Optional[str]:
    """Why the compiled ``backend`` ("cpu", "cuda" or "cuda_emulated") cannot run ``op_name`` on a packed sequence,
    or None if it can."""
    if backend == "cuda_emulated":
        if not hasattr(getattr(torch.ops, EMULATED_LIBRARY), f"{op_name}_packed_fwd"):
            return f"ledit._C_emulated was built before its packed {op_name} kernels existed; {EMULATED_BUILD_HINT}"
    elif not hasattr(torch.ops.ledit, f"{op_name}_packed_fwd"):
        return f"ledit._C was built before packed sequences existed; {REBUILD_HINT}"
    return None


@functools.lru_cache(maxsize=None)
def _triton_import_error() -> Optional[str]:
    try:
        import triton  # noqa: F401
    except ImportError as error:
        return f"triton is not installed ({error}); `pip install triton`"
    return None


def triton_unavailable_reason(device_type: str) -> Optional[str]:
    """Why the Triton kernels cannot run on this device type, or None if they can."""
    reason = _triton_import_error()
    if reason is not None:
        return reason
    if device_type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return "Triton runs on CPU tensors only in its interpreter: set TRITON_INTERPRET=1 before importing ledit"
    if device_type not in ("cpu", "cuda"):
        return f"no Triton kernels for device type {device_type!r}"
    return None
