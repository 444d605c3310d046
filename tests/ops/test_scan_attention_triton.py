"""The Triton scan_attention backend against the reference, flash-attention's rule.

Without a GPU it runs in Triton's interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1), which is
slow: shapes stay tiny but still cover several tiles, padded edge tiles and every tile class."""

from __future__ import annotations

import pytest
import torch
from attention_checks import MIXED_GRIDS, assert_matches_reference, make_qkv

from ledit.ops import SCANS, scan_attention_triton
from ledit.ops.extension import triton_unavailable_reason
from ledit.ops.scan_attention_triton import kernels, max_packed_tiles, tile_width

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(kernels is None or triton_unavailable_reason(DEVICE) is not None,
                                  reason=f"triton cannot run here: {triton_unavailable_reason(DEVICE)}")


@needs_triton
@pytest.mark.parametrize("scan", SCANS)
def test_triton_matches_reference(scan):
    q, k, v = make_qkv(1, (3, 5), 2, 72, torch.float32, device=DEVICE)
    assert_matches_reference("triton", q, k, v, (3, 5), scan)


@needs_triton
@pytest.mark.parametrize("scan", ["corner", "neighborhood", "raster"])
def test_triton_several_tiles(scan):
    """9 x 11 on 8 x 8 tiles: four tile pairs per row of tiles, padded edges, masked/partial/visible pairs."""
    q, k, v = make_qkv(1, (9, 11), 1, 40, torch.float32, device=DEVICE, layout="fused")
    assert_matches_reference("triton", q, k, v, (9, 11), scan, softmax_scale=0.3)


@needs_triton
@pytest.mark.parametrize("grid, dim", [((1, 1), 8), ((1, 20), 64), ((20, 1), 24)])
def test_triton_degenerate_grids(grid, dim):
    q, k, v = make_qkv(2, grid, 1, dim, torch.float32, device=DEVICE)
    assert_matches_reference("triton", q, k, v, grid, "corner")


@needs_triton
def test_triton_float16():
    """16-bit inputs, fp32 accumulation. bfloat16 runs in the GPU tests only: Triton 3.6's interpreter returns
    garbage for a bfloat16 tl.dot."""
    q, k, v = make_qkv(1, (3, 5), 2, 72, torch.float16, device=DEVICE, layout="transposed")
    assert_matches_reference("triton", q, k, v, (3, 5), "corner")


# ---- packed sequences ------------------------------------------------------------------------------------------

PACKED = torch.tensor(MIXED_GRIDS, dtype=torch.int32)


@needs_triton
@pytest.mark.parametrize("scan", SCANS)
def test_triton_packed_matches_per_image_reference(scan, monkeypatch):
    """1x1, 3x5, 17x9 and 24x40 in one pack, forward and gradients, against the per-image reference. fp32 on
    64-token tiles (the 16-bit tile size; fewer tile pairs keep the interpreter's time down)."""
    monkeypatch.setattr(scan_attention_triton, "FORCE_BLOCK", scan_attention_triton.BLOCK)
    q, k, v = make_qkv(1, PACKED.to(DEVICE), 1, 24, torch.float32, device=DEVICE)
    assert_matches_reference("triton", q, k, v, PACKED.to(DEVICE), scan)


@needs_triton
def test_triton_packed_heads_and_head_dim_72():
    """Two heads (the head offset within a packed row) and D = 72 (head-dim lanes past D masked), on fp32's own
    32-token tiles (4 x 8, and 1 x 32 on a one-row image). 16-bit packed calls differ only in the tile size the
    test above forces (the interpreter's float16 tl.dot is slow)."""
    grids = torch.tensor([(2, 3), (1, 37), (9, 10)], dtype=torch.int32, device=DEVICE)
    q, k, v = make_qkv(1, grids, 2, 72, torch.float32, device=DEVICE, layout="fused")
    assert_matches_reference("triton", q, k, v, grids, "raster", softmax_scale=0.3)


@pytest.mark.parametrize("block", [scan_attention_triton.SMALL_BLOCK, scan_attention_triton.BLOCK])
def test_packed_launch_bound_covers_every_image_tiles(block):
    """max_packed_tiles (shapes only) bounds the tiles tile_width gives every image, so every pack of them."""
    h, w = (t.flatten() for t in torch.meshgrid(torch.arange(1, 150), torch.arange(1, 150), indexing="ij"))
    widths = tile_width(h, w, block)
    assert torch.equal(widths, torch.tensor([tile_width(a, b, block) for a, b in zip(h.tolist(), w.tolist())]))
    tiles = (h + block // widths - 1) // (block // widths) * ((w + widths - 1) // widths)
    bounds = torch.tensor([max_packed_tiles(n, 1, block) for n in (h * w).tolist()])
    assert bool((tiles <= bounds).all())
    assert int(tiles.sum()) <= max_packed_tiles(int((h * w).sum()), h.numel(), block)


# GPU: LEDiT-XL/2 attention (H = 16, D = 72) at 256^2, 512^2 and 1024^2 images (16x16, 32x32, 64x64 tokens).
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("grid", [(16, 16), (32, 32), (64, 64), (24, 40)])
@pytest.mark.parametrize("scan", SCANS)
def test_triton_gpu_ledit_xl_shapes(scan, grid, dtype):
    q, k, v = make_qkv(2, grid, 16, 72, dtype, device="cuda")
    assert_matches_reference("triton", q, k, v, grid, scan)


@pytest.mark.gpu
@pytest.mark.parametrize("dim", [8, 64, 128, 256])
def test_triton_gpu_head_dims(dim):
    q, k, v = make_qkv(2, (5, 7), 3, dim, torch.bfloat16, device="cuda", layout="fused")
    assert_matches_reference("triton", q, k, v, (5, 7), "corner", softmax_scale=0.3)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("scan", SCANS)
def test_triton_gpu_packed(scan, dtype):
    """The GPU's own loop form (a for loop to a runtime bound) on the mixed pack, at LEDiT-XL/2's heads."""
    q, k, v = make_qkv(1, PACKED.cuda(), 16, 72, dtype, device="cuda")
    assert_matches_reference("triton", q, k, v, PACKED.cuda(), scan)
