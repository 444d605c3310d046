"""The ``triton`` backend of ``dwconv_modulate``: the kernels of ``ledit.ops.dwconv_modulate_triton_kernels`` as
``torch.library.triton_op`` ops (``torch.compile`` traces into them, no graph break), with the autograd the
compiled backends use.

    ledit::dwconv_modulate_triton_fwd  same signature and outputs as ledit::dwconv_modulate_fwd
    ledit::dwconv_modulate_triton_bwd  same as ledit::dwconv_modulate_bwd

Forward: a LayerNorm-stats kernel (one read of x, writes the (B, N) mean/rstd the backward reuses), then the
fused tile kernel (modulation, k*k taps, bias, gate, residual; halo reads hit cache). Backward: one kernel for
dx and per-program token sums, reduced by a ``sum`` over programs. Without triton this module still imports;
the backend's can_run says what is missing.
"""


import torch

from ledit.ops.dwconv_modulate import DWCONV_MODULATE_BACKENDS, LN_EPS, register_autograd, stats_like, sums_like
from ledit.ops.extension import triton_unavailable_reason
from ledit.ops.packing import is_packed
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


def _weight_taps(weight: torch.Tensor) -> torch.Tensor:
    """(C, 1, k, k) -> (k*k, C) fp32, each tap contiguous over channels (k*k spelled out: -1 is ambiguous at C = 0)."""
    return weight.reshape(weight.shape[0], weight.shape[-2] * weight.shape[-1]).t().float().contiguous()


def _forward(x: torch.Tensor, h: int, w: int, weight: torch.Tensor, bias: torch.Tensor | None,
             shift: torch.Tensor, scale: torch.Tensor, gate: torch.Tensor | None,
             residual: torch.Tensor | None, dilation: int, norm: bool
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = x.contiguous()
    batch, n_tokens, channels = x.shape
    mean, rstd = stats_like(x, norm)
    if x.numel() == 0:  # B = 0 or C = 0: no programs to launch; the stats of a LayerNorm over no channels are NaN
        return torch.empty_like(x), mean.fill_(float("nan")), rstd.fill_(float("nan"))
    if norm:
        launch(kernels.ln_stats_kernel, (_cdiv(batch * n_tokens, BLOCK_T),), x, mean, rstd, batch * n_tokens, LN_EPS,
               C=channels, BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C)
    out = torch.empty_like(x)
    grid = (batch * h, _cdiv(w, BLOCK_W), _cdiv(channels, BLOCK_C))
    launch(kernels.forward_kernel, grid, x, mean, rstd, _weight_taps(weight),
           x if bias is None else bias.contiguous(), shift.contiguous(), scale.contiguous(),
           x if gate is None else gate.contiguous(), x if residual is None else residual.contiguous(), out,
           h, w, C=channels, K=weight.shape[-1], DIL=dilation, NORM=norm, HAS_BIAS=bias is not None,
           HAS_GATE=gate is not None, HAS_RESIDUAL=residual is not None, BLOCK_W=BLOCK_W, BLOCK_C=BLOCK_C)
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


def dwconv_modulate_triton(x, grid, weight, bias, shift, scale, gate, residual, dilation, norm):
    """The ``triton`` backend."""
    h, w = grid
    out, _, _ = torch.ops.ledit.dwconv_modulate_triton_fwd(x, h, w, weight, bias, shift, scale, gate, residual,
                                                           dilation, norm)
    return out


def _can_run(x, grid, *args, **kwargs):
    reason = triton_unavailable_reason(x.device.type)
    if reason is None and is_packed(grid):
        reason = "packed sequences are not in the Triton kernels yet (next commit of issue 17)"
    return reason


if kernels is not None:
    _backward_op = torch.library.triton_op("ledit::dwconv_modulate_triton_bwd", _backward, mutates_args=())
    _forward_op = torch.library.triton_op("ledit::dwconv_modulate_triton_fwd", _forward, mutates_args=())
    register_autograd(_forward_op, _backward_op)

DWCONV_MODULATE_BACKENDS.register("triton", dwconv_modulate_triton, _can_run)
