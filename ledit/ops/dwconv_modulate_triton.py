"""The ``triton`` backend of ``dwconv_modulate``: the kernels of ``ledit.ops.dwconv_modulate_triton_kernels`` as
``torch.library.triton_op`` ops (``torch.compile`` traces into them, no graph break), with the autograd the
compiled backends use.

    ledit::dwconv_modulate_triton_fwd  same signature and outputs as ledit::dwconv_modulate_fwd
    ledit::dwconv_modulate_triton_bwd  same as ledit::dwconv_modulate_bwd
    ledit::dwconv_modulate_triton_packed_fwd / _bwd   as ledit::dwconv_modulate_packed_fwd / _bwd (a packed sequence)

Forward: a LayerNorm-stats kernel (one read of x, writes the (B, N) mean/rstd the backward reuses), then the
fused tile kernel (modulation, k*k taps, bias, gate, residual; halo reads hit cache). Backward: one kernel for
dx and per-program token sums, reduced by a ``sum`` over programs. A packed sequence runs the same tile code on
runs of one image's tokens: programs find their image by binary search on per-image unit offsets (built here with
tensor ops on the device: no host read), the launch covers a bound from shapes only, and the backward's partial
sums are reduced per image by ``torch.segment_reduce`` (in order: deterministic). Without triton this module still
imports; the backend's can_run says what is missing.
"""


import torch

from ledit.ops.dwconv_modulate import DWCONV_MODULATE_BACKENDS, LN_EPS, register_autograd, stats_like, sums_like
from ledit.ops.extension import triton_unavailable_reason
from ledit.ops.packing import is_packed, max_packed_units, prefix_offsets, search_steps, token_offsets
from ledit.ops.triton_launch import launch

try:
    from ledit.ops import dwconv_modulate_triton_kernels as kernels
except ImportError:  # no triton: can_run reports triton_unavailable_reason
    kernels = None

BLOCK_W = 16  # tokens of one grid row per tile
BLOCK_C = 64  # channels per tile
BLOCK_T = 16  # tokens per LayerNorm-stats program
BACKWARD_ROWS = 4  # grid rows per backward program: fewer programs, so fewer partial sums to reduce


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _packed_units(grids: torch.Tensor, tokens: int, unit_tokens: int) -> tuple[torch.Tensor, int]:
    """Per-image unit offsets for units of unit_tokens consecutive tokens (on the grids' device, no host read), and
    the launch bound from shapes only."""
    counts = (grids[:, 0] * grids[:, 1] + unit_tokens - 1) // unit_tokens
    return prefix_offsets(counts), max_packed_units(tokens, grids.shape[0], unit_tokens)


def _weight_taps(weight: torch.Tensor) -> torch.Tensor:
    """(C, 1, k, k) -> (k*k, C) fp32, each tap contiguous over channels (k*k spelled out: -1 is ambiguous at C = 0)."""
    return weight.reshape(weight.shape[0], weight.shape[-2] * weight.shape[-1]).t().float().contiguous()


def _start_forward(x: torch.Tensor, norm: bool) -> tuple[torch.Tensor, ...]:
    """x made contiguous, the empty output, and LayerNorm's (mean, rstd) per token (empty without LN), computed by
    one program per BLOCK_T tokens of the flat sequence: batched and packed calls alike."""
    x = x.contiguous()
    batch, n_tokens, channels = x.shape
    mean, rstd = stats_like(x, norm)
    if x.numel() == 0:  # B = 0 or C = 0: no programs to launch; the stats of a LayerNorm over no channels are NaN
        mean.fill_(float("nan"))
        rstd.fill_(float("nan"))
    elif norm:
        launch(kernels.ln_stats_kernel, (_cdiv(batch * n_tokens, BLOCK_T),), x, mean, rstd, batch * n_tokens, LN_EPS,
               C=channels, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C)
    return x, torch.empty_like(x), mean, rstd


def _options(weight, bias, gate, residual, dilation, norm) -> dict:
    """The compile-time constants every forward kernel shares."""
    return dict(C=weight.shape[0], K=weight.shape[-1], DIL=dilation, NORM=norm, HAS_BIAS=bias is not None,
                HAS_GATE=gate is not None, HAS_RESIDUAL=residual is not None, BLOCK_W=BLOCK_W, BLOCK_C=BLOCK_C)


def _operands(x, weight, bias, shift, scale, gate, residual) -> tuple:
    """The forward kernels' tensor operands after x, mean and rstd (absent ones as x, never read)."""
    return (_weight_taps(weight), x if bias is None else bias.contiguous(), shift.contiguous(), scale.contiguous(),
            x if gate is None else gate.contiguous(), x if residual is None else residual.contiguous())


