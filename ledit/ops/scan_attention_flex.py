"""The ``flex`` backend of ``scan_attention``: PyTorch's FlexAttention, the well-kept-library baseline.

FlexAttention skips the key blocks its ``BlockMask`` marks empty and runs the blocks it marks full without the
``mask_mod``. In raster order a 2D scan leaves almost no 128-token block empty (a block is a few grid rows, and
``corner`` masks only the part below *and* right of each query), so this backend first permutes the tokens into
2D tile order, tiles of 8 x 16 grid positions as ``csrc/scan_attention/scan_tiles.h`` cuts them (128 = one
FlexAttention block), runs FlexAttention there with the scan predicate of ``ledit.ops.masks`` as its
``mask_mod``, and permutes the output back. Per scan:

    full      no mask and no permutation
    raster    raster order: the 1D causal mask is already block-triangular there (tile order would skip less)
    others    2D tile order

The BlockMask of a (grid, scan) is classified from the mask itself, one block row at a time (no N x N tensor), and
cached. FlexAttention runs under ``torch.compile`` (one compilation per shape and scan; its eager fallback computes
every score). Opt-in (``backend="flex"``), never in the automatic order: until a GPU measurement says otherwise the
GPU order stays ``cuda`` -> ``triton`` -> ``reference``. On CPU tensors it runs the forward only: torch has no
FlexAttention backward on CPU, and ``can_run`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ledit.ops.extension import triton_unavailable_reason
from ledit.ops.masks import visible
from ledit.ops.packing import is_packed
from ledit.ops.scan_attention import SCAN_ATTENTION_BACKENDS, resolve_scale

try:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
except ImportError:  # torch < 2.5: can_run reports it
    BlockMask = flex_attention = None

FLEX_BLOCK = 128  # tokens per FlexAttention block (its default), and per 2D tile
MIN_HEAD_DIM = 16  # FlexAttention's smallest head dim
# Block rows classified per step: bounds the (rows x N) boolean mask built at once to about 16M entries.
_CLASSIFY_ELEMENTS = 1 << 24


def tile_shape(h: int, w: int, capacity: int = FLEX_BLOCK) -> tuple[int, int]:
    """make_tile_grid() of scan_tiles.h: about sqrt(capacity) rows (8 x 16 for 128), widened on short grids and
    narrowed on thin ones so a tile holds up to `capacity` tokens."""
    side = 1
    while (2 * side) ** 2 <= capacity:
        side *= 2
    tile_h = min(h, side)
    tile_w = min(w, capacity // tile_h)
    return min(h, capacity // tile_w), tile_w


def tile_order(h: int, w: int, capacity: int = FLEX_BLOCK) -> torch.Tensor:
    """The raster token at each position of 2D tile order: tiles row-major over the grid, tokens row-major inside a
    tile; edge tiles are smaller (no padding), so tile boundaries and block boundaries can differ there."""
    tile_h, tile_w = tile_shape(h, w, capacity)
    row = torch.arange(h).repeat_interleave(w)
    col = torch.arange(w).repeat(h)
    tiles_w = -(-w // tile_w)
    tile = (row // tile_h) * tiles_w + col // tile_w
    return torch.sort(tile * (h * w) + row * w + col).indices


@dataclass(frozen=True)
class FlexPlan:
    """How one (grid, scan) runs on FlexAttention: the token order (None: raster) and its BlockMask."""

    order: Optional[torch.Tensor]  # token at each position of the order FlexAttention sees
    inverse: Optional[torch.Tensor]  # position of each raster token in that order
    block_mask: Optional["BlockMask"]

    def block_counts(self) -> dict[str, int]:
        """Block pairs FlexAttention skips, runs with the mask_mod (partial) and runs without it (full)."""
        bm = self.block_mask
        rows = bm.kv_num_blocks.shape[-1]
        cols = -(-bm.seq_lengths[1] // bm.BLOCK_SIZE[1])
        partial = int(bm.kv_num_blocks.sum())
        full = int(bm.full_kv_num_blocks.sum()) if bm.full_kv_num_blocks is not None else 0
        return {"skipped": rows * cols - partial - full, "partial": partial, "full": full}


def _ordered(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BlockMask's (num_blocks, indices) of a (rows, cols) 0/1 block table: per row, the count and the column
    indices of its set blocks first."""
    blocks = blocks.to(torch.int32)
    indices = torch.argsort(blocks, dim=-1, descending=True, stable=True).to(torch.int32)
    return blocks.sum(-1, dtype=torch.int32)[None, None].contiguous(), indices[None, None].contiguous()


