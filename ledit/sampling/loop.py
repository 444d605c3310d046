"""The sampling loop every sample goes through: noise -> the model's space (latents or pixels) at any size, with
DiT's classifier-free guidance and the inference add-ons (``ledit.sampling.addons``) applied.

``ledit sample``, ``ledit sample-ddp`` and ``ledit demo`` all call ``sample_latents``; with no add-on it runs
exactly DiT's sample scripts (``p_sample_loop`` / ``ddim_sample_loop`` over ``forward_with_cfg``).
``sample_packed_latents`` samples images of several sizes in one packed batch (``ledit sample --sizes``).

    addons = SamplingAddons(timestep_shift="auto", lowres_renoise=0.6, model_options={"stem_dilation": 2})
    latents = sample_latents(model, labels, (64, 64), respacing="250", sampler="ddpm", cfg_scale=1.5,
                             addons=addons, initial_noise=lambda size: torch.randn(len(labels), 4, *size))
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ledit.diffusion import create_diffusion
from ledit.models.packing import PackedDenoiser, pack, unpack
from ledit.sampling.addons import SamplingAddons, inference_options
from ledit.sampling.guidance import guided_model, resolution_cfg_scale, token_ratio
from ledit.sampling.lowres import SAMPLERS, refine_from_reference


@torch.no_grad()
def sample_latents(model, labels: torch.Tensor, size: tuple[int, int], *, respacing: str, sampler: str,
                   cfg_scale: float, initial_noise: Callable[[tuple[int, int]], torch.Tensor],
                   addons: SamplingAddons | None = None, generator: torch.Generator | None = None,
                   diffusion_kwargs: dict | None = None, clip_denoised: bool = False,
                   progress: bool = False) -> torch.Tensor:
    """Samples (B, C, *size) in the model's space (latents or pixels) with the add-ons applied.

    ``initial_noise(size)`` returns the starting noise x_T (B, C, *size) for a run at ``size``: the target size,
    or the training size for the low-resolution reference. ``generator`` draws the DDPM step noise and the
    re-noising noise. ``respacing`` as ``create_diffusion`` ("250", "ddim50"); ``diffusion_kwargs`` its other
    options (``learn_sigma``, ``predict_xstart``, ...). ``cfg_scale`` <= 1 samples without guidance.
    """
    addons = addons or SamplingAddons()
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    ratio = token_ratio(model, *size)
    scale = resolution_cfg_scale(cfg_scale, ratio, addons.cfg_scale_per_doubling)
    diffusion = create_diffusion(respacing, timestep_shift=addons.shift(ratio), **(diffusion_kwargs or {}))
    model_fn, doubled = guided_model(model, scale, addons.guidance_interval, diffusion.original_num_steps)
    null_labels = torch.full_like(labels, model.num_classes)
    model_kwargs = {"y": torch.cat([labels, null_labels]) if doubled else labels}

    train_size = tuple(cells * model.patch_size for cells in model.train_grid)
    if addons.lowres_renoise is not None and ratio > 1.0:
        # The training-size pass: the other add-ons act as they do at m = 1 (no shift, the base CFG scale; the
        # model's temperatures and stem dilation are neutral at its training size).
        reference_addons = SamplingAddons(guidance_interval=addons.guidance_interval,
                                          model_options=addons.model_options)
        reference = sample_latents(model, labels, train_size, respacing=respacing, sampler=sampler,
                                   cfg_scale=cfg_scale, initial_noise=initial_noise, addons=reference_addons,
                                   generator=generator, diffusion_kwargs=diffusion_kwargs,
                                   clip_denoised=clip_denoised, progress=progress)
        with inference_options(model, addons.model_options):
            samples = refine_from_reference(diffusion, model_fn, reference, size, addons.lowres_renoise, sampler,
                                            model_kwargs, generator, duplicate=doubled,
                                            clip_denoised=clip_denoised, progress=progress)
    else:
        noise = initial_noise(size)
        if doubled:
            noise = torch.cat([noise, noise])
        loop = diffusion.ddim_sample_loop if sampler == "ddim" else diffusion.p_sample_loop
        with inference_options(model, addons.model_options):
            samples = loop(model_fn, noise.shape, noise, clip_denoised=clip_denoised, model_kwargs=model_kwargs,
                           progress=progress, device=noise.device, generator=generator)
    return samples.chunk(2)[0] if doubled else samples


def check_packed_addons(addons: SamplingAddons) -> None:
    """Refuse the add-ons that depend on the one size of a run, so cannot apply to a packed batch of several."""
    used = [flag for flag, on in (("--cfg-scale-per-doubling", addons.cfg_scale_per_doubling != 0),
                                  ("--timestep-shift auto", addons.timestep_shift == "auto"),
                                  ("--lowres-renoise", addons.lowres_renoise is not None),
                                  ("--guidance-interval", addons.guidance_interval is not None)) if on]
    if used:
        raise ValueError(f"{', '.join(used)} cannot apply to a packed batch of several sizes (they act per run, "
                         "at one size): sample each size on its own (--height/--width), or drop them")


@torch.no_grad()
def sample_packed_latents(model, labels: torch.Tensor, sizes: list[tuple[int, int]], *, respacing: str,
                          sampler: str, cfg_scale: float, initial_noise: Callable[[tuple[int, int]], torch.Tensor],
                          addons: SamplingAddons | None = None, generator: torch.Generator | None = None,
                          clip_denoised: bool = False, progress: bool = False) -> list[torch.Tensor]:
    """Image i, of latent size ``sizes[i]`` and class ``labels[i]``, for every i, sampled in one packed batch
    (``ledit.models.packing``): a list of (C, h_i, w_i). ``initial_noise(size)`` returns one image's x_T
    (C, *size). With DDIM (deterministic after x_T) each image equals what ``sample_latents`` gives it alone from
    the same x_T, up to the packed forward's float rounding; DDPM draws its step noise for the whole pack. The
    model-side add-ons apply per image; ``check_packed_addons`` names the others.
    """
    addons = addons or SamplingAddons()
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if len(sizes) != len(labels):
        raise ValueError(f"sizes has {len(sizes)} entries but labels {len(labels)}: one size per image")
    check_packed_addons(addons)
    diffusion = create_diffusion(respacing, timestep_shift=addons.shift(1.0))
    model_fn, doubled = guided_model(model, cfg_scale, None, diffusion.original_num_steps)
    noise, grids = pack([initial_noise(size) for size in sizes], model.patch_size)
    y = labels
    if doubled:
        noise, grids = torch.cat([noise, noise]), torch.cat([grids, grids])
        y = torch.cat([labels, torch.full_like(labels, model.num_classes)])
    loop = diffusion.ddim_sample_loop if sampler == "ddim" else diffusion.p_sample_loop
    with inference_options(model, addons.model_options):
        samples = loop(PackedDenoiser(model_fn, grids), noise.shape, noise, clip_denoised=clip_denoised,
                       model_kwargs={"y": y}, progress=progress, device=noise.device, generator=generator)
    return unpack(samples.chunk(2)[0] if doubled else samples, grids[: len(sizes)])
