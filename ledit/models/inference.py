"""Inference-only model options: attention temperature, dynamic RoPE extrapolation, a re-dilated locality stem.

Each option changes how a trained model is *evaluated* at a resolution other than its training one; none
changes a weight. They are read by the models' overridable hooks (``softmax_scale``, ``rope_tables``,
``embed_tokens``) and ignored in training mode (``model.train()``), so a training loop that toggles
train/eval never trains with them. All timesteps are the original DDPM steps the model receives (0..999,
possibly fractional under respacing or a timestep shift); "t/T" below is that step over T = 1000.

    model.set_inference_options(temperature_full="fitv2-log", temperature_until=0.5)
    model.set_inference_options(InferenceOptions(rope_dynamic="dy-yarn"))

Formulas: ``ledit.models.scaling`` (temperatures), ``ledit.models.rope`` (dynamic RoPE), ``LEDiT.embed_tokens``
(stem dilation); docs/addons.md, "Model-side add-ons".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

INFERENCE_TEMPERATURES = ("jin", "fitv2-log", "lumina", "none")
ROPE_DYNAMIC = ("none", "dy-ntk", "dy-yarn", "lumina")
# T, the one definition: the models take DDPM steps t = 0..T-1 of DiT's process (``create_diffusion``'s default
# diffusion_steps, which the diffusion package, importing nothing of ledit, spells out; a test ties them).
NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class InferenceOptions:
    """Inference-time add-ons of a ``DiT`` / ``LEDiT``; the defaults reproduce the model's plain behaviour.

    Attributes:
        temperature_full: softmax temperature of the full-attention blocks, one of ``INFERENCE_TEMPERATURES``.
        temperature_causal: the same for LEDiT's causal (scanned) blocks; DiT has none.
        temperature_until: apply the temperature while t/T >= this fraction, plain 1/sqrt(d) after (strong
            early, off late); 0.0 = every step.
        rope_dynamic: timestep-dependent RoPE extrapolation of ``DiT(pos_embed="rope")``, one of
            ``ROPE_DYNAMIC``; replaces the model's static ``rope_method`` while set.
        stem_dilation: LEDiT's stem locality conv runs at this dilation for the early steps, when every axis of
            the token grid is at least ``stem_dilation`` times its training length (ScaleCrafter's re-dilation).
        stem_dilation_until: the stem switches back to dilation 1 once t/T < this fraction.
    """

    temperature_full: str = "jin"
    temperature_causal: str = "jin"
    temperature_until: float = 0.0
    rope_dynamic: str = "none"
    stem_dilation: int = 1
    stem_dilation_until: float = 0.5


# Without Jin scaling (the constructor's ``attention_scaling=False``) a model's defaults carry no temperature.
PLAIN_TEMPERATURES = dict(temperature_full="none", temperature_causal="none")


def default_inference_options(attention_scaling: bool) -> InferenceOptions:
    """A model's initial options: ``attention_scaling=True`` keeps Jin et al. on every layer, False keeps none."""
    return InferenceOptions() if attention_scaling else InferenceOptions(**PLAIN_TEMPERATURES)


def _check_choice(name: str, value, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not a valid choice; valid: {', '.join(map(repr, valid))}")


def _check_fraction(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a fraction of the timesteps in [0, 1], got {value!r}")


def check_inference_options(options: InferenceOptions, *, family: str, rope: bool = False,
                            stem_locality: Optional[str] = None) -> InferenceOptions:
    """Validate ``options`` for one model; every error names the field, the valid values and the fix.

    ``temperature_causal`` is accepted on models without causal blocks (DiT) and has no effect there.

    Args:
        family: "DiT" or "LEDiT" (for messages).
        rope: the model rotates q/k with 2D RoPE (``DiT(pos_embed="rope")``).
        stem_locality: LEDiT's stem locality module ("conv" / "dwconv"), None if it has none.
    """
    if not isinstance(options, InferenceOptions):
        raise TypeError(f"options must be an InferenceOptions, got {type(options).__name__}")
    _check_choice("temperature_full", options.temperature_full, INFERENCE_TEMPERATURES)
    _check_choice("temperature_causal", options.temperature_causal, INFERENCE_TEMPERATURES)
    _check_fraction("temperature_until", options.temperature_until)
    _check_choice("rope_dynamic", options.rope_dynamic, ROPE_DYNAMIC)
    _check_fraction("stem_dilation_until", options.stem_dilation_until)
    if options.rope_dynamic != "none" and not rope:
        raise ValueError(
            f"rope_dynamic={options.rope_dynamic!r} needs a RoPE model (DiT(pos_embed='rope')); this {family} has "
            f"no RoPE, so leave rope_dynamic='none'"
        )
    dilation = options.stem_dilation
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"stem_dilation must be an int >= 1, got {dilation!r}")
    if dilation > 1 and stem_locality is None:
        raise ValueError(
            f"stem_dilation={dilation} re-dilates LEDiT's stem locality conv; this {family} has none (it needs "
            f"LEDiT with locality='conv' or 'dwconv' and locality_placement='stem'), so leave stem_dilation=1"
        )
    return options


def updated_options(current: InferenceOptions, options: Optional[InferenceOptions], fields: dict) -> InferenceOptions:
    """``options`` (or ``current`` when None) with ``fields`` replaced; unknown field names are an error."""
    base = current if options is None else options
    known = {field.name for field in dataclasses.fields(InferenceOptions)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(f"unknown inference option(s) {unknown}; valid: {', '.join(sorted(known))}")
    return dataclasses.replace(base, **fields)
