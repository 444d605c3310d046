"""Packed sequences (ledit.ops.packing): the reference paths equal per-image calls exactly, and bad packed input
gets a clear error. The fast backends are checked against these references in their own test files."""

import pytest
import torch
from attention_checks import MIXED_GRIDS, make_qkv
from dwconv_checks import make_inputs

from ledit.ops import SCANS, dwconv_modulate, scan_attention
from ledit.ops.backends import BackendUnavailableError
from ledit.ops.packing import token_offsets

GRIDS = torch.tensor(MIXED_GRIDS, dtype=torch.int32)


def _per_image(grids, fn, tokens, per_row=(), shared=()):
    """Run fn(*token slices, (h, w), *per-image rows, *shared) per image and concatenate along the tokens."""
    outs, start = [], 0
    for i, (h, w) in enumerate(grids.tolist()):
        image = slice(start, start + h * w)
        rows = [None if t is None else t[i : i + 1] for t in per_row]
        outs.append(fn(*(t[:, image] for t in tokens), (h, w), *rows, *shared))
        start += h * w
    return torch.cat(outs, 1)


def _leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


@pytest.mark.parametrize("scan", SCANS)
def test_reference_attention_packed_equals_per_image_exactly(scan):
    q, k, v = make_qkv(1, GRIDS, 2, 24, torch.float32)
    dout = torch.randn_like(q)
    packed, single = _leaves(q, k, v), _leaves(q, k, v)
    out = scan_attention(*packed, GRIDS, scan, softmax_scale=0.3, backend="reference")

    def one_image(q, k, v, grid):
        return scan_attention(q, k, v, grid, scan, softmax_scale=0.3, backend="reference")

    expected = _per_image(GRIDS, one_image, single)
    assert torch.equal(out, expected)
    out.backward(dout)
    expected.backward(dout)
    for got, want in zip(packed, single):
        assert torch.equal(got.grad, want.grad)


@pytest.mark.parametrize("k_size, dilation, norm", [(3, 1, True), (5, 2, False), (7, 1, True)])
def test_reference_dwconv_packed_equals_per_image_exactly(k_size, dilation, norm):
    inputs = {n: None if t is None else t.float() for n, t in make_inputs(1, GRIDS, 12, k_size).items()}
    names = ("x", "residual", "shift", "scale", "gate", "weight", "bias")
    packed, single = _leaves(*(inputs[n] for n in names)), _leaves(*(inputs[n] for n in names))
    grad_out = torch.randn_like(inputs["x"])

    def run_packed(x, residual, shift, scale, gate, weight, bias):
        return dwconv_modulate(x, GRIDS, weight, bias, shift, scale, gate, residual, dilation, norm,
                               backend="reference")

    def one_image(x, residual, grid, shift, scale, gate, weight, bias):
        return dwconv_modulate(x, grid, weight, bias, shift, scale, gate, residual, dilation, norm,
                               backend="reference")

    out = run_packed(*packed)
    expected = _per_image(GRIDS, one_image, single[:2], per_row=single[2:5], shared=single[5:])
    assert torch.equal(out, expected)
    out.backward(grad_out)
    expected.backward(grad_out)
    for name, got, want in zip(names, packed, single):
        assert torch.equal(got.grad, want.grad), name


def test_attention_never_crosses_images():
    """Changing one image's tokens changes no other image's output (here: the last image's keys and values)."""
    q, k, v = make_qkv(1, GRIDS, 2, 8, torch.float32)
    before = scan_attention(q, k, v, GRIDS, "full", backend="reference")
    last = slice(int(token_offsets(GRIDS)[-2]), None)
    k2, v2 = k.clone(), v.clone()
    k2[:, last], v2[:, last] = torch.randn_like(k[:, last]), torch.randn_like(v[:, last])
    after = scan_attention(q, k2, v2, GRIDS, "full", backend="reference")
    assert torch.equal(before[:, : last.start], after[:, : last.start])
    assert not torch.equal(before[:, last], after[:, last])


def test_token_offsets_are_cu_seqlens():
    assert token_offsets(GRIDS).tolist() == [0, 1, 16, 169, 1129]
    assert token_offsets(GRIDS).dtype == torch.int32


def test_int64_grids_are_accepted():
    q, k, v = make_qkv(1, GRIDS, 1, 8, torch.float32)
    out = scan_attention(q, k, v, GRIDS.long(), backend="reference")
    assert torch.equal(out, scan_attention(q, k, v, GRIDS, backend="reference"))


def _attention_args(**change):
    q = torch.randn(1, 1129, 2, 8)
    args = dict(q=q, k=q, v=q, grid=GRIDS, scan="corner", softmax_scale=None)
    args.update(change)
    return args


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(grid=GRIDS[:, :1]), r"packed grid must have shape \(n_images, 2\)"),
        (dict(grid=GRIDS[:0]), r"n_images >= 1"),
        (dict(grid=GRIDS.float()), "packed grid.dtype=torch.float32 is not supported"),
        (dict(grid=torch.tensor([[1, 1], [3, 5], [17, 9], [24, 41]])), "holds 1153 tokens .* q has 1129"),
        (dict(grid=torch.tensor([[1, 1], [0, 5], [17, 9], [24, 41]])), r"grid \(0, 5\); every h and w must be >= 1"),
        (dict(q=torch.randn(2, 1129, 2, 8), k=torch.randn(2, 1129, 2, 8), v=torch.randn(2, 1129, 2, 8)),
         r"q must have shape \(1, total_tokens, ...\)"),
        (dict(grid=GRIDS.to("meta")), "packed grid is on meta but q is on cpu"),
        (dict(grid=[(1, 1), (3, 5), (17, 9), (24, 40)]), "looks like per-image grids.*integer tensor"),
    ],
)
def test_scan_attention_bad_packed_input(change, message):
    with pytest.raises((ValueError, TypeError), match=message):
        scan_attention(**_attention_args(**change))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(shift=torch.randn(3, 4)), r"shift must have shape \(n_images, C\) = \(4, 4\) for a packed sequence"),
        (dict(gate=torch.randn(1, 4)), r"gate must have shape \(n_images, C\)"),
        (dict(residual=torch.randn(1, 1128, 4)), r"residual must have shape \(1, 1129, 4\)"),
        (dict(grid=torch.tensor([[1, 1], [3, 5]])), "holds 16 tokens .* x has 1129"),
    ],
)
def test_dwconv_modulate_bad_packed_input(change, message):
    args = dict(x=torch.randn(1, 1129, 4), grid=GRIDS, weight=torch.randn(4, 1, 3, 3), bias=None,
                shift=torch.randn(4, 4), scale=torch.randn(4, 4), gate=None, residual=None, dilation=1)
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=message):
        dwconv_modulate(**args)


def test_flex_refuses_packed_sequences_with_a_reason():
    q, k, v = make_qkv(1, GRIDS, 1, 16, torch.float32)
    with pytest.raises(BackendUnavailableError, match="flex backend .* takes no packed sequences"):
        scan_attention(q, k, v, GRIDS, backend="flex")


@pytest.mark.parametrize("op_name", ["scan_attention", "dwconv_modulate"])
def test_cuda_backends_take_packed_sequences_once_built(op_name):
    """Both CUDA kernels take packed sequences: the only reason left is a module built before they existed."""
    from ledit.ops.extension import packed_op_unavailable_reason

    for backend in ("cuda", "cuda_emulated"):
        reason = packed_op_unavailable_reason(op_name, backend)
        assert reason is None or "built before" in reason, reason
