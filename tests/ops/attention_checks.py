"""Shared checks for the scan_attention backends: flash-attention's rule against a higher-precision reference.

A backend's output (and each gradient) must be within 2x the error of the reference run in the same precision,
plus the rounding noise of that precision: |out - ref_hi| <= 2 * |ref_lo - ref_hi| + noise, where ref_hi is the
reference on inputs upcast one level (float64 for float32 inputs, float32 for float16/bfloat16).
"""

from __future__ import annotations

import torch

from ledit.ops import scan_attention, scan_attention_reference
from ledit.ops.packing import is_packed
from ledit.ops.scan_attention import resolve_scale


def rounding_noise(x: torch.Tensor, dtype: torch.dtype, logit_max: float = 0.0) -> float:
    """flash-attention's atol: the error of adding and removing 0.3 at x's magnitudes in `dtype`. In float32 the
    reference itself is nearly exact, so sums over hundreds of keys in another order get 1e-6 of the largest value
    (a few float32 ulps per term summed), or of 1 where the exact gradient is zero (dq of a single token comes out
    as cancellation noise); far below any indexing or masking error.

    ``logit_max`` (the largest |softmax_scale * q.k|) adds what the kernels' fp32 softmax costs on top: they fold
    the scale and log2(e) into one multiply and subtract the row max before exp2, two roundings of a logit of
    size s, so every probability carries a relative error up to 2 eps32 s that the reference's exp does not. With
    4x the default scale at D = 256 (|s| ~ 15) that is ~4e-6 relative, more than the 1e-6 above."""
    y = x.to(dtype)
    noise = 2 * ((y + 0.3 - 0.3) - y).abs().max().item()
    magnitude = max(x.abs().max().item(), 1.0)
    if dtype == torch.float32:
        noise += 1e-6 * magnitude
    return noise + 2 * torch.finfo(torch.float32).eps * logit_max * magnitude


def largest_logit(q: torch.Tensor, k: torch.Tensor, softmax_scale) -> float:
    """max |softmax_scale * q.k| over every (batch, head, query, key) pair, masked or not."""
    scores = torch.einsum("bnhd,bmhd->bhnm", q.double(), k.double()) * resolve_scale(q, softmax_scale)
    return scores.abs().max().item() if scores.numel() else 0.0


# Every case of the packed tests: a single token, odd small and odd large grids, a wide one; 1129 tokens in all.
MIXED_GRIDS = ((1, 1), (3, 5), (17, 9), (24, 40))


def make_qkv(batch, grid, heads, dim, dtype, device="cpu", layout="contiguous"):
    """q, k, v of shape (B, N, H, D); layout "fused" slices them out of one (B, N, 3, H, D) tensor (the strided
    views a qkv projection produces), "transposed" makes them (B, H, N, D) tensors viewed as (B, N, H, D).
    With a packed grid ((n_images, 2) tensor), B must be 1 and N is the images' total."""
    tokens = int(grid.prod(1).sum()) if is_packed(grid) else grid[0] * grid[1]
    if layout == "fused":
        qkv = torch.randn(batch, tokens, 3, heads, dim, device=device).to(dtype)
        return qkv.unbind(2)
    if layout == "transposed":
        return [torch.randn(batch, heads, tokens, dim, device=device).to(dtype).transpose(1, 2) for _ in range(3)]
    return [torch.randn(batch, tokens, heads, dim, device=device).to(dtype) for _ in range(3)]


def _run(fn, q, k, v, grid, scan, scale, dout):
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, grid, scan, scale)
    out.backward(dout.to(out.dtype))
    return [out.detach(), q.grad, k.grad, v.grad]


def assert_matches_reference(backend, q, k, v, grid, scan, softmax_scale=None, check_grads=True):
    """Run `backend` and the reference (in q's dtype and one level up) and apply the 2x rule to out, dq, dk, dv."""
    high = torch.float64 if q.dtype == torch.float32 else torch.float32
    dout = torch.randn(q.shape, device=q.device)

    def fast(*args):
        return scan_attention(*args, backend=backend)

    runs = {}
    for name, fn, dtype in (("fast", fast, q.dtype), ("ref_lo", scan_attention_reference, q.dtype),
                            ("ref_hi", scan_attention_reference, high)):
        inputs = [t.to(dtype) for t in (q, k, v)]
        if check_grads:
            runs[name] = _run(fn, *inputs, grid, scan, softmax_scale, dout)
        else:
            runs[name] = [fn(*inputs, grid, scan, softmax_scale)]
    logit_max = largest_logit(q, k, softmax_scale)
    for index, label in enumerate(("out", "dq", "dk", "dv")[: len(runs["fast"])]):
        fast_t, lo, hi = (runs[n][index] for n in ("fast", "ref_lo", "ref_hi"))
        assert fast_t.dtype == q.dtype and fast_t.shape == q.shape, label
        error = (fast_t.to(high) - hi).abs().max().item()
        bound = 2 * (lo.to(high) - hi).abs().max().item() + rounding_noise(hi, q.dtype, logit_max)
        assert error <= bound, f"{label}: max error {error:.3g} > bound {bound:.3g} ({backend}, {grid}, {scan})"


