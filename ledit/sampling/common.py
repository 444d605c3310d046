"""What ``ledit sample`` and ``ledit sample-ddp`` share: DiT's flags and the inference add-ons' flags, loading a
checkpoint for inference, the size check, and one batch of classifier-free-guided DDPM/DDIM sampling."""

from __future__ import annotations

import argparse
import json

import torch

from ledit.checkpoint import CheckpointError, checkpoint_weights, load_checkpoint, load_weights_into
from ledit.data.images import to_uint8_nhwc
from ledit.data.vae import VAE_HELP, decode_latents, load_vae, vae_downsample
from ledit.models import build_model
from ledit.sampling.addons import SamplingAddons, add_addon_arguments, addons_from_args, check_model_options
from ledit.sampling.loop import sample_latents


def add_sampling_arguments(parser: argparse.ArgumentParser, cfg_scale: float) -> None:
    p = parser.add_argument
    p("--ckpt", required=True, help="ledit checkpoint (.pt from `ledit train` or `ledit convert-dit`); EMA preferred")
    p("--model", default=None, help="model name; only needed for a raw state dict (ledit checkpoints carry it)")
    p("--model-kwargs", type=json.loads, default={}, help="JSON model overrides, for a raw state dict only")
    p("--vae", default="mse", help=VAE_HELP)
    p("--image-size", type=int, default=256, help="the size the model was trained at (DiT's flag)")
    p("--height", type=int, default=None, help="sample height in pixels (default: --image-size)")
    p("--width", type=int, default=None, help="sample width in pixels (default: --image-size)")
    p("--num-classes", type=int, default=1000)
    p("--cfg-scale", type=float, default=cfg_scale, help="classifier-free guidance scale (1.0 = none)")
    p("--num-sampling-steps", type=int, default=250)
    p("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    p("--tf32", action=argparse.BooleanOptionalAction, default=True, help="TF32 matmuls on Ampere+ GPUs")
    p("--device", default=None, help="cuda | cpu (default: cuda if available)")
    add_addon_arguments(parser)


def load_model_for_sampling(args, device, vae) -> torch.nn.Module:
    """Build the checkpoint's model (its stored config, or --model for a raw state dict) with the EMA weights."""
    state = load_checkpoint(args.ckpt)
    weights, which = checkpoint_weights(state, f"--ckpt {args.ckpt}")
    config = state.get("config")
    if config is not None:
        if args.model not in (None, config["name"]):
            raise CheckpointError(f"--ckpt {args.ckpt} holds a {config['name']}, not --model {args.model}")
        model = build_model(**config)
    else:
        if args.model is None:
            raise CheckpointError(f"--ckpt {args.ckpt} is a raw state dict without a model config: pass --model")
        kwargs = {"input_size": args.image_size // vae_downsample(vae), "num_classes": args.num_classes,
                  **args.model_kwargs}
        model = build_model(args.model, **kwargs)
    load_weights_into(model, weights, f"--ckpt {args.ckpt} ({which} weights)")
    return model.to(device).eval()


def sample_size(args, model, vae) -> tuple[int, int]:
    """(height, width) in pixels, checked to map onto whole patches of whole latent pixels."""
    height, width = args.height or args.image_size, args.width or args.image_size
    step = vae_downsample(vae) * model.patch_size
    if height % step or width % step:
        raise ValueError(
            f"--height/--width {height}x{width} must be divisible by {step} (VAE factor {vae_downsample(vae)} x "
            f"patch size {model.patch_size}); e.g. {round(height / step) * step}x{round(width / step) * step}"
        )
    return height, width


def load_sampling_setup(args, device):
    """(model, vae, add-ons, (height, width)) for the parsed sampling flags; bad add-on flags fail first."""
    addons = addons_from_args(args)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    vae = load_vae(args.vae, device)
    model = load_model_for_sampling(args, device, vae)
    if vae is not None and model.in_channels != vae.config.latent_channels:
        raise CheckpointError(
            f"--ckpt {args.ckpt} models {model.in_channels} channels but --vae {args.vae} has "
            f"{vae.config.latent_channels}: pixel-space models need --vae none"
        )
    if vae is None and model.in_channels != 3:
        raise CheckpointError(f"--vae none samples RGB pixels, but --ckpt {args.ckpt} models {model.in_channels} "
                              "latent channels: pass the VAE it was trained with (--vae ema|mse|<folder>)")
    check_model_options(model, addons)
    return model, vae, addons, sample_size(args, model, vae)


@torch.no_grad()
def sample_batch(model, vae, labels, height, width, *, cfg_scale: float, sampler: str, num_steps: int,
                 generator: torch.Generator, addons: SamplingAddons | None = None, progress: bool = False):
    """One batch: noise -> latents (CFG as DiT's sample scripts, plus the add-ons) -> decoded uint8 NHWC images
    on the CPU. The starting noise is the generator's first draw, then it draws the sampler's noise."""
    device = labels.device
    down = vae_downsample(vae)

    def initial_noise(size):
        return torch.randn(len(labels), model.in_channels, *size, generator=generator, device=device)

    samples = sample_latents(model, labels, (height // down, width // down),
                             respacing=f"ddim{num_steps}" if sampler == "ddim" else str(num_steps), sampler=sampler,
                             cfg_scale=cfg_scale, initial_noise=initial_noise, addons=addons, generator=generator,
                             progress=progress)
    return to_uint8_nhwc(decode_latents(vae, samples))
