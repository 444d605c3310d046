"""What a first GPU run must check that CPU CI cannot reach (docs/gpu-first-run.md), for both GPU backends of
both ops: LEDiT-XL's head dim 72 on grids with padded edge tiles, the attention kernels' paths for small shared
memory (single-buffered CUDA tiles, Triton's 32-token tiles), the Triton fp32
attention at large head dims, inputs that start at a misaligned address, tensors on a GPU other than the current
one, and tensors with more than 2^31 elements. All `gpu`-marked: skipped without a GPU."""

from __future__ import annotations

import attention_checks
import dwconv_checks
import pytest
import torch

from ledit.ops import SCANS, scan_attention_triton

pytestmark = pytest.mark.gpu

BACKENDS = ["cuda", "triton"]
ODD_GRIDS = [(3, 5), (33, 17), (1, 70)]  # padded edge tiles at D = 72 (the LEDiT-XL grids are multiples of 8)
needs_two_gpus = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                                    reason="needs two GPUs")


@pytest.fixture
def small_shared_memory_paths(monkeypatch):
    """Force the paths D = 72 does not take on an H100: the CUDA glue believes the GPU allows 40000 bytes of shared
    memory per block (LEDIT_MAX_SHARED_BYTES; between the single- and double-buffered blocks at D = 72, 34 and 45 KB
    forward, 39 and 50 KB backward), the Triton launcher uses its 32-token tiles (FORCE_BLOCK)."""
    monkeypatch.setenv("LEDIT_MAX_SHARED_BYTES", "40000")
    monkeypatch.setattr(scan_attention_triton, "FORCE_BLOCK", scan_attention_triton.SMALL_BLOCK)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("grid", ODD_GRIDS)
@pytest.mark.parametrize("scan", SCANS)
def test_attention_head_dim_72_on_odd_grids(backend, scan, grid, dtype):
    q, k, v = attention_checks.make_qkv(2, grid, 3, 72, dtype, device="cuda")
    attention_checks.assert_matches_reference(backend, q, k, v, grid, scan)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scan", ["corner", "neighborhood"])
def test_attention_small_shared_memory_paths_at_head_dim_72(backend, scan, small_shared_memory_paths):
    q, k, v = attention_checks.make_qkv(2, (33, 17), 3, 72, torch.bfloat16, device="cuda")
    attention_checks.assert_matches_reference(backend, q, k, v, (33, 17), scan)


@pytest.mark.parametrize("dim", [136, 256])
@pytest.mark.parametrize("scan", ["corner", "raster"])
def test_triton_attention_float32_large_head_dims(dim, scan):
    """fp32 at BLOCK_D = 256 runs 32-token tiles, whose blocks fit an A100's shared memory."""
    q, k, v = attention_checks.make_qkv(2, (9, 11), 2, dim, torch.float32, device="cuda")
    attention_checks.assert_matches_reference("triton", q, k, v, (9, 11), scan)


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_misaligned_inputs(backend):
    qkv = attention_checks.make_qkv(2, (5, 7), 3, 72, torch.bfloat16, device="cuda")
    q, k, v = (attention_checks.misaligned_like(t) for t in qkv)
    attention_checks.assert_matches_reference(backend, q, k, v, (5, 7), "corner")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dwconv_misaligned_inputs(backend, dtype):
    dwconv_checks.assert_matches_reference(backend, 2, (7, 5), 72, 3, 1, True, dtype, device="cuda", unaligned=True)


@needs_two_gpus
@pytest.mark.parametrize("backend", BACKENDS)
def test_tensors_on_another_gpu_than_the_current_one(backend):
    torch.cuda.set_device(0)
    q, k, v = attention_checks.make_qkv(2, (9, 11), 3, 72, torch.bfloat16, device="cuda:1")
    attention_checks.assert_matches_reference(backend, q, k, v, (9, 11), "corner")
    dwconv_checks.assert_matches_reference(backend, 2, (7, 5), 72, 5, 2, True, torch.bfloat16, device="cuda:1")


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_more_than_2_to_the_31_elements(backend):
    """1025 x 1024 tokens x 16 heads x 128 = 2^31 + 2^21 elements per tensor (4.3 GB in bf16, about 50 GB with the
    backward's): the last batches' offsets pass 2^31. The reference checks the first and the last batch."""
    q, k, v = attention_checks.make_qkv(1025, (32, 32), 16, 128, torch.bfloat16, device="cuda")
    assert q.numel() > 2**31
    attention_checks.assert_matches_reference_on_batches(backend, q, k, v, (32, 32), "corner", batches=(0, 1024))


@pytest.mark.parametrize("backend", BACKENDS)
def test_dwconv_more_than_2_to_the_31_elements(backend):
    """2049 samples of a 128 x 128 grid x 64 channels = 2^31 + 2^20 elements (4.3 GB in bf16); the reference checks
    the first and the last sample."""
    dwconv_checks.assert_large_batch_matches_reference(backend, 2049, (128, 128), 64, torch.bfloat16, samples=(0, 2048))
