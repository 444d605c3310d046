"""The reference paths are the oracle for every kernel, so they are checked here against independent,
deliberately naive implementations (explicit softmax over the mask, explicit tap loops)."""

import math

import pytest
import torch
import torch.nn.functional as F

from ledit.ops import SCANS, dwconv_modulate, scan_attention, scan_mask


def naive_attention(q, k, v, grid, scan, scale):
    scores = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) * scale
    scores = scores.masked_fill(~scan_mask(grid, scan), float("-inf"))
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v.double())


@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("grid", [(1, 1), (3, 5), (4, 4)])
def test_reference_attention_matches_naive(scan, grid):
    n = grid[0] * grid[1]
    q, k, v = (torch.randn(2, n, 3, 16) for _ in range(3))
    out = scan_attention(q, k, v, grid, scan, softmax_scale=0.3, backend="reference")
    torch.testing.assert_close(out.double(), naive_attention(q, k, v, grid, scan, 0.3), atol=1e-5, rtol=1e-5)


def test_default_softmax_scale_is_inverse_sqrt_head_dim():
    q, k, v = (torch.randn(1, 6, 2, 24) for _ in range(3))
    out = scan_attention(q, k, v, (2, 3), "corner", backend="reference")
    expected = naive_attention(q, k, v, (2, 3), "corner", 1 / math.sqrt(24))
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)


def naive_dwconv_modulate(x, grid, weight, bias, shift, scale, gate, residual, dilation, norm):
    b, _, c = x.shape
    h, w = grid
    x = x.double()
    if norm:
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, unbiased=False, keepdim=True)
        x = (x - mean) / torch.sqrt(var + 1e-6)
    y = (x * (1 + scale.double()[:, None]) + shift.double()[:, None]).reshape(b, h, w, c)
    k = weight.shape[-1]
    out = torch.zeros_like(y)
    for i in range(k):
        for j in range(k):
            dr, dc = (i - k // 2) * dilation, (j - k // 2) * dilation
            if abs(dr) >= h or abs(dc) >= w:
                continue  # the tap reads only zero padding
            shifted = torch.zeros_like(y)
            rows_dst = slice(max(0, -dr), min(h, h - dr))
            cols_dst = slice(max(0, -dc), min(w, w - dc))
            rows_src = slice(max(0, dr), min(h, h + dr))
            cols_src = slice(max(0, dc), min(w, w + dc))
            shifted[:, rows_dst, cols_dst] = y[:, rows_src, cols_src]
            out += shifted * weight.double()[:, 0, i, j]
    if bias is not None:
        out += bias.double()
    out = out.reshape(b, h * w, c)
    if gate is not None:
        out = gate.double()[:, None] * out
    if residual is not None:
        out = residual.double() + out
    return out


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (3, 2), (5, 1), (7, 2)])
@pytest.mark.parametrize("norm,with_gate", [(True, True), (False, False)])
def test_reference_dwconv_matches_naive(kernel, dilation, norm, with_gate):
    b, grid, c = 2, (5, 7), 6
    x = torch.randn(b, 35, c)
    weight, bias = torch.randn(c, 1, kernel, kernel), torch.randn(c)
    shift, scale = torch.randn(b, c), torch.randn(b, c)
    gate = torch.randn(b, c) if with_gate else None
    residual = torch.randn(b, 35, c) if with_gate else None
    args = (x, grid, weight, bias, shift, scale, gate, residual, dilation, norm)
    out = dwconv_modulate(*args, backend="reference")
    torch.testing.assert_close(out.double(), naive_dwconv_modulate(*args), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(q=torch.randn(1, 6, 2)), r"q must have shape \(B, N, H, D\)"),
        (dict(k=torch.randn(1, 6, 2, 16)), "same shape"),
        (dict(v=torch.randn(1, 6, 2, 8).half()), "share one dtype"),
        (dict(q=torch.randn(1, 6, 2, 8).double()), "float64 is not supported"),
        (dict(grid=(2, 2)), r"grid=\(2, 2\) holds 4 tokens but the input has N=6"),
        (dict(scan="diag"), "unknown scan='diag'"),
        (dict(softmax_scale=-1.0), "softmax_scale must be a positive float"),
    ],
)
def test_scan_attention_bad_input(change, message):
    args = dict(q=torch.randn(1, 6, 2, 8), k=torch.randn(1, 6, 2, 8), v=torch.randn(1, 6, 2, 8), grid=(2, 3),
                scan="corner", softmax_scale=None)
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=message):
        scan_attention(**args)


def test_scan_attention_rejects_head_dim_not_multiple_of_8():
    q = torch.randn(1, 4, 1, 12)
    with pytest.raises(ValueError, match="D=12 is not supported; D must be a multiple of 8"):
        scan_attention(q, q, q, (2, 2))


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(x=torch.randn(6, 4)), r"x must be a tensor of shape \(B, N, C\)"),
        (dict(grid=(3, 3)), "holds 9 tokens but the input has N=6"),
        (dict(weight=torch.randn(4, 1, 4, 4)), "kernel size"),
        (dict(weight=torch.randn(5, 1, 3, 3)), r"weight must have shape \(4, 1, 3, 3\)"),
        (dict(shift=torch.randn(2, 5)), r"shift must have shape \(2, 4\)"),
        (dict(gate=torch.randn(2, 4).double()), "gate.dtype=torch.float64 must match x.dtype"),
        (dict(dilation=3), "dilation=3 is not supported"),
    ],
)
def test_dwconv_modulate_bad_input(change, message):
    args = dict(x=torch.randn(2, 6, 4), grid=(2, 3), weight=torch.randn(4, 1, 3, 3), bias=None,
                shift=torch.randn(2, 4), scale=torch.randn(2, 4), gate=None, residual=None, dilation=1)
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=message):
        dwconv_modulate(**args)


def test_reference_paths_are_differentiable():
    q, k, v = (torch.randn(1, 6, 2, 8, requires_grad=True) for _ in range(3))
    scan_attention(q, k, v, (2, 3), "corner", backend="reference").sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (q, k, v))
    x = torch.randn(1, 6, 4, requires_grad=True)
    w = torch.randn(4, 1, 3, 3, requires_grad=True)
    shift, scale = torch.randn(1, 4, requires_grad=True), torch.randn(1, 4, requires_grad=True)
    dwconv_modulate(x, (2, 3), w, None, shift, scale, backend="reference").square().sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (x, w, shift, scale))


def test_sdpa_style_functional_equivalence_full_scan():
    q, k, v = (torch.randn(2, 12, 2, 8) for _ in range(3))
    out = scan_attention(q, k, v, (3, 4), "full", backend="reference")
    expected = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
    torch.testing.assert_close(out, expected)
