"""The compiled dwconv_modulate kernels (C++ CPU here, CUDA under the gpu marker) against the fp64 reference,
forward and every gradient, plus the torch.library contract (opcheck, torch.compile without graph breaks)."""

import pytest
import torch
from attention_checks import MIXED_GRIDS
from dwconv_checks import (
    PACKED,
    assert_matches_reference,
    assert_packed_compiles_without_graph_break_or_recompile,
    assert_packed_equals_per_image_calls,
    assert_packed_ops_pass_opcheck,
    make_inputs,
    packed_op_args,
)
from gpu_checks import assert_no_host_sync

from ledit.ops import DWCONV_MODULATE_BACKENDS, dwconv_modulate
from ledit.ops.extension import extension_unavailable_reason

needs_cpu_kernels = pytest.mark.skipif(
    extension_unavailable_reason("cpu") is not None, reason=f"{extension_unavailable_reason('cpu')}"
)

# A covering subset of grid x C x k x dilation x (LN, gate, residual, bias) x dtype, rather than the full product:
# every grid, C, k and dilation appears, each option is on and off, and edges (1x1 grid, kernel wider than the
# grid, odd non-square grids) meet both LN settings.
#   (grid,     C,    k, dilation, norm,  gate,  residual, bias,  dtype)
CASES = [
    ((1, 1), 8, 3, 1, True, True, True, True, torch.float32),
    ((2, 3), 72, 5, 2, True, False, True, False, torch.float32),
    ((7, 5), 8, 3, 2, False, True, False, True, torch.float32),
    ((7, 5), 72, 5, 1, True, True, True, True, torch.bfloat16),
    ((16, 16), 8, 5, 2, True, True, True, True, torch.float16),
    ((33, 17), 8, 3, 1, True, True, False, True, torch.float32),
    ((2, 3), 1152, 3, 1, True, True, True, True, torch.bfloat16),
    ((7, 5), 1152, 5, 2, False, False, False, False, torch.float32),
    ((16, 16), 72, 3, 2, True, False, False, True, torch.float32),
    ((33, 17), 72, 5, 1, False, True, True, False, torch.bfloat16),
    ((7, 5), 8, 7, 2, True, True, True, True, torch.float32),
    ((16, 16), 72, 7, 1, True, True, True, True, torch.float16),
]


@needs_cpu_kernels
@pytest.mark.parametrize("grid, channels, k, dilation, norm, gate, residual, bias, dtype", CASES)
def test_cpu_kernel_matches_reference(grid, channels, k, dilation, norm, gate, residual, bias, dtype):
    assert_matches_reference("cpu", 2, grid, channels, k, dilation, norm, dtype, bias, gate, residual)


@needs_cpu_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_kernel_non_contiguous_inputs(dtype):
    assert_matches_reference("cpu", 2, (5, 6), 24, 3, 1, True, dtype, strided=True)


@needs_cpu_kernels
def test_cpu_kernel_streams_large_fp32_outputs_correctly():
    # fp32 outputs of 8 MB or more are written with non-temporal stores (csrc/dwconv_modulate/dwconv_modulate_cpu.cpp):
    # 4 x 33 x 17 tokens x 1152 channels is 10.3 MB.
    assert_matches_reference("cpu", 4, (33, 17), 1152, 3, 1, True, torch.float32)


@needs_cpu_kernels
def test_cpu_backend_is_chosen_automatically():
    inputs = make_inputs(1, (3, 4), 8, 3)
    args = (inputs["x"].float(), (3, 4), *(None if t is None else t.float() for t in list(inputs.values())[1:]))
    assert DWCONV_MODULATE_BACKENDS.choose(None, "cpu", *args, 1, True).name == "cpu"
    reasons = dict(DWCONV_MODULATE_BACKENDS.explain("cpu", *args, 1, True))
    assert "x is on cpu" in reasons["cuda"]


def _op_args(norm=True):
    inputs = make_inputs(2, (3, 5), 16, 3)
    tensors = {n: t.float().requires_grad_() for n, t in inputs.items()}
    return (tensors["x"], 3, 5, tensors["weight"], tensors["bias"], tensors["shift"], tensors["scale"],
            tensors["gate"], tensors["residual"], 2, norm)


@needs_cpu_kernels
@pytest.mark.parametrize("norm", [True, False])
def test_cpu_ops_pass_opcheck(norm):
    ops = torch.ops.ledit
    torch.library.opcheck(ops.dwconv_modulate_fwd, _op_args(norm))
    args = _op_args(norm)
    out, mean, rstd = ops.dwconv_modulate_fwd(*args)
    x, h, w, weight, _, shift, scale, gate, _, dilation, _ = args
    grad_args = (torch.randn_like(out), x.detach(), h, w, weight.detach(), shift.detach(), scale.detach(),
                 gate.detach(), mean.detach(), rstd.detach(), dilation, norm)
    torch.library.opcheck(ops.dwconv_modulate_bwd, grad_args)


@needs_cpu_kernels
def test_cpu_kernel_under_torch_compile_has_no_graph_break():
    args = _op_args()
    x, h, w, weight, bias, shift, scale, gate, residual, dilation, norm = args

    def step(x, weight, shift, scale, gate, residual):
        return dwconv_modulate(x, (h, w), weight, bias, shift, scale, gate, residual, dilation, norm, backend="cpu")

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    inputs = (x, weight, shift, scale, gate, residual)
    expected = torch.autograd.grad(step(*inputs).square().sum(), inputs)
    got = torch.autograd.grad(compiled(*inputs).square().sum(), inputs)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e)


