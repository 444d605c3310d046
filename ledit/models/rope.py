"""2D rotary position embedding (FiT's VisionRoPE layout) with inference-time extrapolation rules.

Each head's dim is split in half: the first half rotates with the token's row, the second with its column.
Within a half, channel pairs (2i, 2i+1) rotate by angle ``position * freqs[i]``, so each axis has head_dim/4
frequencies ``theta_i = base^(-2i / (head_dim/2))``.

At a test grid larger than the training grid, an axis with scale ``s = max(1, L_test / L_train)`` (in tokens,
per axis when ``decouple``, else one scale from the longer side) changes its frequencies by ``method``
(formulas as in FiT's ``rope.py`` and RIFLEx's ``riflex_utils.py``; see the paper digest, section 5):

- ``none``: unchanged (plain RoPE extrapolation).
- ``pi``: position interpolation, ``theta_i / s``.
- ``ntk``: NTK-aware base change, ``base' = base * s^(dim / (dim - 2))`` with dim = head_dim/2.
- ``yarn``: NTK-by-parts ramp between interpolated ``theta_i / s`` (low frequencies) and unchanged ``theta_i``
  (high frequencies) over YaRN's correction range (beta_fast 32, beta_slow 1), and cos/sin multiplied by the
  temperature ``mscale = 0.1 ln(s) + 1`` (s = the larger axis scale).
- ``riflex``: the intrinsic component k (period ``2 pi / theta_k`` closest to L_train [ours: RIFLEx finds k
  from where a video first repeats; for an image axis we take the training length]) is lowered to
  ``0.9 * 2 pi / L_test`` so the test length stays within one period; other frequencies unchanged.
"""

from __future__ import annotations

import math

import torch

ROPE_METHODS = ("none", "pi", "ntk", "yarn", "riflex")
ROPE_BASE = 10000.0
YARN_BETA_FAST = 32.0
YARN_BETA_SLOW = 1.0


def check_rope_method(method: str) -> str:
    if method not in ROPE_METHODS:
        raise ValueError(f"unknown rope_method={method!r}; valid methods: {', '.join(ROPE_METHODS)}")
    return method


def _base_frequencies(dim: int, base: float) -> torch.Tensor:
    return base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)


def _yarn_correction_dim(num_rotations: float, dim: int, base: float, train_length: int) -> float:
    """The (fractional) frequency index that makes ``num_rotations`` full turns over ``train_length``."""
    return dim * math.log(train_length / (num_rotations * 2 * math.pi)) / (2 * math.log(base))


def _yarn_frequencies(dim: int, base: float, scale: float, train_length: int) -> torch.Tensor:
    theta = _base_frequencies(dim, base)
    low = max(math.floor(_yarn_correction_dim(YARN_BETA_FAST, dim, base, train_length)), 0)
    high = min(math.ceil(_yarn_correction_dim(YARN_BETA_SLOW, dim, base, train_length)), dim - 1)
    if low == high:
        high += 0.001  # keep the ramp finite
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # 1: high frequency, extrapolated unchanged; 0: low frequency, interpolated
    return theta / scale * (1 - keep) + theta * keep


def _riflex_frequencies(dim: int, base: float, train_length: int, test_length: int) -> torch.Tensor:
    theta = _base_frequencies(dim, base)
    intrinsic = int(torch.argmin((2 * math.pi / theta - train_length).abs()))
    theta[intrinsic] = min(theta[intrinsic].item(), 0.9 * 2 * math.pi / test_length)
    return theta


def _axis_frequencies(method: str, dim: int, base: float, train_length: int, test_length: int) -> torch.Tensor:
    scale = max(1.0, test_length / train_length)
    if scale == 1.0 or method == "none":
        return _base_frequencies(dim, base)
    if method == "pi":
        return _base_frequencies(dim, base) / scale
    if method == "ntk":
        return _base_frequencies(dim, base * scale ** (dim / (dim - 2)))
    if method == "yarn":
        return _yarn_frequencies(dim, base, scale, train_length)
    return _riflex_frequencies(dim, base, train_length, test_length)


def rope_frequencies(head_dim, train_grid, test_grid, method="none", decouple=True, base=ROPE_BASE):
    """Per-axis RoPE frequencies at ``test_grid`` for a model trained at ``train_grid``.

    Args:
        head_dim: attention head dim, a multiple of 4 (two axes x rotated pairs).
        train_grid, test_grid: (h, w) token grids.
        method: one of ``ROPE_METHODS``.
        decouple: separate row and column scales (FiTv2's ``decouple``); else both use the longer side's scale.
        base: RoPE base (10000).

    Returns:
        (freqs_h, freqs_w, mscale): two float32 tensors of head_dim/4 angular frequencies (row axis, column
        axis) and the float multiplier of cos/sin (1 except for ``yarn``).
    """
    check_rope_method(method)
    if head_dim % 4 != 0 or head_dim <= 0:
        raise ValueError(f"head_dim={head_dim} must be a positive multiple of 4 for 2D RoPE")
    (train_h, train_w), (test_h, test_w) = train_grid, test_grid
    dim = head_dim // 2
    if decouple:
        axes = ((train_h, test_h), (train_w, test_w))
    else:
        longest = (max(train_h, train_w), max(test_h, test_w))
        axes = (longest, longest)
    freqs_h, freqs_w = (_axis_frequencies(method, dim, base, train, test).float() for train, test in axes)
    mscale = 1.0
    if method == "yarn":
        scale = max(max(1.0, test / train) for train, test in axes)
        mscale = 0.1 * math.log(scale) + 1.0
    return freqs_h, freqs_w, mscale


def rope_tables(grid, freqs_h, freqs_w, mscale=1.0, device=None):
    """(cos, sin), each (N, head_dim) float32, for the tokens of ``grid`` in raster order."""
    h, w = grid
    rows = torch.arange(h, dtype=torch.float32, device=device).repeat_interleave(w)
    cols = torch.arange(w, dtype=torch.float32, device=device).repeat(h)
    angles_h = rows[:, None] * freqs_h.to(device)[None].repeat_interleave(2, dim=-1)
    angles_w = cols[:, None] * freqs_w.to(device)[None].repeat_interleave(2, dim=-1)
    angles = torch.cat([angles_h, angles_w], dim=-1)
    return angles.cos() * mscale, angles.sin() * mscale


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, N, H, D) q or k by (N, D) tables, or (B, N, D) ones (per sample, e.g. scheduled over t).

    Computed in float32, returned in x's dtype.
    """
    cos, sin = (table.unsqueeze(-2) if table.dim() == 3 else table[None, :, None, :] for table in (cos, sin))
    xf = x.float()
    pairs = xf.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return (xf * cos + rotated * sin).to(x.dtype)


class Rope2D:
    """The RoPE of one model: its training grid and extrapolation rule, with tables cached per (grid, device)."""

    def __init__(self, head_dim, train_grid, method="none", decouple=True, base=ROPE_BASE):
        check_rope_method(method)
        self.head_dim, self.train_grid = head_dim, tuple(train_grid)
        self.method, self.decouple, self.base = method, decouple, base
        self._cache: dict = {}

    def tables(self, grid, device):
        key = (tuple(grid), str(device))
        if key not in self._cache:
            if len(self._cache) >= 8:  # a handful of sampling sizes at a time; never grow without bound
                self._cache.clear()
            freqs_h, freqs_w, mscale = rope_frequencies(
                self.head_dim, self.train_grid, grid, self.method, self.decouple, self.base
            )
            self._cache[key] = rope_tables(grid, freqs_h, freqs_w, mscale, device)
        return self._cache[key]
