"""The compiled ``scan_attention`` kernels (``ledit._C``: C++ CPU and CUDA) as the ``cpu`` and ``cuda`` backends.

csrc/scan_attention/ defines two ``torch.library`` ops; this module gives them fake implementations (so
``torch.compile`` traces them without graph breaks) and autograd:

    ledit::scan_attention_fwd(q, k, v, h, w, scan, softmax_scale) -> (out, lse)
        out: (B, N, H, D) in q's dtype; lse: (B, H, N) fp32 natural-log softmax normaliser of each query
    ledit::scan_attention_bwd(dout, q, k, v, out, lse, h, w, scan, softmax_scale) -> (dq, dk, dv)
        recomputes the probabilities from lse (no N x N tensor is ever stored)

The Triton backend (``scan_attention_triton.py``) defines ops with the same signatures; both register the
autograd of ``ledit.ops.scan_attention``.
"""

from __future__ import annotations

import torch

from ledit.ops.extension import compiled_op_unavailable_reason, load_extension, packed_op_unavailable_reason
from ledit.ops.packing import is_packed
from ledit.ops.scan_attention import SCAN_ATTENTION_BACKENDS, register_autograd, resolve_scale

# The CUDA kernel runs on tensor cores (mma.sync with fp32 accumulation), which take 16-bit operands.
CUDA_KERNEL_DTYPES = (torch.float16, torch.bfloat16)


def _compiled_ops_built() -> bool:
    ext, _ = load_extension()
    return ext is not None and hasattr(torch.ops.ledit, "scan_attention_fwd")


def scan_attention_compiled(q, k, v, grid, scan, softmax_scale):
    """The ``cpu``/``cuda`` backend: ledit._C's kernel for q's device."""
    h, w = grid
    out, _ = torch.ops.ledit.scan_attention_fwd(q, k, v, h, w, scan, resolve_scale(q, softmax_scale))
    return out


def _can_run_on(device_type: str):
    def can_run(q, k, v, grid, *args, **kwargs):
        reason = compiled_op_unavailable_reason("scan_attention", device_type, q, "q")
        if reason is None and device_type == "cuda" and q.dtype not in CUDA_KERNEL_DTYPES:
            reason = (f"the CUDA kernel runs on tensor cores in float16/bfloat16, q is {q.dtype}; "
                      "float32 runs on the triton or reference backend")
        if reason is None and is_packed(grid):
            reason = packed_op_unavailable_reason("scan_attention", device_type)
        return reason

    return can_run


def _register_compiled_ops() -> None:
    """Fake implementations and autograd for ledit._C's attention ops, when it is built with them.

    Done at import, never while torch.compile traces a call."""
    if not _compiled_ops_built():
        return

    @torch.library.register_fake("ledit::scan_attention_fwd")
    def _(q, k, v, h, w, scan, softmax_scale):
        batch, tokens, heads, _ = q.shape
        return q.new_empty(q.shape), q.new_empty((batch, heads, tokens), dtype=torch.float32)

    @torch.library.register_fake("ledit::scan_attention_bwd")
    def _(dout, q, k, v, out, lse, h, w, scan, softmax_scale):
        return q.new_empty(q.shape), q.new_empty(q.shape), q.new_empty(q.shape)

    register_autograd("ledit::scan_attention_fwd", torch.ops.ledit.scan_attention_bwd)


_register_compiled_ops()
SCAN_ATTENTION_BACKENDS.register("cpu", scan_attention_compiled, _can_run_on("cpu"))
SCAN_ATTENTION_BACKENDS.register("cuda", scan_attention_compiled, _can_run_on("cuda"))
