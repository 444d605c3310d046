"""The ``triton`` backend of ``scan_attention``: the kernels of ``ledit.ops.scan_attention_triton_kernels`` as
``torch.library.triton_op`` ops (``torch.compile`` traces into them, no graph break), with the autograd the
compiled backends use.

    ledit::scan_attention_triton_fwd  same signature and outputs as ledit::scan_attention_fwd
    ledit::scan_attention_triton_bwd  same as ledit::scan_attention_bwd

Forward: one program per (query tile, batch*head), online softmax over the key tiles it sees. Backward: one
program per (key tile, batch*head) for dK/dV and one per (query tile, batch*head) for dQ, both recomputing the
probabilities from the saved lse (FlashAttention-2's split, no atomics). Without triton this module still
imports; the backend's can_run says what is missing.
"""

from __future__ import annotations

import torch

from ledit.ops.extension import triton_unavailable_reason
from ledit.ops.masks import SCANS
from ledit.ops.scan_attention import SCAN_ATTENTION_BACKENDS, register_autograd, resolve_scale

try:
    from ledit.ops import scan_attention_triton_kernels as kernels
except ImportError:  # no triton: can_run reports triton_unavailable_reason
    kernels = None

BLOCK = 64  # grid positions per tile (queries and keys)
LOG2E = 1.4426950408889634


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _tiling(h: int, w: int) -> dict:
    """8 x 8 tiles (squarish tiles skip the most work), widened up to 1 x BLOCK on grids shorter than 8 rows and
    narrowed on grids thinner than 8 columns, so few tile positions are padding."""
    tile_w = min(_next_pow2(w), max(8, BLOCK // _next_pow2(h)), BLOCK)
    tile_h = BLOCK // tile_w
    tiles_w = -(-w // tile_w)
    return {"TILES_W": tiles_w, "NUM_TILES": -(-h // tile_h) * tiles_w, "TILE_H": tile_h, "TILE_W": tile_w}


def _launch_args(q: torch.Tensor, h: int, w: int, scan: str) -> tuple[tuple, dict]:
    batch, tokens, heads, dim = q.shape
    tiling = _tiling(h, w)
    meta = dict(H=heads, D=dim, SCAN=SCANS.index(scan), BLOCK=BLOCK, BLOCK_D=max(16, _next_pow2(dim)),
                PRECISION="ieee" if q.dtype == torch.float32 else "tf32", **tiling)
    return (tiling["NUM_TILES"], batch * heads), meta


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, h: int, w: int, scan: str,
             softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    batch, tokens, heads, _ = q.shape
    out = torch.empty_like(q)
    lse = q.new_empty((batch, heads, tokens), dtype=torch.float32)
    if q.numel() == 0:  # B = 0 or H = 0: no programs to launch
        return out, lse
    grid, meta = _launch_args(q, h, w, scan)
    torch.library.wrap_triton(kernels.forward_kernel)[grid](
        q, k, v, out, lse, softmax_scale * LOG2E, h, w, tokens, **meta)
    return out, lse


def _backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
              lse: torch.Tensor, h: int, w: int, scan: str,
              softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v, dout = q.contiguous(), k.contiguous(), v.contiguous(), dout.contiguous()
    tokens = q.shape[1]
    delta = (dout.float() * out.float()).sum(-1).transpose(1, 2).contiguous()  # (B, H, N): rowsum(dO * O)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if q.numel() == 0:  # B = 0 or H = 0: no programs to launch
        return dq, dk, dv
    grid, meta = _launch_args(q, h, w, scan)
    args = (softmax_scale, softmax_scale * LOG2E, h, w, tokens)
    torch.library.wrap_triton(kernels.backward_dkdv_kernel)[grid](q, k, v, dout, lse, delta, dk, dv, *args, **meta)
    torch.library.wrap_triton(kernels.backward_dq_kernel)[grid](q, k, v, dout, lse, delta, dq, *args, **meta)
    return dq, dk, dv


def scan_attention_triton(q, k, v, grid, scan, softmax_scale):
    """The ``triton`` backend."""
    h, w = grid
    out, _ = torch.ops.ledit.scan_attention_triton_fwd(q, k, v, h, w, scan, resolve_scale(q, softmax_scale))
    return out


def _can_run(q, *args, **kwargs):
    return triton_unavailable_reason(q.device.type)


if kernels is not None:
    _backward_op = torch.library.triton_op("ledit::scan_attention_triton_bwd", _backward, mutates_args=())
    _forward_op = torch.library.triton_op("ledit::scan_attention_triton_fwd", _forward, mutates_args=())
    register_autograd(_forward_op, _backward_op)

SCAN_ATTENTION_BACKENDS.register("triton", scan_attention_triton, _can_run)
