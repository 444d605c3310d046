"""Sliced Wasserstein distance between two image sets on Laplacian-pyramid patches (Karras et al. 2018,
"Progressive Growing of GANs", App. D): a weight-free metric of multi-scale local image statistics.

Each set is decomposed into a Laplacian pyramid, from full resolution down to the coarsest level whose shorter
side is still >= ``min_resolution`` (that level keeps its low-pass content). From every level we sample random
7x7 neighbourhoods ("descriptors"), normalise each colour channel, and estimate the earth mover's distance between
the two descriptor clouds as the mean, over random unit directions, of the exact 1D Wasserstein-1 distance between
the projections. Distances are reported x1e3, as in the paper.

[ours] Both sets are normalised with the mean and standard deviation of their pooled descriptors, so that a global
colour or contrast shift counts as a difference and the distance is symmetric in its two arguments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Binomial 5-tap filter of Burt & Adelson's pyramid; separable, sums to 1.
_BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)
SWD_SCALE = 1e3


def _blur(images: torch.Tensor) -> torch.Tensor:
    """Separable 5x5 binomial blur, per channel, with reflected borders (no dark frame at the edges)."""
    channels = images.shape[1]
    taps = torch.tensor(_BINOMIAL_5, dtype=images.dtype, device=images.device) / sum(_BINOMIAL_5)
    vertical = taps.view(1, 1, 5, 1).expand(channels, 1, 5, 1)
    horizontal = taps.view(1, 1, 1, 5).expand(channels, 1, 1, 5)
    images = F.pad(images, (2, 2, 2, 2), mode="reflect")
    return F.conv2d(F.conv2d(images, vertical, groups=channels), horizontal, groups=channels)


def _downsample(images: torch.Tensor) -> torch.Tensor:
    return _blur(images)[:, :, ::2, ::2]


def _upsample(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-insertion upsampling followed by the same blur (x4 to keep the mean), cropped to ``size``."""
    n, c, h, w = images.shape
    up = images.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = images * 4.0
    return _blur(up)[:, :, : size[0], : size[1]]


def laplacian_pyramid(images: torch.Tensor, min_resolution: int = 16) -> list[torch.Tensor]:
    """Band-pass levels from full resolution down; the last level is the low-pass residual at the coarsest size
    whose shorter side is >= ``min_resolution``. Summing the upsampled levels reconstructs ``images`` exactly."""
    levels = []
    current = images
    while min(current.shape[-2:]) // 2 >= min_resolution:
        smaller = _downsample(current)
        levels.append(current - _upsample(smaller, current.shape[-2:]))
        current = smaller
    levels.append(current)
    return levels


