"""Sample the trained models at any size with DDIM (and optional inference add-ons) and score them against fresh
real images with SWD."""

from __future__ import annotations

import torch

from ledit.demo.dataset import derive_seed, render_shapes, to_uint8
from ledit.evaluate.swd import sliced_wasserstein
from ledit.sampling.addons import SamplingAddons
from ledit.sampling.loop import sample_latents

SWD_MIN_RESOLUTION = 16  # the coarsest Laplacian-pyramid level SWD compares


def parse_size(text: str) -> tuple[int, int]:
    """``"32x64"`` -> (height 32, width 64); ``"48"`` -> (48, 48)."""
    parts = text.lower().split("x")
    try:
        size = tuple(int(part) for part in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"bad size {text!r}; write HEIGHTxWIDTH, e.g. 32x64, or one number for a square")
    return size


def size_name(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def sample_labels(num_samples: int, num_classes: int) -> torch.Tensor:
    """Balanced class labels 0, 1, 2, 0, ... so every model is scored on the same class mix."""
    return torch.arange(num_samples) % num_classes


@torch.no_grad()
def sample_images(
    model: torch.nn.Module,
    labels: torch.Tensor,
    size: tuple[int, int],
    sampling_steps: int,
    seed: int,
    batch_size: int,
    predict_xstart: bool,
    addons: SamplingAddons | None = None,
) -> torch.Tensor:
    """uint8 samples (N, C, H, W) by deterministic DDIM, with the inference ``addons`` (none by default). The
    starting noise at a size depends only on ``seed``, the size and the image index, so every model starts from
    the same noise and the figure compares like with like; the low-resolution reference starts from the
    training size's noise (so its first stage is the plain training-size sample) and re-noises from a seed
    stream of its own."""
    channels = model.config["in_channels"]

    noises = {}  # size -> the whole set's starting noise, drawn once and sliced per batch

    def noise_at(size):
        if size not in noises:
            generator = torch.Generator().manual_seed(derive_seed("sample-noise", seed, size))
            noises[size] = torch.randn(len(labels), channels, *size, generator=generator)
        return noises[size]

    renoise = torch.Generator().manual_seed(derive_seed("lowres-renoise", seed, size))
    diffusion_kwargs = {"learn_sigma": model.config["learn_sigma"], "predict_xstart": predict_xstart}
    model.eval()
    samples = []
    for start in range(0, len(labels), batch_size):
        batch = slice(start, start + batch_size)
        samples.append(
            sample_latents(model, labels[batch], size, respacing=f"ddim{sampling_steps}", sampler="ddim",
                           cfg_scale=1.0, initial_noise=lambda size, batch=batch: noise_at(size)[batch], addons=addons,
                           generator=renoise, diffusion_kwargs=diffusion_kwargs, clip_denoised=True)
        )
    return to_uint8(torch.cat(samples))


def real_images(num_images: int, size: tuple[int, int], seed: int, stream: str = "real") -> torch.Tensor:
    """Fresh procedural images at ``size``, from a seed stream the training never used."""
    images, _ = render_shapes(num_images, *size, seed=derive_seed(stream, seed, size))
    return images


def swd_options(descriptors_per_image: int, num_projections: int) -> dict:
    """``sliced_wasserstein``'s options as the demo uses them."""
    return {
        "descriptors_per_image": descriptors_per_image,
        "num_projections": num_projections,
        "min_resolution": SWD_MIN_RESOLUTION,
    }


def score(samples: torch.Tensor, reference: torch.Tensor, swd_options: dict, seed: int) -> dict[str, float]:
    """SWD x1e3 per pyramid level and their mean; the same ``seed`` for every model at a size, so all models
    are measured with the same patch positions and projection directions."""
    return sliced_wasserstein(samples, reference, seed=seed, **swd_options)
