"""Inference add-ons for sampling above the training resolution, in one options object with one set of flags
for ``ledit sample``, ``ledit sample-ddp`` and ``ledit demo``. Every add-on is off by default, and with all of
them off sampling is bit-identical to plain DiT sampling.

Sampler side (this package):
  * resolution-dependent CFG scale (``--cfg-scale-per-doubling``, ``guidance.resolution_cfg_scale``);
  * guidance interval (``--guidance-interval LO,HI``, ``guidance.GuidanceInterval``);
  * resolution-dependent timestep shift (``--timestep-shift S|auto``, ``ledit.diffusion.shift_schedule``);
  * low-resolution reference (``--lowres-renoise T``, ``lowres.refine_from_reference``).
Model side (``ledit.models.inference.InferenceOptions``, applied with ``model.set_inference_options`` for the
duration of the sampling call): attention temperature per layer kind and its schedule, dynamic RoPE scaling for
the RoPE baselines, LEDiT's dilated stem over the early steps.

    addons = SamplingAddons(timestep_shift="auto", lowres_renoise=0.6, model_options={"stem_dilation": 2})
    latents = sample_latents(model, labels, (64, 64), respacing="250", sampler="ddpm", cfg_scale=1.5,
                             addons=addons, initial_noise=lambda size: torch.randn(len(labels), 4, *size))
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch

from ledit.diffusion import create_diffusion
from ledit.models.inference import INFERENCE_TEMPERATURES, ROPE_DYNAMIC, InferenceOptions
from ledit.sampling.guidance import guided_model, resolution_cfg_scale, token_ratio
from ledit.sampling.lowres import SAMPLERS, refine_from_reference

MODEL_OPTION_NAMES = tuple(f.name for f in fields(InferenceOptions))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class SamplingAddons:
    """The add-ons of one sampling run. Defaults are all off.

    cfg_scale_per_doubling: added to the CFG scale per doubling of the token count above the training size.
    guidance_interval: (low, high) fractions of the 1000 DDPM steps; CFG only while low <= t/T <= high.
    timestep_shift: SD3 shift s of the noise schedule (SNR / s^2); "auto" = sqrt(token-count ratio).
    lowres_renoise: sample at the training size first, upsample, re-noise to this fraction of the steps and
        finish at the target size; None = off.
    model_options: fields of ``InferenceOptions`` to set on the model (only those given; the model keeps its
        own defaults for the rest); None = leave the model as it is.
    """

    cfg_scale_per_doubling: float = 0.0
    guidance_interval: tuple[float, float] | None = None
    timestep_shift: float | str = 1.0
    lowres_renoise: float | None = None
    model_options: dict | None = None

    def __post_init__(self):
        if not math.isfinite(self.cfg_scale_per_doubling):
            raise ValueError(f"--cfg-scale-per-doubling must be a finite number, got {self.cfg_scale_per_doubling}")
        if self.guidance_interval is not None:
            low, high = self.guidance_interval
            if not 0.0 <= low < high <= 1.0:
                raise ValueError(f"--guidance-interval {low},{high}: need 0 <= LO < HI <= 1 (fractions of the "
                                 "1000 DDPM steps, e.g. 0.1,0.7)")
        if self.timestep_shift != "auto" and not (
            isinstance(self.timestep_shift, (int, float)) and math.isfinite(self.timestep_shift)
            and self.timestep_shift > 0
        ):
            raise ValueError(f"--timestep-shift must be 'auto' (sqrt of the token-count ratio, as SD3) or a number "
                             f"> 0 (1 = off), got {self.timestep_shift!r}")
        if self.lowres_renoise is not None and not 0.0 < self.lowres_renoise < 1.0:
            raise ValueError(f"--lowres-renoise must lie in (0, 1) (fraction of the 1000 DDPM steps to re-noise "
                             f"the upsampled sample to, e.g. 0.6), got {self.lowres_renoise}")
        unknown = sorted(set(self.model_options or {}) - set(MODEL_OPTION_NAMES))
        if unknown:
            raise ValueError(f"model_options: unknown {unknown}; InferenceOptions has {', '.join(MODEL_OPTION_NAMES)}")

    def shift(self, ratio: float) -> float:
        return math.sqrt(ratio) if self.timestep_shift == "auto" else float(self.timestep_shift)

    def describe(self) -> str:
        """A short name of the add-ons that are on, for file names and tables; "" when none is."""
        parts = []
        if self.cfg_scale_per_doubling:
            parts.append(f"cfgpd{self.cfg_scale_per_doubling:g}")
        if self.guidance_interval is not None:
            parts.append("gi{:g}-{:g}".format(*self.guidance_interval))
        if self.timestep_shift != 1.0:
            parts.append(f"shift{self.timestep_shift if self.timestep_shift == 'auto' else f'{self.timestep_shift:g}'}")
        if self.lowres_renoise is not None:
            parts.append(f"lowres{self.lowres_renoise:g}")
        for name, value in sorted((self.model_options or {}).items()):
            parts.append(f"{name.replace('_', '')}{value:g}" if isinstance(value, float) else
                         f"{name.replace('_', '')}{value}")
        return "-".join(parts)


def add_addon_arguments(parser: argparse.ArgumentParser) -> None:
    """The add-on flags, all off by default."""
    group = parser.add_argument_group("inference add-ons (all off by default; see docs/addons.md)")
    a = group.add_argument
    a("--cfg-scale-per-doubling", type=float, default=0.0, metavar="D",
      help="CFG scale + D per doubling of the token count above the training size (0 = constant scale)")
    a("--guidance-interval", default=None, metavar="LO,HI",
      help="apply CFG only while LO <= t/1000 <= HI (Kynkaanniemi et al. 2024), e.g. 0.1,0.7")
    a("--timestep-shift", default="1.0", metavar="S|auto",
      help="SD3 resolution shift: divide the schedule's SNR by S^2; auto = sqrt(token-count ratio); 1 = off")
    a("--lowres-renoise", type=float, default=None, metavar="T",
      help="sample at the training size, upsample, re-noise to t/1000 = T (e.g. 0.6), finish at the target size")
    a("--temperature-full", choices=INFERENCE_TEMPERATURES, default=None,
      help="attention temperature of full-attention layers (default: the model's)")
    a("--temperature-causal", choices=INFERENCE_TEMPERATURES, default=None,
      help="attention temperature of LEDiT's causal layers (default: the model's)")
    a("--temperature-until", type=float, default=None, metavar="F",
      help="apply the temperature only while t/1000 >= F (strong early, off late; default: every step)")
    a("--rope-dynamic", choices=ROPE_DYNAMIC, default=None,
      help="timestep-dependent RoPE extrapolation for the RoPE baselines (default: none)")
    a("--stem-dilation", type=int, default=None, metavar="R",
      help="LEDiT: run the locality stem with dilation R in the early steps (ScaleCrafter-style), e.g. 2")
    a("--stem-dilation-until", type=float, default=None, metavar="F",
      help="LEDiT: dilation back to 1 once t/1000 < F (default: the model's, 0.5)")


def _parse_interval(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--guidance-interval {text!r}: write LO,HI as two fractions, e.g. 0.1,0.7") from None
    return low, high


def _parse_shift(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--timestep-shift {text!r}: give a number > 0 (1 = off) or 'auto'") from None


def addons_from_args(args: argparse.Namespace) -> SamplingAddons:
    """The parsed add-on flags as a ``SamplingAddons``; a bad value raises ValueError naming its flag."""
    model_options = {name: getattr(args, name) for name in MODEL_OPTION_NAMES if getattr(args, name) is not None}
    return SamplingAddons(
        cfg_scale_per_doubling=args.cfg_scale_per_doubling,
        guidance_interval=_parse_interval(args.guidance_interval),
        timestep_shift=_parse_shift(args.timestep_shift),
        lowres_renoise=args.lowres_renoise,
        model_options=model_options or None,
    )


@contextmanager
def inference_options(model, options: dict | None):
    """Set the given ``InferenceOptions`` fields on ``model`` for the block, then restore the previous ones."""
    if not options:
        yield
        return
    previous = model.inference_options
    try:
        model.set_inference_options(**options)
    except ValueError as error:
        flags = ", ".join(f"{_flag(name)} {value}" for name, value in options.items())
        raise ValueError(f"{flags}: {error}") from None
    try:
        yield
    finally:
        model.set_inference_options(previous)


def check_model_options(model, addons: SamplingAddons) -> None:
    """Raise the error ``sample_latents`` would raise for model options ``model`` refuses, without sampling."""
    with inference_options(model, addons.model_options):
        pass


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
