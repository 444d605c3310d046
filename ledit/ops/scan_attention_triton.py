"""The ``triton`` backend of ``scan_attention``: the kernels of ``ledit.ops.scan_attention_triton_kernels`` as
``torch.library.triton_op`` ops (``torch.compile`` traces into them, no graph break), with the autograd the
compiled backends use.

    ledit::scan_attention_triton_fwd  same signature and outputs as ledit::scan_attention_fwd
    ledit::scan_attention_triton_bwd  same as ledit::scan_attention_bwd
    ledit::scan_attention_triton_packed_fwd / _bwd   as ledit::scan_attention_packed_fwd / _bwd (a packed sequence)

Forward: one program per (query tile, batch*head), online softmax over the key tiles it sees. Backward: one
program per (key tile, batch*head) for dK/dV and one per (query tile, batch*head) for dQ, both recomputing the
probabilities from the saved lse (FlashAttention-2's split, no atomics). Without triton this module still
imports; the backend's can_run says what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ledit.ops.extension import triton_unavailable_reason
from ledit.ops.masks import SCANS
from ledit.ops.packing import is_packed, prefix_offsets, search_steps, token_offsets
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


def _next_pow2(n):
    """The smallest power of two >= n >= 1 (below 2**32), for an int or an int tensor: bits smeared right, + 1."""
    n = n - 1
    for shift in (1, 2, 4, 8, 16):
        n = n | (n >> shift)
    return n + 1


def tile_width(h, w, block: int):
    """Tile width for an (h, w) grid and BLOCK-token tiles: 8 (8 x 8 tiles, or 4 x 8 with 32 tokens: squarish tiles
    skip the most work), widened up to 1 x BLOCK on grids shorter than that and narrowed on grids thinner than 8
    columns, so few tile positions are padding. Ints, or int tensors of per-image sides (a packed call's table)."""
    short = block // _next_pow2(h)
    if isinstance(short, torch.Tensor):
        return torch.minimum(_next_pow2(w), short.clamp(min=8)).clamp(max=block)
    return min(_next_pow2(w), max(8, short), block)


def max_packed_tiles(tokens: int, images: int, block: int) -> int:
    """The launch bound of a packed call, from shapes only: csrc/scan_attention/scan_tiles.h's max_packed_tiles,
    which holds for tile_width's tiles too (one per image, or at most 4n / BLOCK; tested)."""
    return images + 4 * tokens // block


def _block_config(dtype: torch.dtype, dim: int, scan: str) -> dict:
    """The compile-time constants and launch options that do not depend on the grid."""
    block_d = max(16, _next_pow2(dim))
    fp32 = dtype == torch.float32
    block = FORCE_BLOCK or (SMALL_BLOCK if fp32 or block_d > 128 else BLOCK)
    return dict(D=dim, SCAN=SCANS.index(scan), BLOCK=block, BLOCK_D=block_d, PRECISION="ieee" if fp32 else "tf32",
                num_warps=8 if fp32 or block_d > 32 else 4)


def launch_config(dtype: torch.dtype, dim: int, h: int, w: int, scan: str) -> dict:
    """The compile-time constants and launch options of every kernel of one batched call."""
    meta = _block_config(dtype, dim, scan)
    tile_w = tile_width(h, w, meta["BLOCK"])
    tiles_w = -(-w // tile_w)
    return dict(meta, TILES_W=tiles_w, NUM_TILES=-(-h // (meta["BLOCK"] // tile_w)) * tiles_w, TILE_W=tile_w,
                PACKED=False, WHILE_LOOP=False, SEARCH_STEPS=1)


@dataclass(frozen=True)
class _Layout:
    """What every kernel of one call is launched with: the grid (tiles, batch * heads), the runtime arguments
    (h, w, N, H, then the packed metadata GRIDS, TOKEN_OFFSETS, TILE_OFFSETS, TILE_WIDTHS, n_images) and meta."""

    grid: tuple
    args: tuple
    meta: dict


def _batched_layout(q: torch.Tensor, h: int, w: int, scan: str) -> _Layout:
    batch, tokens, heads, dim = q.shape
    meta = launch_config(q.dtype, dim, h, w, scan)
    return _Layout((meta["NUM_TILES"], batch * heads), (h, w, tokens, heads, q, q, q, q, 1), meta)


def _packed_layout(q: torch.Tensor, grids: torch.Tensor, scan: str) -> _Layout:
    """A packed call's layout: per-image tile widths and tile offsets from the grids, on q's device with tensor ops
    (no host read), and a launch over max_packed_tiles (programs past the last tile exit)."""
    _, tokens, heads, dim = q.shape
    images = grids.shape[0]
    meta = _block_config(q.dtype, dim, scan)
    block = meta["BLOCK"]
    h, w = grids[:, 0], grids[:, 1]
    tile_widths = tile_width(h, w, block).to(torch.int32)
    tiles = (h + block // tile_widths - 1) // (block // tile_widths) * ((w + tile_widths - 1) // tile_widths)
    # TILES_W, NUM_TILES and TILE_W are per image, read at run time; the constants only fill the signature.
    meta.update(TILES_W=1, NUM_TILES=1, TILE_W=1, PACKED=True, WHILE_LOOP=q.device.type == "cpu",
                SEARCH_STEPS=search_steps(grids))
    args = (0, 0, tokens, heads, grids, token_offsets(grids), prefix_offsets(tiles), tile_widths, images)
    return _Layout((max_packed_tiles(tokens, images, block), heads), args, meta)


def _run_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: _Layout,
                 softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    batch, tokens, heads, _ = q.shape
    out = torch.empty_like(q)
    lse = q.new_empty((batch, heads, tokens), dtype=torch.float32)
    if q.numel() == 0:  # B = 0 or H = 0: no programs to launch
        return out, lse
    launch(kernels.forward_kernel, layout.grid, q, k, v, out, lse, softmax_scale * LOG2E, *layout.args, **layout.meta)
    return out, lse


def _run_backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                  lse: torch.Tensor, layout: _Layout,
                  softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v, dout = q.contiguous(), k.contiguous(), v.contiguous(), dout.contiguous()
    delta = (dout.float() * out.float()).sum(-1).transpose(1, 2).contiguous()  # (B, H, N): rowsum(dO * O)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    if q.numel() == 0:  # B = 0 or H = 0: no programs to launch
        return dq, dk, dv
    scales = (softmax_scale, softmax_scale * LOG2E)
    launch(kernels.backward_dkdv_kernel, layout.grid, q, k, v, dout, lse, delta, dk, dv, *scales, *layout.args,
           **layout.meta)
    launch(kernels.backward_dq_kernel, layout.grid, q, k, v, dout, lse, delta, dq, *scales, *layout.args,
           **layout.meta)
    return dq, dk, dv


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, h: int, w: int, scan: str,
             softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    return _run_forward(q, k, v, _batched_layout(q, h, w, scan), softmax_scale)


def _backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
              lse: torch.Tensor, h: int, w: int, scan: str,
              softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _run_backward(dout, q, k, v, out, lse, _batched_layout(q, h, w, scan), softmax_scale)


def _packed_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grids: torch.Tensor, scan: str,
                    softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    return _run_forward(q, k, v, _packed_layout(q, grids, scan), softmax_scale)


def _packed_backward(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                     lse: torch.Tensor, grids: torch.Tensor, scan: str,
                     softmax_scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _run_backward(dout, q, k, v, out, lse, _packed_layout(q, grids, scan), softmax_scale)


def scan_attention_triton(q, k, v, grid, scan, softmax_scale):
    """The ``triton`` backend."""
    if is_packed(grid):
        out, _ = torch.ops.ledit.scan_attention_triton_packed_fwd(q, k, v, grid, scan,
                                                                  resolve_scale(q, softmax_scale))
        return out
    h, w = grid
    out, _ = torch.ops.ledit.scan_attention_triton_fwd(q, k, v, h, w, scan, resolve_scale(q, softmax_scale))
    return out


def _can_run(q, *args, **kwargs):
    return triton_unavailable_reason(q.device.type)


if kernels is not None:
    _backward_op = torch.library.triton_op("ledit::scan_attention_triton_bwd", _backward, mutates_args=())
    _forward_op = torch.library.triton_op("ledit::scan_attention_triton_fwd", _forward, mutates_args=())
    register_autograd(_forward_op, _backward_op)
    _packed_backward_op = torch.library.triton_op("ledit::scan_attention_triton_packed_bwd", _packed_backward,
                                                  mutates_args=())
    _packed_forward_op = torch.library.triton_op("ledit::scan_attention_triton_packed_fwd", _packed_forward,
                                                 mutates_args=())
    register_autograd(_packed_forward_op, _packed_backward_op, packed=True)

SCAN_ATTENTION_BACKENDS.register("triton", scan_attention_triton, _can_run)
