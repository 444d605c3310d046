"""Packed sequences: images of different sizes back to back in one ``(1, total_tokens, ...)`` sequence.

Both ops take ``grid`` either as an ``(h, w)`` pair (a batch of same-size images, as before) or, for a packed
sequence, as an ``(n_images, 2)`` integer tensor of per-image ``(h, w)``: image i's ``h_i * w_i`` tokens follow
image i - 1's, each image in raster order, so image i starts at token ``token_offsets[i]`` (flash-attn's
``cu_seqlens``). Attention never crosses images and the conv never reads another image.

The grids travel as tensor *data*: ``torch.compile`` does not specialise on them (a new packing of the same total
and image count reuses the compiled graph), and the fast backends derive every offset and tile table from them on
the tensors' device, with no host synchronisation. So their values (every side >= 1, ``sum(h * w) == total``) are
checked here only when the grids are a CPU tensor (eager calls; the ``cpu`` kernel checks them itself under
``torch.compile``); grids on the GPU are the caller's contract, as flash-attn's ``cu_seqlens`` are.
"""

from __future__ import annotations

import torch

from ledit.ops.masks import check_grid

GRID_DTYPES = (torch.int32, torch.int64)
# Offsets are int32, as flash-attn's cu_seqlens: a packed sequence holds fewer than 2**31 tokens.
MAX_PACKED_TOKENS = 2**31 - 1


def is_packed(grid) -> bool:
    """Whether ``grid`` describes a packed sequence (an (n_images, 2) tensor) rather than one (h, w) grid."""
    return isinstance(grid, torch.Tensor) and grid.dim() == 2


def check_call_grid(grid, x: torch.Tensor, what: str):
    """The (h, w) pair of a batched call, or the grids of a packed call as contiguous int32 on x's device.

    ``x`` is the op's token tensor, (B, N, ...); ``what`` names it in messages ("q", "x")."""
    if is_packed(grid):
        return check_packed_grids(grid, x, what)
    if isinstance(grid, (list, tuple)) and grid and all(isinstance(g, (list, tuple, torch.Tensor)) for g in grid):
        raise ValueError(
            f"grid={grid!r} looks like per-image grids: pass them as an (n_images, 2) integer tensor, "
            f"e.g. torch.tensor(grid, dtype=torch.int32), so they travel as data (see ledit.ops.packing)"
        )
    return check_grid(grid, x.shape[1])


def check_packed_grids(grids: torch.Tensor, x: torch.Tensor, what: str) -> torch.Tensor:
    """Validate the per-image grids of a packed call; returns them as contiguous int32 on x's device."""
    if grids.shape[1] != 2 or grids.shape[0] < 1:
        raise ValueError(f"packed grid must have shape (n_images, 2) with n_images >= 1, got {tuple(grids.shape)}")
    if grids.dtype not in GRID_DTYPES:
        raise TypeError(f"packed grid.dtype={grids.dtype} is not supported; use torch.int32 or torch.int64")
    if x.shape[0] != 1:
        raise ValueError(
            f"a packed sequence is one batch row: {what} must have shape (1, total_tokens, ...) with a packed "
            f"grid, got {tuple(x.shape)}; concatenate the images along the token axis"
        )
    if x.shape[1] > MAX_PACKED_TOKENS:
        raise ValueError(f"a packed sequence holds at most 2**31 - 1 tokens (int32 offsets), got {x.shape[1]}")
    if grids.device.type == "cpu":
        if not torch.compiler.is_compiling():
            check_packed_values(grids, x.shape[1], what)
    elif grids.device != x.device:
        raise ValueError(f"packed grid is on {grids.device} but {what} is on {x.device}; "
                         f"put it on {what}'s device (or the CPU)")
    return grids.to(device=x.device, dtype=torch.int32).contiguous()


def check_packed_values(grids: torch.Tensor, tokens: int, what: str) -> None:
    """Every side >= 1 and the images' tokens add up to the sequence's (reads the values: CPU grids only).

    One host copy and Python arithmetic: four tensor reductions with read-backs took about 3x as long per eager
    call (~14 us against ~5 us)."""
    sides = grids.tolist()
    bad = next((side for side in sides if min(side) < 1), None)
    if bad is not None:
        raise ValueError(f"packed grid has an image of grid {tuple(bad)}; every h and w must be >= 1")
    total = sum(h * w for h, w in sides)
    if total != tokens:
        raise ValueError(
            f"packed grid holds {total} tokens (sum of h*w over {grids.shape[0]} images) but {what} has "
            f"{tokens}; the images' tokens must fill the sequence exactly, back to back"
        )


def token_offsets(grids: torch.Tensor) -> torch.Tensor:
    """(n_images + 1,) int32 first token of each image, then the total (flash-attn's cu_seqlens), on grids' device."""
    return prefix_offsets(grids[:, 0] * grids[:, 1])


def prefix_offsets(counts: torch.Tensor) -> torch.Tensor:
    """(n + 1,) int32 exclusive prefix sums of n per-image counts, ending with their total."""
    return torch.nn.functional.pad(counts.cumsum(0, dtype=torch.int32), (1, 0))


def max_packed_units(tokens: int, images: int, unit_tokens: int) -> int:
    """A bound on the units of unit_tokens consecutive tokens of each image, from shapes only (a GPU launch's size
    without a host read): sum ceil(n_i / u) <= images + tokens // u."""
    return images + tokens // unit_tokens


def search_steps(grids: torch.Tensor) -> int:
    """The binary-search steps that find any unit's image among n_images (the bit length of n): a compile-time
    constant of the packed GPU kernels, so it is a Python int even where n is symbolic under torch.compile (a new
    value recompiles, only when n crosses a power of two)."""
    return int(grids.shape[0]).bit_length()


def image_grids(grids: torch.Tensor) -> list[tuple[int, int]]:
    """The per-image (h, w) as Python ints: a host read (a device synchronisation for GPU grids); the reference
    backends only."""
    return [(h, w) for h, w in grids.tolist()]
