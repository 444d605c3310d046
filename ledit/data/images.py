"""Images from an ImageFolder (one sub-folder per class, like torchvision's) with ADM's centre crop.

No torchvision: its PyPI wheels are tied to one torch build, and these few lines are all DiT uses of it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


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
    is part of a checkpoint, decides the flip: a resumed run sees exactly the same batches."""

    def __init__(self, root: str | os.PathLike, height: int, width: int | None = None):
        self.paths, self.labels, self.classes = list_image_folder(root)
        self.height, self.width = height, (height if width is None else width)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        index, flip = key if isinstance(key, tuple) else (key, False)
        with Image.open(self.paths[index]) as image:
            arr = center_crop_arr(image, self.height, self.width)
        if flip:
            arr = arr[:, ::-1]
        return image_to_tensor(np.ascontiguousarray(arr)), self.labels[index]
