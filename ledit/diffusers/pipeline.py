"""``LEDiTPipeline``: class-conditional sampling with a ledit model in diffusers, at any height x width.

It is ``DiTPipeline``'s loop (class labels, CFG on a doubled batch whose second half carries the null label,
the learned variance split off unless the scheduler models it, ``vae.decode`` of latents / scaling_factor) with
what ``ledit sample`` adds: any size divisible by the VAE factor x patch size and every inference add-on of
``ledit.sampling.addons`` as a call argument. Guidance is ledit's own (``ledit.sampling.guidance``: DiT's
``forward_with_cfg``, which guides the first 3 noise channels as facebookresearch/DiT does; DiTPipeline guides all
4), so with a DDIM scheduler and the same seed the images are ``ledit sample --sampler ddim``'s.

diffusers finds a pipeline class in ``model_index.json``: a bare name must be one of diffusers' own, so a folder
written here names ``["ledit_pipeline", "LEDiTPipeline"]`` and holds ``ledit_pipeline.py``, one line importing this
class from the installed ledit. ``LEDiTPipeline.from_pretrained(folder)`` runs no file from the folder;
``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` runs that line (diffusers >= 0.38 asks for
the flag before it runs a file of a local folder; older versions run it without). Neither downloads anything.
"""

import inspect
import json
import re
from pathlib import Path
from typing import Optional

import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ledit.data.vae import decode_latents, vae_downsample
from ledit.diffusion import shift_schedule
from ledit.files import atomic_path
from ledit.sampling.addons import SamplingAddons, check_model_options, inference_options
from ledit.sampling.guidance import guided_model, resolution_cfg_scale, token_ratio
from ledit.sampling.lowres import upsample_latents

SHIM_MODULE = "ledit_pipeline"
SHIM = (
    "# Written by ledit. DiffusionPipeline.from_pretrained(this folder, trust_remote_code=True) runs this file, which\n"
    "# only imports the installed ledit's pipeline; LEDiTPipeline.from_pretrained(this folder) never runs it.\n"
    "from ledit.diffusers import LEDiTPipeline  # noqa: F401\n"
)
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
LEARNED_VARIANCES = ("learned", "learned_range")


def labels_from_id2label(id2label: dict | None) -> dict[str, int]:
    """{name: class id} from {class id: "name, other name, ..."}, sorted by name (DiTPipeline's ``labels``)."""
    labels = {}
    for key, value in (id2label or {}).items():
        for label in value.split(","):
            labels[label.strip()] = int(key)
    return dict(sorted(labels.items()))


def _argument_error(error: ValueError) -> ValueError:
    """An add-on error raised for ledit's flags (``--timestep-shift``) named by the pipeline argument."""
    return ValueError(re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), str(error)))


def _shifted_scheduler(scheduler, shift: float):
    """(scheduler, table of model timesteps or None): a copy whose noise schedule has SNR / shift^2 (SD3's
    resolution shift, ``ledit.diffusion.shift_schedule``) and the original-process step the model is shown for
    each of its steps; the scheduler itself and None when ``shift`` is 1."""
    if shift == 1.0:
        return scheduler, None
    if "trained_betas" not in scheduler.config or not hasattr(scheduler, "betas"):
        raise ValueError(f"timestep_shift needs a scheduler defined by betas (DDIM, DDPM, Euler, DPM-Solver, ...); "
                         f"{type(scheduler).__name__} has none")
    betas, model_timesteps = shift_schedule(scheduler.betas.double(), shift)
    overrides = {"trained_betas": betas.tolist()}
    if scheduler.config.get("rescale_betas_zero_snr"):
        overrides["rescale_betas_zero_snr"] = False  # already applied to the betas being shifted
    return type(scheduler).from_config(scheduler.config, **overrides), model_timesteps.to(torch.float32)


def _model_timestep(t, table: torch.Tensor | None, batch: int, device) -> torch.Tensor:
    """The (B,) timesteps the model sees at scheduler timestep ``t``: ``t`` itself, or under a shift the table's
    value (linearly interpolated for a fractional ``t``)."""
    t = torch.as_tensor(t, device=device).reshape(1)
    if table is not None:
        table = table.to(device)
        low = t.float().floor().long().clamp(0, len(table) - 1)
        high = (low + 1).clamp(max=len(table) - 1)
        t = table[low] + (table[high] - table[low]) * (t.float() - low)
    return t.expand(batch)