@pytest.mark.gpu
@pytest.mark.parametrize("dilation", [1, 2])
def test_cuda_kernel_at_ledit_xl_512(dilation):
    """LEDiT-XL/2 at 512 px: B=32, a 32x32 token grid, C=1152, bf16."""
    assert_matches_reference("cuda", 32, (32, 32), 1152, 3, dilation, True, torch.bfloat16, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("grid, channels, k, dilation, norm, gate, residual, bias, dtype", CASES)
def test_cuda_kernel_matches_reference(grid, channels, k, dilation, norm, gate, residual, bias, dtype):
    assert_matches_reference("cuda", 2, grid, channels, k, dilation, norm, dtype, bias, gate, residual, device="cuda")


@pytest.mark.gpu
def test_cuda_kernel_non_contiguous_inputs():
    assert_matches_reference("cuda", 2, (5, 6), 24, 3, 1, True, torch.bfloat16, device="cuda", strided=True)


# ---- packed sequences ------------------------------------------------------------------------------------------

# Every kernel size and dilation, each option on and off, every dtype, on 1x1, 3x5, 17x9 and 24x40 in one pack
# (a 7x7 kernel at dilation 2 is wider than three of the four images).
#   (C,   k, dilation, norm,  gate,  residual, bias,  dtype)
PACKED_CASES = [
    (72, 3, 1, True, True, True, True, torch.float32),
    (24, 5, 2, False, True, False, True, torch.float32),
    (72, 7, 2, True, False, True, False, torch.float32),
    (24, 3, 2, True, True, True, True, torch.bfloat16),
    (72, 5, 1, True, True, False, True, torch.float16),
]


@needs_cpu_kernels
@pytest.mark.parametrize("channels, k, dilation, norm, gate, residual, bias, dtype", PACKED_CASES)
def test_cpu_packed_matches_per_image_reference(channels, k, dilation, norm, gate, residual, bias, dtype):
    """Forward and every gradient against the per-image reference (whose packed path is the per-image loop)."""
    assert_matches_reference("cpu", 1, PACKED, channels, k, dilation, norm, dtype, bias, gate, residual)


@pytest.mark.gpu
@pytest.mark.parametrize("channels, k, dilation, norm, gate, residual, bias, dtype", PACKED_CASES)
def test_cuda_packed_matches_per_image_reference(channels, k, dilation, norm, gate, residual, bias, dtype):
    assert_matches_reference("cuda", 1, PACKED, channels, k, dilation, norm, dtype, bias, gate, residual,
                             device="cuda")


@pytest.mark.gpu
def test_cuda_packed_equals_per_image_calls_exactly():
    assert_packed_equals_per_image_calls("cuda", "cuda")


@needs_cpu_kernels
@pytest.mark.parametrize("grids", [MIXED_GRIDS, MIXED_GRIDS[::-1]], ids=["widening", "narrowing"])
def test_cpu_packed_equals_per_image_calls_exactly(grids):
    """out and dx of each image are bitwise those of the image alone: the same row sweeps, its own border. Narrowing
    widths check that a thread's row ring, sized for the widest image, zeroes the border a wider image wrote."""
    assert_packed_equals_per_image_calls("cpu", grids=grids)


@needs_cpu_kernels
@pytest.mark.parametrize("norm", [True, False])
def test_cpu_packed_ops_pass_opcheck(norm):
    assert_packed_ops_pass_opcheck(torch.ops.ledit, norm)


@needs_cpu_kernels
def test_cpu_packed_under_torch_compile_no_graph_break_no_recompile(monkeypatch):
    assert_packed_compiles_without_graph_break_or_recompile("cpu", monkeypatch)


@pytest.mark.gpu
def test_cuda_packed_under_torch_compile_no_graph_break_no_recompile(monkeypatch):
    assert_packed_compiles_without_graph_break_or_recompile("cuda", monkeypatch, device="cuda")


@pytest.mark.gpu
def test_cuda_packed_call_never_syncs_with_the_host():
    """Grids on the GPU: forward and backward run under torch's sync debug mode set to "error" (issue 17 forbids the
    per-call .item() NiT makes)."""
    x, grids, weight, bias, shift, scale, gate, residual, dilation, norm = packed_op_args(device="cuda")
    grids = grids.cuda()

    def step():
        out = dwconv_modulate(x, grids, weight, bias, shift, scale, gate, residual, dilation, norm, backend="cuda")
        out.backward(torch.ones_like(out))

    assert_no_host_sync(step)


@needs_cpu_kernels
def test_cpu_packed_op_checks_grid_values_and_modulation_rows():
    x, grids, weight, bias, shift, scale, gate, residual, dilation, norm = packed_op_args()
    op = torch.ops.ledit.dwconv_modulate_packed_fwd
    with pytest.raises(RuntimeError, match="the packed grids hold 168 tokens but the sequence has 169"):
        op(x, grids[1:], weight, bias, shift, scale, gate, residual, dilation, norm)
    with pytest.raises(RuntimeError, match=r"must be \(3, 16\), one row per sample or packed image"):
        op(x, grids, weight, bias, shift[:2], scale, gate, residual, dilation, norm)
