"""Zero-size inputs in every backend that runs here (reference, the C++ CPU kernels, Triton in its interpreter, and
any backend registered later): an empty batch, no channels (dwconv_modulate) and no heads (scan_attention) give
empty outputs and gradients of the right shapes, parameter gradients that are zero (sums over no samples), and
launch no kernel. A grid of no tokens is outside both ops' contract and is refused by name."""

import pytest
import torch

from ledit.models import build_model
from ledit.ops import (
    DWCONV_MODULATE_BACKENDS,
    SCAN_ATTENTION_BACKENDS,
    BackendUnavailableError,
    dwconv_modulate,
    scan_attention,
)
from ledit.ops.extension import extension_unavailable_reason

GRID = (5, 7)


def run_or_skip(op, *args, **kwargs):
    """The op on the named backend; a backend that says it cannot run CPU tensors here is skipped with its reason."""
    try:
        return op(*args, **kwargs)
    except BackendUnavailableError as error:
        pytest.skip(str(error))


def dwconv_leaves(batch, channels, bias, gate, residual):
    n = GRID[0] * GRID[1]
    shapes = {"x": (batch, n, channels), "weight": (channels, 1, 3, 3), "bias": (channels,) if bias else None,
              "shift": (batch, channels), "scale": (batch, channels), "gate": (batch, channels) if gate else None,
              "residual": (batch, n, channels) if residual else None}
    return {name: None if shape is None else torch.randn(shape, requires_grad=True) for name, shape in shapes.items()}


@pytest.mark.parametrize("backend", DWCONV_MODULATE_BACKENDS.names)
@pytest.mark.parametrize("batch, channels", [(0, 16), (2, 0), (0, 0)])
@pytest.mark.parametrize("norm, optional", [(True, True), (False, False)])
def test_dwconv_modulate_of_nothing_is_empty(backend, batch, channels, norm, optional):
    t = dwconv_leaves(batch, channels, bias=optional, gate=optional, residual=optional)
    out = run_or_skip(dwconv_modulate, t["x"], GRID, t["weight"], t["bias"], t["shift"], t["scale"], t["gate"],
                      t["residual"], norm=norm, backend=backend)
    assert out.shape == (batch, GRID[0] * GRID[1], channels) and out.dtype == torch.float32
    out.sum().backward()
    for name, leaf in t.items():
        if leaf is None or leaf.numel() == 0:
            continue  # nothing to check in an empty gradient (the reference does not even make one at C = 0)
        # weight and bias with B = 0: their gradients sum over no samples.
        assert leaf.grad is not None and leaf.grad.shape == leaf.shape, name
        assert torch.equal(leaf.grad, torch.zeros_like(leaf)), name


@pytest.mark.parametrize("backend", SCAN_ATTENTION_BACKENDS.names)
@pytest.mark.parametrize("batch, heads", [(0, 2), (2, 0), (0, 0)])
@pytest.mark.parametrize("scan", ["corner", "raster", "full"])
def test_scan_attention_of_nothing_is_empty(backend, batch, heads, scan):
    q, k, v = (torch.randn(batch, GRID[0] * GRID[1], heads, 16, requires_grad=True) for _ in range(3))
    out = run_or_skip(scan_attention, q, k, v, GRID, scan, backend=backend)
    assert out.shape == q.shape
    out.sum().backward()
    assert q.grad.shape == k.grad.shape == v.grad.shape == q.shape


@pytest.mark.skipif(extension_unavailable_reason("cpu") is not None, reason=f"{extension_unavailable_reason('cpu')}")
def test_empty_compiled_ops_pass_opcheck():
    t = dwconv_leaves(0, 16, bias=True, gate=True, residual=True)
    args = (t["x"], *GRID, t["weight"], t["bias"], t["shift"], t["scale"], t["gate"], t["residual"], 1, True)
    torch.library.opcheck(torch.ops.ledit.dwconv_modulate_fwd, args)
    q = torch.randn(0, GRID[0] * GRID[1], 2, 16, requires_grad=True)
    torch.library.opcheck(torch.ops.ledit.scan_attention_fwd, (q, q, q, *GRID, "corner", 0.25))


def test_a_grid_of_no_tokens_is_refused_by_name():
    x = torch.randn(2, 0, 16)
    s = torch.randn(2, 16)
    with pytest.raises(ValueError, match=r"grid must be a pair \(h, w\) of positive ints, got \(0, 7\)"):
        dwconv_modulate(x, (0, 7), torch.randn(16, 1, 3, 3), None, s, s)
    q = torch.randn(2, 0, 2, 16)
    with pytest.raises(ValueError, match=r"grid must be a pair \(h, w\) of positive ints, got \(5, 0\)"):
        scan_attention(q, q, q, (5, 0))


@pytest.mark.parametrize("name", ["LEDiT", "DiT"])
def test_model_forward_and_backward_on_an_empty_batch(name):
    model = build_model(name, input_size=(6, 10), in_channels=4, depth=2, hidden_size=32, num_heads=2,
                        patch_size=2, num_classes=3)
    x = torch.randn(0, 4, 6, 10, requires_grad=True)
    out = model(x, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 8, 6, 10)
    out.sum().backward()
    assert x.grad.shape == x.shape
    with_cfg = model.forward_with_cfg(torch.randn(0, 4, 6, 10), torch.zeros(0), torch.zeros(0, dtype=torch.long), 4.0)
    assert with_cfg.shape == (0, 8, 6, 10)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_empty_inputs_on_the_gpu(backend):
    """The CUDA host glue and the Triton launchers return before launching a zero-size grid."""
    for batch, channels in [(0, 16), (2, 0)]:
        t = {n: None if v is None else v.detach().cuda().requires_grad_()
             for n, v in dwconv_leaves(batch, channels, bias=True, gate=True, residual=True).items()}
        out = run_or_skip(dwconv_modulate, t["x"], GRID, t["weight"], t["bias"], t["shift"], t["scale"], t["gate"],
                          t["residual"], backend=backend)
        out.sum().backward()
        assert out.shape == t["x"].shape and t["x"].grad.shape == t["x"].shape
    for batch, heads in [(0, 2), (2, 0)]:
        q = torch.randn(batch, GRID[0] * GRID[1], heads, 16, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        out = run_or_skip(scan_attention, q, q, q, GRID, "corner", backend=backend)
        out.sum().backward()
        assert out.shape == q.shape and q.grad.shape == q.shape
    torch.cuda.synchronize()
