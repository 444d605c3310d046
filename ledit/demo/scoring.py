"""Sample the trained models at any size with DDPM or DDIM (and optional inference add-ons) and score every image
set the same way: the object detector (shape precision, density) and SWD against fresh real images."""

from __future__ import annotations

import functools
import time

import torch

from ledit.demo.dataset import SHAPE_CLASSES, derive_seed, render_shapes, to_uint8
from ledit.demo.detect import CORRUPTIONS, corrupt, detect
from ledit.demo.objective import diffusion_kwargs, sampling_model
from ledit.diffusion import create_diffusion
from ledit.evaluate.swd import sliced_wasserstein
from ledit.sampling.addons import SamplingAddons
from ledit.sampling.loop import sample_latents

SWD_MIN_RESOLUTION = 16  # the coarsest Laplacian-pyramid level SWD compares


def parse_int_pair(text: str, separator: str) -> tuple[int, int] | None:
    """``"32x64"`` (separator "x") -> (32, 64); one number ``"48"`` -> (48, 48); None unless one or two ints."""
    try:
        values = tuple(int(part) for part in text.split(separator))
    except ValueError:
        return None
    if len(values) == 1:
        values = values * 2
    return values if len(values) == 2 else None


def parse_size(text: str) -> tuple[int, int]:
    """``"32x64"`` -> (height 32, width 64); ``"48"`` -> (48, 48)."""
    size = parse_int_pair(text.lower(), "x")
    if size is None or min(size) < 1:
        raise ValueError(f"bad size {text!r}; write HEIGHTxWIDTH, e.g. 32x64, or one number for a square")
    return size


