"""The scan_attention CUDA kernels (csrc/scan_attention/scan_attention_cuda_{forward,backward}.cu) run by the CPU
executor (backend "cuda_emulated", ledit._C_emulated): the test matrix against the reference under the 2x rule,
clean under the executor's bounds, init and race checks, and the facts the design rests on, read from the executor's
counters: masked tile pairs are never computed, shared memory has no bank conflicts, strided inputs are read in
place, the deterministic path uses no atomics, and the single-buffered path for small-shared-memory GPUs."""

from __future__ import annotations

import collections
import itertools
import math

import pytest
import torch
from attention_checks import (
    PACKED,
    assert_matches_reference,
    assert_packed_compiles_without_graph_break_or_recompile,
    assert_packed_equals_per_image_calls,
    assert_packed_ops_pass_opcheck,
    make_qkv,
)

from ledit.ops import SCANS, scan_attention
from ledit.ops.extension import load_emulated_extension
from ledit.ops.masks import scan_mask
from ledit.ops.scan_attention_flex import tile_shape

emulator, why_not = load_emulated_extension()
pytestmark = pytest.mark.skipif(emulator is None, reason=str(why_not))

GRIDS = [(1, 1), (3, 5), (9, 33), (17, 9)]
DIMS = [64, 72, 128]
DTYPES = [torch.float16, torch.bfloat16]
# The whole matrix of issues 14 and 15, forward and gradients: 120 cases, about 70 CPU seconds.
MATRIX = list(itertools.product(SCANS, GRIDS, DIMS, DTYPES))


@pytest.mark.parametrize("scan, grid, dim, dtype", MATRIX)
def test_kernels_match_the_reference(scan, grid, dim, dtype):
    q, k, v = make_qkv(1, grid, 1, dim, dtype)
    assert_matches_reference("cuda_emulated", q, k, v, grid, scan)


@pytest.mark.parametrize("dim", [8, 40, 200, 256])
def test_other_head_dims(dim):
    """Padded to 64 (8, 40) or 256 (200, 256) in shared memory only; 256 splits dK/dV's columns over two blocks."""
    q, k, v = make_qkv(2, (5, 7), 2, dim, torch.bfloat16)
    assert_matches_reference("cuda_emulated", q, k, v, (5, 7), "corner", softmax_scale=0.3)


def test_lse_is_the_masked_logsumexp():
    grid, scale = (5, 7), 0.2
    q, k, v = make_qkv(2, grid, 3, 72, torch.bfloat16)
    _, lse = torch.ops.ledit_cuda_emulated.scan_attention_fwd(q, k, v, *grid, "neighborhood", scale)
    scores = torch.einsum("bnhd,bmhd->bhnm", q.double(), k.double()) * scale
    scores = scores.masked_fill(~scan_mask(grid, "neighborhood"), -math.inf)
    torch.testing.assert_close(lse.double(), scores.logsumexp(-1), rtol=0, atol=1e-5)


def _aten_ops(fn) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        fn()
    return {event.name for event in profile.events()}


@pytest.mark.parametrize("layout", ["fused", "transposed"])
def test_strided_inputs_are_read_in_place(layout):
    """Views of a fused (B, N, 3, H, D) projection, or (B, H, N, D) tensors seen as (B, N, H, D): the kernels take
    their strides; no copy of q, k or v is made."""
    q, k, v = make_qkv(2, (5, 7), 3, 72, torch.float16, layout=layout)
    assert not q.is_contiguous()
    ops = _aten_ops(lambda: torch.ops.ledit_cuda_emulated.scan_attention_fwd(q, k, v, 5, 7, "corner", 0.3))
    assert not ops & {"aten::contiguous", "aten::clone", "aten::copy_"}, ops
    assert_matches_reference("cuda_emulated", q, k, v, (5, 7), "corner", softmax_scale=0.3)


