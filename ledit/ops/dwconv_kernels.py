"""The compiled ``dwconv_modulate`` kernels (``ledit._C``: C++ CPU and CUDA) as the ``cpu`` and ``cuda`` backends.

csrc/dwconv_modulate/ defines two ``torch.library`` ops; this module gives them fake implementations (so
``torch.compile`` traces them without graph breaks) and autograd:

    ledit::dwconv_modulate_fwd(x, h, w, weight, bias, shift, scale, gate, residual, dilation, norm)
        -> (out, mean, rstd)   mean/rstd: (B, N) fp32 LayerNorm stats kept for the backward; (0,) without LN
    ledit::dwconv_modulate_bwd(grad_out, x, h, w, weight, shift, scale, gate, mean, rstd, dilation, norm)
        -> (grad_x, sums)      sums: (B, k*k + 3, C) fp32 per-sample sums over tokens

The kernels reduce only over tokens; ``parameter_grads`` turns those sums into the gradients of weight, bias,
shift, scale and gate (a few tiny tensor ops, shared with the Triton backend). Row layout of ``sums``, with
g = grad_out, y the modulated input and e = sum_t w_t * g[n - offset(t)] (csrc/dwconv_modulate/dwconv_modulate.h):
rows [0, k*k) sum g * y[n + offset(t)] per tap t, then sum g, sum e, sum e * u.
"""

from __future__ import annotations

import torch

from ledit.ops.dwconv import DWCONV_MODULATE_BACKENDS
from ledit.ops.extension import compiled_op_unavailable_reason, load_extension


def parameter_grads(sums, weight, bias, gate):
    """(dweight, dbias, dshift, dscale, dgate) from the kernels' per-sample sums; dbias/dgate None when absent."""
    channels, _, k, _ = weight.shape
    taps = k * k
    tap_sums, sum_g, sum_e, sum_e_u = sums[:, :taps], sums[:, taps], sums[:, taps + 1], sums[:, taps + 2]
    gate32 = gate.float() if gate is not None else None
    gated_tap_sums = tap_sums * gate32[:, None] if gate is not None else tap_sums
    dweight = gated_tap_sums.sum(0).t().reshape(channels, 1, k, k).to(weight.dtype)
    dbias = None
    if bias is not None:
        dbias = ((sum_g * gate32).sum(0) if gate is not None else sum_g.sum(0)).to(bias.dtype)
    dshift = sum_e * gate32 if gate is not None else sum_e
    dscale = sum_e_u * gate32 if gate is not None else sum_e_u
    dgate = None
    if gate is not None:
        weight_taps = weight.reshape(channels, taps).t().float()
        dgate = (tap_sums * weight_taps).sum(1)
        if bias is not None:
            dgate = dgate + sum_g * bias.float()
        dgate = dgate.to(gate.dtype)
    return dweight, dbias, dshift.to(weight.dtype), dscale.to(weight.dtype), dgate


def stats_like(x: torch.Tensor, norm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Empty (mean, rstd) tensors of the forward's saved-stats shape."""
    shape = x.shape[:2] if norm else (0,)
    return x.new_empty(shape, dtype=torch.float32), x.new_empty(shape, dtype=torch.float32)


def sums_like(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.new_empty((x.shape[0], weight.shape[-1] ** 2 + 3, x.shape[2]), dtype=torch.float32)


def register_autograd(forward_op, backward_op) -> None:
    """Autograd for a forward op with ledit::dwconv_modulate_fwd's signature, backed by a backward op with
    ledit::dwconv_modulate_bwd's signature (the compiled and the Triton pairs share this)."""

    def setup_context(ctx, inputs, output):
        x, h, w, weight, bias, shift, scale, gate, residual, dilation, norm = inputs
        _, mean, rstd = output
        ctx.save_for_backward(x, weight, bias, shift, scale, gate, mean, rstd)
        ctx.geometry = (h, w, dilation, norm)
        ctx.has_residual = residual is not None

    def backward(ctx, grad_out, _grad_mean, _grad_rstd):
        x, weight, bias, shift, scale, gate, mean, rstd = ctx.saved_tensors
        h, w, dilation, norm = ctx.geometry
        grad_x, sums = backward_op(grad_out, x, h, w, weight, shift, scale, gate, mean, rstd, dilation, norm)
        dweight, dbias, dshift, dscale, dgate = parameter_grads(sums, weight, bias, gate)
        grad_residual = grad_out if ctx.has_residual else None
        return grad_x, None, None, dweight, dbias, dshift, dscale, dgate, grad_residual, None, None

    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)


def _compiled_ops_built() -> bool:
    ext, _ = load_extension()
    return ext is not None and hasattr(torch.ops.ledit, "dwconv_modulate_fwd")


def _register_compiled_ops() -> None:
    """Fake implementations and autograd for ledit._C's dwconv ops, when it is built with them.

    Done at import, never while torch.compile traces a call."""
    if not _compiled_ops_built():
        return

    @torch.library.register_fake("ledit::dwconv_modulate_fwd")
    def _(x, h, w, weight, bias, shift, scale, gate, residual, dilation, norm):
        return (torch.empty_like(x, memory_format=torch.contiguous_format), *stats_like(x, norm))

    @torch.library.register_fake("ledit::dwconv_modulate_bwd")
    def _(grad_out, x, h, w, weight, shift, scale, gate, mean, rstd, dilation, norm):
        return torch.empty_like(x, memory_format=torch.contiguous_format), sums_like(x, weight)

    register_autograd("ledit::dwconv_modulate_fwd", torch.ops.ledit.dwconv_modulate_bwd)


def dwconv_modulate_compiled(x, grid, weight, bias, shift, scale, gate, residual, dilation, norm):
    """The ``cpu``/``cuda`` backend: ledit._C's kernel for x's device."""
    h, w = grid
    out, _, _ = torch.ops.ledit.dwconv_modulate_fwd(x, h, w, weight, bias, shift, scale, gate, residual,
                                                    dilation, norm)
    return out


def _can_run_on(device_type: str):
    def can_run(x, *args, **kwargs):
        return compiled_op_unavailable_reason("dwconv_modulate", device_type, x, "x")

    return can_run


_register_compiled_ops()
DWCONV_MODULATE_BACKENDS.register("cpu", dwconv_modulate_compiled, _can_run_on("cpu"))
DWCONV_MODULATE_BACKENDS.register("cuda", dwconv_modulate_compiled, _can_run_on("cuda"))