def _forward(x: torch.Tensor, h: int, w: int, weight: torch.Tensor, bias: torch.Tensor | None,
             shift: torch.Tensor, scale: torch.Tensor, gate: torch.Tensor | None,
             residual: torch.Tensor | None, dilation: int, norm: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, out, mean, rstd = _start_forward(x, norm)
    if x.numel() == 0:
        return out, mean, rstd
    grid = (x.shape[0] * h, _cdiv(w, BLOCK_W), _cdiv(x.shape[2], BLOCK_C))
    launch(kernels.forward_kernel, grid, x, mean, rstd, *_operands(x, weight, bias, shift, scale, gate, residual),
           out, h, w, **_options(weight, bias, gate, residual, dilation, norm))
    return out, mean, rstd


def _packed_forward(x: torch.Tensor, grids: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    shift: torch.Tensor, scale: torch.Tensor, gate: torch.Tensor | None,
                    residual: torch.Tensor | None, dilation: int, norm: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x, out, mean, rstd = _start_forward(x, norm)
    if x.numel() == 0:  # C = 0 (a packed sequence holds tokens)
        return out, mean, rstd
    unit_offsets, units = _packed_units(grids, x.shape[1], BLOCK_W)
    launch(kernels.packed_forward_kernel, (units, _cdiv(x.shape[2], BLOCK_C)), x, mean, rstd,
           *_operands(x, weight, bias, shift, scale, gate, residual), out, grids, token_offsets(grids),
           unit_offsets, grids.shape[0], SEARCH_STEPS=search_steps(grids),
           **_options(weight, bias, gate, residual, dilation, norm))
    return out, mean, rstd


def _backward(grad_out: torch.Tensor, x: torch.Tensor, h: int, w: int, weight: torch.Tensor, shift: torch.Tensor,
              scale: torch.Tensor, gate: torch.Tensor | None, mean: torch.Tensor, rstd: torch.Tensor,
              dilation: int, norm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.contiguous()
    batch, _, channels = x.shape
    if x.numel() == 0:  # B = 0 or C = 0: no programs to launch, and the sums over them are empty
        return torch.empty_like(x), sums_like(x, weight).zero_()
    k = weight.shape[-1]
    row_blocks, col_blocks = _cdiv(h, BACKWARD_ROWS), _cdiv(w, BLOCK_W)
    partials = x.new_zeros((batch, row_blocks * col_blocks, *sums_like(x, weight).shape[1:]), dtype=torch.float32)
    grad_x = torch.empty_like(x)
    launch(kernels.backward_kernel, (batch * row_blocks, col_blocks), grad_out.contiguous(), x, mean, rstd,
           _weight_taps(weight), shift.contiguous(), scale.contiguous(), x if gate is None else gate.contiguous(),
           grad_x, partials, h, w, row_blocks, col_blocks, C=channels, K=k, DIL=dilation, NORM=norm,
           HAS_GATE=gate is not None, ROWS=BACKWARD_ROWS, BLOCK_W=BLOCK_W, BLOCK_C=BLOCK_C)
    return grad_x, partials.sum(1)


def _packed_backward(grad_out: torch.Tensor, x: torch.Tensor, grids: torch.Tensor, weight: torch.Tensor,
                     shift: torch.Tensor, scale: torch.Tensor, gate: torch.Tensor | None, mean: torch.Tensor,
                     rstd: torch.Tensor, dilation: int, norm: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.contiguous()
    images = grids.shape[0]
    if x.numel() == 0:  # C = 0: no programs to launch, and the sums over them are empty
        return torch.empty_like(x), sums_like(x, weight, images).zero_()
    unit_offsets, units = _packed_units(grids, x.shape[1], BACKWARD_ROWS * BLOCK_W)
    partials = x.new_zeros((units, *sums_like(x, weight).shape[1:]), dtype=torch.float32)
    grad_x = torch.empty_like(x)
    launch(kernels.packed_backward_kernel, (units,), grad_out.contiguous(), x, mean, rstd, _weight_taps(weight),
           shift.contiguous(), scale.contiguous(), x if gate is None else gate.contiguous(), grad_x, partials, grids,
           token_offsets(grids), unit_offsets, images, C=x.shape[2], K=weight.shape[-1], DIL=dilation, NORM=norm,
           HAS_GATE=gate is not None, ROWS=BACKWARD_ROWS, BLOCK_W=BLOCK_W, BLOCK_C=BLOCK_C,
           SEARCH_STEPS=search_steps(grids))
    # Units past the last image's hold zeros: they join the last image's segment.
    lengths = unit_offsets[1:] - unit_offsets[:-1]
    lengths = torch.cat([lengths[:-1], lengths[-1:] + units - unit_offsets[-1:]])
    # unsafe: the safe path checks the lengths with .item() (two host syncs per call); they are ours, by construction.
    return grad_x, torch.segment_reduce(partials, "sum", lengths=lengths, axis=0, unsafe=True)


def dwconv_modulate_triton(x, grid, weight, bias, shift, scale, gate, residual, dilation, norm):
    """The ``triton`` backend."""
    if is_packed(grid):
        out, _, _ = torch.ops.ledit.dwconv_modulate_triton_packed_fwd(x, grid, weight, bias, shift, scale, gate,
                                                                      residual, dilation, norm)
        return out
    h, w = grid
    out, _, _ = torch.ops.ledit.dwconv_modulate_triton_fwd(x, h, w, weight, bias, shift, scale, gate, residual,
                                                           dilation, norm)
    return out


def _can_run(x, *args, **kwargs):
    return triton_unavailable_reason(x.device.type)


if kernels is not None:
    _backward_op = torch.library.triton_op("ledit::dwconv_modulate_triton_bwd", _backward, mutates_args=())
    _forward_op = torch.library.triton_op("ledit::dwconv_modulate_triton_fwd", _forward, mutates_args=())
    register_autograd(_forward_op, _backward_op)
    _packed_backward_op = torch.library.triton_op("ledit::dwconv_modulate_triton_packed_bwd", _packed_backward,
                                                  mutates_args=())
    _packed_forward_op = torch.library.triton_op("ledit::dwconv_modulate_triton_packed_fwd", _packed_forward,
                                                 mutates_args=())
    register_autograd(_packed_forward_op, _packed_backward_op, packed=True)

DWCONV_MODULATE_BACKENDS.register("triton", dwconv_modulate_triton, _can_run)
