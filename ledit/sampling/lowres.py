"""Low-resolution reference guidance: sample at the training size, upsample, re-noise, finish at the target size.

The idea of HiFlow (Bu et al. 2025) and I-Max (Du et al. 2024): a model extrapolates its global layout worst,
and the layout is decided in the noisiest steps. So those steps run where the model is in distribution (the
training size), and the target size only refines: the training-size sample x_0^lo is upsampled in latent space
to x_up, re-noised with the forward process to step k, x_k = sqrt(alpha_bar_k) x_up + sqrt(1 - alpha_bar_k) eps
(DDPM's q_sample), and the reverse process runs from step k to 0 at the target size. SDEdit's construction
(Meng et al. 2022) with the model's own low-resolution sample as the guide.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ledit.diffusion.gaussian import randn

SAMPLERS = ("ddpm", "ddim")


def renoise_step(diffusion, strength: float) -> int:
    """The internal step to restart from: the noisiest step whose model timestep t satisfies t / T <= strength
    (T = the original number of steps, 1000 for DiT); 0 when none does."""
    if not 0.0 < strength < 1.0:
        raise ValueError(f"the re-noise strength must lie in (0, 1) (fraction of the 1000 DDPM steps), got {strength}")
    fractions = diffusion.timestep_map.double() / diffusion.original_num_steps
    return int((fractions <= strength).nonzero().max()) if bool((fractions <= strength).any()) else 0


def upsample_latents(latents: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, *size), bicubic: smooth, so the re-noised start carries no blocky edges."""
    return F.interpolate(latents, size=size, mode="bicubic", align_corners=False)


def refine_from_reference(diffusion, model: Callable, reference: torch.Tensor, size: tuple[int, int],
                          strength: float, sampler: str, model_kwargs: dict | None = None,
                          generator: torch.Generator | None = None, duplicate: bool = False,
                          clip_denoised: bool = False, progress: bool = False) -> torch.Tensor:
    """The target-size half of the pipeline: upsample the training-size sample ``reference`` to ``size``
    (latent pixels), re-noise it to ``renoise_step(diffusion, strength)`` with noise from ``generator``, and
    sample from there. ``duplicate`` repeats the batch for DiT's CFG convention (both halves start from the
    same x, as in DiT's sample scripts); the result keeps the doubled batch then."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    start = renoise_step(diffusion, strength)
    upsampled = upsample_latents(reference, size)
    noise = randn(upsampled.shape, device=upsampled.device, dtype=upsampled.dtype, generator=generator)
    t = torch.full((upsampled.shape[0],), start, device=upsampled.device, dtype=torch.long)
    x = diffusion.q_sample(upsampled, t, noise=noise)
    if duplicate:
        x = torch.cat([x, x])
    loop = diffusion.ddim_sample_loop if sampler == "ddim" else diffusion.p_sample_loop
    return loop(model, x.shape, x, clip_denoised=clip_denoised, model_kwargs=model_kwargs, progress=progress,
                generator=generator, start_step=start)
