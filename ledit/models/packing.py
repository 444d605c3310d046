"""Packed batches: images of different sizes in one sequence, for native-resolution training and mixed-size sampling.

Every model's ``forward`` (and ``forward_with_cfg``) takes a packed batch in one of two forms and answers in kind:

- a list of n latents ``(C, H_i, W_i)`` -> a list of n outputs ``(C_out, H_i, W_i)``;
- a packed tensor ``(T, C, p, p)`` plus ``grids`` -> ``(T, C_out, p, p)``. The packed tensor holds the p x p
  patches of every image, image after image, each image's in raster order (NiT's layout); ``grids`` is an
  (n, 2) integer tensor of each image's token grid (h_i, w_i), with sum(h_i * w_i) = T, the layout
  ``ledit.ops.scan_attention`` and ``ledit.ops.dwconv_modulate`` take.

t and y stay per image, (n,). Tokens are on dim 0 of the packed tensor, so every elementwise step of a diffusion
process treats a token as a sample: with one timestep per token (``token_timesteps``) DiT's ``GaussianDiffusion``
trains and samples packed batches unchanged (``PackedDenoiser`` hands the model its per-image timesteps back),
and its per-token losses weight into per-image or per-token means (``loss_weights``).

The grids are shapes: give them as a CPU tensor and nothing in the packed forward reads the device. What needs
their values on the host (per-image position tables, temperatures, per-image convolutions) reads them once per
forward, a synchronisation only when they live on a GPU; LEDiT's default path (dwconv stem, no RoPE) never does.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from ledit.ops.packing import GRID_DTYPES, token_offsets


def patchify(latent: torch.Tensor, patch_size: int) -> torch.Tensor:
    """One (C, H, W) latent -> its (h * w, C, p, p) patches in raster order (h = H / p, w = W / p)."""
    channels, height, width = latent.shape
    p = patch_size
    patches = latent.reshape(channels, height // p, p, width // p, p).permute(1, 3, 0, 2, 4)
    return patches.reshape(-1, channels, p, p)


def unpatchify(patches: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The inverse of ``patchify``: (h * w, C, p, p) patches of an (h, w) token grid -> (C, h * p, w * p)."""
    (h, w), (_, channels, p, _) = grid, patches.shape
    return patches.reshape(h, w, channels, p, p).permute(2, 0, 3, 1, 4).reshape(channels, h * p, w * p)


