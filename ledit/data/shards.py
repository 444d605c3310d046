"""Latent shards: a folder of a few large ``.npy`` arrays plus ``index.json``, instead of a million tiny files.

Layout (written by ``ledit extract-latents``)::

    index.json        format, image/latent sizes, VAE, scale factor, classes, shard names, complete flag
    labels.npy        int64 (N,): class of every image, in ImageFolder order
    shard-00000.npy   float16 (n, 2, 2C, h, w): VAE posterior moments (mean, logvar) of image i, [:, 1] = flipped

Native-resolution shards (``ledit extract-latents --native-resolution``, version 2) hold images of different
sizes: ``sizes.npy`` int64 (N, 2) gives each image's latent (h, w), and each shard is one flat array of its
images' (2, 2C, h_i, w_i) moments back to back (the index lists each shard's length). ``latent_shape`` is then
the bound's: (2C, H / 8, W / 8) for images of at most H x W pixels. Version-1 readers refuse them by version.

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
NATIVE_SHARD_VERSION = 2  # variable-size latents
INDEX_NAME = "index.json"
LABELS_NAME = "labels.npy"
SIZES_NAME = "sizes.npy"


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
    if index.get("format") != SHARD_FORMAT or index.get("version") not in (SHARD_VERSION, NATIVE_SHARD_VERSION):
        raise ShardError(f"{str(path)!r} is not a {SHARD_FORMAT} v{SHARD_VERSION} or v{NATIVE_SHARD_VERSION} index")
    return index


def is_native(index: dict) -> bool:
    """Whether the index describes native-resolution (variable-size) shards."""
    return index["version"] == NATIVE_SHARD_VERSION


def shard_items(index: dict, i: int) -> range:
    """The images shard i holds."""
    start = i * index["shard_size"]
    return range(start, min(start + index["shard_size"], index["num_images"]))


def shard_shape(index: dict, i: int) -> tuple[int, ...]:
    if is_native(index):
        return (index["shard_lengths"][i],)
    return (len(shard_items(index, i)), 2, *index["latent_shape"])


def item_elements(index: dict, sizes: np.ndarray | None) -> np.ndarray:
    """(N,) stored elements of each image's (2, 2C, h, w) moments; ``sizes`` the (N, 2) latent sizes of native
    shards (None for fixed-size ones)."""
    channels = index["latent_shape"][0]
    if sizes is None:
        return np.full(index["num_images"], 2 * int(np.prod(index["latent_shape"])), dtype=np.int64)
    return 2 * channels * sizes.prod(axis=1).astype(np.int64)


def shard_offsets(index: dict, elements: np.ndarray, i: int) -> np.ndarray:
    """(n + 1,) element offsets of shard i's images in its flattened array, ending with the shard's length."""
    return np.concatenate([[0], np.cumsum(elements[shard_items(index, i)])])


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
        self.latent_sizes = self._read_sizes()
        elements = item_elements(self.index, self.latent_sizes if self.native else None)
        offsets = [shard_offsets(self.index, elements, i) for i in range(num_shards)]
        if self.native and [int(o[-1]) for o in offsets] != self.index["shard_lengths"]:
            raise ShardError(f"{str(self.root / SIZES_NAME)!r} disagrees with the shard lengths of the index: "
                             "re-run `ledit extract-latents`")
        self._item_offsets = np.concatenate([o[:-1] for o in offsets])
        self._shards: dict[int, np.ndarray] = {}  # opened lazily, per DataLoader worker process

    @property
    def native(self) -> bool:
        """Whether the images have their own sizes (native-resolution shards)."""
        return is_native(self.index)

    def _read_sizes(self) -> np.ndarray:
        """(N, 2) latent (h, w) of every image: from sizes.npy for native shards, else all the index's."""
        if not self.native:
            return np.tile(np.asarray(self.index["latent_shape"][1:], dtype=np.int64), (self.index["num_images"], 1))
        path = self.root / SIZES_NAME
        try:
            sizes = np.load(path)
        except (OSError, ValueError) as e:
            raise ShardError(f"cannot read {str(path)!r} ({e}): re-run `ledit extract-latents`") from e
        if sizes.shape != (self.index["num_images"], 2) or sizes.min(initial=1) < 1:
            raise ShardError(f"{str(path)!r} does not hold {self.index['num_images']} latent sizes (h, w) >= 1: "
                             "re-run `ledit extract-latents`")
        return sizes.astype(np.int64)

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
        if self.native:
            (h, w), start = self.latent_sizes[index], self._item_offsets[index]
            channels = self.index["latent_shape"][0]
            item = self._shards[shard][start : start + 2 * channels * h * w].reshape(2, channels, h, w)[int(flip)]
        else:
            item = self._shards[shard][offset, int(flip)]
        return torch.from_numpy(np.array(item, dtype=np.float32)), int(self.labels[index])
