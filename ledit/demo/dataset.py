"""Procedural scenes whose statistics do not depend on the canvas size, so that a model trained at 32x32 has a
well-defined correct distribution at 64x64 or 32x64, and whose objects a tiny model can learn to draw.

A scene is a dark, smoothly varying grey background with bright solid objects of one class (circle or square)
painted over it. Everything is in absolute pixels: every object of a class has the same size; object centres
follow a hard-core process (random sequential adsorption: Poisson candidates, each kept unless it comes closer than
``MIN_DISTANCE`` to one already kept) of fixed intensity over the canvas grown by a margin, so objects never touch
and objects cut by the border are as common at every size; the background's wave has a fixed period. A crop of a
larger scene therefore looks like a small scene, and "correct" at any size means: the same objects, at the same
size and density.

Large objects on purpose: a circle of radius 6 px spans three 4x4 patches, so a tiny model must agree across
patches to draw it (patch seams show), and an edge off by half a pixel still leaves an IoU of (6 / 6.5)^2 = 0.85
with the ideal object, above the detector's 0.8, while an object one pixel too large or small (0.73) or blurred by
a quarter of its radius does not match. Two classes: a triangle's diagonals cut across the 4x4 patches, and a
tiny model draws them ragged long after it draws circles and squares right.

Greyscale on purpose: a 4x4 patch of one channel is 16 numbers, well inside the 64 channels of the demo's tiny
models, where 48 colour values would fill them and every sample would come out patchy. Objects are bright and
backgrounds dark, so the objects can be segmented exactly (``detect.py``).
"""

from __future__ import annotations

import hashlib
import math

import torch

SHAPE_CLASSES = ("circle", "square")
CHANNELS = 1
OBJECT_LEVEL = 0.95  # the objects' brightness in [0, 1]
# One size per class, in pixels, chosen for similar areas (113 and 121 px): the circle's radius, the square's
# half-side.
SHAPE_SIZE = {"circle": 6.0, "square": 5.5}
OBJECT_EXTENT = 7.8  # pixels from the centre to the farthest point of any class (the square's corners)
MIN_DISTANCE = 17.0  # between object centres: at least one pixel of background between any two objects
CANDIDATES_PER_PIXEL = 1.0 / 160.0  # candidate centres; about 2 objects are kept per 32x32
BACKGROUND_LEVEL = (0.18, 0.42)  # uniform
WAVE_PERIOD = 64.0  # pixels: a smooth brightness wave of random direction and phase
WAVE_AMPLITUDE = 0.036
# Everything that changes the images; part of the key of cached checkpoints trained on them.
DATASET_PARAMETERS = {
    "version": 4,
    "classes": SHAPE_CLASSES,
    "channels": CHANNELS,
    "object_level": OBJECT_LEVEL,
    "size": SHAPE_SIZE,
    "min_distance": MIN_DISTANCE,
    "candidates_per_pixel": CANDIDATES_PER_PIXEL,
    "background": (BACKGROUND_LEVEL, WAVE_PERIOD, WAVE_AMPLITUDE),
}


def derive_seed(*parts) -> int:
    """A 63-bit seed from any labels, e.g. ``derive_seed("train", seed, step)``: streams named differently never
    share images, and each is reproducible on its own."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def shape_distance(kind: int, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Signed distance (pixels, negative inside) to the object of class ``kind`` centred at the origin."""
    name = SHAPE_CLASSES[kind]
    size = SHAPE_SIZE[name]
    if name == "circle":
        return torch.sqrt(dy**2 + dx**2) - size
    return torch.maximum(dy.abs(), dx.abs()) - size


def coverage(distance: torch.Tensor) -> torch.Tensor:
    """One pixel of anti-aliasing: coverage goes 1 -> 0 as the signed distance goes -0.5 -> 0.5."""
    return (0.5 - distance).clamp(0, 1)


