"""What ``ledit sample`` and ``ledit sample-ddp`` share: DiT's flags and the inference add-ons' flags, loading a
checkpoint for inference, the size check, and one batch of classifier-free-guided DDPM/DDIM sampling."""

from __future__ import annotations

import argparse
import json
import os

import torch

from ledit import arguments
from ledit.arguments import UsageError
from ledit.checkpoint import checkpoint_weights, load_checkpoint, load_weights_into
from ledit.data.images import to_uint8_nhwc
from ledit.data.vae import VAE_HELP, decode_latents, load_vae, vae_downsample
from ledit.diffusion import create_diffusion
from ledit.models import MODEL_NAMES, NUM_TRAIN_TIMESTEPS, build_model
from ledit.sampling.addons import SamplingAddons, add_addon_arguments, addons_from_args, check_model_options
from ledit.sampling.loop import sample_latents, sample_packed_latents

# DiT's defaults for a raw state dict, which carries neither.
DIT_IMAGE_SIZE, DIT_NUM_CLASSES = 256, 1000


def add_sampling_arguments(parser: argparse.ArgumentParser, cfg_scale: float) -> None:
    p = parser.add_argument
    p("--ckpt", required=True, help="ledit checkpoint (.pt from `ledit train` or `ledit convert-dit`); EMA preferred")
    p("--model", type=arguments.one_of(MODEL_NAMES, "model"), default=None,
      help="model name; only for a raw state dict (ledit checkpoints carry their model)")
    p("--model-kwargs", type=arguments.json_object, default=None, metavar="JSON",
      help="model options, only for a raw state dict, e.g. '{\"learn_sigma\": false}'")
    p("--vae", default="mse", help=VAE_HELP)
    p("--image-size", type=arguments.positive_int, default=None,
      help="the square size the model was trained at (DiT's flag; default: the checkpoint's, 256 for a raw state "
           "dict); also the default sample size")
    p("--height", type=arguments.positive_int, default=None, help="sample height in pixels (default: --image-size)")
    p("--width", type=arguments.positive_int, default=None, help="sample width in pixels (default: --image-size)")
    p("--num-classes", type=arguments.positive_int, default=None,
      help="classes of a raw state dict's model (default 1000; ledit checkpoints carry theirs)")
    p("--cfg-scale", type=arguments.cfg_scale, default=cfg_scale,
      help="classifier-free guidance scale, >= 1 (1.0 = none)")
    p("--num-sampling-steps", type=arguments.positive_int, default=250,
      help=f"steps of the {NUM_TRAIN_TIMESTEPS}-step process to sample with")
    p("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    p("--tf32", action=argparse.BooleanOptionalAction, default=True, help="TF32 matmuls on Ampere+ GPUs")
    p("--device", type=arguments.device, default=None, help="cuda | cuda:N | cpu (default: cuda if available)")
    add_addon_arguments(parser)


def respacing(sampler: str, num_steps: int) -> str:
    """``create_diffusion``'s respacing for the --sampler and --num-sampling-steps flags."""
    return f"ddim{num_steps}" if sampler == "ddim" else str(num_steps)


def load_model_for_sampling(args, device, vae) -> torch.nn.Module:
    """Build the checkpoint's model (its stored config, or --model for a raw state dict) with the EMA weights."""
    state = load_checkpoint(args.ckpt)
    weights, which = checkpoint_weights(state, f"--ckpt {args.ckpt}")
    config = state.get("config")
    if config is not None:
        # The checkpoint describes its model; flags that describe another one are refused, not ignored.
        if args.model not in (None, config["name"]):
            raise UsageError(f"--ckpt {args.ckpt} holds a {config['name']}, not --model {args.model}")
        if args.model_kwargs:
            raise UsageError(f"--model-kwargs describes the model of a raw state dict; --ckpt {args.ckpt} carries "
                             f"its model's config ({config['name']}): drop --model-kwargs")
        model = build_model(**config)
        if args.num_classes not in (None, model.num_classes):
            raise UsageError(f"--num-classes {args.num_classes}: --ckpt {args.ckpt} models {model.num_classes} "
                             "classes")
    else:
        if args.model is None:
            raise UsageError(f"--ckpt {args.ckpt} is a raw state dict without a model config: pass --model")
        kwargs = {"input_size": (args.image_size or DIT_IMAGE_SIZE) // vae_downsample(vae),
                  "num_classes": args.num_classes or DIT_NUM_CLASSES, **(args.model_kwargs or {})}
        with arguments.flag_errors(f"--model {args.model} --model-kwargs {json.dumps(args.model_kwargs or {})}",
                                   TypeError, ValueError):
            model = build_model(args.model, **kwargs)
    load_weights_into(model, weights, f"--ckpt {args.ckpt} ({which} weights)")
    return model.to(device).eval()


def trained_size(model, vae) -> tuple[int, int]:
    """(height, width) in pixels of the images the model was trained on."""
    step = vae_downsample(vae) * model.patch_size
    return model.train_grid[0] * step, model.train_grid[1] * step


def sample_size(args, model, vae) -> tuple[int, int]:
    """(height, width) in pixels, checked to map onto whole patches of whole latent pixels. Without
    --height/--width: --image-size, else the size the model was trained at."""
    train_h, train_w = trained_size(model, vae)
    if args.image_size is not None and (args.image_size, args.image_size) != (train_h, train_w):
        raise UsageError(
            f"--image-size {args.image_size}: --ckpt {args.ckpt} was trained at {train_h}x{train_w} (--image-size is "
            "the training size, as in DiT); sample at another size with --height/--width"
        )
    return check_size(args.height or train_h, args.width or train_w, model, vae, "--height/--width")


def check_size(height: int, width: int, model, vae, flag: str) -> tuple[int, int]:
    """(height, width), checked to map onto whole patches of whole latent pixels; ``flag`` names it in errors."""
    step = vae_downsample(vae) * model.patch_size
    if height % step or width % step:
        raise UsageError(
            f"{flag} {height}x{width} must be divisible by {step} (VAE factor {vae_downsample(vae)} x "
            f"patch size {model.patch_size}); e.g. {max(1, round(height / step)) * step}x"
            f"{max(1, round(width / step)) * step}"
        )
    return height, width


def load_sampling_setup(args, device):
    """(model, vae, add-ons, (height, width)) for the parsed sampling flags; bad flags and a missing checkpoint
    fail before the VAE is loaded."""
    with arguments.flag_errors(f"--sampler {args.sampler} --num-sampling-steps {args.num_sampling_steps}",
                               ValueError):
        create_diffusion(respacing(args.sampler, args.num_sampling_steps))
    addons = addons_from_args(args)
    if not os.path.isfile(args.ckpt):
        raise FileNotFoundError(f"--ckpt {args.ckpt!r} does not exist")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    vae = load_vae(args.vae, device)
    model = load_model_for_sampling(args, device, vae)
    if vae is not None and model.in_channels != vae.config.latent_channels:
        raise UsageError(
            f"--ckpt {args.ckpt} models {model.in_channels} channels but --vae {args.vae} has "
            f"{vae.config.latent_channels}: pixel-space models need --vae none"
        )
    if vae is None and model.in_channels != 3:
        raise UsageError(f"--vae none samples RGB pixels, but --ckpt {args.ckpt} models {model.in_channels} "
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
                             respacing=respacing(sampler, num_steps), sampler=sampler,
                             cfg_scale=cfg_scale, initial_noise=initial_noise, addons=addons, generator=generator,
                             progress=progress)
    return to_uint8_nhwc(decode_latents(vae, samples))


@torch.no_grad()
def sample_packed_batch(model, vae, labels, sizes: list[tuple[int, int]], *, cfg_scale: float, sampler: str,
                        num_steps: int, generator: torch.Generator, addons: SamplingAddons | None = None,
                        progress: bool = False) -> list[torch.Tensor]:
    """``sample_batch`` for images of several sizes in one packed batch: image i of ``sizes[i]`` (height, width)
    pixels with class ``labels[i]``; a list of uint8 HWC images on the CPU. Each image's starting noise is the
    generator's next draw, in order."""
    device = labels.device
    down = vae_downsample(vae)

    def initial_noise(size):
        return torch.randn(model.in_channels, *size, generator=generator, device=device)

    samples = sample_packed_latents(model, labels, [(h // down, w // down) for h, w in sizes],
                                    respacing=respacing(sampler, num_steps), sampler=sampler, cfg_scale=cfg_scale,
                                    initial_noise=initial_noise, addons=addons, generator=generator,
                                    progress=progress)
    return [to_uint8_nhwc(decode_latents(vae, latent[None]))[0] for latent in samples]
