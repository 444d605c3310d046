"""The CPU executor of the CUDA kernels (ledit._C_emulated): its tensor-core semantics against plain matmuls and
hand-worked PTX cases, each check proved able to fail, and the real .cu kernels against the reference under the
2x rule (backend "cuda_emulated"), clean under every check."""

from __future__ import annotations

import os

import pytest
import torch
from attention_checks import assert_matches_reference as attention_matches
from attention_checks import make_qkv
from dwconv_checks import (
    PACKED,
    assert_packed_compiles_without_graph_break_or_recompile,
    assert_packed_equals_per_image_calls,
    assert_packed_ops_pass_opcheck,
)
from dwconv_checks import assert_matches_reference as dwconv_matches

from ledit.ops import SCAN_ATTENTION_BACKENDS, SCANS
from ledit.ops.extension import EMULATED_LIBRARY, load_emulated_extension

emulator, why_not = load_emulated_extension()
# CI builds the module (LEDIT_BUILD_EMULATED=1 in .ci/run): there a missing module is a failure, not a skip.
if emulator is None and os.environ.get("LEDIT_BUILD_EMULATED") == "1":
    raise ImportError(f"LEDIT_BUILD_EMULATED=1 but {why_not}")
pytestmark = pytest.mark.skipif(emulator is None, reason=str(why_not))
probes = getattr(torch.ops, EMULATED_LIBRARY)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("b_is_transposed", [False, True])
def test_mma_and_ldmatrix_equal_a_matmul(dtype, b_is_transposed):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(16, 16, generator=gen).to(dtype)
    b = torch.randn(16, 8, generator=gen).to(dtype)
    stored_b = b.t().contiguous() if b_is_transposed else b.contiguous()
    c = probes.probe_mma(a, stored_b, b_is_transposed)
    torch.testing.assert_close(c, a.float() @ b.float(), rtol=1e-6, atol=1e-5)


def _matrix_rows():
    """32 rows of 8 values: element (row, col) holds 100 * row + col, so each register names its elements."""
    rows = torch.arange(32)[:, None] * 100 + torch.arange(8)[None, :]
    return rows.to(torch.int16)


@pytest.mark.parametrize("matrices", [1, 2, 4])
@pytest.mark.parametrize("transpose", [False, True])
def test_ldmatrix_lane_elements_follow_the_ptx_isa(matrices, transpose):
    """PTX ISA, ldmatrix: lane l holds elements (l / 4, 2 (l % 4)) and (l / 4, 2 (l % 4) + 1) of each matrix, or
    with .trans (2 (l % 4), l / 4) and (2 (l % 4) + 1, l / 4); matrix i's rows come from lanes 8i .. 8i + 7."""
    registers = probes.probe_ldmatrix(_matrix_rows(), matrices, transpose)
    for lane in (0, 5, 13, 31):
        for i in range(matrices):
            r, c = lane // 4, 2 * (lane % 4)
            lo, hi = ((c, r), (c + 1, r)) if transpose else ((r, c), (r, c + 1))
            expected = (100 * (8 * i + lo[0]) + lo[1]) | ((100 * (8 * i + hi[0]) + hi[1]) << 16)
            assert registers[lane, i].item() & 0xFFFFFFFF == expected, (lane, i)


def test_mma_hand_worked_lane_case():
    """PTX ISA, m16n8k16: lane 5 (groupID 1, threadID_in_group 1) holds c0 = D[1][2] and c3 = D[9][3]. With A the
    identity, D = B, so those are B[1][2] and B[9][3]."""
    a = torch.eye(16, dtype=torch.float16)
    b = torch.arange(128, dtype=torch.float32).reshape(16, 8).to(torch.float16)
    d = probes.probe_mma(a, b.contiguous(), False)
    assert d[1, 2] == b[1, 2].float() and d[9, 3] == b[9, 3].float()
    torch.testing.assert_close(d, b.float())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_conversions_round_to_nearest_even_as_torch(dtype):
    x = torch.cat([torch.randn(100000) * 10 ** torch.randint(-9, 6, (100000,)).float(),
                   torch.tensor([65504.0, 65519.0, 65520.0, 2 ** -24, 2 ** -25, 3 * 2 ** -26, float("inf"), -0.0])])
    expected = x.to(dtype).float()
    assert torch.equal(probes.round_trip(x, dtype == torch.bfloat16), expected)


