"""The ``flex`` backend (FlexAttention in 2D tile order): its token order and BlockMask against brute force, its
output against the reference, and where it refuses to run.

On CPU, torch runs FlexAttention's forward only (compiled: ~10 s per shape on 2 cores, so few cases); the
gradients and the full grid sweep run on a GPU (``-m gpu``)."""

from __future__ import annotations

import pytest
import torch
from attention_checks import assert_matches_reference, make_qkv

from ledit.ops import CAUSAL_SCANS, SCAN_ATTENTION_BACKENDS, SCANS, BackendUnavailableError, scan_attention
from ledit.ops.masks import scan_mask
from ledit.ops.scan_attention_flex import FLEX_BLOCK, flex_plan, tile_order, tile_shape

ODD_GRIDS = [(1, 1), (3, 5), (9, 33), (17, 9), (24, 40)]


@pytest.mark.parametrize("grid", [*ODD_GRIDS, (64, 64), (1, 300)])
def test_tile_order_puts_each_tile_contiguously(grid):
    h, w = grid
    order = tile_order(h, w)
    assert torch.equal(order.sort().values, torch.arange(h * w))
    tile_h, tile_w = tile_shape(h, w)
    assert tile_h * tile_w <= FLEX_BLOCK
    tile = (order // w // tile_h) * (-(-w // tile_w)) + order % w // tile_w
    assert torch.all(tile[1:] >= tile[:-1]), "tiles are not contiguous and in row-major tile order"
    within = order[tile == 0]  # the first tile: row-major inside, tile_h x tile_w (or the whole small grid)
    assert torch.equal(within, torch.tensor([r * w + c for r in range(min(h, tile_h)) for c in range(min(w, tile_w))]))


def test_tile_shape_is_8x16_on_ledit_grids():
    assert [tile_shape(n, n) for n in (16, 32, 64)] == [(8, 16)] * 3
    assert tile_shape(2, 300) == (2, 64) and tile_shape(300, 1) == (128, 1)


@pytest.mark.parametrize("grid", [*ODD_GRIDS, (32, 32)])
@pytest.mark.parametrize("scan", CAUSAL_SCANS)
def test_block_mask_classifies_every_block_exactly(grid, scan):
    """Skipped blocks hold no visible pair, full blocks only visible pairs (and no position past the end), partial
    blocks the rest; the mask_mod is the scan mask in the plan's token order."""
    plan = flex_plan(*grid, scan, torch.device("cpu"))
    n = grid[0] * grid[1]
    order = plan.order if plan.order is not None else torch.arange(n)
    mask = scan_mask(grid, scan)[order][:, order]
    blocks = -(-n // FLEX_BLOCK)
    padded = torch.zeros(blocks * FLEX_BLOCK, blocks * FLEX_BLOCK, dtype=torch.long)
    padded[:n, :n] = mask
    counts = padded.view(blocks, FLEX_BLOCK, blocks, FLEX_BLOCK).sum((1, 3))
    bm = plan.block_mask
    partial = torch.zeros(blocks, blocks, dtype=torch.bool)
    full = torch.zeros(blocks, blocks, dtype=torch.bool)
    for row in range(blocks):
        partial[row, bm.kv_indices[0, 0, row, : bm.kv_num_blocks[0, 0, row]].long()] = True
        full[row, bm.full_kv_indices[0, 0, row, : bm.full_kv_num_blocks[0, 0, row]].long()] = True
    assert not (partial & full).any()
    assert torch.equal(full, counts == FLEX_BLOCK * FLEX_BLOCK)
    assert torch.equal(partial, (counts > 0) & (counts < FLEX_BLOCK * FLEX_BLOCK))
    q_index, k_index = torch.arange(n)[:, None], torch.arange(n)[None, :]
    assert torch.equal(bm.mask_mod(0, 0, q_index, k_index), mask)


def test_tile_order_skips_what_raster_order_cannot():
    """LEDiT-XL/2 at 1024^2 (64 x 64 tokens), corner: raster-order blocks are never empty; 8 x 16 tiles skip 16%."""
    counts = flex_plan(64, 64, "corner", torch.device("cpu")).block_counts()
    assert counts == {"skipped": 168, "partial": 192, "full": 664}
    assert flex_plan(64, 64, "raster", torch.device("cpu")).order is None  # block-triangular as it is


@pytest.mark.slow
@pytest.mark.parametrize("scan,grid,dtype,layout", [
    ("corner", (9, 33), torch.float32, "contiguous"),  # partial and full blocks, N not a multiple of 128
    ("neighborhood", (17, 9), torch.bfloat16, "fused"),  # strided views of one (B, N, 3, H, D) tensor
    ("raster", (3, 5), torch.float16, "transposed"),
    ("full", (5, 7), torch.float32, "contiguous"),  # no BlockMask, no permutation
])
def test_flex_forward_matches_reference_on_cpu(scan, grid, dtype, layout):
    q, k, v = make_qkv(2, grid, 3, 72, dtype, layout=layout)
    with torch.no_grad():
        assert_matches_reference("flex", q, k, v, grid, scan, softmax_scale=0.2, check_grads=False)


def test_flex_explains_why_it_cannot_run_on_cpu():
    q, k, v = (t.requires_grad_() for t in make_qkv(1, (2, 3), 1, 16, torch.float32))
    with pytest.raises(BackendUnavailableError, match="no FlexAttention backward on CPU"):
        scan_attention(q, k, v, (2, 3), backend="flex")
    q, k, v = make_qkv(1, (2, 3), 1, 8, torch.float32)
    with pytest.raises(BackendUnavailableError, match="head dim of at least 16"):
        scan_attention(q, k, v, (2, 3), backend="flex")


def test_flex_is_never_chosen_automatically():
    q, k, v = make_qkv(1, (2, 3), 1, 16, torch.float32)
    assert all("flex" not in order for order in SCAN_ATTENTION_BACKENDS.order.values())
    reasons = dict(SCAN_ATTENTION_BACKENDS.explain("cpu", q, k, v, (2, 3), "corner", None))
    assert "request it with backend='flex'" in reasons["flex"]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("grid", [(1, 1), (3, 5), (9, 33), (17, 9), (32, 32)])
@pytest.mark.parametrize("scan", SCANS)
def test_flex_matches_reference_on_gpu(scan, grid, dtype):
    q, k, v = make_qkv(2, grid, 3, 72, dtype, device="cuda")
    assert_matches_reference("flex", q, k, v, grid, scan)


@pytest.mark.gpu
@pytest.mark.parametrize("dim", [64, 128])
def test_flex_strided_inputs_and_head_dims_on_gpu(dim):
    q, k, v = make_qkv(2, (9, 33), 3, dim, torch.bfloat16, device="cuda", layout="fused")
    assert_matches_reference("flex", q, k, v, (9, 33), "corner", softmax_scale=0.3)
