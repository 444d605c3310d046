"""Noise schedules (betas) and timestep respacing.

A schedule is a 1-D float64 tensor of betas, one per diffusion step. Everything else in the process (alphas,
posterior coefficients) is derived from it in ``GaussianDiffusion``, so a different schedule plugs in by handing
other betas to the process: ``create_diffusion`` builds them with ``get_named_beta_schedule`` and then
respaces them, and a transformed schedule (for example a resolution-dependent shift of the signal-to-noise
ratio) belongs between those two steps.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Union

import torch

BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")

Respacing = Union[str, int, Iterable[int], None]


def get_named_beta_schedule(schedule_name: str, num_diffusion_timesteps: int) -> torch.Tensor:
    """Betas of a named schedule as a float64 tensor of length ``num_diffusion_timesteps``.

    ``linear`` is Ho et al.'s 1e-4 ... 0.02 over 1000 steps; for other step counts both ends are scaled by
    1000 / num_diffusion_timesteps so the total amount of noise stays the same (as DiT and iDDPM do).
    ``squaredcos_cap_v2`` is iDDPM's cosine schedule.
    """
    if not isinstance(num_diffusion_timesteps, int) or num_diffusion_timesteps < 1:
        raise ValueError(f"diffusion_steps must be a positive int, got {num_diffusion_timesteps!r}")
    if schedule_name == "linear":
        if num_diffusion_timesteps < 20:
            raise ValueError(
                f"the linear schedule needs diffusion_steps >= 20 (its last beta, 0.02 * 1000 / steps, must stay "
                f"<= 1), got {num_diffusion_timesteps}; train with more steps and respace for fewer"
            )
        scale = 1000 / num_diffusion_timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, num_diffusion_timesteps, dtype=torch.float64)
    if schedule_name == "squaredcos_cap_v2":
        return betas_for_alpha_bar(
            num_diffusion_timesteps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        )
    raise ValueError(f"unknown noise_schedule={schedule_name!r}; valid schedules: {', '.join(BETA_SCHEDULES)}")


def betas_for_alpha_bar(
    num_diffusion_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999
) -> torch.Tensor:
    """Discretize a continuous alpha_bar(t), t in [0, 1], into betas; capped below 1 to avoid singularities."""
    betas = []
    for i in range(num_diffusion_timesteps):
        t1, t2 = i / num_diffusion_timesteps, (i + 1) / num_diffusion_timesteps
        betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return torch.tensor(betas, dtype=torch.float64)


def space_timesteps(num_timesteps: int, section_counts: Respacing) -> set[int]:
    """The original timesteps kept when respacing a ``num_timesteps`` process.

    ``section_counts`` is one of:
      * ``"ddimN"``: the stride that gives exactly N steps, ``range(0, num_timesteps, stride)`` (DDIM paper);
      * ``"N"`` or ``"N1,N2,..."``: split the process into equal sections (earlier ones one step longer when
        it does not divide) and take N_i evenly spaced steps, both ends included, from section i;
      * an int or a list of ints, read like the comma-separated form;
      * ``None`` or ``""``: keep every step.
    Evenly spaced positions are rounded with Python's ``round`` (half to even), exactly as iDDPM and DiT do,
    so respaced processes match theirs step for step.
    """
    if section_counts is None or section_counts == "":
        return set(range(num_timesteps))
    if isinstance(section_counts, str) and section_counts.startswith("ddim"):
        return _ddim_timesteps(num_timesteps, section_counts)
    counts = _parse_section_counts(section_counts)

    size_per, extra = divmod(num_timesteps, len(counts))
    start, taken = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count > size:
            raise ValueError(
                f"timestep_respacing={section_counts!r}: section {i} spans {size} of the {num_timesteps} "
                f"steps and cannot give {count}; ask for at most {size} steps there"
            )
        stride = 1.0 if count == 1 else (size - 1) / (count - 1)
        taken += [start + round(j * stride) for j in range(count)]
        start += size
    return set(taken)


def _ddim_timesteps(num_timesteps: int, spec: str) -> set[int]:
    try:
        desired = int(spec[len("ddim") :])
    except ValueError:
        raise ValueError(f"timestep_respacing={spec!r} is not understood; {_RESPACING_HELP}") from None
    for stride in range(1, num_timesteps + 1):
        if len(range(0, num_timesteps, stride)) == desired:
            return set(range(0, num_timesteps, stride))
    raise ValueError(
        f"timestep_respacing={spec!r}: no integer stride gives exactly {desired} of {num_timesteps} steps; "
        f"pick a count that some stride produces (e.g. 'ddim{num_timesteps // 20}') or use '{desired}'"
    )


def _parse_section_counts(section_counts) -> list[int]:
    if isinstance(section_counts, str):
        try:
            counts = [int(part) for part in section_counts.split(",")]
        except ValueError:
            raise ValueError(f"timestep_respacing={section_counts!r} is not understood; {_RESPACING_HELP}") from None
    elif isinstance(section_counts, int):
        counts = [section_counts]
    else:
        try:
            counts = [int(c) for c in section_counts]
        except (TypeError, ValueError):
            raise ValueError(f"timestep_respacing={section_counts!r} is not understood; {_RESPACING_HELP}") from None
    if not counts or any(c < 1 for c in counts):
        raise ValueError(f"timestep_respacing={section_counts!r}: every section needs at least one step")
    return counts


_RESPACING_HELP = (
    "use e.g. '250' (250 evenly spaced steps), 'ddim50' (the integer stride that gives 50 steps) "
    "or '10,20,30' (steps per equal section)"
)


def shift_schedule(betas: torch.Tensor, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SD3's resolution-dependent timestep shift (Esser et al. 2024, sec. 5.3.2) for a discrete DDPM schedule.

    SD3 shifts flow time t in [0, 1] (x_t = (1 - t) x_0 + t eps) to t' = s t / (1 + (s - 1) t). Its
    signal-to-noise ratio ((1 - t) / t)^2 becomes ((1 - t) / (s t))^2: the shift divides the SNR at every point
    of the schedule by s^2 (SD3 takes s = sqrt(m) for m times the pixels, so the SNR is divided by m). For
    alpha_bar, SNR = alpha_bar / (1 - alpha_bar), and dividing it by s^2 gives
        alpha_bar'_t = alpha_bar_t / (s^2 - (s^2 - 1) alpha_bar_t).
    Returns (betas of alpha_bar', model_timesteps): as in SD3 the model is told the noise level it actually sees,
    so step t of the shifted process is shown to the model as the (fractional) step tau_t of the original
    process with the same SNR (log-SNR interpolated linearly between steps; clamped to the last step, where
    both are pure noise). s > 1 spends more of the sampling steps at high noise, as SD3 does for larger images.
    """
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        raise ValueError(f"timestep_shift must be a finite number > 0 (1.0 = no shift), got {shift!r}")
    alpha_bar = torch.cumprod(1.0 - betas, dim=0)
    shifted = alpha_bar / (shift**2 - (shift**2 - 1) * alpha_bar)
    shifted_betas = 1.0 - shifted / torch.cat([shifted.new_ones(1), shifted[:-1]])
    # -log SNR rises with t; find where each shifted -log SNR falls on the original curve.
    neg_log_snr = (1.0 - alpha_bar).log() - alpha_bar.log()
    target = neg_log_snr + 2 * math.log(shift)
    upper = torch.searchsorted(neg_log_snr, target).clamp(1, len(betas) - 1)
    low, high = neg_log_snr[upper - 1], neg_log_snr[upper]
    model_timesteps = (upper - 1) + (target - low) / (high - low)
    return shifted_betas, model_timesteps.clamp(0, len(betas) - 1)


def respace_betas(betas: torch.Tensor, use_timesteps: Iterable[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Betas of the shorter process that visits only ``use_timesteps``, and the map back to original steps.

    The new process has the same alpha_bar as the original at every kept step:
    beta'_k = 1 - alpha_bar(s_k) / alpha_bar(s_{k-1}).
    """
    kept = sorted(set(int(t) for t in use_timesteps))
    if not kept or kept[0] < 0 or kept[-1] >= len(betas):
        raise ValueError(
            f"use_timesteps must be a non-empty set of steps in [0, {len(betas)}), got {kept[:3]}...{kept[-3:]}"
        )
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)[kept]
    previous = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    return 1.0 - alphas_cumprod / previous, torch.tensor(kept, dtype=torch.long)
