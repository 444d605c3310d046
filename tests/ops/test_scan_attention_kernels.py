"""The compiled scan_attention kernels (ledit._C, C++ CPU and CUDA) against the reference, flash-attention's rule."""

from __future__ import annotations

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
from gpu_checks import assert_no_host_sync
from hypothesis import given, settings
from hypothesis import strategies as st

from ledit.ops import SCAN_ATTENTION_BACKENDS, SCANS, BackendUnavailableError, scan_attention
from ledit.ops.masks import scan_mask
from ledit.ops.scan_attention_compiled import _compiled_ops_built

needs_ext = pytest.mark.skipif(not _compiled_ops_built(), reason="ledit._C is not built with scan_attention")

SMALL_GRIDS = [(1, 1), (3, 5), (7, 7), (16, 16)]


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("dim", [64, 72, 128])
@pytest.mark.parametrize("grid", SMALL_GRIDS)
@pytest.mark.parametrize("scan", SCANS)
def test_cpu_matches_reference(scan, grid, dim, dtype):
    q, k, v = make_qkv(1, grid, 2, dim, dtype)
    assert_matches_reference("cpu", q, k, v, grid, scan)


@needs_ext
@pytest.mark.parametrize("scan", SCANS)
def test_cpu_large_odd_grid(scan):
    """24 x 40: several tile rows and columns, partial tiles on no edge, every tile class present."""
    q, k, v = make_qkv(1, (24, 40), 2, 72, torch.float32)
    assert_matches_reference("cpu", q, k, v, (24, 40), scan)


@needs_ext
@pytest.mark.parametrize("layout", ["fused", "transposed"])
def test_cpu_non_contiguous_inputs(layout):
    q, k, v = make_qkv(2, (5, 7), 3, 72, torch.bfloat16, layout=layout)
    assert not q.is_contiguous()
    assert_matches_reference("cpu", q, k, v, (5, 7), "corner")


@needs_ext
@pytest.mark.parametrize("scan", ["corner", "raster"])
def test_cpu_uses_softmax_scale_as_given(scan):
    """Jin et al. scaling passes scales far from 1/sqrt(D); a kernel that ignored it would fail here."""
    q, k, v = make_qkv(2, (6, 9), 2, 72, torch.float32)
    assert_matches_reference("cpu", q, k, v, (6, 9), scan, softmax_scale=0.37)


@needs_ext
def test_cpu_lse_is_the_masked_logsumexp():
    grid, scale = (5, 7), 0.2
    q, k, v = make_qkv(2, grid, 3, 40, torch.float32)
    _, lse = torch.ops.ledit.scan_attention_fwd(q, k, v, *grid, "corner", scale)
    scores = torch.einsum("bnhd,bmhd->bhnm", q.double(), k.double()) * scale
    scores = scores.masked_fill(~scan_mask(grid, "corner"), -math.inf)
    torch.testing.assert_close(lse.double(), scores.logsumexp(-1), rtol=0, atol=1e-5)


@needs_ext
def test_cpu_calls_do_not_reuse_each_others_packed_keys():
    """Each thread keeps its packed K and V between tasks (and its buffers between calls); a second call of the same
    shape with new keys and values must see them, not the first call's. One head: every thread's last task of the
    first call and first task of the second are on the same (batch, head)."""
    q, k, v = make_qkv(1, (9, 9), 1, 72, torch.float32)
    torch.ops.ledit.scan_attention_fwd(q, k, v, 9, 9, "corner", 0.2)
    k2, v2 = torch.randn_like(k), torch.randn_like(v)
    out, _ = torch.ops.ledit.scan_attention_fwd(q, k2, v2, 9, 9, "corner", 0.2)
    expected = scan_attention(q, k2, v2, (9, 9), "corner", softmax_scale=0.2, backend="reference")
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@needs_ext
@pytest.mark.parametrize("threads", [2, 3])
def test_cpu_results_do_not_depend_on_the_thread_count(threads):
    """Every task computes its tiles alone in a fixed order, so forward and backward are bitwise the same on any
    number of threads (here more tasks than threads, and threads that each pack several heads)."""
    q, k, v = make_qkv(2, (11, 13), 3, 40, torch.float32)
    dout = torch.randn_like(q)

    def run():
        out, lse = torch.ops.ledit.scan_attention_fwd(q, k, v, 11, 13, "neighborhood", 0.3)
        return (out, lse, *torch.ops.ledit.scan_attention_bwd(dout, q, k, v, out, lse, 11, 13, "neighborhood", 0.3))

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = run()
        torch.set_num_threads(threads)
        parallel = run()
    finally:
        torch.set_num_threads(before)
    for a, b in zip(serial, parallel):
        assert torch.equal(a, b)


