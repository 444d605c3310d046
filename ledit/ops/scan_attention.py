"""``scan_attention``: attention under a 2D scan mask, with one pure-PyTorch reference and pluggable fast backends.

This module holds the public op, its argument checks, the ``reference`` backend and the autograd registration
that the fast backends share. The fast backends register themselves here when ``ledit.ops`` imports them:

    cpu, cuda   scan_attention_compiled.py   ledit._C ops ledit::scan_attention_{fwd,bwd} (csrc/scan_attention/)
    triton      scan_attention_triton.py     ledit::scan_attention_triton_{fwd,bwd}, kernels in
                                             scan_attention_triton_kernels.py
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn.functional as F

from ledit.ops.backends import OpBackends, device_order, tensors_device_type
from ledit.ops.masks import check_grid, check_scan, scan_mask
from ledit.ops.packing import check_call_grid, image_grids, is_packed

ATTENTION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256

SCAN_ATTENTION_BACKENDS = OpBackends("scan_attention", device_order())


def check_attention_inputs(q, k, v, grid, scan, softmax_scale):
    """Validate scan_attention's arguments; returns the (h, w) grid, or a packed call's grids as int32 on q's
    device (``ledit.ops.packing``). Every backend relies on these checks."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (B, N, H, D), got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, N, H, D) (flash_attn layout), got {tuple(t.shape)}")
        if t.dtype not in ATTENTION_DTYPES:
            raise TypeError(f"{name}.dtype={t.dtype} is not supported; use float32, float16 or bfloat16")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(
            f"q, k and v must have the same shape (B, N, H, D); got q={tuple(q.shape)}, "
            f"k={tuple(k.shape)}, v={tuple(v.shape)}"
        )
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k and v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"q, k and v must be on one device; got {q.device}, {k.device}, {v.device}")
    head_dim = q.shape[-1]
    if head_dim % 8 != 0 or not 8 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head dim D={head_dim} is not supported; D must be a multiple of 8 in [8, {MAX_HEAD_DIM}]")
    if softmax_scale is not None and not (isinstance(softmax_scale, (int, float)) and softmax_scale > 0):
        raise ValueError(f"softmax_scale must be a positive float or None (1/sqrt(D)), got {softmax_scale!r}")
    check_scan(scan)
    return check_call_grid(grid, q, "q")


@functools.lru_cache(maxsize=16)
def _cached_scan_mask(h: int, w: int, scan: str, device: torch.device) -> torch.Tensor:
    return scan_mask((h, w), scan, device)


def resolve_scale(q: torch.Tensor, softmax_scale) -> float:
    """The softmax scale a call runs with: as given, or 1/sqrt(D)."""
    return float(softmax_scale) if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])


def scan_attention_reference(q, k, v, grid, scan="corner", softmax_scale=None):
    """Pure PyTorch: SDPA with a dense boolean mask (``is_causal`` for raster, no mask for full).

    A packed call (grid an (n_images, 2) tensor) runs each image on its own and concatenates the results, so it
    equals the per-image calls exactly; it reads the grids on the host (a synchronisation for GPU grids)."""
    if is_packed(grid):
        return _packed_reference(q, k, v, grid, scan, softmax_scale)
    h, w = check_grid(grid)
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    scale = resolve_scale(q, softmax_scale)
    if scan == "full":
        out = F.scaled_dot_product_attention(qt, kt, vt, scale=scale)
    elif scan == "raster":
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=scale)
    else:
        mask = _cached_scan_mask(h, w, scan, q.device)
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale)
    return out.transpose(1, 2)


def _packed_reference(q, k, v, grids, scan, softmax_scale):
    outs, start = [], 0
    for h, w in image_grids(grids):
        image = slice(start, start + h * w)
        outs.append(scan_attention_reference(q[:, image], k[:, image], v[:, image], (h, w), scan, softmax_scale))
        start += h * w
    return torch.cat(outs, 1)


def register_autograd(forward_op, backward_op, packed: bool = False) -> None:
    """Autograd for a forward op with ledit::scan_attention_fwd's signature, backed by a backward op with
    ledit::scan_attention_bwd's signature (the compiled and the Triton pairs share this); with ``packed``, the
    signatures of ledit::scan_attention_packed_fwd/_bwd, whose grids tensor stands where (h, w) does."""
    geometry_args = 1 if packed else 2

    def setup_context(ctx, inputs, output):
        q, k, v = inputs[:3]
        geometry, options = inputs[3 : 3 + geometry_args], inputs[3 + geometry_args :]
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse, *(geometry if packed else ()))
        ctx.geometry = () if packed else geometry
        ctx.options = options  # scan, softmax_scale

    def backward(ctx, dout, _dlse):
        # lse is a by-product kept for this backward; it is not differentiable (its gradient is ignored).
        q, k, v, out, lse, *grids = ctx.saved_tensors
        geometry = tuple(grids) if packed else ctx.geometry
        dq, dk, dv = backward_op(dout, q, k, v, out, lse, *geometry, *ctx.options)
        return dq, dk, dv, *(None,) * (geometry_args + len(ctx.options))

    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)


SCAN_ATTENTION_BACKENDS.register("reference", scan_attention_reference, lambda *a, **k: None)


def scan_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    grid: tuple[int, int] | torch.Tensor,
    scan: str = "corner",
    softmax_scale: Optional[float] = None,
    backend: Optional[str] = None,
) -> torch.Tensor:
    """Attention where each query sees only the keys its scan mask allows; differentiable.

    Args:
        q, k, v: (B, N, H, D) as in ``flash_attn_func``; N = h*w tokens in raster order; float32/float16/bfloat16;
            D a multiple of 8 up to 256. A packed sequence is (1, total_tokens, H, D).
        grid: the (h, w) token grid; or, for a packed sequence of images back to back (each in raster order), an
            (n_images, 2) integer tensor of per-image (h, w), best on q's device (see ``ledit.ops.packing``).
            Attention never crosses images, and each image's scan mask is on its own grid.
        scan: one of ``ledit.ops.SCANS`` (see ``ledit.ops.masks``).
        softmax_scale: used as given (Jin et al. scaling changes it); None means 1/sqrt(D).
        backend: force a backend (see ``python -m ledit.info``); None chooses the fastest that can run.

    Returns:
        (B, N, H, D), same dtype as q.
    """
    grid = check_attention_inputs(q, k, v, grid, scan, softmax_scale)
    chosen = SCAN_ATTENTION_BACKENDS.choose(
        backend, tensors_device_type(q), q, k, v, grid, scan, softmax_scale
    )
    return chosen.fn(q, k, v, grid, scan, softmax_scale)
