"""Checks shared by the dwconv_modulate backend tests: random inputs, an fp64 oracle and flash-attention's 2x rule
(|fast - oracle| <= 2 * |reference in the same low precision - oracle| + a small eps), for the output and the
gradient of every tensor argument."""

from __future__ import annotations

import functools

import torch
from attention_checks import MIXED_GRIDS

from ledit.ops import dwconv_modulate, dwconv_modulate_reference
from ledit.ops.packing import is_packed

# The odd pack: 1x1, 3x5, 17x9 and 24x40 in one sequence.
PACKED = torch.tensor(MIXED_GRIDS, dtype=torch.int32)
TENSOR_ARGS = ("x", "weight", "bias", "shift", "scale", "gate", "residual")


def tokens_and_samples(batch, grid) -> tuple[int, int]:
    """(tokens per batch row, rows of shift/scale/gate): (h*w, B) for an (h, w) grid, (total, n_images) for a
    packed grid tensor (then batch must be 1)."""
    if is_packed(grid):
        assert batch == 1, "a packed sequence is one batch row"
        return int(grid.prod(1).sum()), grid.shape[0]
    return grid[0] * grid[1], batch


def make_inputs(batch, grid, channels, k, bias=True, gate=True, residual=True, seed=0):
    """fp64 inputs on the CPU; x has a non-zero mean and spread so the LayerNorm has work to do."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    n, samples = tokens_and_samples(batch, grid)
    return {
        "x": 1.5 * randn(batch, n, channels) + 0.5,
        "weight": randn(channels, 1, k, k) / k,
        "bias": randn(channels) if bias else None,
        "shift": 0.5 * randn(samples, channels),
        "scale": 0.5 * randn(samples, channels),
        "gate": randn(samples, channels) if gate else None,
        "residual": randn(batch, n, channels) if residual else None,
    }


def non_contiguous(t: torch.Tensor) -> torch.Tensor:
    """The same values as a strided view, built differentiably so gradients still reach t."""
    if t.dim() == 1:
        return torch.stack([t, t], -1)[:, 0]
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


def misaligned(t: torch.Tensor) -> torch.Tensor:
    """A contiguous leaf with t's values whose data starts one element past an allocation's (aligned) start."""
    buffer = torch.empty(t.numel() + 8, dtype=t.dtype, device=t.device)
    view = buffer[1 : 1 + t.numel()].view(t.shape).copy_(t)
    assert view.is_contiguous() and view.data_ptr() % 16 != 0
    return view


def run_with_grads(fn, inputs, grid, dilation, norm, grad_out, dtype, device, strided=False, unaligned=False):
    """Output and the gradient of every tensor argument, computed in dtype on device."""
    place = misaligned if unaligned else (lambda t: t)
    leaves = {n: None if t is None else place(t.detach().to(device, dtype)).requires_grad_()
              for n, t in inputs.items()}
    args = {n: None if t is None else (non_contiguous(t) if strided else t) for n, t in leaves.items()}
    out = fn(args["x"], grid, args["weight"], args["bias"], args["shift"], args["scale"], args["gate"],
             args["residual"], dilation, norm)
    out.backward(grad_out.to(device, dtype))
    results = {"out": out.detach()}
    results.update({n: leaf.grad for n, leaf in leaves.items() if leaf is not None})
    return results


def assert_matches_reference(backend, batch, grid, channels, k, dilation, norm, dtype, bias=True, gate=True,
                             residual=True, device="cpu", strided=False, unaligned=False):
    inputs = make_inputs(batch, grid, channels, k, bias, gate, residual)
    grad_out = torch.randn(batch, tokens_and_samples(batch, grid)[0], channels, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(1))
    common = {"inputs": inputs, "grid": grid, "dilation": dilation, "norm": norm, "grad_out": grad_out,
              "device": device}
    oracle = run_with_grads(dwconv_modulate_reference, dtype=torch.float64, **common)
    low_precision = run_with_grads(dwconv_modulate_reference, dtype=dtype, **common)
    fast = run_with_grads(functools.partial(dwconv_modulate, backend=backend), dtype=dtype, strided=strided,
                          unaligned=unaligned, **common)
    assert fast.keys() == oracle.keys()
    for name, expected in oracle.items():
        assert fast[name].dtype == dtype and fast[name].shape == expected.shape, name
        fast_error = (fast[name].double() - expected).abs().max().item()
        reference_error = (low_precision[name].double() - expected).abs().max().item()
        eps = 1e-5 * expected.abs().max().item() + 1e-6
        assert fast_error <= 2 * reference_error + eps, (
            f"{backend} {name}: error {fast_error:.3g} vs {dtype} reference error {reference_error:.3g} "
            f"(grid {grid}, C={channels}, k={k}, dilation={dilation}, norm={norm})"
        )


def assert_large_batch_matches_reference(backend, batch, grid, channels, dtype, samples, device="cuda"):
    """For inputs too large for the fp64 reference: run the backend on the whole batch (made on the GPU), the
    reference only on `samples` (samples are independent in out and dx), and apply the 2x rule to out and dx."""
    n = grid[0] * grid[1]
    x = (1.5 * torch.randn(batch, n, channels, device=device) + 0.5).to(dtype).requires_grad_()
    weight, bias = (torch.randn(channels, 1, 3, 3, device=device) / 3).to(dtype), torch.randn(channels, device=device)
    shift, scale, gate = (0.5 * torch.randn(batch, channels, device=device).to(dtype) for _ in range(3))
    grad_out = torch.randn_like(x)
    out = dwconv_modulate(x, grid, weight, bias.to(dtype), shift, scale, gate, x, 1, True, backend=backend)
    out.backward(grad_out)
    for s in samples:
        picked = {"x": x[s : s + 1], "weight": weight, "bias": bias.to(dtype), "shift": shift[s : s + 1],
                  "scale": scale[s : s + 1], "gate": gate[s : s + 1], "residual": None}
        common = {"inputs": picked, "grid": grid, "dilation": 1, "norm": True, "grad_out": grad_out[s : s + 1],
                  "device": device}
        # residual = x, as in the fast call: the reference gets it through the same leaf.
        oracle = _with_residual_x(run_with_grads, dwconv_modulate_reference, torch.float64, common)
        low = _with_residual_x(run_with_grads, dwconv_modulate_reference, dtype, common)
        for name, fast_t in (("out", out.detach()[s : s + 1]), ("x", x.grad[s : s + 1])):
            fast_error = (fast_t.double() - oracle[name]).abs().max().item()
            bound = 2 * (low[name].double() - oracle[name]).abs().max().item() + 1e-5 * oracle[name].abs().max().item()
            assert fast_error <= bound + 1e-6, f"{backend} sample {s} {name}: {fast_error:.3g} > {bound:.3g}"


def _with_residual_x(run, fn, dtype, common):
    def with_residual(x, grid, weight, bias, shift, scale, gate, residual, dilation, norm):
        return fn(x, grid, weight, bias, shift, scale, gate, x, dilation, norm)

    return run(with_residual, dtype=dtype, **common)


def assert_packed_equals_per_image_calls(backend, device="cpu", grids=MIXED_GRIDS):
    """out and dx of each image of a pack (the odd mixed one by default) are bitwise those of a call on the image
    alone (the same kernel code per image, with its own zero border and modulation row)."""
    packed = torch.tensor(grids, dtype=torch.int32)
    inputs = {n: t.float().to(device) for n, t in make_inputs(1, packed, 40, 3).items()}
    x = inputs["x"].requires_grad_()

    def run(x, grid, rows):
        return dwconv_modulate(x, grid, inputs["weight"], inputs["bias"], *(inputs[n][rows] for n in
                               ("shift", "scale", "gate")), x, 2, True, backend=backend)

    out = run(x, packed, slice(None))
    grad_out = torch.randn_like(out)
    (dx,) = torch.autograd.grad(out, x, grad_out)
    start = 0
    for i, (h, w) in enumerate(grids):
        image = slice(start, start + h * w)
        part = x[:, image].detach().requires_grad_()
        alone = run(part, (h, w), slice(i, i + 1))
        assert torch.equal(out[:, image], alone)
        assert torch.equal(dx[:, image], torch.autograd.grad(alone, part, grad_out[:, image])[0])
        start += h * w


def packed_op_args(norm=True, device="cpu"):
    """The packed ops' arguments on the first three images of the mixed pack (169 tokens, C = 16, k = 3, dilation 2),
    float32 leaves that require grad; the grids stay on the CPU."""
    grids = PACKED[:3]
    tensors = {n: t.float().to(device).requires_grad_() for n, t in make_inputs(1, grids, 16, 3).items()}
    return (tensors["x"], grids, tensors["weight"], tensors["bias"], tensors["shift"], tensors["scale"],
            tensors["gate"], tensors["residual"], 2, norm)


def assert_packed_ops_pass_opcheck(ops, norm):
    """torch.library.opcheck of ops.dwconv_modulate_packed_fwd and _bwd (ops: torch.ops.ledit or the executor's)."""
    args = packed_op_args(norm)
    torch.library.opcheck(ops.dwconv_modulate_packed_fwd, args)
    out, mean, rstd = ops.dwconv_modulate_packed_fwd(*args)
    x, grids, weight, _, shift, scale, gate, _, dilation, _ = args
    torch.library.opcheck(ops.dwconv_modulate_packed_bwd,
                          (torch.randn_like(out), x.detach(), grids, weight.detach(), shift.detach(), scale.detach(),
                           gate.detach(), mean.detach(), rstd.detach(), dilation, norm))


def assert_packed_compiles_without_graph_break_or_recompile(backend, monkeypatch, device="cpu"):
    """fullgraph=True, forward and every gradient; a second packing of the same total and image count reuses the
    graph (error_on_recompile would raise otherwise)."""
    x, grids, weight, bias, shift, scale, gate, residual, dilation, norm = packed_op_args(device=device)
    other = torch.tensor([[9, 17], [1, 1], [5, 3]], dtype=torch.int32)  # 169 tokens, as 1x1 + 3x5 + 17x9

    def step(x, grids, weight, shift, scale, gate, residual):
        return dwconv_modulate(x, grids, weight, bias, shift, scale, gate, residual, dilation, norm, backend=backend)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    inputs = (x, weight, shift, scale, gate, residual)
    for g in (grids, other):
        g = g.to(device)
        expected = torch.autograd.grad(step(x, g, *inputs[1:]).square().sum(), inputs)
        got = torch.autograd.grad(compiled(x, g, *inputs[1:]).square().sum(), inputs)
        for e, r in zip(expected, got):
            torch.testing.assert_close(r, e)
        monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)