@needs_ext
@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 13),
    w=st.integers(1, 13),
    dim=st.sampled_from([8, 24, 40, 72, 136, 256]),
    batch=st.integers(1, 2),
    heads=st.integers(1, 3),
    scan=st.sampled_from(SCANS),
    scale_factor=st.one_of(st.none(), st.floats(0.1, 4.0)),
)
def test_cpu_fuzz_shapes(h, w, dim, batch, heads, scan, scale_factor):
    """Scales up to 4x the default 1/sqrt(D) (Jin et al. scaling moves it by far less). Much larger ones saturate
    the softmax, and fp32 gradients of kernel and reference alike are then dominated by cancellation in dP - delta.
    """
    q, k, v = make_qkv(batch, (h, w), heads, dim, torch.float32)
    scale = None if scale_factor is None else scale_factor / math.sqrt(dim)
    assert_matches_reference("cpu", q, k, v, (h, w), scan, softmax_scale=scale)


@needs_ext
@pytest.mark.parametrize("scan", ["corner", "neighborhood"])
def test_opcheck(scan):
    q, k, v = (t.requires_grad_() for t in make_qkv(2, (3, 5), 2, 16, torch.float32))
    torch.library.opcheck(torch.ops.ledit.scan_attention_fwd.default, (q, k, v, 3, 5, scan, 0.25))
    out, lse = torch.ops.ledit.scan_attention_fwd(q, k, v, 3, 5, scan, 0.25)
    dout = torch.randn_like(out)
    torch.library.opcheck(torch.ops.ledit.scan_attention_bwd.default,
                          (dout, q.detach(), k.detach(), v.detach(), out.detach(), lse, 3, 5, scan, 0.25))


@needs_ext
def test_torch_compile_has_no_graph_break():
    q, k, v = make_qkv(1, (4, 6), 2, 24, torch.float32)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def attend(q, k, v):
        return scan_attention(q, k, v, (4, 6), "corner", backend="cpu") * 2

    torch.testing.assert_close(attend(q, k, v), 2 * scan_attention(q, k, v, (4, 6), "corner", backend="reference"))


@needs_ext
def test_cpu_is_chosen_automatically_on_cpu(monkeypatch):
    monkeypatch.delenv("LEDIT_BACKEND", raising=False)
    q, k, v = make_qkv(1, (2, 3), 1, 8, torch.float32)
    assert SCAN_ATTENTION_BACKENDS.choose(None, "cpu", q, k, v, (2, 3), "corner", None).name == "cpu"


def test_cuda_backend_explains_refusal_on_cpu_tensors():
    q, k, v = make_qkv(1, (2, 3), 1, 8, torch.float32)
    with pytest.raises(BackendUnavailableError, match="runs cuda tensors"):
        scan_attention(q, k, v, (2, 3), backend="cuda")


# GPU: LEDiT-XL/2 attention (H = 16, D = 72) at 256^2, 512^2 and 1024^2 images (16x16, 32x32, 64x64 tokens).
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("grid", [(16, 16), (32, 32), (64, 64), (24, 40)])
@pytest.mark.parametrize("scan", SCANS)
def test_cuda_matches_reference(scan, grid, dtype):
    q, k, v = make_qkv(2, grid, 16, 72, dtype, device="cuda")
    assert_matches_reference("cuda", q, k, v, grid, scan)


@pytest.mark.gpu
@pytest.mark.parametrize("dim", [8, 40, 64, 128, 256])
@pytest.mark.parametrize("grid", [(1, 1), (5, 7), (9, 33)])
def test_cuda_head_dims_and_odd_grids(grid, dim):
    q, k, v = make_qkv(2, grid, 3, dim, torch.bfloat16, device="cuda", layout="fused")
    assert_matches_reference("cuda", q, k, v, grid, "corner", softmax_scale=0.3)


