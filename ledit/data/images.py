"""Images from an ImageFolder (one sub-folder per class, like torchvision's) with ADM's centre crop.

No torchvision: its PyPI wheels are tied to one torch build, and these few lines are all DiT uses of it.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image

from ledit.runtime import all_gather_objects

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# How image files are checked before a run uses them: open each (the header: format and size), decode each
# fully (finds truncated files too; as slow as an epoch of reading), or not at all.
IMAGE_CHECKS = ("header", "full", "none")
SCAN_THREADS = 16  # opening files is I/O-bound: threads overlap the waits
SHOWN_BAD_IMAGES = 5  # how many unreadable files an error or warning names; the count says how many in all

logger = logging.getLogger("ledit.data")


def add_image_check_arguments(parser: argparse.ArgumentParser) -> None:
    """--check-images and --skip-bad-images, for the commands that read image folders."""
    parser.add_argument("--check-images", choices=IMAGE_CHECKS, default="header",
                        help="check every image before the run starts: header (default; opens each file, fast), "
                             "full (decodes each file: also finds truncated ones), none")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="leave unreadable images out (each is logged) instead of stopping with an error")


def image_problem(path: str | os.PathLike, full: bool = False) -> str | None:
    """Why an image file cannot be used, or None: opening reads its header (format, size); ``full`` decodes it."""
    try:
        with Image.open(path) as image:
            if full:
                image.load()
            if min(image.size) < 1:
                return f"it is {image.size[0]}x{image.size[1]} pixels"
    except Exception as error:  # noqa: BLE001 - whatever a decoder raises on a damaged file, the file is unusable
        return f"{type(error).__name__}: {error}"
    return None


def find_bad_images(paths: list[Path], check: str = "header") -> dict[int, str]:
    """{index: reason} of the files ``image_problem`` refuses, with ``check`` one of IMAGE_CHECKS. Under torchrun
    every rank checks its share of the files and all ranks get the whole answer."""
    if check not in IMAGE_CHECKS:
        raise ValueError(f"check must be one of {IMAGE_CHECKS}, got {check!r}")
    if check == "none":
        return {}
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    mine = range(rank, len(paths), world)
    with ThreadPoolExecutor(SCAN_THREADS) as pool:
        problems = pool.map(lambda i: image_problem(paths[i], full=check == "full"), mine)
        found = {i: problem for i, problem in zip(mine, problems) if problem is not None}
    return {i: problem for part in all_gather_objects(found) for i, problem in part.items()}


def describe_bad_images(paths: list[Path], bad: dict[int, str]) -> str:
    """"3 unreadable images, e.g. a.jpg (OSError: ...); b.png (...)": a line naming the first few."""
    shown = "; ".join(f"{paths[i]} ({bad[i]})" for i in sorted(bad)[:SHOWN_BAD_IMAGES])
    more = f" and {len(bad) - SHOWN_BAD_IMAGES} more" if len(bad) > SHOWN_BAD_IMAGES else ""
    return f"{len(bad)} unreadable image{'s' if len(bad) != 1 else ''}: {shown}{more}"


def without_bad_images(paths: list[Path], check: str, skip: bool, where: str) -> list[int]:
    """Indices of `paths` to use: all of them, or (``skip``) those the check passes, the others logged. Without
    ``skip`` a bad image is an error that names it and the two ways on."""
    bad = find_bad_images(paths, check)
    if bad and not skip:
        raise ValueError(f"{where}: {describe_bad_images(paths, bad)}. Replace or delete them, or pass "
                         "--skip-bad-images to leave them out")
    if bad:
        logger.warning("%s: skipping %s", where, describe_bad_images(paths, bad))
        for i in sorted(bad):
            logger.info("skipped %s: %s", paths[i], bad[i])
    return [i for i in range(len(paths)) if i not in bad]


def center_crop_arr(pil_image: Image.Image, height: int, width: int | None = None) -> np.ndarray:
    """ADM's (guided-diffusion) centre crop, generalised to height x width: BOX-halve while the image is at least
    twice the target, BICUBIC-resize so it just covers the target, then crop the centre. Returns uint8 HWC RGB."""
    width = height if width is None else width
    pil_image = pil_image.convert("RGB")
    while pil_image.size[0] >= 2 * width and pil_image.size[1] >= 2 * height:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
    scale = max(width / pil_image.size[0], height / pil_image.size[1])
    new_size = (max(width, round(pil_image.size[0] * scale)), max(height, round(pil_image.size[1] * scale)))
    arr = np.asarray(pil_image.resize(new_size, resample=Image.BICUBIC))
    top, left = (arr.shape[0] - height) // 2, (arr.shape[1] - width) // 2
    return arr[top : top + height, left : left + width].copy()


def list_image_folder(root: str | os.PathLike) -> tuple[list[Path], list[int], list[str]]:
    """(paths, labels, class names) in torchvision ImageFolder order: classes sorted, files sorted within a class."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {str(root)!r} does not exist: pass an ImageFolder (one sub-folder per class)"
        )
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
    if not classes:
        raise ValueError(f"data folder {str(root)!r} has no class sub-folders: expected root/<class>/<image>.jpg")
    paths, labels = [], []
    for label, name in enumerate(classes):
        for dirpath, _, filenames in sorted(os.walk(root / name, followlinks=True)):
            for filename in sorted(filenames):
                if filename.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(Path(dirpath) / filename)
                    labels.append(label)
    if not paths:
        raise ValueError(f"data folder {str(root)!r} has no images with extensions {IMAGE_EXTENSIONS}")
    return paths, labels, classes


