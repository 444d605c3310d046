"""2D rotary position embedding (FiT's VisionRoPE layout) with inference-time extrapolation rules.

Each head's dim is split in half: the first half rotates with the token's row, the second with its column.
Within a half, channel pairs (2i, 2i+1) rotate by angle ``position * freqs[i]``, so each axis has head_dim/4
frequencies ``theta_i = base^(-2i / (head_dim/2))``.

At a test grid larger than the training grid, an axis with scale ``s = max(1, L_test / L_train)`` (in tokens,
per axis when ``decouple``, else one scale from the longer side) changes its frequencies by ``method``
(formulas as in FiT's ``rope.py`` and RIFLEx's ``riflex_utils.py``):

- ``none``: unchanged (plain RoPE extrapolation).
- ``pi``: position interpolation, ``theta_i / s``.
- ``ntk``: NTK-aware base change, ``base' = base * s^(dim / (dim - 2))`` with dim = head_dim/2.
- ``yarn``: NTK-by-parts ramp between interpolated ``theta_i / s`` (low frequencies) and unchanged ``theta_i``
  (high frequencies) over YaRN's correction range (beta_fast 32, beta_slow 1), and cos/sin multiplied by the
  temperature ``mscale = 0.1 ln(s) + 1`` (s = the larger axis scale).
- ``riflex``: the intrinsic component k (period ``2 pi / theta_k`` closest to L_train [ours: RIFLEx finds k
  from where a video first repeats; for an image axis we take the training length]) is lowered to
  ``0.9 * 2 pi / L_test`` so the test length stays within one period; other frequencies unchanged.

Timestep-dependent rules (inference add-ons, ``InferenceOptions.rope_dynamic``), tau = t/T in [0, 1] with
tau = 1 pure noise (t = the DDPM step the model receives, T = 1000), same per-axis scales s:

- ``dy-ntk`` (DyPE, Issachar et al. 2025): kappa(tau) = lambda_s * tau^lambda_t (lambda_s = lambda_t = 2) and
  NTK with the scale s^kappa: ``base' = base * s^(kappa * dim / (dim - 2))`` -- strong extrapolation at high
  noise, plain RoPE as tau -> 0 (low frequencies settle early, high ones late).
- ``dy-yarn`` (DyPE): YaRN with its correction-range thresholds raised to kappa, ``beta_fast^kappa`` and
  ``beta_slow^kappa`` (kappa = 1 is static YaRN; kappa -> 0 leaves a sharp split at the training-length
  period), and the temperature faded with the same schedule, ``mscale = 1 + 0.1 ln(s) tau^lambda_t``.
- ``lumina`` (Lumina-Next's time-aware scaled RoPE, arXiv 2406.18583 §3.3; flow time tau' = 1 - tau, 0 noise ->
  1 data): ``theta_i' = max(theta_i / s, base_t^(-2i/dim))`` with ``base_t = base * s^(D / (tau' D + 1))``,
  D = head_dim -- position interpolation at pure noise (global layout), NTK-like near the data (detail).
"""

from __future__ import annotations

import math

import torch

from ledit.models.inference import NUM_TRAIN_TIMESTEPS, ROPE_DYNAMIC

ROPE_METHODS = ("none", "pi", "ntk", "yarn", "riflex")
DYNAMIC_ROPE_METHODS = tuple(method for method in ROPE_DYNAMIC if method != "none")
ROPE_BASE = 10000.0
YARN_BETA_FAST = 32.0
YARN_BETA_SLOW = 1.0
DYPE_LAMBDA_S = 2.0  # DyPE's kappa(tau) = lambda_s * tau^lambda_t, the defaults of its public implementations
DYPE_LAMBDA_T = 2.0


def check_rope_method(method: str) -> str:
    if method not in ROPE_METHODS:
        raise ValueError(f"unknown rope_method={method!r}; valid methods: {', '.join(ROPE_METHODS)}")
    return method


def _base_frequencies(dim: int, base: float) -> torch.Tensor:
    return base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)


def _yarn_correction_dim(num_rotations: float, dim: int, base: float, train_length: int) -> float:
    """The (fractional) frequency index that makes ``num_rotations`` full turns over ``train_length``."""
    return dim * math.log(train_length / (num_rotations * 2 * math.pi)) / (2 * math.log(base))


def _yarn_frequencies(dim: int, base: float, scale: float, train_length: int,
                      beta_fast: float = YARN_BETA_FAST, beta_slow: float = YARN_BETA_SLOW) -> torch.Tensor:
    theta = _base_frequencies(dim, base)
    low = max(math.floor(_yarn_correction_dim(beta_fast, dim, base, train_length)), 0)
    high = min(math.ceil(_yarn_correction_dim(beta_slow, dim, base, train_length)), dim - 1)
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