def size_name(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def sample_labels(num_samples: int) -> torch.Tensor:
    """Balanced class labels 0, 1, 2, 0, ... (as ``render_shapes`` draws them), so every model and every real
    set is scored on the same class mix."""
    return torch.arange(num_samples) % len(SHAPE_CLASSES)


@torch.no_grad()
def sample_images(
    model: torch.nn.Module,
    labels: torch.Tensor,
    size: tuple[int, int],
    sampling_steps: int,
    seed: int,
    batch_size: int,
    prediction: str,
    sampler: str = "ddpm",
    addons: SamplingAddons | None = None,
) -> torch.Tensor:
    """uint8 samples (N, C, H, W) by ``sampling_steps`` steps of ``sampler`` ("ddpm": ancestral, with the
    posterior variance; "ddim": deterministic), with the inference ``addons`` (none by default). The starting
    noise and the step noise at a size depend only on ``seed`` and the size, so every model gets the same noise
    and the figure compares like with like; the low-resolution reference starts from the training size's noise
    (so its first stage is the plain training-size sample). ``prediction``: what the model was trained to
    predict (``objective.PREDICTIONS``)."""
    channels = model.config["in_channels"]

    noises = {}  # size -> the whole set's starting noise, drawn once and sliced per batch

    def noise_at(size):
        if size not in noises:
            generator = torch.Generator().manual_seed(derive_seed("sample-noise", seed, size))
            noises[size] = torch.randn(len(labels), channels, *size, generator=generator)
        return noises[size]

    step_noise = torch.Generator().manual_seed(derive_seed("step-noise", seed, size))
    # The posterior variance (beta~): DDPM's choice for a fixed variance; beta itself leaves visible noise after
    # a few dozen steps.
    kwargs = {"learn_sigma": model.config["learn_sigma"], "sigma_small": True, **diffusion_kwargs(prediction)}
    model = sampling_model(model.eval(), prediction, create_diffusion("", **kwargs).alphas_cumprod)
    samples = []
    for start in range(0, len(labels), batch_size):
        batch = slice(start, start + batch_size)
        samples.append(
            sample_latents(model, labels[batch], size, sampler=sampler,
                           respacing=f"ddim{sampling_steps}" if sampler == "ddim" else str(sampling_steps),
                           cfg_scale=1.0, initial_noise=lambda size, batch=batch: noise_at(size)[batch], addons=addons,
                           generator=step_noise, diffusion_kwargs=kwargs, clip_denoised=True)
        )
    return to_uint8(torch.cat(samples))


def sample_set(model: torch.nn.Module, size: str, config, addons: SamplingAddons | None = None) -> torch.Tensor:
    """The demo's ``config.num_samples`` samples of ``model`` at ``size`` (labels ``sample_labels``)."""
    return sample_images(model, sample_labels(config.num_samples), parse_size(size), config.sampling_steps,
                         config.seed, config.sample_batch_size, config.prediction, config.sampler, addons)


def real_images(num_images: int, size: tuple[int, int], seed: int, stream: str = "real") -> torch.Tensor:
    """Fresh procedural images at ``size`` with the labels of ``sample_labels``, from a seed stream the training
    never used."""
    images, _ = render_shapes(num_images, *size, seed=derive_seed(stream, seed, size))
    return images


class Scorer:
    """Samples models and scores image sets at the sizes of ``config`` (a DemoConfig), every set against the same
    real images, with the same labels, starting noise and SWD patches; keeps the seconds spent on each."""

    def __init__(self, config):
        self.config = config
        self.labels = sample_labels(config.num_samples)
        self.swd_options = {
            "descriptors_per_image": config.swd_descriptors,
            "num_projections": config.swd_projections,
            "min_resolution": SWD_MIN_RESOLUTION,
        }
        self.scored = {}  # row key -> {size: scores}, see score_sets
        self.sampling_seconds = self.scoring_seconds = 0.0

    @functools.cached_property
    def references(self) -> dict[str, torch.Tensor]:
        """{size: the real images every set at that size is measured against}, made on first use."""
        return {size: real_images(self.config.real_images, parse_size(size), self.config.seed)
                for size in self.config.sizes}

    @functools.cached_property
    def reference_objects(self) -> dict[str, dict]:
        return {size: detect(images, sample_labels(len(images))).summary() for size, images in self.references.items()}

    def sample(self, model, size: str, addons: SamplingAddons | None = None) -> torch.Tensor:
        began = time.perf_counter()
        images = sample_set(model, size, self.config, addons)
        self.sampling_seconds += time.perf_counter() - began
        return images

    def score(self, images: torch.Tensor, size: str) -> dict:
        """{"objects": the detector's summary, "swd": SWD x1e3 per pyramid level and their mean} of a set of
        ``config.num_samples`` images at ``size`` (labels as ``sample_labels``). The SWD seed is the same for
        every set at a size, so all are measured with the same patch positions and projection directions."""
        began = time.perf_counter()
        scores = {
            "objects": detect(images, self.labels).summary(),
            "swd": sliced_wasserstein(images, self.references[size], seed=self.config.seed, **self.swd_options),
        }
        self.scoring_seconds += time.perf_counter() - began
        return scores

    def score_sets(self, key: str, images: dict[str, torch.Tensor]) -> dict[str, dict]:
        """{size: ``score(images[size], size)``} for the sets of the row ``key``, scored once: a row scored as soon
        as its samples came in (while other models still train) is not scored again."""
        if key not in self.scored:
            self.scored[key] = {size: self.score(images[size], size) for size in self.config.sizes}
        return self.scored[key]

    @functools.cached_property
    def held_out(self) -> dict[str, torch.Tensor]:
        """A second set of real images per size, as many as the samples: the scores of a perfect model."""
        return {size: real_images(self.config.num_samples, parse_size(size), self.config.seed, "held-out")
                for size in self.config.sizes}

    def detector_check(self, held_out: dict[str, torch.Tensor]) -> dict[str, dict[str, dict]]:
        """{corruption: {size: detector summary}}: the held-out real images spoilt as a model spoils them (see
        ``detect.corrupt``), to show in every run that shape precision tells good objects from bad ones."""
        return {kind: {size: detect(corrupt(images, kind), self.labels).summary() for size, images in held_out.items()}
                for kind in CORRUPTIONS}
