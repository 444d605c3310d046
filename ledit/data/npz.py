"""Image sets: ADM-compatible ``.npz`` (``arr_0``: uint8 N x H x W x 3), written by ``ledit sample-ddp`` and read
by ``ledit fid``, and image folders.

``write_image_npz`` streams batches into the archive, so 50K samples at 512x512 (39 GB) never sit in memory.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from ledit.data.images import IMAGE_EXTENSIONS, center_crop_arr, without_bad_images
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


@contextlib.contextmanager
def open_npz(path: str | os.PathLike):
    """The .npz at `path` as an open zip archive; a file that is not one is a ValueError naming it. Errors while
    reading its members (a truncated or damaged archive) are reported with the file name too."""
    name = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name!r} does not exist") from None
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{name!r} is not a readable .npz archive ({type(error).__name__}: {error}); expected "
                         "a NumPy .npz such as an ADM reference batch or the output of `ledit sample-ddp`") from error
    try:
        with archive:
            yield archive
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise ValueError(f"{name!r} is truncated or damaged ({type(error).__name__}: {error}); write it "
                         "again") from error


def npz_keys(path: str | os.PathLike) -> list[str]:
    """The arrays an .npz holds (``np.load(path).files``), read from its directory alone."""
    with open_npz(path) as archive:
        return [name.removesuffix(".npy") for name in archive.namelist() if name.endswith(".npy")]


def read_npz_arrays(path: str | os.PathLike, keys) -> dict[str, np.ndarray]:
    """The arrays `keys` of an .npz (small ones, such as reference statistics), with errors naming the file."""
    with open_npz(path) as archive:
        arrays = {}
        for key in keys:
            with archive.open(f"{key}.npy") as f:
                try:
                    arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
                except ValueError as error:
                    raise ValueError(f"{str(path)!r}: array {key!r} cannot be read ({error})") from error
        return arrays


def _open_arr0(archive: zipfile.ZipFile, path: Path):
    """(stream positioned at the data, shape) of ``arr_0``, checked to be uint8 (N, H, W, 3)."""
    if "arr_0.npy" not in archive.namelist():
        keys = [name.removesuffix(".npy") for name in archive.namelist()]
        raise ValueError(f"{str(path)!r} has no 'arr_0' image array (keys: {keys})")
    f = archive.open("arr_0.npy")
    major, _ = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if len(shape) != 4 or shape[-1] != 3 or dtype != np.uint8 or fortran:
        raise ValueError(f"{str(path)!r}: arr_0 must be uint8 images (N, H, W, 3), found {dtype} {shape}")
    return f, shape


def npz_image_shape(path: str | os.PathLike) -> tuple[int, int, int, int]:
    with open_npz(path) as archive:
        f, shape = _open_arr0(archive, Path(path))
        f.close()
    return shape


def read_npz_batches(path: str | os.PathLike, batch_size: int, limit: int | None = None) -> Iterator[np.ndarray]:
    """``arr_0`` in batches, streamed from the archive (as ADM's evaluator reads it: never all in memory)."""
    with open_npz(path) as archive:
        f, (n, h, w, c) = _open_arr0(archive, Path(path))
        with f:
            remaining = n if limit is None else min(n, limit)
            while remaining:
                count = min(batch_size, remaining)
                data = f.read(count * h * w * c)
                if len(data) != count * h * w * c:
                    raise ValueError(f"{str(path)!r}: arr_0 ends after {n - remaining + len(data) // (h * w * c)} of "
                                     f"its {n} images (a truncated file); write it again")
                yield np.frombuffer(data, dtype=np.uint8).reshape(count, h, w, c)
                remaining -= count


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"image folder {str(folder)!r} has no images with extensions {IMAGE_EXTENSIONS}")
    return files


class ImageSet:
    """N images from an .npz (``arr_0``) or a folder (searched recursively), read in uint8 NHWC batches.
    With `crop` = (height, width), folder images get ADM's centre crop (how reference sets are made). A folder's
    files are checked first (``check``, one of ``IMAGE_CHECKS``); unreadable ones are an error naming them, or
    left out with ``skip_bad``."""

    def __init__(self, source: str | os.PathLike, limit: int | None = None, crop: tuple[int, int] | None = None,
                 check: str = "header", skip_bad: bool = False):
        self.source, self.crop = Path(source), crop
        if self.source.is_dir():
            files = list_image_files(self.source)
            self.files = [files[i] for i in without_bad_images(files, check, skip_bad, f"{str(self.source)!r}")]
            self.files = self.files[:limit]
            self.count = len(self.files)
        elif self.source.is_file():
            self.files = None
            self.count = min(npz_image_shape(self.source)[0], limit or float("inf"))
        else:
            raise FileNotFoundError(f"{str(self.source)!r} is neither an .npz file nor an image folder")
        if self.count == 0:
            raise ValueError(f"{str(self.source)!r} holds no images")

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
            try:
                with Image.open(file) as image:
                    images.append(center_crop_arr(image, *self.crop) if self.crop else
                                  np.asarray(image.convert("RGB")))
            except Exception as error:  # noqa: BLE001 - any decoder error means a damaged file
                raise ValueError(f"cannot read image {str(file)!r} ({type(error).__name__}: {error}): replace or "
                                 "delete it (--check-images full finds such files before the run)") from error
        if len({im.shape for im in images}) > 1:
            raise ValueError(f"{str(self.source)!r}: images differ in size; pass a crop size or use an .npz")
        return np.stack(images)
