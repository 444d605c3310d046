import pytest
import torch

from ledit.demo.dataset import SHAPE_CLASSES, render_shapes, to_model_range, to_uint8


def _shape_pixel_fraction(images: torch.Tensor) -> float:
    """Fraction of pixels painted by a shape: shapes are saturated, backgrounds are grey-ish by construction."""
    saturation = images.float().amax(dim=1) - images.float().amin(dim=1)
    return (saturation > 0.5 * 255).float().mean().item()


def test_deterministic_from_seed():
    first, labels = render_shapes(6, 24, 40, seed=3)
    again, _ = render_shapes(6, 24, 40, seed=3)
    other, _ = render_shapes(6, 24, 40, seed=4)
    assert first.shape == (6, 3, 24, 40) and first.dtype == torch.uint8
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_statistics_do_not_depend_on_canvas_size():
    # Shape coverage and mean colour are properties of the distribution, not of the canvas: a few large images
    # and many small ones must agree (same pixel count on both sides keeps the sampling noise comparable).
    small, _ = render_shapes(256, 32, 32, seed=0)
    large, _ = render_shapes(16, 128, 128, seed=1)
    wide, _ = render_shapes(128, 32, 64, seed=2)
    reference = _shape_pixel_fraction(small)
    assert 0.15 < reference < 0.5
    assert _shape_pixel_fraction(large) == pytest.approx(reference, rel=0.15)
    assert _shape_pixel_fraction(wide) == pytest.approx(reference, rel=0.15)
    assert large.float().mean().item() == pytest.approx(small.float().mean().item(), rel=0.05)


def test_labels_choose_the_shape_class():
    # A class changes the silhouettes only (same seed: same colours, positions and sizes), so the painted area
    # follows the shapes' areas: circle pi r^2 > square (1.7 r)^2 > triangle of inradius r/2, 1.3 r^2.
    fractions = []
    for kind in range(len(SHAPE_CLASSES)):
        images, labels = render_shapes(32, 32, 32, seed=5, labels=torch.full((32,), kind))
        assert labels.tolist() == [kind] * 32
        fractions.append(_shape_pixel_fraction(images))
    circle, square, triangle = fractions
    assert circle > square > triangle


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
