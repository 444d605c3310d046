"""Latent shards: a folder of a few large ``.npy`` arrays plus ``index.json``, instead of a million tiny files.

Layout (written by ``ledit extract-latents``)::

    index.json        format, image/latent sizes, VAE, scale factor, classes, shard names, complete flag
    labels.npy        int64 (N,): class of every image, in ImageFolder order
    shard-00000.npy   float16 (n, 2, 2C, h, w): VAE posterior moments (mean, logvar) of image i, [:, 1] = flipped

Storing the posterior moments rather than one latent sample keeps DiT's training exactly: a fresh latent
``mean + std * eps`` is drawn at every step, and the horizontal flip stays a random augmentation instead of being
frozen in at extraction time. Shards are memory-mapped, so DataLoader workers read only the items they need.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

SHARD_FORMAT = "ledit-latent-shards"
SHARD_VERSION = 1
INDEX_NAME = "index.json"
LABELS_NAME = "labels.npy"


class ShardError(RuntimeError):
    """A latent-shard folder that is unfinished, inconsistent or corrupt."""


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.npy"


def is_shard_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / INDEX_NAME).is_file()


def read_index(root: str | os.PathLike) -> dict:
    path = Path(root) / INDEX_NAME
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ShardError(f"cannot read latent index {str(path)!r} ({e}): re-run `ledit extract-latents`") from e
    if index.get("format") != SHARD_FORMAT or index.get("version") != SHARD_VERSION:
        raise ShardError(f"{str(path)!r} is not a {SHARD_FORMAT} v{SHARD_VERSION} index")
    return index


def shard_shape(index: dict, i: int) -> tuple[int, ...]:
    count = min(index["shard_size"], index["num_images"] - i * index["shard_size"])
    return (count, 2, *index["latent_shape"])


def open_shard(root: str | os.PathLike, index: dict, i: int) -> np.ndarray:
    """Memory-map shard i, checking that it is complete and has the shape the index promises."""
    path = Path(root) / shard_name(i)
    expected = shard_shape(index, i)
    try:
        arr = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise ShardError(
            f"latent shard {str(path)!r} is missing, truncated or corrupt ({e}): delete it and re-run "
            f"`ledit extract-latents --resume` to rewrite it"
        ) from e
    if arr.shape != expected or arr.dtype != np.dtype(index["dtype"]):
        raise ShardError(
            f"latent shard {str(path)!r} has shape {arr.shape} {arr.dtype}, the index expects {expected} "
            f"{index['dtype']}: delete it and re-run `ledit extract-latents --resume`"
        )
    return arr


def sample_posterior(moments: torch.Tensor, scale_factor: float, generator: torch.Generator | None = None):
    """A latent drawn from the VAE posterior (diffusers' DiagonalGaussianDistribution.sample), times the scale."""
    mean, logvar = moments.float().chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
    noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return (mean + std * noise) * scale_factor


class LatentShardDataset(torch.utils.data.Dataset):
    """Items keyed by (index, flip) -> (posterior moments (2C, h, w) float32, label). See ImageFolderDataset."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"latent folder {str(self.root)!r} does not exist: run `ledit extract-latents`")
        self.index = read_index(self.root)
        if not self.index.get("complete"):
            raise ShardError(
                f"latent extraction into {str(self.root)!r} is unfinished: re-run `ledit extract-latents --resume`"
            )
        num_shards = len(self.index["shards"])
        for i in range(num_shards):  # fail now, with the shard's name, not in a DataLoader worker hours later
            open_shard(self.root, self.index, i)
        self.labels = np.load(self.root / LABELS_NAME)
        if self.labels.shape != (self.index["num_images"],):
            raise ShardError(f"{str(self.root / LABELS_NAME)!r} does not hold {self.index['num_images']} labels")
        self._shards: dict[int, np.ndarray] = {}  # opened lazily, per DataLoader worker process

    @property
    def scale_factor(self) -> float:
        return self.index["scale_factor"]

    @property
    def latent_channels(self) -> int:
        return self.index["latent_shape"][0] // 2

    def __len__(self) -> int:
        return self.index["num_images"]

    def __getitem__(self, key):
        index, flip = key if isinstance(key, tuple) else (key, False)
        shard, offset = divmod(index, self.index["shard_size"])
        if shard not in self._shards:
            self._shards[shard] = open_shard(self.root, self.index, shard)
        moments = torch.from_numpy(np.array(self._shards[shard][offset, int(flip)], dtype=np.float32))
        return moments, int(self.labels[index])