def misaligned_like(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of t whose data starts one element past an allocation's (16-byte aligned) start, as a view
    into a larger buffer can: kernels that load 16 bytes at a time must not assume alignment."""
    buffer = torch.empty(t.numel() + 8, dtype=t.dtype, device=t.device)
    view = buffer[1 : 1 + t.numel()].view(t.shape)
    view.copy_(t)
    assert view.is_contiguous() and view.data_ptr() % 16 != 0
    return view


def assert_matches_reference_on_batches(backend, q, k, v, grid, scan, batches):
    """For inputs too large for the reference: run the backend on all of them, the reference only on `batches`
    (batches are independent), and apply the 2x rule to out, dq, dk, dv of those batches."""
    high = torch.float32
    dout = torch.randn_like(q)
    got = _run(lambda *a: scan_attention(*a, backend=backend), q, k, v, grid, scan, None, dout)
    for b in batches:
        picked = [t[b : b + 1] for t in (q, k, v)]
        lo = _run(scan_attention_reference, *picked, grid, scan, None, dout[b : b + 1])
        hi = _run(scan_attention_reference, *(t.to(high) for t in picked), grid, scan, None, dout[b : b + 1])
        for label, fast_t, lo_t, hi_t in zip(("out", "dq", "dk", "dv"), got, lo, hi):
            error = (fast_t[b : b + 1].to(high) - hi_t).abs().max().item()
            bound = 2 * (lo_t.to(high) - hi_t).abs().max().item() + rounding_noise(hi_t, q.dtype)
            assert error <= bound, f"batch {b} {label}: max error {error:.3g} > bound {bound:.3g} ({backend})"


# ---- packed sequences: the checks every backend's packed op passes ---------------------------------------------

PACKED = torch.tensor(MIXED_GRIDS, dtype=torch.int32)


def assert_packed_equals_per_image_calls(backend, scan, dtype, device="cpu", exact_dq=True):
    """Each image's output and q/k/v gradients in a pack are bitwise a call on that image alone: its blocks run the
    same tile code over the same tiles. exact_dq=False compares dq only closely (GPU atomics add in any order)."""
    grids = PACKED.to(device)
    q, k, v = (t.requires_grad_() for t in make_qkv(1, PACKED, 3, 40, dtype, device=device, layout="fused"))
    out = scan_attention(q, k, v, grids, scan, backend=backend)
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    start = 0
    for h, w in MIXED_GRIDS:
        image = slice(start, start + h * w)
        parts = [t[:, image].detach().requires_grad_() for t in (q, k, v)]
        alone = scan_attention(*parts, (h, w), scan, backend=backend)
        assert torch.equal(out[:, image], alone), (h, w)
        for label, got, want in zip("qkv", grads, torch.autograd.grad(alone, parts, dout[:, image])):
            if label == "q" and not exact_dq:
                torch.testing.assert_close(got[:, image], want)
            else:
                assert torch.equal(got[:, image], want), (label, h, w)
        start += h * w


def assert_packed_ops_pass_opcheck(ops, dtype, device="cpu"):
    """torch.library.opcheck of `ops`'s packed forward and backward (schema, fake tensors, autograd registration)."""
    grids = PACKED[:3].to(device)
    q, k, v = (t.requires_grad_() for t in make_qkv(1, PACKED[:3], 2, 16, dtype, device=device))
    torch.library.opcheck(ops.scan_attention_packed_fwd.default, (q, k, v, grids, "corner", 0.25))
    out, lse = ops.scan_attention_packed_fwd(q, k, v, grids, "corner", 0.25)
    torch.library.opcheck(ops.scan_attention_packed_bwd.default,
                          (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(), lse, grids,
                           "corner", 0.25))


def assert_packed_compiles_without_graph_break_or_recompile(backend, monkeypatch, dtype, device="cpu"):
    """fullgraph=True, forward and backward; a second packing of the same total and image count runs the same graph
    (the grids are tensor data): with error_on_recompile a recompilation would raise. The compiled call must give
    the eager call's results (the reference comparisons are elsewhere)."""
    q, k, v = (t.requires_grad_() for t in make_qkv(1, PACKED, 2, 24, dtype, device=device))
    other = torch.tensor([[24, 40], [1, 1], [9, 17], [5, 3]], dtype=torch.int32)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def attend(q, k, v, grids):
        return scan_attention(q, k, v, grids, "corner", backend=backend) * 2

    torch._dynamo.reset()
    for grids in (PACKED, other):
        out = attend(q, k, v, grids.to(device))
        expected = 2 * scan_attention(q, k, v, grids.to(device), "corner", backend=backend)
        torch.testing.assert_close(out, expected)
        dout = torch.randn_like(out)
        got, want = (torch.autograd.grad(o, (q, k, v), dout) for o in (out, expected))
        for g, e in zip(got, want):
            torch.testing.assert_close(g, e)
        monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
