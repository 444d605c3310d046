"""A detector for the demo's own objects, and the two scores it gives: shape precision and object density.

Because the dataset is ours, its objects can be found exactly: they are bright on a dark background. The
detector turns brightness into an objectness map in [0, 1] (0 = the image's typical background, 1 = the objects'
brightness), segments it at one half into connected components (8-neighbourhood), and
compares each component with every class's object drawn at the component's centre with the dataset's own
renderer: the soft intersection-over-union of the objectness around the component and the ideal anti-aliased
coverage. A component matches when its best class is the one the image was asked for and that IoU is at least
``MATCH_IOU``: the shape, the size and the sharpness are right. A blurred, cut, stretched, merged or wrongly
sized object falls below it.

- **shape precision**: the fraction of whole objects (components not touching the border, at least
  ``MIN_AREA`` pixels) that match. Real images score about 1.
- **density**: objects per 32x32 pixels, every component of at least ``MIN_AREA`` pixels counted (cut ones too).
  Compare it with real images of the same size: border-cut objects make it depend slightly on the canvas.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ledit.demo.dataset import CHANNELS, OBJECT_LEVEL, SHAPE_CLASSES, SHAPE_SIZE, coverage, shape_distance

FOREGROUND = 0.5  # objectness threshold of the segmentation
MIN_AREA = 4  # pixels; smaller components are specks, not objects
MATCH_IOU = 0.8  # soft IoU with the ideal object above which a component counts as a correctly drawn object
DENSITY_AREA = 32 * 32  # density is reported per this many pixels
# What the detector is checked against in every run: real images spoilt the ways a model can spoil them.
CORRUPTIONS = ("blurred", "cut", "stretched")
# Scaled to the objects, so that the check does not pass merely because the objects are large: a blur of a
# quarter of the circle's radius, rows cut in bands of a third of its radius and shifted by half of it.
BLUR_SIGMA = SHAPE_SIZE["circle"] / 4
CUT_BAND = round(SHAPE_SIZE["circle"] / 3)
CUT_SHIFT = round(SHAPE_SIZE["circle"] / 2)
CORRUPTION_DESCRIPTION = (f"blurred: Gaussian sigma {BLUR_SIGMA:g} px; cut: every other {CUT_BAND}-pixel band of "
                          f"rows shifted {CUT_SHIFT} px; stretched: 1.5x wider")


@dataclass(frozen=True)
class Detection:
    """The objects found in a set of images of one size."""

    height: int
    width: int
    images: int
    objects: int  # components of at least MIN_AREA pixels, cut ones included
    whole: int  # of those, the ones not touching the border
    matched: int  # of the whole ones, those of the requested class with IoU >= MATCH_IOU
    iou: tuple[float, ...]  # every whole object's IoU with the requested class's ideal object, for inspection

    @property
    def shape_precision(self) -> float:
        """Fraction of whole objects drawn right; 0 when no whole object was drawn at all."""
        return self.matched / self.whole if self.whole else 0.0

    @property
    def density(self) -> float:
        """Objects per 32x32 pixels."""
        return self.objects * DENSITY_AREA / (self.images * self.height * self.width)

    def summary(self) -> dict:
        return {
            "shape_precision": self.shape_precision,
            "density": self.density,
            "objects": self.objects,
            "whole_objects": self.whole,
            "matched": self.matched,
        }


def objectness(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, H, W) -> float (N, H, W) in [0, 1]: brightness above the image's median (its background,
    which covers most of it), relative to the objects' brightness."""
    pixels = images[:, 0].float() / 255
    background = pixels.flatten(1).median(dim=1).values.view(-1, 1, 1)
    return ((pixels - background) / (OBJECT_LEVEL - background).clamp_min(1e-3)).clamp(0, 1)


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """bool (N, H, W) -> int64 (N, H, W): 0 on background, a label per 8-connected component elsewhere (labels
    are unique within an image, not consecutive). Every pixel takes the largest label in its neighbourhood until
    nothing changes: as many cheap passes as the longest component's diameter."""
    height, width = mask.shape[-2:]
    ids = torch.arange(1, height * width + 1, dtype=torch.float32).view(1, height, width)
    labels = torch.where(mask, ids, 0.0).unsqueeze(1)  # float32 holds every id exactly (< 2**24 pixels)
    keep = mask.unsqueeze(1).float()
    while True:
        grown = F.max_pool2d(labels, 3, stride=1, padding=1) * keep
        if torch.equal(grown, labels):
            return labels.squeeze(1).long()
        labels = grown