def _copies(op, *args) -> collections.Counter:
    """The copy ops op(*args) runs, with their input shapes."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as profile:
        op(*args)
    return collections.Counter((event.name, str(event.input_shapes)) for event in profile.events()
                               if event.name in ("aten::contiguous", "aten::clone", "aten::copy_"))


@pytest.mark.parametrize("layout", ["fused", "transposed"])
def test_strided_inputs_are_read_in_place_by_the_backward(layout):
    """The backward copies exactly what it copies for contiguous inputs (its outputs out of the fp32 dQ buffer, and
    delta's layout): strided q, k, v and dout are not among them."""
    copies = {}
    for name in ("contiguous", layout):
        q, k, v = make_qkv(2, (5, 7), 3, 72, torch.float16, layout=name)
        dout = make_qkv(2, (5, 7), 3, 72, torch.float16, layout=name)[0]
        out, lse = torch.ops.ledit_cuda_emulated.scan_attention_fwd(q, k, v, 5, 7, "corner", 0.3)
        copies[name] = _copies(torch.ops.ledit_cuda_emulated.scan_attention_bwd, dout, q, k, v, out, lse, 5, 7,
                               "corner", 0.3)
    assert not q.is_contiguous() and not dout.is_contiguous()
    assert copies[layout] == copies["contiguous"]


def test_misaligned_inputs_are_copied():
    """One element in, rows are no longer 16-byte aligned: the glue copies, and the result is still right."""
    base = torch.randn(3, 1, 35, 2, 73).to(torch.bfloat16)
    q, k, v = (base[i, ..., 1:] for i in range(3))
    assert q.data_ptr() % 16 != 0
    ops = _aten_ops(lambda: torch.ops.ledit_cuda_emulated.scan_attention_fwd(q, k, v, 5, 7, "corner", 0.3))
    assert "aten::clone" in ops
    assert_matches_reference("cuda_emulated", q, k, v, (5, 7), "corner", softmax_scale=0.3)


def _backward_launches(q, k, v, grid, scan):
    """The backward's launches and (dq, dk, dv) for the output gradient all ones."""
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = scan_attention(q, k, v, grid, scan, backend="cuda_emulated")
    emulator.clear_launches()
    out.backward(torch.ones_like(out))
    return emulator.launches(), (q.grad, k.grad, v.grad)


def test_dq_uses_atomics_unless_deterministic_algorithms_are_asked_for():
    q, k, v = make_qkv(1, (9, 13), 2, 72, torch.bfloat16)
    launches, grads = _backward_launches(q, k, v, (9, 13), "corner")
    assert [launch["kernel"].split("<")[0] for launch in launches] == ["backward_kv_kernel"]
    assert launches[0]["counters"]["global_atomics"] > 0
    torch.use_deterministic_algorithms(True)
    try:
        launches, deterministic_grads = _backward_launches(q, k, v, (9, 13), "corner")
        assert [launch["kernel"].split("<")[0] for launch in launches] == ["backward_kv_kernel", "backward_q_kernel"]
        assert all(launch["counters"]["global_atomics"] == 0 for launch in launches)
        assert_matches_reference("cuda_emulated", q, k, v, (9, 13), "raster")
    finally:
        torch.use_deterministic_algorithms(False)
    for atomic, deterministic in zip(grads, deterministic_grads):  # dK, dV: the same code; dQ: another order
        torch.testing.assert_close(atomic, deterministic, rtol=0.02, atol=0.02)


def test_tiles_are_single_buffered_where_shared_memory_is_short(monkeypatch):
    """GPUs that allow less shared memory per block than double buffering needs (sm_86/sm_89: 99 KB at large head
    dims) get single-buffered tiles; a GPU too small for even that gets an error naming the need and the limit."""
    q, k, v = make_qkv(1, (9, 13), 1, 128, torch.float16)
    emulator.clear_launches()
    scan_attention(q, k, v, (9, 13), "corner", backend="cuda_emulated")
    (forward,) = emulator.launches()
    (backward,), _ = _backward_launches(q, k, v, (9, 13), "corner")
    limit = min(forward["shared_bytes"], backward["shared_bytes"]) - 1
    monkeypatch.setenv("LEDIT_MAX_SHARED_BYTES", str(limit))
    emulator.clear_launches()
    assert_matches_reference("cuda_emulated", q, k, v, (9, 13), "corner")
    single = {launch["kernel"].split("<")[0]: launch["shared_bytes"] for launch in emulator.launches()}
    assert single["forward_kernel"] < forward["shared_bytes"] and single["backward_kv_kernel"] <= limit
    monkeypatch.setenv("LEDIT_MAX_SHARED_BYTES", "16384")
    with pytest.raises(RuntimeError, match="bytes of shared memory per block, this GPU allows 16384; use backend"):
        scan_attention(q, k, v, (9, 13), "corner", backend="cuda_emulated")


def _visited_pairs(grid, scan, query_tokens, key_tokens) -> int:
    """Tile pairs with at least one visible (query, key) pair, by brute force over the tiles make_tile_grid cuts."""
    h, w = grid
    mask = scan_mask(grid, scan)

    def tiles(capacity):
        tile_h, tile_w = tile_shape(h, w, capacity)
        return [[r * w + c for r in range(r0, min(r0 + tile_h, h)) for c in range(c0, min(c0 + tile_w, w))]
                for r0 in range(0, h, tile_h) for c0 in range(0, w, tile_w)]

    return sum(bool(mask[qt][:, kt].any()) for qt in tiles(query_tokens) for kt in tiles(key_tokens))


@pytest.mark.parametrize("scan", ["corner", "lower_right"])
def test_masked_tile_pairs_are_never_computed(scan):
    """The mma count scales with the tile pairs the scan leaves visible: 8 x 16 query tiles against 4 x 8 key tiles
    in the forward, 8 x 8 key tiles against 4 x 8 query tiles in the backward (D = 72)."""
    grid = (16, 24)
    q, k, v = make_qkv(1, grid, 1, 72, torch.bfloat16)
    counts = {}
    for s in (scan, "full"):
        launches, _ = _backward_launches(q, k, v, grid, s)
        emulator.clear_launches()
        scan_attention(q, k, v, grid, s, backend="cuda_emulated")
        counts[s] = (emulator.launches()[0]["counters"]["mma"], launches[0]["counters"]["mma"])
    forward_pairs = _visited_pairs(grid, scan, 128, 32) / _visited_pairs(grid, "full", 128, 32)
    backward_pairs = _visited_pairs(grid, scan, 32, 64) / _visited_pairs(grid, "full", 32, 64)
    assert counts[scan][0] / counts["full"][0] == pytest.approx(forward_pairs, abs=1e-12)
    assert counts[scan][1] / counts["full"][1] == pytest.approx(backward_pairs, abs=1e-12)
    assert forward_pairs < 1 and backward_pairs < 1


@pytest.mark.parametrize("dim", [64, 72, 128])
def test_shared_memory_has_no_bank_conflicts(dim):
    """Every ldmatrix, cp.async and shared load or store of forward and backward takes the fewest wavefronts its bytes
    allow (rows padded to an odd number of 16-byte chunks; copies skip the padding chunk's bank group)."""
    q, k, v = make_qkv(1, (16, 16), 1, dim, torch.bfloat16)
    launches, _ = _backward_launches(q, k, v, (16, 16), "corner")
    emulator.clear_launches()
    scan_attention(q, k, v, (16, 16), "corner", backend="cuda_emulated")
    for launch in emulator.launches() + launches:
        counters = launch["counters"]
        for access in ("ldmatrix", "cp_async_shared", "shared_load", "shared_store"):
            ideal = counters[f"{access}_ideal_wavefronts"]
            assert counters[f"{access}_wavefronts"] == ideal, (launch["kernel"], access)
        assert counters["ldmatrix_instructions"] > 0


# ---- packed sequences ------------------------------------------------------------------------------------------

# The odd pack (1x1, 3x5, 17x9, 24x40: the last two span several query and key tiles of every kernel) through the
# packed kernels, forward and gradients: every scan, both dtypes, the D <= 64 tile shapes and D = 72 (padded to 80)
# and 128, dQ by atomics and by the deterministic kernel. Covered rather than multiplied out: the pack is 1129 tokens.
#   (scan,         D,   dtype,          deterministic)
PACKED_CASES = [
    ("corner", 64, torch.bfloat16, False),
    ("raster", 72, torch.float16, True),
    ("lower_right", 128, torch.float16, False),
    ("neighborhood", 72, torch.bfloat16, False),
    ("full", 64, torch.float16, True),
]


@pytest.fixture
def deterministic_algorithms(request):
    torch.use_deterministic_algorithms(request.param)
    yield request.param
    torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("scan, dim, dtype, deterministic_algorithms", PACKED_CASES,
                         indirect=["deterministic_algorithms"])
def test_packed_kernels_match_the_reference(scan, dim, dtype, deterministic_algorithms):
    q, k, v = make_qkv(1, PACKED, 1, dim, dtype)
    assert_matches_reference("cuda_emulated", q, k, v, PACKED, scan)


def test_packed_cases_cover_every_scan_and_both_dq_modes():
    assert {case[0] for case in PACKED_CASES} == set(SCANS)
    assert {case[3] for case in PACKED_CASES} == {False, True}


@pytest.mark.parametrize("scan, deterministic_algorithms", [("corner", False), ("raster", True)],
                         indirect=["deterministic_algorithms"])
def test_packed_equals_per_image_calls(scan, deterministic_algorithms):
    """The executor runs blocks in order, so even dQ's atomics add in the same order in a pack as alone."""
    assert_packed_equals_per_image_calls("cuda_emulated", scan, torch.bfloat16)


def test_packed_launches_are_sized_from_shapes():
    """The forward covers the shape-only bound on its query tiles (scan_tiles.h: max_packed_tiles: images +
    4 tokens / 128), not the images' 13 tiles, which only the grids' values tell; the blocks past those
    find no image and exit (the reference comparisons show they write nothing)."""
    q, k, v = make_qkv(1, PACKED, 2, 64, torch.float16)
    emulator.clear_launches()
    torch.ops.ledit_cuda_emulated.scan_attention_packed_fwd(q, k, v, PACKED, "corner", 0.3)
    (launch,) = emulator.launches()
    tokens, images = int(PACKED.prod(1).sum()), len(PACKED)
    assert launch["grid"] == (images + 4 * tokens // 128, 1, 2)


def test_packed_ops_pass_opcheck():
    assert_packed_ops_pass_opcheck(torch.ops.ledit_cuda_emulated, torch.bfloat16)


def test_packed_under_torch_compile_no_graph_break_no_recompile(monkeypatch):
    assert_packed_compiles_without_graph_break_or_recompile("cuda_emulated", monkeypatch, torch.bfloat16)
