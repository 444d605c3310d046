"""Sample the trained models at any size with DDIM and score them against fresh real images with SWD."""

from __future__ import annotations

import torch

from ledit.demo.dataset import derive_seed, render_shapes, to_uint8
from ledit.diffusion import create_diffusion
from ledit.evaluate.swd import sliced_wasserstein


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
) -> torch.Tensor:
    """uint8 samples (N, C, H, W) by deterministic DDIM. The starting noise depends only on ``seed``, the size
    and the image index, so every model starts from the same noise and the figure compares like with like."""
    diffusion = create_diffusion(
        f"ddim{sampling_steps}", learn_sigma=model.config["learn_sigma"], predict_xstart=predict_xstart
    )
    generator = torch.Generator().manual_seed(derive_seed("sample-noise", seed, size))
    channels = model.config["in_channels"]
    noise = torch.randn(len(labels), channels, *size, generator=generator)
    model.eval()
    samples = []
    for start in range(0, len(labels), batch_size):
        chunk = noise[start : start + batch_size]
        samples.append(
            diffusion.ddim_sample_loop(
                model, chunk.shape, noise=chunk, model_kwargs={"y": labels[start : start + batch_size]}
            )
        )
    return to_uint8(torch.cat(samples))


def real_images(num_images: int, size: tuple[int, int], seed: int, stream: str = "real") -> torch.Tensor:
    """Fresh procedural images at ``size``, from a seed stream the training never used."""
    images, _ = render_shapes(num_images, *size, seed=derive_seed(stream, seed, size))
    return images


def score(samples: torch.Tensor, reference: torch.Tensor, swd_options: dict, seed: int) -> dict[str, float]:
    """SWD x1e3 per pyramid level and their mean; the same ``seed`` for every model at a size, so all models
    are measured with the same patch positions and projection directions."""
    return sliced_wasserstein(samples, reference, seed=seed, **swd_options)