def pack(latents: Sequence[torch.Tensor], patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n latents (C, H_i, W_i) -> (packed (T, C, p, p), grids (n, 2) int32 on the CPU)."""
    grids = torch.tensor([[x.shape[-2] // patch_size, x.shape[-1] // patch_size] for x in latents],
                         dtype=torch.int32).reshape(-1, 2)
    return torch.cat([patchify(x, patch_size) for x in latents]), grids


def unpack(packed: torch.Tensor, grids) -> list[torch.Tensor]:
    """(T, C, p, p) and the images' (h, w) token grids (a tensor or pairs) -> n latents (C, h * p, w * p)."""
    sizes = host_grids(grids)
    pieces = packed.split([h * w for h, w in sizes])
    return [unpatchify(piece, grid) for piece, grid in zip(pieces, sizes)]


def host_grids(grids) -> tuple[tuple[int, int], ...]:
    """Per-image (h, w) as Python ints: free for CPU grids, one synchronisation for GPU ones."""
    values = grids.tolist() if isinstance(grids, torch.Tensor) else grids
    return tuple((int(h), int(w)) for h, w in values)


class Packing:
    """The layout of one packed batch, made once per forward and handed to every block in place of the (h, w) grid.

    ``grids`` (n, 2) int32 and ``image_index`` (T,) (the image of each token) live on the model's device and are
    computed there, so building a Packing never waits for the device; ``host_grids`` reads the values once, when
    something needs them.
    """

    def __init__(self, grids: torch.Tensor, total_tokens: int, device: torch.device):
        self.source = grids
        self.grids = grids.to(device=device, dtype=torch.int32).contiguous()
        self.total_tokens = total_tokens
        self.num_images = grids.shape[0]
        ends = token_offsets(self.grids)[1:]
        tokens = torch.arange(total_tokens, device=device, dtype=torch.int32)
        self.image_index = torch.bucketize(tokens, ends, out_int32=True, right=True)

    @functools.cached_property
    def host_grids(self) -> tuple[tuple[int, int], ...]:
        return host_grids(self.source)

    def spread(self, values: torch.Tensor) -> torch.Tensor:
        """Per-image (n, k) values -> per-token (1, T, k), to broadcast against (1, T, k) tokens."""
        return values[self.image_index].unsqueeze(0)

    def split(self, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(1, T, ...) tokens -> one (1, h_i * w_i, ...) piece per image (reads the grids on the host)."""
        return tokens.split([h * w for h, w in self.host_grids], dim=1)


def op_grid(grid):
    """What the ops take as ``grid``: the (h, w) pair of a batch, or a packed batch's device grids."""
    return grid.grids if isinstance(grid, Packing) else grid


def per_token(values: torch.Tensor, grid) -> torch.Tensor:
    """Per-sample (B, k) or per-image (n, k) values, shaped to broadcast against (B, N, k) or (1, T, k) tokens."""
    return grid.spread(values) if isinstance(grid, Packing) else values.unsqueeze(1)


def check_grids(grids, what: str = "grids") -> torch.Tensor:
    """A packed batch's grids as a tensor, with a message naming ``what`` for anything else."""
    if not isinstance(grids, torch.Tensor) or grids.dim() != 2 or grids.shape[1] != 2 or grids.shape[0] < 1:
        got = tuple(grids.shape) if isinstance(grids, torch.Tensor) else type(grids).__name__
        raise ValueError(f"{what} must be an (n_images, 2) integer tensor of token grids (h, w), got {got}")
    if grids.dtype not in GRID_DTYPES:
        raise TypeError(f"{what}.dtype={grids.dtype} is not supported; use torch.int32 or torch.int64")
    return grids


def token_counts(grids: torch.Tensor) -> torch.Tensor:
    """(n,) tokens of each image."""
    return grids[:, 0] * grids[:, 1]


def token_timesteps(t: torch.Tensor, grids: torch.Tensor, total_tokens: int) -> torch.Tensor:
    """Per-image (n,) values -> per-token (T,): what a diffusion process, which sees tokens as samples, needs."""
    return torch.repeat_interleave(t, token_counts(grids).to(t.device), output_size=total_tokens)


def image_starts(grids: torch.Tensor) -> torch.Tensor:
    """(n,) index of each image's first token."""
    return token_offsets(grids)[:-1].long()


class PackedDenoiser:
    """A model callable as DiT's diffusion loops call it, ``fn(x, t, **kwargs)`` with one timestep per row of x,
    for a packed x (T, C, p, p): it calls ``model_fn(x, t_per_image, grids=grids, **kwargs)``, each image's
    timestep read at its first token (no synchronisation; the grids move to t's device once)."""

    def __init__(self, model_fn, grids: torch.Tensor):
        self.model_fn, self.grids = model_fn, grids
        self._starts: dict[torch.device, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs):
        starts = self._starts.get(t.device)
        if starts is None:
            starts = self._starts[t.device] = image_starts(self.grids.to(t.device))
        return self.model_fn(x, t[starts], grids=self.grids, **kwargs)


def loss_weights(grids: torch.Tensor, total_tokens: int, per_token: bool, normaliser: float) -> torch.Tensor:
    """(T,) weights that turn per-token losses into ``(losses * weights).sum()``: each image's mean loss over
    ``normaliser`` images (``per_token=False``), or each token's loss over ``normaliser`` tokens. One sum, so the
    result is deterministic on every device."""
    if per_token:
        return torch.full((total_tokens,), 1.0 / normaliser, device=grids.device)
    counts = token_counts(grids).to(torch.float32)
    return token_timesteps(1.0 / (counts * normaliser), grids, total_tokens)
