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
from ledit.ops.packing import is_packed
from ledit.ops.scan_attention import SCAN_ATTENTION_BACKENDS, register_autograd, resolve_scale
from ledit.ops.triton_launch import launch

try:
    from ledit.ops import scan_attention_triton_kernels as kernels
except ImportError:  # no triton: can_run reports triton_unavailable_reason
    kernels = None

LOG2E = 1.4426950408889634

# Tokens per tile, chosen per call by launch_config: 64, or 32 where a 64-token tile's operand blocks and fp32
# accumulators (BLOCK x BLOCK_D values each) spill registers or overflow shared memory: fp32 at every head dim
# (at D = 256 its blocks needed 196-278 KB; with triton 3.8 even D = 24 spilled 1 KB), 16-bit above D = 128.
# scripts/check_triton_compile.py compiles every choice for sm_80 and sm_90 and fails on a block above the target's
# shared memory or a kernel over its register/spill budget (scripts/gpu_budgets.toml).
BLOCK = 64
SMALL_BLOCK = 32
# Test hook: force a tile size (the GPU tests run the 32-token path at D = 72); None lets launch_config choose.
FORCE_BLOCK: int | None = None


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def launch_config(dtype: torch.dtype, dim: int, h: int, w: int, scan: str) -> dict:
    """The compile-time constants and launch options of every kernel of one call.

    Tiles are 8 x 8, or 4 x 8 with 32 tokens (squarish tiles skip the most work), widened up to 1 x BLOCK on grids
    shorter than that and narrowed on grids thinner than 8 columns, so few tile positions are padding."""
    block_d = max(16, _next_pow2(dim))
    fp32 = dtype == torch.float32
    block = FORCE_BLOCK or (SMALL_BLOCK if fp32 or block_d > 128 else BLOCK)
    tile_w = min(_next_pow2(w), max(8, block // _next_pow2(h)), block)
    tiles_w = -(-w // tile_w)
    return dict(D=dim, SCAN=SCANS.index(scan), TILES_W=tiles_w, NUM_TILES=-(-h // (block // tile_w)) * tiles_w,
                TILE_W=tile_w, BLOCK=block, BLOCK_D=block_d, PRECISION="ieee" if fp32 else "tf32",
                num_warps=8 if fp32 or block_d > 32 else 4)


def _grid_args(q: torch.Tensor, h: int, w: int, meta: dict) -> tuple[tuple, tuple]:
    """The launch grid (tiles, batch * heads) and the runtime shape arguments (h, w, N, H)."""
    batch, tokens, heads, _ = q.shape
    return (meta["NUM_TILES"], batch * heads), (h, w, tokens, heads)


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, h: int, w: int, scan: str,
             softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    batch, tokens, heads, dim = q.shape
    out = torch.empty_like(q)
    lse = q.new_empty((batch, heads, tokens), dtype=torch.float32)
    if q.numel() == 0:  # B = 0 or H = 0: no programs to launch
        return out, lse
    meta = launch_config(q.dtype, dim, h, w, scan)
    grid, shape = _grid_args(q, h, w, meta)
    launch(kernels.forward_kernel, grid, q, k, v, out, lse, softmax_scale * LOG2E, *shape, **meta)
    return out, lse


def _backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
              lse: torch.Tensor, h: int, w: int, scan: str,
              softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v, dout = q.contiguous(), k.contiguous(), v.contiguous(), dout.contiguous()
    delta = (dout.float() * out.float()).sum(-1).transpose(1, 2).contiguous()  # (B, H, N): rowsum(dO * O)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if q.numel() == 0:  # B = 0 or H = 0: no programs to launch
        return dq, dk, dv
    meta = launch_config(q.dtype, q.shape[-1], h, w, scan)
    grid, shape = _grid_args(q, h, w, meta)
    scales = (softmax_scale, softmax_scale * LOG2E)
    launch(kernels.backward_dkdv_kernel, grid, q, k, v, dout, lse, delta, dk, dv, *scales, *shape, **meta)
    launch(kernels.backward_dq_kernel, grid, q, k, v, dout, lse, delta, dq, *scales, *shape, **meta)
    return dq, dk, dv


def scan_attention_triton(q, k, v, grid, scan, softmax_scale):
    """The ``triton`` backend."""
    h, w = grid
    out, _ = torch.ops.ledit.scan_attention_triton_fwd(q, k, v, h, w, scan, resolve_scale(q, softmax_scale))
    return out


def _can_run(q, k, v, grid, *args, **kwargs):
    reason = triton_unavailable_reason(q.device.type)
    if reason is None and is_packed(grid):
        reason = "packed sequences are not in the Triton kernels yet (next commit of issue 17)"
    return reason


if kernels is not None:
    _backward_op = torch.library.triton_op("ledit::scan_attention_triton_bwd", _backward, mutates_args=())
    _forward_op = torch.library.triton_op("ledit::scan_attention_triton_fwd", _forward, mutates_args=())
    register_autograd(_forward_op, _backward_op)

SCAN_ATTENTION_BACKENDS.register("triton", scan_attention_triton, _can_run)