def _image_objects(objects: torch.Tensor, labels: torch.Tensor):
    """One image: (areas, touches-border flags, IoU with the ideal object of each class (K, classes)) per
    component."""
    height, width = labels.shape
    present = labels.flatten().unique()
    present = present[present > 0]
    if not len(present):
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.bool), torch.zeros(0, len(SHAPE_CLASSES))
    masks = labels.unsqueeze(0) == present.view(-1, 1, 1)  # (K, H, W)
    areas = masks.flatten(1).sum(dim=1)
    border = masks[:, 0].any(1) | masks[:, -1].any(1) | masks[:, :, 0].any(1) | masks[:, :, -1].any(1)
    # The component and its one-pixel rim (the anti-aliased edge), minus any other component.
    rim = F.max_pool2d(masks.float().unsqueeze(1), 3, stride=1, padding=1).squeeze(1).bool()
    region = rim & ~((labels > 0) & ~masks)
    soft = objects.unsqueeze(0) * region
    ys = torch.arange(height, dtype=torch.float32).view(1, -1, 1) + 0.5
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, -1) + 0.5
    mass = soft.flatten(1).sum(dim=1).view(-1, 1, 1)
    centre_y = (soft * ys).flatten(1).sum(dim=1).view(-1, 1, 1) / mass
    centre_x = (soft * xs).flatten(1).sum(dim=1).view(-1, 1, 1) / mass
    iou = []
    for kind in range(len(SHAPE_CLASSES)):
        ideal = coverage(shape_distance(kind, ys - centre_y, xs - centre_x))
        iou.append(torch.minimum(soft, ideal).flatten(1).sum(1) / torch.maximum(soft, ideal).flatten(1).sum(1))
    return areas, border, torch.stack(iou, dim=1)


def detect(images: torch.Tensor, labels: torch.Tensor) -> Detection:
    """Find and score the objects in uint8 images (N, 1, H, W) whose requested classes are ``labels`` (N,)."""
    if images.dim() != 4 or images.shape[1] != CHANNELS or images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (N, {CHANNELS}, H, W), got {images.dtype} {tuple(images.shape)}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be ({images.shape[0]},), one class per image, got {tuple(labels.shape)}")
    objects = objectness(images)
    components = connected_components(objects > FOREGROUND)
    counted = whole = matched = 0
    ious = []
    for image_objects, image_labels, kind in zip(objects, components, labels.tolist()):
        areas, border, iou = _image_objects(image_objects, image_labels)
        big = areas >= MIN_AREA
        counted += int(big.sum())
        inside = big & ~border
        whole += int(inside.sum())
        right = (iou.argmax(dim=1) == kind) & (iou[:, kind] >= MATCH_IOU)
        matched += int((right & inside).sum())
        ious += iou[inside, kind].tolist()
    height, width = images.shape[-2:]
    return Detection(height, width, len(images), counted, whole, matched, tuple(ious))


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (float NCHW), edges replicated."""
    radius = int(3 * sigma + 0.5)
    taps = torch.exp(-(torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2) / (2 * sigma**2))
    taps = taps / taps.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius,) * 4, mode="replicate")
    rows = F.conv2d(padded, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return F.conv2d(rows, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)


def corrupt(images: torch.Tensor, kind: str) -> torch.Tensor:
    """Real images spoilt as a model spoils them, to check that the detector tells them apart:
    ``blurred`` (Gaussian, sigma ``BLUR_SIGMA``: soft edges), ``cut`` (every other band of ``CUT_BAND`` rows
    shifted ``CUT_SHIFT`` px sideways: objects torn apart) or ``stretched`` (1.5x wider, cropped
    back: objects of the wrong shape and size). uint8 (N, C, H, W) in and out."""
    height, width = images.shape[-2:]
    pixels = images.float()
    if kind == "blurred":
        spoilt = _blur(pixels, BLUR_SIGMA)
    elif kind == "cut":
        spoilt = pixels.clone()
        for row in range(0, height, 2 * CUT_BAND):
            spoilt[:, :, row : row + CUT_BAND] = pixels[:, :, row : row + CUT_BAND].roll(CUT_SHIFT, dims=3)
    elif kind == "stretched":
        spoilt = F.interpolate(pixels, size=(height, int(1.5 * width)), mode="bilinear", align_corners=False)
        spoilt = spoilt[..., :width]
    else:
        raise ValueError(f"kind must be one of {CORRUPTIONS}, got {kind!r}")
    return spoilt.round().clamp(0, 255).to(torch.uint8)
