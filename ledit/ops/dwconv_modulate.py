"""``dwconv_modulate``: LEDiT's locality module as one op on the (B, N, C) token layout.

    out = residual + gate * (DWConv_{k x k, dilation}(LN(x) * (1 + scale) + shift) + bias)

LN has no affine and eps 1e-6 (as DiT's adaLN); zero padding = dilation * (k - 1) / 2, so the token grid keeps
its size and the zero border leaks absolute position (the paper's point). gate, residual, bias and LN are
optional.

This module holds the public op, its argument checks, the ``reference`` backend and the autograd registration
(with the parameter gradients from per-sample sums) that the fast backends share. The fast backends register
themselves here when ``ledit.ops`` imports them:

    cpu, cuda   dwconv_modulate_compiled.py   ledit._C ops ledit::dwconv_modulate_{fwd,bwd} (csrc/dwconv_modulate/)
    triton      dwconv_modulate_triton.py     ledit::dwconv_modulate_triton_{fwd,bwd}, kernels in
                                              dwconv_modulate_triton_kernels.py
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ledit.ops.backends import OpBackends, device_order, tensors_device_type
from ledit.ops.packing import check_call_grid, image_grids, is_packed

DWCONV_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DWCONV_KERNEL_SIZES = (3, 5, 7)
DWCONV_DILATIONS = (1, 2)
LN_EPS = 1e-6

DWCONV_MODULATE_BACKENDS = OpBackends("dwconv_modulate", device_order())


def _check_tensor(name, t, shape, dtype, device, optional=False):
    if t is None:
        if optional:
            return
        raise TypeError(f"{name} is required, expected a tensor of shape {shape}")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if t.dtype != dtype:
        raise TypeError(f"{name}.dtype={t.dtype} must match x.dtype={dtype}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but x is on {device}; move it to x's device")


def check_dwconv_inputs(x, grid, weight, bias, shift, scale, gate, residual, dilation):
    """Validate dwconv_modulate's arguments; returns the (h, w) grid, or a packed call's grids as int32 on x's
    device (``ledit.ops.packing``). Every backend relies on these checks."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (B, N, C) (tokens in raster order), got {got}")
    if x.dtype not in DWCONV_DTYPES:
        raise TypeError(f"x.dtype={x.dtype} is not supported; use float32, float16 or bfloat16")
    grid = check_call_grid(grid, x, "x")
    # Modulation is per sample, or per image of a packed sequence.
    samples, channels = (grid.shape[0] if is_packed(grid) else x.shape[0]), x.shape[2]
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ValueError(f"weight must be a depthwise kernel of shape (C, 1, k, k), got "
                         f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}")
    kernel = weight.shape[-1]
    if kernel not in DWCONV_KERNEL_SIZES or weight.shape[-2] != kernel:
        raise ValueError(f"weight kernel size {tuple(weight.shape[-2:])} is not supported; use k x k with k in "
                         f"{DWCONV_KERNEL_SIZES}")
    _check_tensor("weight", weight, (channels, 1, kernel, kernel), x.dtype, x.device)
    _check_tensor("bias", bias, (channels,), x.dtype, x.device, optional=True)
    for name, t in (("shift", shift), ("scale", scale), ("gate", gate)):
        if is_packed(grid) and isinstance(t, torch.Tensor) and t.shape[0] != samples:
            raise ValueError(f"{name} must have shape (n_images, C) = {(samples, channels)} for a packed sequence "
                             f"of {samples} images (one row per image), got {tuple(t.shape)}")
        _check_tensor(name, t, (samples, channels), x.dtype, x.device, optional=name == "gate")
    _check_tensor("residual", residual, tuple(x.shape), x.dtype, x.device, optional=True)
    if dilation not in DWCONV_DILATIONS:
        raise ValueError(f"dilation={dilation!r} is not supported; use one of {DWCONV_DILATIONS}")
    return grid


def dwconv_modulate_reference(x, grid, weight, bias, shift, scale, gate=None, residual=None, dilation=1, norm=True):
    """Pure PyTorch: layer_norm, modulation, ``F.conv2d(groups=C)`` on an NCHW view, gate and residual.

    A packed call (grid an (n_images, 2) tensor) runs each image on its own with its row of shift/scale/gate and
    concatenates the results, so it equals the per-image calls exactly; it reads the grids on the host (a
    synchronisation for GPU grids)."""
    if is_packed(grid):
        return _packed_reference(x, grid, weight, bias, shift, scale, gate, residual, dilation, norm)
    batch, _, channels = x.shape
    h, w = grid
    y = F.layer_norm(x, (channels,), eps=LN_EPS) if norm else x
    y = y * (1 + scale[:, None, :]) + shift[:, None, :]
    y = y.transpose(1, 2).reshape(batch, channels, h, w)
    padding = dilation * (weight.shape[-1] - 1) // 2
    if channels:  # F.conv2d refuses groups=0; with no channels there is nothing to convolve
        y = F.conv2d(y, weight, bias, padding=padding, dilation=dilation, groups=channels)
    y = y.reshape(batch, channels, h * w).transpose(1, 2)
    if gate is not None:
        y = gate[:, None, :] * y
    if residual is not None:
        y = residual + y
    return y


