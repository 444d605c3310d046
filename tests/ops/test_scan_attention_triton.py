"""The Triton scan_attention backend against the reference, flash-attention's rule.

Without a GPU it runs in Triton's interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1), which is
slow: shapes stay tiny but still cover several tiles, padded edge tiles and every tile class."""

from __future__ import annotations

import pytest
import torch
from attention_checks import assert_matches_reference, make_qkv

from ledit.ops import SCANS
from ledit.ops.extension import triton_unavailable_reason
from ledit.ops.scan_attention_triton import kernels

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
