"""Scan masks over a token grid, evaluated from (row, col) coordinates.

Tokens are in raster order: token n sits at (n // w, n % w). For a query at (r, c) and a key at (r', c'):

==============  =========================================================  ===============================
scan            key visible iff                                            paper (Fig. 6 / Table 1b)
==============  =========================================================  ===============================
``full``        always                                                     self-attention
``raster``      r'*w + c' <= r*w + c                                       (a) 1D PixelCNN order
``lower_right`` r' <= r and c' <= c                                        (b) Mask Lower-Right
``neighborhood`` lower_right or (|r'-r| <= 1 and |c'-c| <= 1)              (c) Unmask Neighborhood
``corner``      not (r' > r and c' > c)                                    (d) Mask Lower-Right Corner
==============  =========================================================  ===============================

A token always sees itself. The same predicate lives in ``csrc/common/scan_mask.h`` for the compiled kernels;
this module is the Python twin used by the reference path and the tests. Only the reference path ever builds
an N x N mask.
"""

from __future__ import annotations

import torch

SCANS = ("full", "raster", "lower_right", "neighborhood", "corner")
CAUSAL_SCANS = SCANS[1:]


def check_scan(scan: str) -> str:
    if scan not in SCANS:
        raise ValueError(f"unknown scan={scan!r}; valid scans: {', '.join(SCANS)}")
    return scan


def check_grid(grid, n_tokens: int | None = None, name: str = "grid") -> tuple[int, int]:
    """Validate an (h, w) token grid, and that it holds n_tokens tokens when given."""
    try:
        h, w = (int(s) for s in grid)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (h, w) of positive ints, got {grid!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be a pair (h, w) of positive ints, got {grid!r}")
    if n_tokens is not None and h * w != n_tokens:
        raise ValueError(
            f"{name}={tuple(grid)} holds {h * w} tokens but the input has N={n_tokens}; "
            f"pass the (h, w) token grid with h*w == N (tokens in raster order)"
        )
    return h, w


def visible(q_row, q_col, k_row, k_col, w: int, scan: str):
    """Whether each key is visible to each query; works elementwise on broadcastable tensors."""
    if scan == "full":
        return torch.ones(torch.broadcast_shapes(q_row.shape, k_row.shape), dtype=torch.bool, device=q_row.device)
    if scan == "raster":
        return k_row * w + k_col <= q_row * w + q_col
    lower_right = (k_row <= q_row) & (k_col <= q_col)
    if scan == "lower_right":
        return lower_right
    if scan == "neighborhood":
        return lower_right | (((k_row - q_row).abs() <= 1) & ((k_col - q_col).abs() <= 1))
    if scan == "corner":
        return ~((k_row > q_row) & (k_col > q_col))
    raise ValueError(f"unknown scan={scan!r}; valid scans: {', '.join(SCANS)}")


def grid_coords(grid, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, col) of every token in raster order."""
    h, w = check_grid(grid)
    n = torch.arange(h * w, device=device)
    return n // w, n % w


def scan_mask(grid, scan: str, device=None) -> torch.Tensor:
    """The dense (N, N) boolean mask, True where the key (column) is visible to the query (row)."""
    check_scan(scan)
    _, w = check_grid(grid)
    row, col = grid_coords(grid, device)
    return visible(row[:, None], col[:, None], row[None, :], col[None, :], w, scan)


def visible_pairs(grid, scan: str) -> int:
    """Number of visible (query, key) pairs: the work a mask-aware kernel must do (FLOPs = 4*B*H*D*pairs)."""
    h, w = check_grid(grid)
    check_scan(scan)
    n = h * w
    if scan == "full":
        return n * n
    if scan == "raster":
        return n * (n + 1) // 2
    return int(scan_mask(grid, scan).sum())
