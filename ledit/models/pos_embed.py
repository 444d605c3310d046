"""Absolute position embeddings of the DiT baselines on any (h, w) token grid.

DiT's 2D sin-cos layout (MAE's): the first half of the channels encodes the token's column, the second half
its row; each half is [sin(pos * omega_i), cos(pos * omega_i)] with omega_i = 10000^(-i / (D/4)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SINCOS_MODES = ("extend", "interpolate")


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(M,) positions -> (M, dim) [sin, cos] features, computed in float64."""
    omega = 10000.0 ** (-torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(dim: int, grid, train_grid=None) -> torch.Tensor:
    """(h*w, dim) float32 sin-cos embedding of an (h, w) grid in raster order.

    With ``train_grid`` the positions are interpolated: row r maps to r * train_h / h (likewise columns), so the
    embedding stays inside the trained range. Without it a larger grid gets new positions (extension).
    """
    if dim % 4 != 0:
        raise ValueError(f"hidden_size={dim} must be a multiple of 4 for the 2D sin-cos embedding")
    h, w = grid
    rows = torch.arange(h, dtype=torch.float64)
    cols = torch.arange(w, dtype=torch.float64)
    if train_grid is not None:
        rows, cols = rows * (train_grid[0] / h), cols * (train_grid[1] / w)
    row_of_token, col_of_token = rows.repeat_interleave(w), cols.repeat(h)
    return torch.cat([sincos_1d(dim // 2, col_of_token), sincos_1d(dim // 2, row_of_token)], dim=1).float()


def interpolate_pos_embed(pos_embed: torch.Tensor, train_grid, grid) -> torch.Tensor:
    """Bicubic resize of a (1, h0*w0, D) learned embedding to (1, h*w, D); differentiable."""
    (h0, w0), (h, w) = train_grid, grid
    if (h0, w0) == (h, w):
        return pos_embed
    dim = pos_embed.shape[-1]
    image = pos_embed.reshape(1, h0, w0, dim).permute(0, 3, 1, 2)
    image = F.interpolate(image.float(), size=(h, w), mode="bicubic", align_corners=False)
    return image.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(pos_embed.dtype)
