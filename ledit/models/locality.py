"""LEDiT's locality module: a 3x3 convolution on the token grid that gives tokens their local relative position.

Zero padding = dilation (kernel 3) keeps the grid size, and the zero border leaks absolute position near the
edges (the paper's point). Multi-dilation training runs the same weights at dilation 2; the model draws the
dilation once per forward and passes it in.

- ``dwconv`` [ours, default]: z = P + gate(c) * (DWConv3x3(modulate(LN(P), shift(c), scale(c))) + bias), with
  shift/scale/gate from a zero-initialised Linear(SiLU(c)) (adaLN-Zero), so the module starts as the identity
  and a fine-tuned DiT starts from its pretrained function. Runs on the fused ``ledit.ops.dwconv_modulate``.
- ``conv``: the paper's literal z = Conv3x3(P), dense D -> D. [ours] initialised to the identity (centre tap =
  identity matrix, other taps and bias zero) so that, like ``dwconv``, a DiT fine-tune starts unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ledit.models.packing import Packing, op_grid
from ledit.ops import dwconv_modulate

LOCALITIES = ("dwconv", "conv", "none")
LOCALITY_PLACEMENTS = ("stem", "every_block")
KERNEL_SIZE = 3


class ModulatedDWConv(nn.Module):
    """Residual, adaLN-Zero-gated depthwise 3x3 conv on (B, N, D) tokens; ``forward(x, c, grid, dilation)``.

    In a packed batch (grid a ``Packing``) c is per image, and so are shift, scale and gate: the fused op takes them
    as (n_images, D)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        # Default Conv2d init (non-zero): with a zero gate the taps must be non-zero for the gate to learn.
        self.conv = nn.Conv2d(hidden_size, hidden_size, KERNEL_SIZE, groups=hidden_size, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 3 * hidden_size, bias=True))
        nn.init.zeros_(self.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def forward(self, x, c, grid, dilation: int = 1):
        # Under autocast the Linear output and the fp32 parameters differ in dtype; the fused op wants one.
        shift, scale, gate = (m.to(x.dtype) for m in self.adaLN_modulation(c).chunk(3, dim=1))
        weight, bias = self.conv.weight.to(x.dtype), self.conv.bias.to(x.dtype)
        return dwconv_modulate(x, op_grid(grid), weight, bias, shift, scale, gate, residual=x, dilation=dilation,
                               norm=True)


class DenseConv(nn.Module):
    """The paper's dense 3x3 conv D -> D on (B, N, D) tokens, identity-initialised; ignores the condition c."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.conv = nn.Conv2d(hidden_size, hidden_size, KERNEL_SIZE, bias=True)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, :, KERNEL_SIZE // 2, KERNEL_SIZE // 2] = torch.eye(hidden_size)
            self.conv.bias.zero_()

    def forward(self, x, c, grid, dilation: int = 1):
        if isinstance(grid, Packing):  # each image on its own, with its own zero border
            return torch.cat([self(piece, c, size, dilation) for piece, size in zip(grid.split(x), grid.host_grids)], 1)
        batch, _, dim = x.shape
        image = x.transpose(1, 2).reshape(batch, dim, *grid)
        padding = dilation * (KERNEL_SIZE - 1) // 2
        image = F.conv2d(image, self.conv.weight, self.conv.bias, padding=padding, dilation=dilation)
        return image.flatten(2).transpose(1, 2)


def build_locality(locality: str, hidden_size: int):
    """The stem module for ``locality`` (None for "none")."""
    if locality not in LOCALITIES:
        raise ValueError(f"unknown locality={locality!r}; valid: {', '.join(LOCALITIES)}")
    if locality == "none":
        return None
    return ModulatedDWConv(hidden_size) if locality == "dwconv" else DenseConv(hidden_size)
