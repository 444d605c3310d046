"""Procedural images whose statistics do not depend on the canvas size, so that a model trained at 32x32 has a
well-defined correct distribution at 48x48, 64x64 or 32x64.

An image is a textured background (a colour plus a sinusoidal grating of fixed period, random orientation and
phase) with coloured shapes of one class painted over it. Everything is in absolute pixels: shape sizes are fixed,
shape centres form a Poisson process of fixed density over the plane (drawn over the canvas plus a margin, so
shapes cut by the border are as common at every size), and the grating's period does not change. A crop of a
larger image therefore has the same distribution as a small image.
"""

from __future__ import annotations

import hashlib
import math

import torch

SHAPE_CLASSES = ("circle", "square", "triangle")
# Saturated shape colours, far from the muted backgrounds, so a model must place them, not blend them.
PALETTE = torch.tensor(
    [
        [0.90, 0.15, 0.15],
        [0.15, 0.75, 0.20],
        [0.15, 0.30, 0.90],
        [0.95, 0.85, 0.10],
        [0.85, 0.20, 0.85],
        [0.10, 0.80, 0.85],
    ]
)
SHAPE_RADIUS = (3.0, 6.0)  # pixels, uniform
SHAPES_PER_PIXEL = 1.0 / 256.0  # Poisson density of shape centres: 4 per 32x32 on average
GRATING_PERIOD = 6.0  # pixels
GRATING_AMPLITUDE = 0.12
BACKGROUND_RANGE = (0.25, 0.65)  # per channel, uniform


# Everything that changes the images; part of the key of cached checkpoints trained on them.
DATASET_PARAMETERS = {
    "classes": SHAPE_CLASSES,
    "palette": PALETTE.tolist(),
    "radius": SHAPE_RADIUS,
    "shapes_per_pixel": SHAPES_PER_PIXEL,
    "grating": (GRATING_PERIOD, GRATING_AMPLITUDE),
    "background": BACKGROUND_RANGE,
}


def derive_seed(*parts) -> int:
    """A 63-bit seed from any labels, e.g. ``derive_seed("train", seed, step)``: streams named differently never
    share images, and each is reproducible on its own."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _shape_distance(kind: int, dy: torch.Tensor, dx: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Signed distance (pixels, negative inside) to a shape of class ``kind`` centred at the origin."""
    if SHAPE_CLASSES[kind] == "circle":
        return torch.sqrt(dy**2 + dx**2) - radius
    if SHAPE_CLASSES[kind] == "square":
        return torch.maximum(dy.abs(), dx.abs()) - 0.85 * radius
    # Upward equilateral triangle with inradius radius/2: the largest signed distance to its three edge lines.
    # Image rows grow downwards, so the base's outward normal is +y.
    normals = ((1.0, 0.0), (-0.5, -math.sqrt(3) / 2), (-0.5, math.sqrt(3) / 2))
    return torch.stack([ny * dy + nx * dx for ny, nx in normals]).amax(dim=0) - 0.5 * radius


def render_shapes(
    num_images: int,
    height: int,
    width: int,
    seed: int,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``num_images`` images of ``height`` x ``width``, deterministically from ``seed``.

    ``labels`` (N,) picks each image's shape class (index into ``SHAPE_CLASSES``); by default the classes cycle
    0, 1, 2, 0, ... Returns (uint8 images (N, 3, H, W), int64 labels (N,)).
    """
    for name, value in (("num_images", num_images), ("height", height), ("width", width)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if labels is None:
        labels = torch.arange(num_images) % len(SHAPE_CLASSES)
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (num_images,) or labels.min() < 0 or labels.max() >= len(SHAPE_CLASSES):
        raise ValueError(f"labels must be ({num_images},) class indices in [0, {len(SHAPE_CLASSES)}), got {labels}")

    generator = torch.Generator().manual_seed(seed)

    def uniform(*shape, low=0.0, high=1.0):
        return low + (high - low) * torch.rand(*shape, generator=generator)

    ys = torch.arange(height, dtype=torch.float32).view(1, height, 1) + 0.5
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, width) + 0.5

    # Background: a muted colour plus a luminance grating of fixed period.
    colour = uniform(num_images, 3, 1, 1, low=BACKGROUND_RANGE[0], high=BACKGROUND_RANGE[1])
    angle = uniform(num_images, 1, 1, high=math.pi)
    phase = uniform(num_images, 1, 1, high=2 * math.pi)
    along = ys * torch.sin(angle) + xs * torch.cos(angle)
    grating = GRATING_AMPLITUDE * torch.sin(2 * math.pi * along / GRATING_PERIOD + phase)
    images = colour + grating.unsqueeze(1)

    # Shapes: centres over the canvas grown by the largest radius on every side, painted in drawing order.
    margin = SHAPE_RADIUS[1]
    area = (height + 2 * margin) * (width + 2 * margin)
    counts = torch.poisson(torch.full((num_images,), area * SHAPES_PER_PIXEL), generator=generator).long()
    max_count = int(counts.max()) if num_images else 0
    centre_y = uniform(num_images, max_count, low=-margin, high=height + margin)
    centre_x = uniform(num_images, max_count, low=-margin, high=width + margin)
    radius = uniform(num_images, max_count, low=SHAPE_RADIUS[0], high=SHAPE_RADIUS[1])
    shape_colour = PALETTE[torch.randint(0, len(PALETTE), (num_images, max_count), generator=generator)]
    for slot in range(max_count):
        present = (slot < counts).float().view(-1, 1, 1)
        dy = ys - centre_y[:, slot].view(-1, 1, 1)
        dx = xs - centre_x[:, slot].view(-1, 1, 1)
        r = radius[:, slot].view(-1, 1, 1)
        distance = torch.empty(num_images, height, width)
        for kind in range(len(SHAPE_CLASSES)):
            of_kind = labels == kind
            if of_kind.any():
                distance[of_kind] = _shape_distance(kind, dy[of_kind], dx[of_kind], r[of_kind])
        # One pixel of anti-aliasing: coverage goes 1 -> 0 as the distance goes -0.5 -> 0.5.
        coverage = ((0.5 - distance).clamp(0, 1) * present).unsqueeze(1)
        images = images * (1 - coverage) + shape_colour[:, slot].view(-1, 3, 1, 1) * coverage

    return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range the diffusion model is trained on."""
    return images.float() / 127.5 - 1


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] (model output) -> uint8 [0, 255]."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
