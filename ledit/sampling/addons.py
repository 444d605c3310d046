"""Inference add-ons for sampling above the training resolution, in one options object with one set of flags
for ``ledit sample``, ``ledit sample-ddp`` and ``ledit demo``. Every add-on is off by default, and with all of
them off sampling is bit-identical to plain DiT sampling. ``ledit.sampling.loop.sample_latents`` applies them.

Sampler side (this package):
  * resolution-dependent CFG scale (``--cfg-scale-per-doubling``, ``guidance.resolution_cfg_scale``);
  * guidance interval (``--guidance-interval LO,HI``, ``guidance.GuidanceInterval``);
  * resolution-dependent timestep shift (``--timestep-shift S|auto``, ``ledit.diffusion.shift_schedule``);
  * low-resolution reference (``--lowres-renoise T``, ``lowres.refine_from_reference``).
Model side (``ledit.models.inference.InferenceOptions``, applied with ``model.set_inference_options`` for the
duration of the sampling call): attention temperature per layer kind and its schedule, dynamic RoPE scaling for
the RoPE baselines, LEDiT's dilated stem over the early steps.
"""

from __future__ import annotations

import argparse
import math
from contextlib import contextmanager
from dataclasses import dataclass, fields

from ledit.arguments import UsageError
from ledit.models.inference import INFERENCE_TEMPERATURES, ROPE_DYNAMIC, InferenceOptions

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
    """The parsed add-on flags as a ``SamplingAddons``; a bad value raises UsageError naming its flag."""
    model_options = {name: getattr(args, name) for name in MODEL_OPTION_NAMES if getattr(args, name) is not None}
    try:
        return SamplingAddons(
            cfg_scale_per_doubling=args.cfg_scale_per_doubling,
            guidance_interval=_parse_interval(args.guidance_interval),
            timestep_shift=_parse_shift(args.timestep_shift),
            lowres_renoise=args.lowres_renoise,
            model_options=model_options or None,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None


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
    """Raise the error ``sample_latents`` would raise for model options ``model`` refuses, without sampling, as a
    UsageError (it names the flags)."""
    try:
        with inference_options(model, addons.model_options):
            pass
    except ValueError as error:
        raise UsageError(str(error)) from None
