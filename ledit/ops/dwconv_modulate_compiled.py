"""The compiled ``dwconv_modulate`` kernels as backends: ``cpu`` and ``cuda`` (``ledit._C``: C++ CPU and CUDA), and
``cuda_emulated`` (``ledit._C_emulated``: the CUDA kernels' source run by the CPU executor on CPU tensors, with every
access checked; opt-in only, never chosen automatically; docs/cuda-executor.md).

csrc/dwconv_modulate/ defines two ``torch.library`` ops; this module gives them fake implementations (so
``torch.compile`` traces them without graph breaks) and autograd:

    ledit::dwconv_modulate_fwd(x, h, w, weight, bias, shift, scale, gate, residual, dilation, norm)
        -> (out, mean, rstd)   mean/rstd: (B, N) fp32 LayerNorm stats kept for the backward; (0,) without LN
    ledit::dwconv_modulate_bwd(grad_out, x, h, w, weight, shift, scale, gate, mean, rstd, dilation, norm)
        -> (grad_x, sums)      sums: (B, k*k + 3, C) fp32 per-sample sums over tokens
    ledit::dwconv_modulate_packed_fwd / _bwd   the same with a grids tensor for (h, w): a packed sequence, sums
        per image (n_images, k*k + 3, C)

The kernels reduce only over tokens; ``dwconv_modulate.parameter_grads`` turns those sums into the gradients of
weight, bias, shift, scale and gate (a few tiny tensor ops, shared with the Triton backend). Row layout of ``sums``,
with
g = grad_out, y the modulated input and e = sum_t w_t * g[n - offset(t)] (csrc/dwconv_modulate/dwconv_modulate.h):
rows [0, k*k) sum g * y[n + offset(t)] per tap t, then sum g, sum e, sum e * u.
"""

from __future__ import annotations

import torch

from ledit.ops.dwconv_modulate import DWCONV_MODULATE_BACKENDS, register_autograd, stats_like, sums_like
from ledit.ops.extension import (
    EMULATED_LIBRARY,
    compiled_op_unavailable_reason,
    emulated_op_unavailable_reason,
    load_emulated_extension,
    load_extension,
    packed_op_unavailable_reason,
)
from ledit.ops.packing import is_packed


def _compiled_ops_built(library: str = "ledit") -> bool:
    ext, _ = load_extension() if library == "ledit" else load_emulated_extension()
    return ext is not None and hasattr(getattr(torch.ops, library), "dwconv_modulate_fwd")


def _register_compiled_ops(library: str) -> None:
    """Fake implementations and autograd for ``library``'s dwconv ops (ledit._C's, or ledit._C_emulated's), when
    built. Done at import, never while torch.compile traces a call."""
    if not _compiled_ops_built(library):
        return

    @torch.library.register_fake(f"{library}::dwconv_modulate_fwd")
    def _(x, h, w, weight, bias, shift, scale, gate, residual, dilation, norm):
        return (torch.empty_like(x, memory_format=torch.contiguous_format), *stats_like(x, norm))

    @torch.library.register_fake(f"{library}::dwconv_modulate_bwd")
    def _(grad_out, x, h, w, weight, shift, scale, gate, mean, rstd, dilation, norm):
        return torch.empty_like(x, memory_format=torch.contiguous_format), sums_like(x, weight)

    register_autograd(f"{library}::dwconv_modulate_fwd", getattr(torch.ops, library).dwconv_modulate_bwd)
    if not hasattr(getattr(torch.ops, library), "dwconv_modulate_packed_fwd"):
        return  # built before packed sequences: packed_op_unavailable_reason says so

    @torch.library.register_fake(f"{library}::dwconv_modulate_packed_fwd")
    def _(x, grids, weight, bias, shift, scale, gate, residual, dilation, norm):
        return (torch.empty_like(x, memory_format=torch.contiguous_format), *stats_like(x, norm))

    @torch.library.register_fake(f"{library}::dwconv_modulate_packed_bwd")
    def _(grad_out, x, grids, weight, shift, scale, gate, mean, rstd, dilation, norm):
        return torch.empty_like(x, memory_format=torch.contiguous_format), sums_like(x, weight, grids.shape[0])

    register_autograd(f"{library}::dwconv_modulate_packed_fwd",
                      getattr(torch.ops, library).dwconv_modulate_packed_bwd, packed=True)


def _compiled_backend(library: str):
    """The backend function calling ``library``'s forward op (ledit._C's kernel for x's device, or the executor's)."""

    def dwconv_modulate_compiled(x, grid, weight, bias, shift, scale, gate, residual, dilation, norm):
        ops = getattr(torch.ops, library)
        if is_packed(grid):
            out, _, _ = ops.dwconv_modulate_packed_fwd(x, grid, weight, bias, shift, scale, gate, residual, dilation,
                                                       norm)
            return out
        h, w = grid
        out, _, _ = ops.dwconv_modulate_fwd(x, h, w, weight, bias, shift, scale, gate, residual, dilation, norm)
        return out

    return dwconv_modulate_compiled


def _can_run_on(device_type: str):
    def can_run(x, grid, *args, **kwargs):
        reason = compiled_op_unavailable_reason("dwconv_modulate", device_type, x, "x")
        if reason is None and is_packed(grid):
            reason = packed_op_unavailable_reason("dwconv_modulate", device_type)
        return reason

    return can_run


def _can_run_emulated(x, grid, *args, **kwargs):
    reason = emulated_op_unavailable_reason("dwconv_modulate", x, "x")
    if reason is None and is_packed(grid):
        reason = packed_op_unavailable_reason("dwconv_modulate", "cuda_emulated")
    return reason


_register_compiled_ops("ledit")
_register_compiled_ops(EMULATED_LIBRARY)
DWCONV_MODULATE_BACKENDS.register("cpu", _compiled_backend("ledit"), _can_run_on("cpu"))
DWCONV_MODULATE_BACKENDS.register("cuda", _compiled_backend("ledit"), _can_run_on("cuda"))
DWCONV_MODULATE_BACKENDS.register("cuda_emulated", _compiled_backend(EMULATED_LIBRARY), _can_run_emulated)
