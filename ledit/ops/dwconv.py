"""``dwconv_modulate``: LEDiT's locality module as one op on the (B, N, C) token layout.

    out = residual + gate * (DWConv_{k x k, dilation}(LN(x) * (1 + scale) + shift) + bias)

LN has no affine and eps 1e-6 (as DiT's adaLN); zero padding = dilation * (k - 1) / 2, so the token grid keeps
its size and the zero border leaks absolute position (the paper's point). gate, residual, bias and LN are
optional.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ledit.ops.backends import OpBackends, device_order, tensors_device_type
from ledit.ops.masks import check_grid

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


def check_dwconv_inputs(x, grid, weight, bias, shift, scale, gate, residual, dilation) -> tuple[int, int]:
    """Validate dwconv_modulate's arguments; returns the (h, w) grid. Every backend relies on these checks."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (B, N, C) (tokens in raster order), got {got}")
    if x.dtype not in DWCONV_DTYPES:
        raise TypeError(f"x.dtype={x.dtype} is not supported; use float32, float16 or bfloat16")
    batch, n_tokens, channels = x.shape
    grid = check_grid(grid, n_tokens)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ValueError(f"weight must be a depthwise kernel of shape (C, 1, k, k), got "
                         f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}")
    kernel = weight.shape[-1]
    if kernel not in DWCONV_KERNEL_SIZES or weight.shape[-2] != kernel:
        raise ValueError(f"weight kernel size {tuple(weight.shape[-2:])} is not supported; use k x k with k in "
                         f"{DWCONV_KERNEL_SIZES}")
    _check_tensor("weight", weight, (channels, 1, kernel, kernel), x.dtype, x.device)
    _check_tensor("bias", bias, (channels,), x.dtype, x.device, optional=True)
    _check_tensor("shift", shift, (batch, channels), x.dtype, x.device)
    _check_tensor("scale", scale, (batch, channels), x.dtype, x.device)
    _check_tensor("gate", gate, (batch, channels), x.dtype, x.device, optional=True)
    _check_tensor("residual", residual, tuple(x.shape), x.dtype, x.device, optional=True)
    if dilation not in DWCONV_DILATIONS:
        raise ValueError(f"dilation={dilation!r} is not supported; use one of {DWCONV_DILATIONS}")
    return grid


def dwconv_modulate_reference(x, grid, weight, bias, shift, scale, gate=None, residual=None, dilation=1, norm=True):
    """Pure PyTorch: layer_norm, modulation, ``F.conv2d(groups=C)`` on an NCHW view, gate and residual."""
    batch, _, channels = x.shape
    h, w = grid
    y = F.layer_norm(x, (channels,), eps=LN_EPS) if norm else x
    y = y * (1 + scale[:, None, :]) + shift[:, None, :]
    y = y.transpose(1, 2).reshape(batch, channels, h, w)
    padding = dilation * (weight.shape[-1] - 1) // 2
    y = F.conv2d(y, weight, bias, padding=padding, dilation=dilation, groups=channels)
    y = y.reshape(batch, channels, h * w).transpose(1, 2)
    if gate is not None:
        y = gate[:, None, :] * y
    if residual is not None:
        y = residual + y
    return y


DWCONV_MODULATE_BACKENDS.register("reference", dwconv_modulate_reference, lambda *a, **k: None)


def dwconv_modulate(
    x: torch.Tensor,
    grid: tuple[int, int],
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
        x: (B, N, C) tokens of an (h, w) grid in raster order.
        grid: the (h, w) token grid, h*w == N.
        weight: (C, 1, k, k) depthwise kernel, k in {3, 5, 7}; bias: (C,) or None.
        shift, scale: (B, C) modulation; gate: (B, C) or None; residual: (B, N, C) or None.
        dilation: 1, or 2 for multi-dilation training (padding = dilation * (k - 1) / 2).
        norm: apply the affine-free LayerNorm (eps 1e-6) before modulation.
        backend: force a backend (see ``python -m ledit.info``); None chooses the fastest that can run.
    """
    grid = check_dwconv_inputs(x, grid, weight, bias, shift, scale, gate, residual, dilation)
    args = (x, grid, weight, bias, shift, scale, gate, residual, dilation, norm)
    chosen = DWCONV_MODULATE_BACKENDS.choose(backend, tensors_device_type(x), *args)
    return chosen.fn(*args)