@pytest.mark.parametrize("fault, message", [
    ("race_across_warps", "racecheck"),
    ("race_in_warp", "racecheck"),
    ("global_out_of_bounds", "global out-of-bounds read of 4 bytes at byte 508 of tensor 'out' (256 bytes)"),
    ("shared_out_of_bounds", "shared-memory out-of-bounds read"),
    ("uninitialised", "initcheck"),
    ("missing_wait", "cp.async has not landed"),
    ("barrier_divergence", "barrier divergence"),
    ("missing_lanes", "missing lanes: lanes 0-15 arrived"),
])
def test_every_check_fails_a_faulty_kernel(fault, message):
    with pytest.raises(RuntimeError, match="kernel fault_kernel, block \\(0, 0, 0\\), thread") as error:
        probes.probe_fault(emulator.FAULTS[fault])
    assert message in str(error.value)


def test_a_block_that_is_not_one_dimensional_is_refused():
    with pytest.raises(RuntimeError, match=r"launch of fault_kernel with a block of \(32, 2, 1\) threads: .*"
                                           r"one-dimensional"):
        probes.probe_fault(emulator.FAULTS["two_dimensional_block"])


@pytest.mark.parametrize("fault", ["none", "with_wait"])
def test_correct_kernels_pass_every_check(fault):
    out = probes.probe_fault(emulator.FAULTS[fault])
    assert out.shape == (64,)


def test_counters_of_a_launch():
    emulator.clear_launches()
    probes.probe_mma(torch.randn(16, 16).half(), torch.randn(16, 8).half(), False)
    (launch,) = emulator.launches()
    counters = launch["counters"]
    assert launch["kernel"] == "mma_kernel<half>" and launch["block"] == (32, 1, 1)
    assert counters["mma"] == 1 and counters["ldmatrix_instructions"] == 2
    # A's rows are 32 bytes apart: rows r and r + 4 of an 8x8 matrix share banks, 2 wavefronts per matrix.
    assert counters["ldmatrix_ideal_wavefronts"] == 6 and counters["ldmatrix_wavefronts"] == 10
    assert counters["global_load_bytes"] == 512 + 256 and counters["global_store_bytes"] == 16 * 8 * 4


def test_lanes_that_skip_an_access_stay_in_step():
    """Lane 0 skips the first of two loads and of two cp.async copies: predicated, its later accesses still group
    with the other lanes' second ones, so each instruction's sectors are exactly those its lanes read."""
    x = torch.arange(256, dtype=torch.float32)
    emulator.clear_launches()
    out = probes.probe_predicated(x)
    lane = torch.arange(32)
    torch.testing.assert_close(out, torch.where(lane == 0, 0.0, lane + 4.0 * lane) + 32 + lane)
    (launch,) = emulator.launches()
    c = launch["counters"]
    # Loads of 4 bytes: 31 lanes then 32 (4 sectors each); copies of 16 bytes: 31 lanes then 32 (16 sectors each).
    assert c["global_load_instructions"] == 4
    assert c["global_load_bytes"] == 124 + 128 + 496 + 512 and c["global_load_sectors"] == 4 + 4 + 16 + 16
    assert c["global_load_unique_sectors"] == 32  # x is 1 KB, read twice over


def test_backend_is_opt_in_and_listed():
    q, k, v = make_qkv(1, (2, 3), 1, 16, torch.float16)
    reasons = dict(SCAN_ATTENTION_BACKENDS.explain("cpu", q, k, v, (2, 3), "corner", None))
    assert "not tried automatically" in reasons["cuda_emulated"]
    q32 = q.float()
    reasons = dict(SCAN_ATTENTION_BACKENDS.explain("cpu", q32, q32, q32, (2, 3), "corner", None))
    assert "float16/bfloat16" in reasons["cuda_emulated"]