def sequential_adsorption(centre_y: torch.Tensor, centre_x: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """(N, K) bool: which candidates random sequential adsorption keeps. Taken in order, each ``candidate`` centre
    is kept unless an earlier kept one lies closer than ``MIN_DISTANCE``.

    Rather than a loop over the ~80 candidates in order, the rule is applied to all of them at once, starting from
    "all kept", until it changes nothing: after k rounds every candidate whose chain of earlier close candidates is
    shorter than k is decided, so the first round that changes nothing has reached the one set the rule defines.
    """
    num_images, most = candidate.shape
    close = (centre_y.unsqueeze(2) - centre_y.unsqueeze(1)) ** 2 + (
        centre_x.unsqueeze(2) - centre_x.unsqueeze(1)
    ) ** 2 < MIN_DISTANCE**2
    # The close pairs as flat indices into (N, K): the later candidate of each pair and the earlier one.
    image, later, earlier = (close & torch.ones(most, most, dtype=torch.bool).tril(-1)).nonzero().unbind(1)
    later, earlier = image * most + later, image * most + earlier
    kept = candidate
    while True:
        blockers = torch.zeros(num_images * most).index_add_(0, later, kept.reshape(-1)[earlier].float())
        updated = candidate & (blockers.view(num_images, most) == 0)
        if torch.equal(updated, kept):
            return kept
        kept = updated


def _object_centres(num_images: int, height: int, width: int, generator: torch.Generator):
    """Hard-core centres over the canvas grown by a margin: (centre_y, centre_x, kept), each (N, K)."""
    # Candidates far enough outside never decide whether a visible object is kept (two interaction ranges).
    margin = OBJECT_EXTENT + 2 * MIN_DISTANCE
    area = (height + 2 * margin) * (width + 2 * margin)
    counts = torch.poisson(torch.full((num_images,), area * CANDIDATES_PER_PIXEL), generator=generator).long()
    most = int(counts.max()) if num_images else 0
    centre_y = -margin + (height + 2 * margin) * torch.rand(num_images, most, generator=generator)
    centre_x = -margin + (width + 2 * margin) * torch.rand(num_images, most, generator=generator)
    kept = sequential_adsorption(centre_y, centre_x, torch.arange(most) < counts.unsqueeze(1))
    visible = (
        (centre_y > -OBJECT_EXTENT)
        & (centre_y < height + OBJECT_EXTENT)
        & (centre_x > -OBJECT_EXTENT)
        & (centre_x < width + OBJECT_EXTENT)
    )
    return centre_y, centre_x, kept & visible


def render_shapes(
    num_images: int,
    height: int,
    width: int,
    seed: int,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``num_images`` scenes of ``height`` x ``width``, deterministically from ``seed``.

    ``labels`` (N,) picks each image's object class (index into ``SHAPE_CLASSES``); by default the classes cycle
    0, 1, 0, 1, ... Returns (uint8 images (N, CHANNELS, H, W), int64 labels (N,)).
    """
    for name, value in (("num_images", num_images), ("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
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

    # Background: a dark grey and a smooth brightness wave of fixed period.
    level = uniform(num_images, 1, 1, low=BACKGROUND_LEVEL[0], high=BACKGROUND_LEVEL[1])
    angle = uniform(num_images, 1, 1, high=2 * math.pi)
    phase = uniform(num_images, 1, 1, high=2 * math.pi)
    along = ys * torch.sin(angle) + xs * torch.cos(angle)
    images = level + WAVE_AMPLITUDE * torch.sin(2 * math.pi * along / WAVE_PERIOD + phase)

    # Objects: only the kept ones, packed to the front (they never overlap, so the order does not matter).
    centre_y, centre_x, kept = _object_centres(num_images, height, width, generator)
    order = torch.argsort(kept.to(torch.int8), dim=1, descending=True, stable=True)
    centre_y, centre_x = centre_y.gather(1, order), centre_x.gather(1, order)
    counts = kept.sum(dim=1)
    for slot in range(int(counts.max()) if num_images else 0):
        present = (slot < counts).float().view(-1, 1, 1)
        dy = ys - centre_y[:, slot].view(-1, 1, 1)
        dx = xs - centre_x[:, slot].view(-1, 1, 1)
        # Every class's distance for every image, then each image's own: cheaper than masking by class.
        distances = torch.stack([shape_distance(kind, dy, dx) for kind in range(len(SHAPE_CLASSES))])
        distance = distances[labels, torch.arange(num_images)]
        covered = coverage(distance) * present
        images = images * (1 - covered) + OBJECT_LEVEL * covered

    return (images.unsqueeze(1).clamp(0, 1) * 255).round().to(torch.uint8), labels


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range the diffusion model is trained on."""
    return images.float() / 127.5 - 1


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] (model output) -> uint8 [0, 255]."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