def dype_kappa(tau: float) -> float:
    """DyPE's extrapolation strength kappa(tau) = lambda_s * tau^lambda_t at noise level tau = t/T."""
    return DYPE_LAMBDA_S * tau ** DYPE_LAMBDA_T


def _dynamic_axis_frequencies(method: str, dim: int, base: float, train_length: int, test_length: int,
                              tau: float) -> torch.Tensor:
    scale = max(1.0, test_length / train_length)
    if scale == 1.0:
        return _base_frequencies(dim, base)
    if method == "dy-ntk":
        return _base_frequencies(dim, base * scale ** (dype_kappa(tau) * dim / (dim - 2)))
    if method == "dy-yarn":
        kappa = dype_kappa(tau)
        return _yarn_frequencies(dim, base, scale, train_length, YARN_BETA_FAST ** kappa, YARN_BETA_SLOW ** kappa)
    head_dim = 2 * dim  # Lumina-Next's formula is written with the whole head dim (both axes)
    flow_time = 1.0 - tau
    time_scaled = _base_frequencies(dim, base * scale ** (head_dim / (flow_time * head_dim + 1)))
    return torch.maximum(_base_frequencies(dim, base) / scale, time_scaled)


def _axis_pairs(train_grid, test_grid, decouple):
    (train_h, train_w), (test_h, test_w) = train_grid, test_grid
    if decouple:
        return ((train_h, test_h), (train_w, test_w))
    longest = (max(train_h, train_w), max(test_h, test_w))
    return (longest, longest)


def _largest_scale(axes) -> float:
    """YaRN's temperature uses the larger of the two axis scales."""
    return max(max(1.0, test / train) for train, test in axes)


def _check_head_dim(head_dim):
    if head_dim % 4 != 0 or head_dim <= 0:
        raise ValueError(f"head_dim={head_dim} must be a positive multiple of 4 for 2D RoPE")


def dynamic_rope_frequencies(head_dim, train_grid, test_grid, method, tau, decouple=True, base=ROPE_BASE):
    """Per-axis RoPE frequencies of a timestep-dependent rule at noise level ``tau`` = t/T in [0, 1].

    Args as ``rope_frequencies``, with ``method`` one of ``DYNAMIC_ROPE_METHODS`` and ``tau`` (1 = pure noise).
    Returns (freqs_h, freqs_w, mscale); mscale is 1 except for ``dy-yarn``.
    """
    if method not in DYNAMIC_ROPE_METHODS:
        raise ValueError(f"unknown dynamic RoPE method {method!r}; valid: {', '.join(DYNAMIC_ROPE_METHODS)}")
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau = t/T must be in [0, 1], got {tau!r}")
    _check_head_dim(head_dim)
    axes = _axis_pairs(train_grid, test_grid, decouple)
    dim = head_dim // 2
    freqs_h, freqs_w = (_dynamic_axis_frequencies(method, dim, base, train, test, tau).float() for train, test in axes)
    mscale = 1.0
    if method == "dy-yarn":
        mscale = 1.0 + 0.1 * math.log(_largest_scale(axes)) * tau ** DYPE_LAMBDA_T
    return freqs_h, freqs_w, mscale


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
    _check_head_dim(head_dim)
    axes = _axis_pairs(train_grid, test_grid, decouple)
    dim = head_dim // 2
    freqs_h, freqs_w = (_axis_frequencies(method, dim, base, train, test).float() for train, test in axes)
    mscale = 1.0
    if method == "yarn":
        mscale = 0.1 * math.log(_largest_scale(axes)) + 1.0
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

    def dynamic_tables(self, grid, device, method, t: torch.Tensor):
        """(cos, sin) of the timestep-dependent rule ``method`` for the (B,) original DDPM steps ``t``.

        (N, head_dim) tables when the batch holds one timestep (what samplers pass, also doubled for CFG), else
        (B, N, head_dim), one table per sample. Not cached: every sampling step has a new t, and the tables
        cost a few head_dim/4-long frequency vectors and one (N, head_dim) cos/sin per distinct t.
        """
        steps, index = torch.unique(t.detach().float().cpu(), return_inverse=True)
        tables = []
        for step in steps.tolist():
            tau = min(max(step / NUM_TRAIN_TIMESTEPS, 0.0), 1.0)
            freqs_h, freqs_w, mscale = dynamic_rope_frequencies(
                self.head_dim, self.train_grid, grid, method, tau, self.decouple, self.base
            )
            tables.append(rope_tables(grid, freqs_h, freqs_w, mscale, device))
        if len(tables) == 1:
            return tables[0]
        index = index.to(device)
        return tuple(torch.stack(parts)[index] for parts in zip(*tables))