# The matrix, covered rather than multiplied out (the executor runs ~10^6 emulated instructions a second):
# every scan, grid, head dim and dtype appears, forward and gradients, B = H = 1 except one case with B = H = 2.
ATTENTION_CASES = [
    ("corner", (1, 1), 64, torch.float16),
    ("raster", (3, 5), 72, torch.bfloat16),
    ("lower_right", (3, 5), 128, torch.float16),
    ("neighborhood", (9, 33), 72, torch.float16),
    ("corner", (9, 33), 64, torch.bfloat16),
    ("full", (17, 9), 128, torch.bfloat16),
    ("corner", (17, 9), 72, torch.float16),
    ("raster", (17, 9), 64, torch.float16),
    ("neighborhood", (3, 5), 64, torch.bfloat16),
    ("lower_right", (9, 33), 72, torch.bfloat16),
    ("full", (1, 1), 72, torch.bfloat16),
]


@pytest.mark.parametrize("scan, grid, dim, dtype", ATTENTION_CASES)
def test_scan_attention_kernel_on_the_executor(scan, grid, dim, dtype):
    q, k, v = make_qkv(1, grid, 1, dim, dtype)
    attention_matches("cuda_emulated", q, k, v, grid, scan)


def test_scan_attention_kernel_batch_and_heads():
    q, k, v = make_qkv(2, (3, 5), 2, 72, torch.bfloat16, layout="fused")
    attention_matches("cuda_emulated", q, k, v, (3, 5), "corner", softmax_scale=0.3)


def test_all_scans_are_covered():
    assert {case[0] for case in ATTENTION_CASES} == set(SCANS)


#   (grid,    C,  k, dilation, norm, dtype)
DWCONV_CASES = [
    ((3, 5), 40, 3, 1, True, torch.float16),
    ((9, 33), 8, 3, 2, True, torch.bfloat16),
    ((17, 9), 40, 7, 1, True, torch.float32),
    ((3, 5), 8, 7, 2, False, torch.bfloat16),
    ((1, 1), 8, 3, 1, True, torch.float16),
]


@pytest.mark.parametrize("grid, channels, k, dilation, norm, dtype", DWCONV_CASES)
def test_dwconv_modulate_kernels_on_the_executor(grid, channels, k, dilation, norm, dtype):
    dwconv_matches("cuda_emulated", 2, grid, channels, k, dilation, norm, dtype)


# The odd pack (1x1, 3x5, 17x9, 24x40) through the packed tile kernels: every dtype and kernel size, LayerNorm and the
# optional inputs on and off; a 7x7 kernel at dilation 2 is wider than three of the four images.
#   (C, k, dilation, norm, gate, residual, bias, dtype)
DWCONV_PACKED_CASES = [
    (40, 3, 1, True, True, True, True, torch.bfloat16),
    (8, 7, 2, True, False, True, False, torch.float32),
    (40, 5, 2, False, True, False, True, torch.float16),
]


@pytest.mark.parametrize("channels, k, dilation, norm, gate, residual, bias, dtype", DWCONV_PACKED_CASES)
def test_packed_dwconv_modulate_kernels_on_the_executor(channels, k, dilation, norm, gate, residual, bias, dtype):
    dwconv_matches("cuda_emulated", 1, PACKED, channels, k, dilation, norm, dtype, bias, gate, residual)


def test_packed_dwconv_modulate_equals_per_image_calls_on_the_executor():
    assert_packed_equals_per_image_calls("cuda_emulated")


@pytest.mark.parametrize("norm", [True, False])
def test_packed_dwconv_modulate_ops_pass_opcheck(norm):
    assert_packed_ops_pass_opcheck(getattr(torch.ops, EMULATED_LIBRARY), norm)


def test_packed_dwconv_modulate_under_torch_compile_on_the_executor(monkeypatch):
    assert_packed_compiles_without_graph_break_or_recompile("cuda_emulated", monkeypatch)