class LEDiTPipeline(DiffusionPipeline):
    r"""Class-conditional image generation with a ledit LEDiT or DiT, at any height x width.

    Components:
        transformer (``LEDiTTransformer2DModel`` or ``DiTBaselineTransformer2DModel``): the denoiser.
        vae (``AutoencoderKL``, optional): decodes latents to images; None for a pixel-space model.
        scheduler (any of diffusers' schedulers defined by DDPM betas; DiT's DDIM by default on export).
        id2label ({class id: "name, other name"}, optional): the class names ``get_label_ids`` looks up.
    """

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]

    # No `from __future__ import annotations` here, and typing's Optional: diffusers 0.33 reads the pipeline's
    # __init__ annotations as objects and knows typing.Union only.
    def __init__(self, transformer, vae, scheduler, id2label: Optional[dict] = None):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler)
        self.register_to_config(id2label=id2label)
        self.labels = labels_from_id2label(id2label)
        self.image_processor = VaeImageProcessor(vae_scale_factor=vae_downsample(vae))

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Class ids of class names (``pipe.labels`` lists them), as DiTPipeline's."""
        names = [label] if isinstance(label, str) else list(label)
        unknown = [name for name in names if name not in self.labels]
        if unknown:
            raise ValueError(f"unknown class names {unknown}: pick names from pipe.labels "
                             f"({len(self.labels)} names{'' if self.labels else '; this pipeline has no id2label'})")
        return [self.labels[name] for name in names]

    # ----------------------------------------------------------------------------------------------------------
    # Saving and loading: model_index.json names the one-line shim (see the module docstring).

    def save_pretrained(self, save_directory, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        with atomic_path(Path(save_directory) / f"{SHIM_MODULE}.py") as tmp:
            tmp.write_text(SHIM)

    def to_json_string(self) -> str:
        config = json.loads(super().to_json_string())
        config["_class_name"] = [SHIM_MODULE, type(self).__name__]
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load_config(cls, *args, **kwargs):
        """As diffusers', with the shim's ``[module, class]`` read as this class's name: loading through this class
        needs no file of the folder."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        if isinstance(config.get("_class_name"), list):
            config["_class_name"] = config["_class_name"][1]
        return loaded

    # ----------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        class_labels: list[int],
        height: int | None = None,
        width: int | None = None,
        guidance_scale: float = 4.0,
        num_inference_steps: int = 50,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        latents: torch.Tensor | None = None,
        eta: float = 0.0,
        timestep_shift: float | str = 1.0,
        cfg_scale_per_doubling: float = 0.0,
        guidance_interval: tuple[float, float] | None = None,
        lowres_renoise: float | None = None,
        temperature_full: str | None = None,
        temperature_causal: str | None = None,
        temperature_until: float | None = None,
        rope_dynamic: str | None = None,
        stem_dilation: int | None = None,
        stem_dilation_until: float | None = None,
    ):
        r"""Generate images of ``class_labels``.

        Args:
            class_labels: class ids, one image each (``get_label_ids`` maps names to ids).
            height, width: image size in pixels, any multiple of the VAE factor x patch size (16 for the SD VAE and
                /2 models); default the training size.
            guidance_scale: classifier-free guidance scale (DiT's, on the first 3 noise channels); <= 1 turns it off.
            num_inference_steps: scheduler steps.
            generator: one ``torch.Generator`` for the starting noise, then the scheduler's noise.
            output_type: "pil", "np" (float NHWC in [0, 1]), "pt" (float NCHW in [0, 1]) or "latent".
            return_dict: an ``ImagePipelineOutput`` when True, else ``(images,)``.
            latents: the starting noise (B, C, h, w) of the first pass, in latent pixels; default drawn from
                ``generator``. With ``lowres_renoise`` the first pass runs at the training size.
            eta: DDIM's eta (schedulers that take one).
            timestep_shift: SD3's resolution shift of the noise schedule, a number > 0 or "auto"
                (sqrt of the token-count ratio); 1 = off.
            cfg_scale_per_doubling: added to ``guidance_scale`` per doubling of the token count above training.
            guidance_interval: (low, high) fractions of the 1000 training steps; guidance only inside.
            lowres_renoise: sample at the training size, upsample, re-noise to this fraction and finish at the
                target size; None = off.
            temperature_full, temperature_causal, temperature_until, rope_dynamic, stem_dilation,
                stem_dilation_until: the model-side add-ons (``ledit.models.InferenceOptions``); None keeps the
                model's own.
            The add-ons, their sources and measured effects: docs/addons.md.
        """
        model = self.transformer.model
        device = self._execution_device
        if isinstance(generator, list):
            raise TypeError("generator must be one torch.Generator (it draws the noise of the whole batch)")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        labels = torch.as_tensor(class_labels, device=device).reshape(-1)
        valid = labels.numel() > 0 and bool(((labels >= 0) & (labels < model.num_classes)).all())
        if labels.dtype.is_floating_point or not valid:
            raise ValueError(f"class_labels must be class ids in [0, {model.num_classes}), got {class_labels!r}")
        down = vae_downsample(self.vae)
        height, width = self._image_size(height, width, down)
        options = dict(temperature_full=temperature_full, temperature_causal=temperature_causal,
                       temperature_until=temperature_until, rope_dynamic=rope_dynamic, stem_dilation=stem_dilation,
                       stem_dilation_until=stem_dilation_until)
        try:
            addons = SamplingAddons(
                cfg_scale_per_doubling=cfg_scale_per_doubling,
                guidance_interval=tuple(guidance_interval) if guidance_interval is not None else None,
                timestep_shift=timestep_shift, lowres_renoise=lowres_renoise,
                model_options={k: v for k, v in options.items() if v is not None} or None,
            )
            check_model_options(model, addons)
        except ValueError as error:
            raise _argument_error(error) from None

        size = (height // down, width // down)
        train_size = tuple(cells * model.patch_size for cells in model.train_grid)
        ratio = token_ratio(model, *size)
        lowres = addons.lowres_renoise is not None and ratio > 1.0
        first_size = train_size if lowres else size
        shape = (len(labels), model.in_channels, *first_size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.transformer.dtype)
        elif tuple(latents.shape) != shape:
            start = "the training size, for lowres_renoise" if lowres else "height x width / VAE factor"
            raise ValueError(f"latents has shape {tuple(latents.shape)}; this call starts from {shape} ({start})")
        run = dict(labels=labels, num_inference_steps=num_inference_steps, generator=generator, eta=eta,
                   interval=addons.guidance_interval)
        scale = resolution_cfg_scale(guidance_scale, ratio, addons.cfg_scale_per_doubling)
        with inference_options(model, addons.model_options):
            if lowres:  # the training-size pass takes no resolution add-on, as ledit's sampling loop
                reference = self._denoise(latents.to(device), scale=guidance_scale, shift=1.0, **run)
                latents = self._denoise(upsample_latents(reference, size), renoise=addons.lowres_renoise,
                                        scale=scale, shift=addons.shift(ratio), **run)
            else:
                latents = self._denoise(latents.to(device), scale=scale, shift=addons.shift(ratio), **run)

        if output_type == "latent":
            images = latents
        else:
            decoded = decode_latents(self.vae, latents if self.vae is None else latents.to(self.vae.dtype))
            images = self.image_processor.postprocess(decoded, output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def _image_size(self, height, width, down: int) -> tuple[int, int]:
        """(height, width) in pixels, the training size by default, checked to be whole patches of latents."""
        model = self.transformer.model
        step = down * model.patch_size
        height = height or model.train_grid[0] * step
        width = width or model.train_grid[1] * step
        if height % step or width % step:
            raise ValueError(
                f"height x width = {height} x {width} must both be divisible by {step} (VAE factor {down} x patch "
                f"size {model.patch_size}); e.g. {max(1, round(height / step)) * step} x "
                f"{max(1, round(width / step)) * step}"
            )
        return height, width

    def _denoise(self, latents, *, labels, scale: float, shift: float, interval, num_inference_steps: int,
                 generator, eta: float, renoise: float | None = None) -> torch.Tensor:
        """One pass of the scheduler from ``latents``: noise (the scheduler's initial sigma applied), or with
        ``renoise`` a clean sample re-noised to the noisiest step at or below that fraction of the steps
        (``ledit.sampling.lowres``'s rule). CFG as ``ledit.sampling.guidance``, over a doubled batch."""
        model = self.transformer.model
        scheduler, table = _shifted_scheduler(self.scheduler, shift)
        learned = scheduler.config.get("variance_type") in LEARNED_VARIANCES
        if learned and not model.learn_sigma:
            raise ValueError(f"the scheduler's variance_type {scheduler.config['variance_type']!r} needs a model with "
                             "a learned variance (out_channels = 2 x in_channels)")
        num_train_steps = scheduler.config.num_train_timesteps
        model_fn, doubled = guided_model(model, scale, interval, num_train_steps)
        device = latents.device
        scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = scheduler.timesteps
        if renoise is None:
            latents = latents * scheduler.init_noise_sigma
        else:
            order = getattr(scheduler, "order", 1)
            steps = timesteps[::order]
            fractions = [float(_model_timestep(t, table, 1, device)) / num_train_steps for t in steps]
            begin = next((i for i, f in enumerate(fractions) if f <= renoise), len(steps) - 1) * order
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(begin)
            noise = randn_tensor(latents.shape, generator=generator, device=device, dtype=latents.dtype)
            latents = scheduler.add_noise(latents, noise, timesteps[begin : begin + 1])
            timesteps = timesteps[begin:]
        y = torch.cat([labels, torch.full_like(labels, model.num_classes)]) if doubled else labels
        x = torch.cat([latents, latents]) if doubled else latents
        step_parameters = set(inspect.signature(scheduler.step).parameters)
        step_kwargs = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in step_parameters}
        for t in self.progress_bar(timesteps):
            model_input = scheduler.scale_model_input(x, t)
            out = model_fn(model_input, _model_timestep(t, table, x.shape[0], device), y)
            if model.learn_sigma and not learned:  # as DiTPipeline: the scheduler takes the noise prediction only
                out = out[:, : model.in_channels]
            x = scheduler.step(out, t, x, **step_kwargs).prev_sample
        return x.chunk(2)[0] if doubled else x