def _packed_reference(x, grids, weight, bias, shift, scale, gate, residual, dilation, norm):
    outs, start = [], 0
    for i, (h, w) in enumerate(image_grids(grids)):
        image, row = slice(start, start + h * w), slice(i, i + 1)
        outs.append(dwconv_modulate_reference(
            x[:, image], (h, w), weight, bias, shift[row], scale[row], None if gate is None else gate[row],
            None if residual is None else residual[:, image], dilation, norm))
        start += h * w
    return torch.cat(outs, 1)


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


def sums_like(x: torch.Tensor, weight: torch.Tensor, samples: int | None = None) -> torch.Tensor:
    """Empty per-sample sums (samples, k*k + 3, C): samples is B, or n_images for a packed sequence."""
    samples = x.shape[0] if samples is None else samples
    return x.new_empty((samples, weight.shape[-1] ** 2 + 3, x.shape[2]), dtype=torch.float32)


def register_autograd(forward_op, backward_op, packed: bool = False) -> None:
    """Autograd for a forward op with ledit::dwconv_modulate_fwd's signature, backed by a backward op with
    ledit::dwconv_modulate_bwd's signature (the compiled and the Triton pairs share this); with ``packed``, the
    signatures of ledit::dwconv_modulate_packed_fwd/_bwd, whose grids tensor stands where (h, w) does."""
    geometry_args = 1 if packed else 2

    def setup_context(ctx, inputs, output):
        x, geometry = inputs[0], inputs[1 : 1 + geometry_args]
        weight, bias, shift, scale, gate, residual, dilation, norm = inputs[1 + geometry_args :]
        _, mean, rstd = output
        ctx.save_for_backward(x, weight, bias, shift, scale, gate, mean, rstd, *(geometry if packed else ()))
        ctx.geometry = () if packed else geometry
        ctx.options = (dilation, norm)
        ctx.has_residual = residual is not None

    def backward(ctx, grad_out, _grad_mean, _grad_rstd):
        x, weight, bias, shift, scale, gate, mean, rstd, *grids = ctx.saved_tensors
        geometry = tuple(grids) if packed else ctx.geometry
        grad_x, sums = backward_op(grad_out, x, *geometry, weight, shift, scale, gate, mean, rstd, *ctx.options)
        dweight, dbias, dshift, dscale, dgate = parameter_grads(sums, weight, bias, gate)
        grad_residual = grad_out if ctx.has_residual else None
        return (grad_x, *(None,) * geometry_args, dweight, dbias, dshift, dscale, dgate, grad_residual, None, None)

    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)


DWCONV_MODULATE_BACKENDS.register("reference", dwconv_modulate_reference, lambda *a, **k: None)


def dwconv_modulate(
    x: torch.Tensor,
    grid: tuple[int, int] | torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    shift: torch.Tensor,
    scale: torch.Tensor,
    gate: Optional[torch.Tensor] = None,
    residual: Optional[torch.Tensor] = None,
    dilation: int = 1,
    norm: bool = True,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """Fused LayerNorm + adaLN modulation + depthwise k x k conv + gate + residual; differentiable in every tensor.

    Args:
        x: (B, N, C) tokens of an (h, w) grid in raster order; a packed sequence is (1, total_tokens, C).
        grid: the (h, w) token grid, h*w == N; or, for a packed sequence of images back to back (each in raster
            order), an (n_images, 2) integer tensor of per-image (h, w), best on x's device (see
            ``ledit.ops.packing``). The conv never reads another image: each image has its own zero border.
        weight: (C, 1, k, k) depthwise kernel, k in {3, 5, 7}; bias: (C,) or None.
        shift, scale: (B, C) modulation, (n_images, C) when packed; gate: the same or None; residual: x's shape
            or None.
        dilation: 1, or 2 for multi-dilation training (padding = dilation * (k - 1) / 2).
        norm: apply the affine-free LayerNorm (eps 1e-6) before modulation.
        backend: force a backend (see ``python -m ledit.info``); None chooses the fastest that can run.
    """
    grid = check_dwconv_inputs(x, grid, weight, bias, shift, scale, gate, residual, dilation)
    args = (x, grid, weight, bias, shift, scale, gate, residual, dilation, norm)
    chosen = DWCONV_MODULATE_BACKENDS.choose(backend, tensors_device_type(x), *args)
    return chosen.fn(*args)