def image_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> float CHW in [-1, 1] (DiT's Normalize(0.5, 0.5))."""
    return torch.from_numpy(arr).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_uint8_nhwc(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] NCHW (decoded samples) -> uint8 NHWC on the CPU, rounded as DiT's sample_ddp.py does; the
    inverse of ``image_to_tensor`` up to rounding."""
    return torch.clamp(127.5 * images + 128.0, 0, 255).permute(0, 2, 3, 1).to("cpu", dtype=torch.uint8)


class ImageFolderDataset(torch.utils.data.Dataset):
    """Centre-cropped images in [-1, 1]. Items are keyed by (index, flip) so that the sampler, whose random state
    is part of a checkpoint, decides the flip: a resumed run sees exactly the same batches.

    Every file is checked when the dataset is made (``check``, one of IMAGE_CHECKS), so a damaged file stops the
    run before it starts, not when it is drawn hours in; with ``skip_bad`` such files are logged and left out,
    and a file that passes the check but fails to decode when drawn is replaced by the next image."""

    def __init__(self, root: str | os.PathLike, height: int, width: int | None = None, check: str = "header",
                 skip_bad: bool = False):
        paths, labels, self.classes = list_image_folder(root)
        keep = without_bad_images(paths, check, skip_bad, f"data folder {str(root)!r}")
        self.paths, self.labels = [paths[i] for i in keep], [labels[i] for i in keep]
        self.height, self.width = height, (height if width is None else width)
        self.skip_bad = skip_bad

    def __len__(self) -> int:
        return len(self.paths)

    def crop_size(self, index: int) -> tuple[int, int]:
        """The (height, width) image ``index`` is cropped to."""
        return self.height, self.width

    def _read(self, index: int) -> tuple[np.ndarray, int]:
        """(centre crop, label) of image `index`, or with ``skip_bad`` of the next image that can be decoded."""
        for i in [*range(index, len(self.paths)), *range(index)]:
            try:
                with Image.open(self.paths[i]) as image:
                    # A replacement image gets the size planned for ``index``.
                    return center_crop_arr(image, *self.crop_size(index)), self.labels[i]
            except Exception as error:  # noqa: BLE001 - any decoder error means a damaged file
                problem = f"{type(error).__name__}: {error}"
                if not self.skip_bad:
                    raise ValueError(f"cannot read image {str(self.paths[i])!r} ({problem}): replace or delete it, "
                                     "or pass --skip-bad-images (--check-images full finds such files before the "
                                     "run)") from error
                logger.warning("skipping unreadable image %s (%s): using the next image instead", self.paths[i],
                               problem)
        raise ValueError(f"none of the {len(self.paths)} images can be decoded")

    def __getitem__(self, key):
        index, flip = key if isinstance(key, tuple) else (key, False)
        arr, label = self._read(index)
        if flip:
            arr = arr[:, ::-1]
        return image_to_tensor(np.ascontiguousarray(arr)), label


def native_size(width: int, height: int, max_area: int, multiple: int) -> tuple[int, int]:
    """The (height, width) an image of ``width`` x ``height`` pixels is resized to for native-resolution training:
    shrunk (never enlarged) until its area is at most ``max_area``, then each side rounded down to a multiple of
    ``multiple`` (at least one). The aspect ratio is kept up to that rounding (the centre crop trims the rest),
    except that a side too short for one multiple gets one, and the other side is trimmed to keep the bound."""
    shrink = min(1.0, math.sqrt(max_area / (width * height)))
    height, width = int(height * shrink), int(width * shrink)

    def whole(side: int, other: int) -> int:
        return max(multiple, min(side, max_area // other) // multiple * multiple)

    short_first = height <= width
    first = whole(height if short_first else width, multiple)
    second = whole(width if short_first else height, first)
    return (first, second) if short_first else (second, first)


def image_sizes(paths: list[Path]) -> list[tuple[int, int]]:
    """(width, height) of every image, from its header (threads overlap the file reads)."""
    def size(path):
        try:
            with Image.open(path) as image:
                return image.size
        except Exception as error:  # noqa: BLE001 - any decoder error means a damaged file
            raise ValueError(f"cannot read image {str(path)!r} ({type(error).__name__}: {error}): replace or "
                             "delete it, or pass --skip-bad-images with --check-images header") from error

    with ThreadPoolExecutor(SCAN_THREADS) as pool:
        return list(pool.map(size, paths))


class NativeImageFolderDataset(ImageFolderDataset):
    """An ImageFolder at native resolution: each image keeps its aspect ratio, shrunk to an area of at most
    ``max_area`` pixels with sides that are multiples of ``multiple`` (``native_size``); ``sizes`` holds every
    image's (height, width)."""

    def __init__(self, root: str | os.PathLike, max_area: int, multiple: int, check: str = "header",
                 skip_bad: bool = False):
        if max_area < multiple * multiple:
            raise ValueError(f"max_area={max_area} cannot hold one {multiple}x{multiple} image")
        super().__init__(root, multiple, multiple, check=check, skip_bad=skip_bad)
        self.max_area, self.multiple = max_area, multiple
        self.sizes = [native_size(w, h, max_area, multiple) for w, h in image_sizes(self.paths)]

    def crop_size(self, index: int) -> tuple[int, int]:
        return self.sizes[index]