def _classify_blocks(row: torch.Tensor, col: torch.Tensor, w: int, scan: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(partial, full) (rows, cols) 0/1 block tables of the scan mask over tokens at grid coordinates (row, col).

    Positions past the sequence end count as masked (FlexAttention's own convention), so tail blocks are partial."""
    n = row.numel()
    blocks = -(-n // FLEX_BLOCK)
    step = max(1, _CLASSIFY_ELEMENTS // (FLEX_BLOCK * n))
    partial, full = [], []
    for start in range(0, blocks, step):
        stop = min(start + step, blocks)
        queries = slice(start * FLEX_BLOCK, min(stop * FLEX_BLOCK, n))
        mask = visible(row[queries, None], col[queries, None], row[None, :], col[None, :], w, scan)
        mask = F.pad(mask, (0, blocks * FLEX_BLOCK - n, 0, (stop - start) * FLEX_BLOCK - mask.shape[0]))
        counts = mask.view(stop - start, FLEX_BLOCK, blocks, FLEX_BLOCK).sum((1, 3))
        full.append(counts == FLEX_BLOCK * FLEX_BLOCK)
        partial.append((counts > 0) & (counts < FLEX_BLOCK * FLEX_BLOCK))
    return torch.cat(partial), torch.cat(full)


_PLANS: dict[tuple, FlexPlan] = {}
_MAX_PLANS = 64  # (grid, scan, device) combinations kept; the oldest is dropped past this


def flex_plan(h: int, w: int, scan: str, device: torch.device) -> FlexPlan:
    """The token order and BlockMask of one (grid, scan) on `device`, built once. A plain dict, not lru_cache:
    torch.compile reads a cached plan as constants, where it would trace an lru_cache'd builder on every call."""
    key = (h, w, scan, device)
    if key not in _PLANS:
        if len(_PLANS) >= _MAX_PLANS:
            del _PLANS[next(iter(_PLANS))]
        _PLANS[key] = _build_plan(h, w, scan, device)
    return _PLANS[key]


@torch.compiler.disable
def _build_plan(h: int, w: int, scan: str, device: torch.device) -> FlexPlan:
    if scan == "full":
        return FlexPlan(None, None, None)
    n = h * w
    if scan == "raster":
        order = inverse = None
        tokens = torch.arange(n, device=device)
    else:
        order = tile_order(h, w).to(device)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(n, device=device)
        tokens = order
    row, col = tokens // w, tokens % w

    def mask_mod(batch, head, q_index, k_index):
        return visible(row[q_index], col[q_index], row[k_index], col[k_index], w, scan)

    partial, full = _classify_blocks(row, col, w, scan)
    block_mask = BlockMask.from_kv_blocks(*_ordered(partial), *_ordered(full), BLOCK_SIZE=FLEX_BLOCK,
                                          mask_mod=mask_mod, seq_lengths=(n, n))
    return FlexPlan(order, inverse, block_mask)


def _flex_in_order(q, k, v, order, inverse, block_mask, scale):
    """FlexAttention on (B, N, H, D) tensors, with the tokens permuted into `order` (None: as they are)."""
    if order is not None:
        q, k, v = (t.index_select(1, order) for t in (q, k, v))
    out = flex_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=block_mask,
                         scale=scale).transpose(1, 2)
    return out.index_select(1, inverse) if inverse is not None else out


_compiled_flex_in_order = None  # torch.compile(_flex_in_order), made on first use (torch.compile loads inductor)


def scan_attention_flex(q, k, v, grid, scan, softmax_scale):
    """The ``flex`` backend."""
    global _compiled_flex_in_order
    if _compiled_flex_in_order is None:
        _compiled_flex_in_order = torch.compile(_flex_in_order)
    plan = flex_plan(*grid, scan, q.device)
    return _compiled_flex_in_order(q, k, v, plan.order, plan.inverse, plan.block_mask,
                                   resolve_scale(q, softmax_scale))


def _can_run(q, k, v, grid, *args, **kwargs) -> Optional[str]:
    if is_packed(grid):
        return ("the flex backend builds one BlockMask per (grid, scan) and takes no packed sequences; they run on "
                "the cpu, triton or reference backend")
    if flex_attention is None:
        return f"torch {torch.__version__} has no FlexAttention (torch >= 2.5 does)"
    if q.shape[-1] < MIN_HEAD_DIM:
        return f"FlexAttention needs a head dim of at least {MIN_HEAD_DIM}, D is {q.shape[-1]}"
    if q.device.type == "cuda":
        return triton_unavailable_reason("cuda")
    if q.device.type != "cpu":
        return f"FlexAttention runs on CUDA and CPU tensors, q is on {q.device}"
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return (f"torch {torch.__version__} has no FlexAttention backward on CPU and q, k or v requires grad; "
                "call it under torch.no_grad() or use another backend")
    return None


SCAN_ATTENTION_BACKENDS.register("flex", scan_attention_flex, _can_run)
