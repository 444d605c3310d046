import pytest
import torch

from ledit.demo.dataset import (
    BACKGROUND_LEVEL,
    CHANNELS,
    MIN_DISTANCE,
    OBJECT_LEVEL,
    SHAPE_CLASSES,
    WAVE_AMPLITUDE,
    render_shapes,
    sequential_adsorption,
    to_model_range,
    to_uint8,
)
from ledit.demo.detect import connected_components

# Halfway between the brightest background and the objects: objects are bright, backgrounds dark by construction.
OBJECT_THRESHOLD = 255 * (OBJECT_LEVEL + BACKGROUND_LEVEL[1] + WAVE_AMPLITUDE) / 2


def _object_mask(images: torch.Tensor) -> torch.Tensor:
    return images[:, 0].float() > OBJECT_THRESHOLD


def _shape_pixel_fraction(images: torch.Tensor) -> float:
    """Fraction of pixels painted by an object."""
    return _object_mask(images).float().mean().item()


def test_deterministic_from_seed():
    first, labels = render_shapes(6, 24, 40, seed=3)
    again, _ = render_shapes(6, 24, 40, seed=3)
    other, _ = render_shapes(6, 24, 40, seed=4)
    assert first.shape == (6, CHANNELS, 24, 40) and first.dtype == torch.uint8
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert labels.tolist() == [0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("num_images, candidates, extent", [(6, 80, 110.0), (3, 40, 40.0), (2, 1, 10.0), (1, 0, 10.0)])
def test_sequential_adsorption_keeps_what_the_rule_in_order_keeps(num_images, candidates, extent):
    # The all-at-once rounds against the rule's definition: candidates taken in order, each kept unless an
    # earlier kept one is closer than MIN_DISTANCE; padding slots (not candidates) are never kept nor block.
    generator = torch.Generator().manual_seed(candidates)
    centre_y = extent * torch.rand(num_images, candidates, generator=generator)
    centre_x = extent * torch.rand(num_images, candidates, generator=generator)
    candidate = torch.rand(num_images, candidates, generator=generator) < 0.9
    expected = torch.zeros_like(candidate)
    for image in range(num_images):
        for slot in range(candidates):
            expected[image, slot] = bool(candidate[image, slot]) and all(
                (centre_y[image, slot] - centre_y[image, earlier]) ** 2
                + (centre_x[image, slot] - centre_x[image, earlier]) ** 2 >= MIN_DISTANCE**2
                for earlier in range(slot) if expected[image, earlier]
            )
    kept = sequential_adsorption(centre_y, centre_x, candidate)
    assert torch.equal(kept, expected)
    assert kept.sum() < candidate.sum() or candidates <= 1  # the dense cases do reject candidates


def test_statistics_do_not_depend_on_canvas_size():
    # Object coverage and mean colour are properties of the distribution, not of the canvas: a few large images
    # and many small ones must agree (same pixel count on both sides keeps the sampling noise comparable).
    small, _ = render_shapes(256, 32, 32, seed=0)
    large, _ = render_shapes(16, 128, 128, seed=1)
    wide, _ = render_shapes(128, 32, 64, seed=2)
    reference = _shape_pixel_fraction(small)
    assert 0.08 < reference < 0.3
    assert _shape_pixel_fraction(large) == pytest.approx(reference, rel=0.1)
    assert _shape_pixel_fraction(wide) == pytest.approx(reference, rel=0.1)
    assert large.float().mean().item() == pytest.approx(small.float().mean().item(), rel=0.05)


@pytest.mark.parametrize("kind", range(len(SHAPE_CLASSES)))
def test_objects_have_one_size_and_never_touch(kind):
    images, _ = render_shapes(16, 48, 48, seed=kind, labels=torch.full((16,), kind))
    areas = []
    for labels in connected_components(_object_mask(images)):
        border = set(labels[0].tolist() + labels[-1].tolist() + labels[:, 0].tolist() + labels[:, -1].tolist())
        areas += [int((labels == label).sum()) for label in labels.unique().tolist() if label and label not in border]
    assert len(areas) >= 16
    # Every whole object of a class covers the same area, up to pixel quantisation; two touching objects would
    # merge into one component of twice the area.
    assert max(areas) <= 1.4 * min(areas)


def test_labels_choose_the_shape_class():
    # A class changes the silhouettes only (same seed: same backgrounds and positions), and the silhouettes differ.
    rendered = [render_shapes(8, 32, 32, seed=5, labels=torch.full((8,), kind))[0]
                for kind in range(len(SHAPE_CLASSES))]
    for kind in range(len(SHAPE_CLASSES)):
        assert not torch.equal(rendered[kind], rendered[(kind + 1) % len(SHAPE_CLASSES)])
    assert _shape_pixel_fraction(rendered[0]) == pytest.approx(_shape_pixel_fraction(rendered[1]), rel=0.2)


def test_range_conversions_round_trip():
    images, _ = render_shapes(2, 16, 16, seed=0)
    as_float = to_model_range(images)
    assert as_float.min() >= -1 and as_float.max() <= 1
    assert torch.equal(to_uint8(as_float), images)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_images": 0, "height": 8, "width": 8}, "num_images"),
        ({"num_images": 2, "height": 8.0, "width": 8}, "height"),
        ({"num_images": 2, "height": 8, "width": 8, "labels": torch.tensor([0, len(SHAPE_CLASSES)])}, "labels"),
        ({"num_images": 2, "height": 8, "width": 8, "labels": torch.tensor([0])}, "labels"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_shapes(seed=0, **kwargs)