# ---- packed sequences ------------------------------------------------------------------------------------------

@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scan", SCANS)
def test_cpu_packed_matches_per_image_reference(scan, dtype):
    """1x1, 3x5, 17x9 and 24x40 in one pack, forward and gradients, against the per-image reference (the
    reference's packed path is the per-image loop, tests/ops/test_packing.py)."""
    q, k, v = make_qkv(1, PACKED, 2, 72, dtype)
    assert_matches_reference("cpu", q, k, v, PACKED, scan)


@needs_ext
@pytest.mark.parametrize("scan", ["corner", "raster"])
def test_cpu_packed_equals_per_image_calls_exactly(scan):
    assert_packed_equals_per_image_calls("cpu", scan, torch.float32)


@needs_ext
@settings(max_examples=15, deadline=None)
@given(grids=st.lists(st.tuples(st.integers(1, 12), st.integers(1, 12)), min_size=1, max_size=5),
       dim=st.sampled_from([8, 72]), scan=st.sampled_from(SCANS))
def test_cpu_packed_fuzz(grids, dim, scan):
    grids = torch.tensor(grids, dtype=torch.int32)
    q, k, v = make_qkv(1, grids, 2, dim, torch.float32)
    assert_matches_reference("cpu", q, k, v, grids, scan)


@needs_ext
def test_packed_opcheck():
    assert_packed_ops_pass_opcheck(torch.ops.ledit, torch.float32)


@needs_ext
def test_packed_torch_compile_no_graph_break_no_recompile(monkeypatch):
    assert_packed_compiles_without_graph_break_or_recompile("cpu", monkeypatch, torch.float32)


# GPU: the packed kernels (the executor runs the same source in tests/ops/test_scan_attention_cuda.py).
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scan", SCANS)
def test_cuda_packed_matches_per_image_reference(scan, dtype):
    q, k, v = make_qkv(1, PACKED, 16, 72, dtype, device="cuda")
    assert_matches_reference("cuda", q, k, v, PACKED.cuda(), scan)


@pytest.mark.gpu
@pytest.mark.parametrize("scan", ["corner", "raster"])
def test_cuda_packed_equals_per_image_calls(scan):
    assert_packed_equals_per_image_calls("cuda", scan, torch.bfloat16, device="cuda", exact_dq=False)


@pytest.mark.gpu
def test_cuda_packed_opcheck():
    assert_packed_ops_pass_opcheck(torch.ops.ledit, torch.bfloat16, device="cuda")


@pytest.mark.gpu
def test_cuda_packed_torch_compile_no_graph_break_no_recompile(monkeypatch):
    assert_packed_compiles_without_graph_break_or_recompile("cuda", monkeypatch, torch.bfloat16, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("deterministic", [False, True])
def test_cuda_packed_call_never_syncs_with_the_host(deterministic):
    """Grids on the GPU: forward and backward (both dQ paths) run under torch's sync debug mode set to "error"
    (issue 17 forbids the per-call .item() NiT makes)."""
    q, k, v = (t.requires_grad_() for t in make_qkv(1, PACKED, 4, 64, torch.bfloat16, device="cuda"))
    grids = PACKED.cuda()

    def step():
        out = scan_attention(q, k, v, grids, "corner", backend="cuda")
        out.backward(torch.ones_like(out))

    torch.use_deterministic_algorithms(deterministic)
    try:
        assert_no_host_sync(step)
    finally:
        torch.use_deterministic_algorithms(False)


@needs_ext
@pytest.mark.parametrize("grids, message", [
    (torch.tensor([[1, 1], [3, 5]], dtype=torch.int32), "the packed grids hold 16 tokens but the sequence has 1129"),
    (torch.tensor([[1, 1129], [0, 5]], dtype=torch.int32), r"packed image 1 has grid \(0, 5\)"),
    (PACKED.long(), "packed grids must be int32"),
])
def test_packed_op_checks_grid_values(grids, message):
    """The C++ op checks the values itself (under torch.compile Python cannot read them)."""
    q = torch.randn(1, 1129, 1, 8)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.ledit.scan_attention_packed_fwd(q, q, q, grids, "corner", 0.3)
