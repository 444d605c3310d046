"""Image sets: ADM-compatible ``.npz`` (``arr_0``: uint8 N x H x W x 3), written by ``ledit sample-ddp`` and read
by ``ledit fid``, and image folders.

``write_image_npz`` streams batches into the archive, so 50K samples at 512x512 (39 GB) never sit in memory.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from ledit.data.images import IMAGE_EXTENSIONS, center_crop_arr
from ledit.files import atomic_path


def write_image_npz(path: str | os.PathLike, batches: Iterable[np.ndarray], count: int, height: int, width: int,
                    extra: dict[str, np.ndarray] | None = None):
    """Write `count` images from uint8 NHWC `batches` as ``arr_0`` of an uncompressed .npz (plus `extra` arrays,
    e.g. the mu/sigma of an ADM reference batch), atomically."""
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
            for name, value in (extra or {}).items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(value))
        if written != count:
            raise ValueError(f"got {written} images for an archive of {count}")
    return Path(path)


def npz_keys(path: str | os.PathLike) -> list[str]:
    with np.load(path) as archive:
        return archive.files


def _open_arr0(archive: zipfile.ZipFile, path: Path):
    """(stream positioned at the data, shape) of ``arr_0``, checked to be uint8 (N, H, W, 3)."""
    if "arr_0.npy" not in archive.namelist():
        raise ValueError(f"{str(path)!r} has no 'arr_0' image array (keys: {npz_keys(path)})")
    f = archive.open("arr_0.npy")
    major, _ = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if len(shape) != 4 or shape[-1] != 3 or dtype != np.uint8 or fortran:
        raise ValueError(f"{str(path)!r}: arr_0 must be uint8 images (N, H, W, 3), found {dtype} {shape}")
    return f, shape


def npz_image_shape(path: str | os.PathLike) -> tuple[int, int, int, int]:
    with zipfile.ZipFile(path) as archive:
        f, shape = _open_arr0(archive, Path(path))
        f.close()
    return shape


def read_npz_batches(path: str | os.PathLike, batch_size: int, limit: int | None = None) -> Iterator[np.ndarray]:
    """``arr_0`` in batches, streamed from the archive (as ADM's evaluator reads it: never all in memory)."""
    with zipfile.ZipFile(path) as archive:
        f, (n, h, w, c) = _open_arr0(archive, Path(path))
        with f:
            remaining = n if limit is None else min(n, limit)
            while remaining:
                count = min(batch_size, remaining)
                yield np.frombuffer(f.read(count * h * w * c), dtype=np.uint8).reshape(count, h, w, c)
                remaining -= count


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"image folder {str(folder)!r} has no images with extensions {IMAGE_EXTENSIONS}")
    return files


class ImageSet:
    """N images from an .npz (``arr_0``) or a folder (searched recursively), read in uint8 NHWC batches.
    With `crop` = (height, width), folder images get ADM's centre crop (how reference sets are made)."""

    def __init__(self, source: str | os.PathLike, limit: int | None = None, crop: tuple[int, int] | None = None):
        self.source, self.crop = Path(source), crop
        if self.source.is_dir():
            self.files = list_image_files(self.source)[:limit]
            self.count = len(self.files)
        elif self.source.is_file():
            self.files = None
            self.count = min(npz_image_shape(self.source)[0], limit or float("inf"))
        else:
            raise FileNotFoundError(f"{str(self.source)!r} is neither an .npz file nor an image folder")

    def __len__(self) -> int:
        return self.count

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        if self.files is None:
            yield from read_npz_batches(self.source, batch_size, self.count)
            return
        for start in range(0, len(self), batch_size):
            yield self.read_files(self.files[start : start + batch_size])

    def read_files(self, files: list[Path]) -> np.ndarray:
        images = []
        for file in files:
            with Image.open(file) as image:
                images.append(center_crop_arr(image, *self.crop) if self.crop else np.asarray(image.convert("RGB")))
        if len({im.shape for im in images}) > 1:
            raise ValueError(f"{str(self.source)!r}: images differ in size; pass a crop size or use an .npz")
        return np.stack(images)
