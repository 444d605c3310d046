"""The compiled ``scan_attention`` kernels as backends: ``cpu`` and ``cuda`` (``ledit._C``: C++ CPU and CUDA), and
``cuda_emulated`` (``ledit._C_emulated``: the CUDA kernel's source run by the CPU executor on CPU tensors, with every
access checked; opt-in only, never chosen automatically; docs/cuda-executor.md).

csrc/scan_attention/ defines two ``torch.library`` ops; this module gives them fake implementations (so
``torch.compile`` traces them without graph breaks) and autograd:

    ledit::scan_attention_fwd(q, k, v, h, w, scan, softmax_scale) -> (out, lse)
        out: (B, N, H, D) in q's dtype; lse: (B, H, N) fp32 natural-log softmax normaliser of each query
    ledit::scan_attention_bwd(dout, q, k, v, out, lse, h, w, scan, softmax_scale) -> (dq, dk, dv)
        recomputes the probabilities from lse (no N x N tensor is ever stored)
    ledit::scan_attention_packed_fwd / _bwd   the same with a grids tensor for (h, w): a packed sequence

``ledit_cuda_emulated::scan_attention_fwd/bwd`` and ``_packed_fwd/_bwd`` have the same signatures. The Triton backend
(``scan_attention_triton.py``) defines ops with the same signatures; all register the autograd of
``ledit.ops.scan_attention``.
"""

from __future__ import annotations

import torch

from ledit.ops.extension import (
    EMULATED_LIBRARY,
    compiled_op_unavailable_reason,
    emulated_op_unavailable_reason,
    load_emulated_extension,
    load_extension,
    packed_op_unavailable_reason,
)
from ledit.ops.packing import is_packed
from ledit.ops.scan_attention import SCAN_ATTENTION_BACKENDS, register_autograd, resolve_scale

# The CUDA kernel runs on tensor cores (mma.sync with fp32 accumulation), which take 16-bit operands.
CUDA_KERNEL_DTYPES = (torch.float16, torch.bfloat16)


def _compiled_ops_built(library: str = "ledit") -> bool:
    ext, _ = load_extension() if library == "ledit" else load_emulated_extension()
    return ext is not None and hasattr(getattr(torch.ops, library), "scan_attention_fwd")


def _compiled_backend(library: str):
    """The backend function calling ``library``'s forward op (ledit._C's kernel for q's device, or the executor's)."""

    def scan_attention_compiled(q, k, v, grid, scan, softmax_scale):
        ops = getattr(torch.ops, library)
        if is_packed(grid):
            out, _ = ops.scan_attention_packed_fwd(q, k, v, grid, scan, resolve_scale(q, softmax_scale))
            return out
        h, w = grid
        out, _ = ops.scan_attention_fwd(q, k, v, h, w, scan, resolve_scale(q, softmax_scale))
        return out

    return scan_attention_compiled


def _tensor_core_dtype_reason(q) -> str | None:
    if q.dtype not in CUDA_KERNEL_DTYPES:
        return (f"the CUDA kernel runs on tensor cores in float16/bfloat16, q is {q.dtype}; "
                "float32 runs on the triton or reference backend")
    return None


def _can_run_on(device_type: str):
    def can_run(q, k, v, grid, *args, **kwargs):
        reason = compiled_op_unavailable_reason("scan_attention", device_type, q, "q")
        if reason is None and device_type == "cuda":
            reason = _tensor_core_dtype_reason(q)
        if reason is None and is_packed(grid):
            reason = packed_op_unavailable_reason("scan_attention", device_type)
        return reason

    return can_run


def _can_run_emulated(q, k, v, grid, *args, **kwargs):
    reason = emulated_op_unavailable_reason("scan_attention", q, "q") or _tensor_core_dtype_reason(q)
    if reason is None and is_packed(grid):
        reason = packed_op_unavailable_reason("scan_attention", "cuda_emulated")
    return reason


def _register_compiled_ops(library: str) -> None:
    """Fake implementations and autograd for ``library``'s attention ops (ledit._C's, or ledit._C_emulated's), when
    built. Done at import, never while torch.compile traces a call."""
    if not _compiled_ops_built(library):
        return

    @torch.library.register_fake(f"{library}::scan_attention_fwd")
    def _(q, k, v, h, w, scan, softmax_scale):
        batch, tokens, heads, _ = q.shape
        return q.new_empty(q.shape), q.new_empty((batch, heads, tokens), dtype=torch.float32)

    @torch.library.register_fake(f"{library}::scan_attention_bwd")
    def _(dout, q, k, v, out, lse, h, w, scan, softmax_scale):
        return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)

    register_autograd(f"{library}::scan_attention_fwd", getattr(torch.ops, library).scan_attention_bwd)
    if not hasattr(getattr(torch.ops, library), "scan_attention_packed_fwd"):
        return  # built before packed sequences: packed_op_unavailable_reason says so

    @torch.library.register_fake(f"{library}::scan_attention_packed_fwd")
    def _(q, k, v, grids, scan, softmax_scale):
        batch, tokens, heads, _ = q.shape
        return q.new_empty(q.shape), q.new_empty((batch, heads, tokens), dtype=torch.float32)

    @torch.library.register_fake(f"{library}::scan_attention_packed_bwd")
    def _(dout, q, k, v, out, lse, grids, scan, softmax_scale):
        return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)

    register_autograd(f"{library}::scan_attention_packed_fwd",
                      getattr(torch.ops, library).scan_attention_packed_bwd, packed=True)


_register_compiled_ops("ledit")
_register_compiled_ops(EMULATED_LIBRARY)
SCAN_ATTENTION_BACKENDS.register("cpu", _compiled_backend("ledit"), _can_run_on("cpu"))
SCAN_ATTENTION_BACKENDS.register("cuda", _compiled_backend("ledit"), _can_run_on("cuda"))
SCAN_ATTENTION_BACKENDS.register("cuda_emulated", _compiled_backend(EMULATED_LIBRARY), _can_run_emulated)
