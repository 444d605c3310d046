"""A small, self-contained pixel-space training loop for the demo's tiny models, with a checkpoint cache keyed by
everything that changes the trained weights, so a re-run only re-samples."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from ledit.demo.dataset import DATASET_PARAMETERS, derive_seed, render_shapes, to_model_range
from ledit.demo.objective import diffusion_kwargs, training_loss
from ledit.demo.packed_batches import draw_packed_batch, token_budget
from ledit.diffusion import create_diffusion
from ledit.files import atomic_path


@dataclass(frozen=True)
class TrainingConfig:
    image_size: int
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    ema_decay: float
    seed: int
    prediction: str = "v"  # what the model predicts (ledit.demo.objective)
    timesteps: str = "uniform"  # how training draws noise levels: TIMESTEP_SAMPLINGS
    lr_schedule: str = "constant"  # after the warm-up: LR_SCHEDULES
    # (min, max) image side in pixels: train on packed batches of mixed sizes (ledit.demo.packed_batches) with
    # the token budget of image_size; None: fixed-size batches of image_size.
    native_sides: tuple[int, int] | None = None


def training_record(training: TrainingConfig) -> dict:
    """The training config as stored in a checkpoint and hashed into its cache key: every field, less those left
    unset (None), so an optional field never changes the key of a run that does not use it."""
    return {name: value for name, value in asdict(training).items() if value is not None}


TIMESTEP_SAMPLINGS = ("uniform", "logit-normal")
LR_SCHEDULES = ("constant", "cosine")


def training_timesteps(batch_size: int, num_timesteps: int, sampling: str, generator: torch.Generator):
    """(batch_size,) diffusion steps to train on: ``uniform`` over the schedule (DiT's choice) or ``logit-normal``
    (the sigmoid of a standard normal, as in Esser et al. 2024): more of a short run spent at mid noise, where the
    objects' shapes and positions are decided, less at the ends, where the image is nearly clean or pure noise."""
    if sampling == "uniform":
        return torch.randint(0, num_timesteps, (batch_size,), generator=generator)
    if sampling == "logit-normal":
        position = torch.sigmoid(torch.randn(batch_size, generator=generator))
        return (position * num_timesteps).long().clamp_(max=num_timesteps - 1)
    raise ValueError(f"timesteps must be one of {TIMESTEP_SAMPLINGS}, got {sampling!r}")


def learning_rate(training: TrainingConfig, step: int) -> float:
    """A linear warm-up, then ``constant`` or a ``cosine`` decay to zero at the last step (a short run ends on
    settled weights instead of averaging noisy ones in the EMA)."""
    warm = min(1.0, (step + 1) / max(1, training.warmup_steps))
    if training.lr_schedule == "constant":
        return training.lr * warm
    if training.lr_schedule == "cosine":
        return training.lr * warm * 0.5 * (1 + math.cos(math.pi * step / training.steps))
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {training.lr_schedule!r}")


def cache_key(model_config: dict, training: TrainingConfig) -> str:
    """A short hash of the model config, the training config and the dataset's parameters."""
    payload = json.dumps(
        {"model": model_config, "training": training_record(training), "dataset": DATASET_PARAMETERS}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def initialised_model(build, seed: int) -> torch.nn.Module:
    """``build()`` under a seed of its own: the initial weights depend on ``seed`` alone, not on whatever the
    caller's global RNG did before, so the same training config always gives the same trained weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed("init", seed))
        return build()


def fixed_size_batch(training: TrainingConfig, patch_size: int):
    """``draw(step)`` -> (x (B, C, H, W), labels (B,), None): ``batch_size`` fresh images of ``image_size``."""

    def draw(step: int):
        images, labels = render_shapes(
            training.batch_size, training.image_size, training.image_size, derive_seed("train", training.seed, step)
        )
        return to_model_range(images), labels, None

    return draw


def native_size_batch(training: TrainingConfig, patch_size: int):
    """``draw(step)`` -> (x (T, C, p, p), labels (n,), grids (n, 2)): fresh images of mixed sizes in
    ``native_sides``, packed into the token budget of ``batch_size`` images of ``image_size``."""
    budget = token_budget(training.batch_size, training.image_size, patch_size)

    def draw(step: int):
        seed = derive_seed("train-native", training.seed, step)
        return draw_packed_batch(training.native_sides, budget, patch_size, seed)

    return draw


def batches_of(training: TrainingConfig):
    """The batch drawing ``training`` asks for: ``native_size_batch`` or ``fixed_size_batch``."""
    return fixed_size_batch if training.native_sides is None else native_size_batch


def train_model(model: torch.nn.Module, training: TrainingConfig, description: str = "training",
                batches=None) -> dict:
    """Train ``model`` with DiT's diffusion loss on fresh procedural images every step; returns the EMA weights.

    ``batches(training, patch_size)`` makes ``draw(step)`` -> (x, labels, grids): a dense batch (grids None) or
    a packed one (``ledit.models.packing``), whose loss is averaged per image; by default ``batches_of(training)``.
    Each step draws a new batch (from a seed derived from the run's seed and the step), so the model never sees
    an image twice and there is no dataset to store. One timestep per image and the noise come from a generator
    of the run's own; the global RNG (class dropout, multi-dilation draws) is seeded and then restored, so the
    run is reproducible without touching the caller's random state.
    """
    draw = (batches or batches_of(training))(training, model.config["patch_size"])
    diffusion = create_diffusion("", learn_sigma=model.config["learn_sigma"], **diffusion_kwargs(training.prediction))
    # foreach: one call per update step for all parameters, not one per tensor (the same arithmetic, bit for bit;
    # Python overhead is a large part of a step of these tiny models).
    parameters = list(model.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=training.lr, weight_decay=0.0, foreach=True)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    ema_parameters = list(ema.parameters())
    generator = torch.Generator().manual_seed(derive_seed("train-noise", training.seed))
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(training.seed)
        progress = tqdm(range(training.steps), desc=description, unit="step", leave=False)
        for step in progress:
            x, labels, grids = draw(step)
            t = training_timesteps(labels.shape[0], diffusion.num_timesteps, training.timesteps, generator)
            noise = torch.randn(x.shape, generator=generator)
            loss = training_loss(diffusion, model, x, t, labels, noise, training.prediction, grids)

            for group in optimizer.param_groups:
                group["lr"] = learning_rate(training, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            # EMA with the usual warm-up: early steps average over fewer updates, so a short run is not
            # dominated by the random initialisation.
            decay = min(training.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema_parameters, parameters, 1 - decay)
            progress.set_postfix(loss=f"{loss.item():.4f}")
    return ema.state_dict()


def checkpoint_path(model: torch.nn.Module, training: TrainingConfig, cache_dir: str) -> str:
    return os.path.join(cache_dir, f"{model.config['name']}-{cache_key(model.config, training)}.pt")


def cached_weights(model: torch.nn.Module, training: TrainingConfig, cache_dir: str):
    """The cached EMA weights of ``model`` trained with ``training``, or None when the cache has no readable
    checkpoint of exactly this model and training config."""
    path = checkpoint_path(model, training, cache_dir)
    if not os.path.exists(path):
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for unreadable files; all mean retrain
        print(f"cached checkpoint {path} is unreadable ({type(error).__name__}); ignoring it")
        return None
    if checkpoint.get("model_config") == model.config and checkpoint.get("training") == training_record(training):
        return checkpoint["ema"]
    return None


def trained_weights(model: torch.nn.Module, training: TrainingConfig, cache_dir: str, description: str):
    """The EMA weights of ``model`` trained with ``training``: loaded from ``cache_dir`` when this exact model
    and training config were trained before, else trained now and cached. Returns (state_dict, path, cached)."""
    path = checkpoint_path(model, training, cache_dir)
    state = cached_weights(model, training, cache_dir)
    if state is not None:
        return state, path, True
    state = train_model(model, training, description)
    with atomic_path(path) as temporary:  # a crash never leaves a truncated checkpoint in the cache
        torch.save({"ema": state, "model_config": model.config, "training": training_record(training)}, temporary)
    return state, path, False
