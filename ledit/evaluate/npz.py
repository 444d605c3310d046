"""Image sets for evaluation: ADM-compatible ``.npz`` (``arr_0``: uint8 N x H x W x 3) and image folders.

``write_image_npz`` streams batches into the archive, so 50K samples at 512x512 (39 GB) never sit in memory.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from ledit.data.files import atomic_path
from ledit.data.images import IMAGE_EXTENSIONS


def write_image_npz(path: str | os.PathLike, batches: Iterable[np.ndarray], count: int, height: int, width: int):
    """Write `count` images from uint8 NHWC `batches` as ``arr_0`` of an uncompressed .npz, atomically."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
              "shape": (count, height, width, 3)}
    written = 0
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            with archive.open("arr_0.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_2_0(f, header)
                for batch in batches:
                    if batch.dtype != np.uint8 or batch.shape[1:] != (height, width, 3):
                        raise ValueError(f"batch {batch.shape} {batch.dtype}: expected uint8 (n, {height}, {width}, 3)")
                    batch = batch[: count - written]
                    f.write(np.ascontiguousarray(batch).tobytes())
                    written += len(batch)
        if written != count:
            raise ValueError(f"got {written} images for an archive of {count}")
    return Path(path)


def _check_images(arr: np.ndarray, source: str) -> np.ndarray:
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"{source}: expected uint8 images (N, H, W, 3), found {arr.dtype} {arr.shape}")
    return arr


def load_npz_images(path: str | os.PathLike) -> np.ndarray:
    """``arr_0`` of an ADM-style .npz, memory-mapped when the archive is uncompressed."""
    path = Path(path)
    with np.load(path) as archive:
        if "arr_0" not in archive.files:
            raise ValueError(f"{str(path)!r} has no 'arr_0' image array (keys: {archive.files})")
        return _check_images(archive["arr_0"], str(path))


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"image folder {str(folder)!r} has no images with extensions {IMAGE_EXTENSIONS}")
    return files


class ImageSet:
    """N images from an .npz (``arr_0``) or a folder (searched recursively), read in uint8 NHWC batches."""

    def __init__(self, source: str | os.PathLike, limit: int | None = None):
        self.source = Path(source)
        if self.source.is_dir():
            self.files, self.array = list_image_files(self.source)[:limit], None
        elif self.source.is_file():
            self.files, self.array = None, load_npz_images(self.source)[:limit]
        else:
            raise FileNotFoundError(f"{str(self.source)!r} is neither an .npz file nor an image folder")

    def __len__(self) -> int:
        return len(self.array) if self.files is None else len(self.files)

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self), batch_size):
            if self.files is None:
                yield np.asarray(self.array[start : start + batch_size])
                continue
            images = []
            for file in self.files[start : start + batch_size]:
                with Image.open(file) as image:
                    images.append(np.asarray(image.convert("RGB")))
            if len({im.shape for im in images}) > 1:
                raise ValueError(f"{str(self.source)!r}: images differ in size; resize them or use an .npz")
            yield np.stack(images)
