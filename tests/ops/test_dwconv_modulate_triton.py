"""The Triton dwconv_modulate kernels against the fp64 reference, forward and every gradient: in Triton's
interpreter on CPU tensors (tiny shapes; conftest sets TRITON_INTERPRET=1 without a GPU), and on a GPU at
LEDiT-XL/2 size under the gpu marker."""

import pytest
import torch
from attention_checks import MIXED_GRIDS
from dwconv_checks import assert_matches_reference

from ledit.ops import DWCONV_MODULATE_BACKENDS, dwconv_modulate
from ledit.ops.extension import triton_unavailable_reason

needs_triton_here = pytest.mark.skipif(
    triton_unavailable_reason("cpu") is not None, reason=f"{triton_unavailable_reason('cpu')}"
)

# Tiny, but every grid edge case, a channel count that is not a multiple of the 64-channel tile, both kernel
# sizes and dilations, and each optional input on and off.
#   (grid,    C,  k, dilation, norm,  gate,  residual, bias,  dtype)
INTERPRETER_CASES = [
    ((1, 1), 8, 3, 1, True, True, True, True, torch.float32),
    ((2, 3), 72, 5, 2, True, False, True, False, torch.float32),
    ((7, 5), 8, 3, 2, False, True, False, True, torch.float32),
    ((4, 5), 8, 3, 1, True, True, True, True, torch.bfloat16),
    ((3, 18), 8, 3, 1, True, True, False, True, torch.float16),
]


@needs_triton_here
@pytest.mark.parametrize("grid, channels, k, dilation, norm, gate, residual, bias, dtype", INTERPRETER_CASES)
def test_triton_kernel_matches_reference_in_interpreter(grid, channels, k, dilation, norm, gate, residual, bias,
                                                        dtype):
    assert_matches_reference("triton", 2, grid, channels, k, dilation, norm, dtype, bias, gate, residual)


@needs_triton_here
def test_triton_kernel_non_contiguous_inputs_in_interpreter():
    assert_matches_reference("triton", 1, (3, 4), 8, 3, 1, True, torch.float32, strided=True)


@needs_triton_here
def test_triton_backend_runs_cpu_tensors_only_on_request():
    args = (torch.randn(1, 4, 8), (2, 2), torch.randn(8, 1, 3, 3), None, torch.randn(1, 8), torch.randn(1, 8))
    assert DWCONV_MODULATE_BACKENDS.choose(None, "cpu", *args).name != "triton"
    out = dwconv_modulate(*args, backend="triton")
    torch.testing.assert_close(out, dwconv_modulate(*args, backend="reference"), atol=1e-5, rtol=1e-5)


PACKED = torch.tensor(MIXED_GRIDS, dtype=torch.int32)

# 1x1, 3x5, 17x9 and 24x40 in one pack: (C, k, dilation, norm, gate, residual, bias, dtype). 3x3 taps and one
# channel block keep the interpreter's time down (C = 72 at k = 5 took 5 minutes); the packed kernels run the
# batched kernels' tile code, which INTERPRETER_CASES covers at those.
PACKED_CASES = [
    (8, 3, 1, True, True, True, True, torch.float32),
    (8, 3, 2, False, True, False, True, torch.float32),
    (8, 3, 1, True, False, True, False, torch.float32),
]


@needs_triton_here
@pytest.mark.parametrize("channels, k, dilation, norm, gate, residual, bias, dtype", PACKED_CASES)
def test_triton_packed_matches_per_image_reference_in_interpreter(channels, k, dilation, norm, gate, residual, bias,
                                                                  dtype):
    """Forward and every gradient (shift/scale/gate per image) against the per-image reference."""
    assert_matches_reference("triton", 1, PACKED, channels, k, dilation, norm, dtype, bias, gate, residual)


@pytest.mark.gpu
@pytest.mark.parametrize("channels, k, dilation, norm, gate, residual, bias, dtype", PACKED_CASES)
def test_triton_packed_matches_per_image_reference_on_gpu(channels, k, dilation, norm, gate, residual, bias, dtype):
    assert_matches_reference("triton", 1, PACKED.cuda(), channels, k, dilation, norm, dtype, bias, gate, residual,
                             device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("dilation", [1, 2])
def test_triton_kernel_at_ledit_xl_512(dilation):
    """LEDiT-XL/2 at 512 px: B=32, a 32x32 token grid, C=1152, bf16."""
    assert_matches_reference("triton", 32, (32, 32), 1152, 3, dilation, True, torch.bfloat16, device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("grid, channels, k, dilation, norm, gate, residual, bias, dtype", INTERPRETER_CASES)
def test_triton_kernel_matches_reference_on_gpu(grid, channels, k, dilation, norm, gate, residual, bias, dtype):
    assert_matches_reference("triton", 2, grid, channels, k, dilation, norm, dtype, bias, gate, residual,
                             device="cuda")


@pytest.mark.gpu
def test_triton_kernel_under_torch_compile_has_no_graph_break():
    """triton_op lets torch.compile trace into the kernels (on a GPU only: the interpreter cannot run on the fake
    and functional tensors that tracing uses)."""
    shapes = ((2, 35, 72), (72, 1, 3, 3), (2, 72))
    x, weight, gate = (torch.randn(*s, device="cuda", requires_grad=True) for s in shapes)
    shift, scale = torch.randn(2, 72, device="cuda"), torch.randn(2, 72, device="cuda")

    def step(x, weight, gate):
        return dwconv_modulate(x, (7, 5), weight, None, shift, scale, gate, x, 2, True, backend="triton")

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    expected = torch.autograd.grad(step(x, weight, gate).square().sum(), (x, weight, gate))
    got = torch.autograd.grad(compiled(x, weight, gate).square().sum(), (x, weight, gate))
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)