def _patch_corners(n: int, count: int, height: int, width: int, size: int, seed: int):
    """Top-left corners of ``count`` random ``size`` x ``size`` patches in each of ``n`` images: (n, count, 1, 1)
    rows and columns. They depend only on the arguments, never on the other set or on the argument order."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, height - size + 1, (n, count, 1, 1), generator=generator)
    cols = torch.randint(0, width - size + 1, (n, count, 1, 1), generator=generator)
    return rows, cols


def _gather_patches(level: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, size: int) -> torch.Tensor:
    """The patches at the given corners, flattened: (N * count, size * size, C)."""
    n, c = level.shape[:2]
    offsets = torch.arange(size)
    image_index = torch.arange(n).view(n, 1, 1, 1)
    channels_last = level.permute(0, 2, 3, 1)
    patches = channels_last[image_index, rows + offsets.view(1, 1, -1, 1), cols + offsets.view(1, 1, 1, -1)]
    return patches.reshape(-1, size * size, c)


def level_descriptors(
    images: torch.Tensor, level: int, count: int, size: int, min_resolution: int, seed: int, chunk_size: int = 256
) -> torch.Tensor:
    """Random patches of Laplacian-pyramid level ``level`` (0 = finest): (N * count, size * size, C).

    Images are converted to float and decomposed ``chunk_size`` at a time, so memory holds one level's
    descriptors, not a float copy of the whole image set and its pyramid.
    """
    parts, corners = [], None
    for start in range(0, images.shape[0], chunk_size):
        chunk = images[start : start + chunk_size].detach().cpu().to(torch.float32)
        band = laplacian_pyramid(chunk, min_resolution)[level]
        if corners is None:
            level_seed = seed + 1_000_003 * (level + 1)
            corners = _patch_corners(images.shape[0], count, *band.shape[-2:], size, level_seed)
        rows, cols = (t[start : start + chunk_size] for t in corners)
        parts.append(_gather_patches(band, rows, cols, size))
    return torch.cat(parts)


def wasserstein_1d(a_sorted: torch.Tensor, b_sorted: torch.Tensor) -> torch.Tensor:
    """Exact Wasserstein-1 distance between empirical 1D distributions given as sorted rows, (P, n) and (P, m)
    -> (P,): the integral over quantiles u of |F_a^-1(u) - F_b^-1(u)|, also when n != m."""
    n, m = a_sorted.shape[-1], b_sorted.shape[-1]
    if n == m:
        return (a_sorted - b_sorted).abs().mean(dim=-1)
    # The two quantile functions are step functions with steps at i/n and j/m; integrate over the merged steps.
    steps_a = torch.arange(1, n + 1, dtype=torch.float64) / n
    steps_b = torch.arange(1, m + 1, dtype=torch.float64) / m
    ends = torch.cat([steps_a, steps_b]).sort().values
    widths = torch.diff(ends, prepend=ends.new_zeros(1))
    middles = ends - widths / 2
    index_a = (middles * n).floor().long().clamp_(max=n - 1).to(a_sorted.device)
    index_b = (middles * m).floor().long().clamp_(max=m - 1).to(b_sorted.device)
    gaps = (a_sorted[:, index_a] - b_sorted[:, index_b]).abs()
    return gaps @ widths.to(gaps)


def sliced_wasserstein_descriptors(
    descriptors_a: torch.Tensor,
    descriptors_b: torch.Tensor,
    num_projections: int = 512,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mean over ``num_projections`` random unit directions of the 1D Wasserstein-1 distance between the
    projected point clouds (n, D) and (m, D). With D = 1 every direction is +-1, so this is the exact 1D W1."""
    if descriptors_a.dim() != 2 or descriptors_b.dim() != 2 or descriptors_a.shape[1] != descriptors_b.shape[1]:
        raise ValueError(
            "descriptors must be (n, D) and (m, D) with the same D; got "
            f"{tuple(descriptors_a.shape)} and {tuple(descriptors_b.shape)}"
        )
    dim = descriptors_a.shape[1]
    directions = torch.randn(num_projections, dim, generator=generator, dtype=torch.float64)
    directions = (directions / directions.norm(dim=1, keepdim=True)).to(descriptors_a)
    # Directions per pass: keep each (directions, n + m) intermediate around 16M values.
    chunk_size = max(1, min(64, 2**24 // (len(descriptors_a) + len(descriptors_b))))
    total = descriptors_a.new_zeros(())
    for chunk in directions.split(chunk_size):
        projected_a = (chunk @ descriptors_a.T).sort(dim=1).values
        projected_b = (chunk @ descriptors_b.T).sort(dim=1).values
        total = total + wasserstein_1d(projected_a, projected_b).sum()
    return total / num_projections


def _check_images(images: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty; pass at least one image")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"{name}.dtype={images.dtype} is not supported; pass uint8 or floating-point images")
    return images


def sliced_wasserstein(
    images_a: torch.Tensor,
    images_b: torch.Tensor,
    descriptors_per_image: int = 128,
    patch_size: int = 7,
    num_projections: int = 512,
    min_resolution: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """SWD x1e3 between two NCHW image batches on each Laplacian-pyramid level.

    ``images_a`` and ``images_b`` must share channels, height, width and value scale (both uint8, or both float
    in one range); the number of images may differ. Returns ``{"HxW": distance, ...}`` from the finest level to
    the coarsest, plus ``"mean"`` over the levels. The same ``seed`` picks the same patches and directions, so
    results are reproducible and the two arguments can be swapped.
    """
    a = _check_images(images_a, "images_a")
    b = _check_images(images_b, "images_b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(
            f"images_a and images_b must have the same (C, H, W); got {tuple(a.shape[1:])} and {tuple(b.shape[1:])}"
        )
    if (images_a.dtype == torch.uint8) != (images_b.dtype == torch.uint8):
        raise TypeError(
            f"images_a is {images_a.dtype} and images_b is {images_b.dtype}; convert both to one value scale "
            "(both uint8 0..255 or both float) before comparing"
        )
    if patch_size < 1 or descriptors_per_image < 1 or num_projections < 1:
        raise ValueError(
            "patch_size, descriptors_per_image and num_projections must be >= 1; got "
            f"{patch_size}, {descriptors_per_image}, {num_projections}"
        )
    if min_resolution < max(patch_size, 4):
        raise ValueError(f"min_resolution={min_resolution} must be >= 4 and >= patch_size={patch_size}")
    if min(a.shape[-2:]) < min_resolution:
        raise ValueError(
            f"images are {a.shape[-2]}x{a.shape[-1]}, smaller than min_resolution={min_resolution}; "
            "pass larger images or a smaller min_resolution"
        )

    generator = torch.Generator().manual_seed(seed)
    distances = {}
    for level, band in enumerate(laplacian_pyramid(a[:1].float(), min_resolution)):
        # Both sets take their patch corners from the same per-level seed, so the result does not depend on
        # which set is passed first (and identical sets give exactly 0).
        desc_a, desc_b = (
            level_descriptors(images, level, descriptors_per_image, patch_size, min_resolution, seed)
            for images in (a, b)
        )
        # Per-channel statistics of the pooled descriptors, without concatenating them.
        total = desc_a.shape[0] * desc_a.shape[1] + desc_b.shape[0] * desc_b.shape[1]
        mean = (desc_a.sum(dim=(0, 1)) + desc_b.sum(dim=(0, 1))) / total
        square = ((desc_a - mean) ** 2).sum(dim=(0, 1)) + ((desc_b - mean) ** 2).sum(dim=(0, 1))
        std = (square / (total - 1)).sqrt().clamp_min(1e-8)
        desc_a = ((desc_a - mean) / std).flatten(1)
        desc_b = ((desc_b - mean) / std).flatten(1)
        distance = sliced_wasserstein_descriptors(desc_a, desc_b, num_projections, generator)
        distances[f"{band.shape[-2]}x{band.shape[-1]}"] = float(distance) * SWD_SCALE
    distances["mean"] = sum(distances.values()) / len(distances)
    return distances
