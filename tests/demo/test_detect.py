"""The demo's object detector: real images score about 1, the ways a model spoils objects score low, and the
density it counts follows the dataset's."""

import pytest
import torch

from ledit.demo.dataset import CHANNELS, SHAPE_CLASSES, render_shapes
from ledit.demo.detect import CORRUPTIONS, MIN_AREA, connected_components, corrupt, detect

SIZES = [(32, 32), (64, 64), (32, 64), (40, 24)]


@pytest.mark.parametrize("size", SIZES)
def test_real_images_score_about_one_and_spoilt_ones_low(size):
    images, labels = render_shapes(64, *size, seed=11)
    real = detect(images, labels)
    assert real.whole >= 20 and real.shape_precision >= 0.98
    for kind in CORRUPTIONS:
        spoilt = detect(corrupt(images, kind), labels)
        assert spoilt.shape_precision <= 0.3, (kind, spoilt)


def test_objects_of_the_wrong_class_or_size_do_not_match():
    images, labels = render_shapes(12, 48, 48, seed=3)
    wrong_class = (labels + 1) % len(SHAPE_CLASSES)
    assert detect(images, wrong_class).shape_precision <= 0.2
    larger = torch.nn.functional.interpolate(images.float(), scale_factor=1.3, mode="bilinear")[..., :48, :48]
    assert detect(larger.round().to(torch.uint8), labels).shape_precision <= 0.2


def test_density_is_the_datasets_and_counts_what_is_drawn():
    images, labels = render_shapes(64, 32, 32, seed=4)
    found = detect(images, labels)
    # About 2 objects per 32x32 are kept, plus the border-cut ones around them.
    assert 2.0 < found.density < 3.5
    blank = torch.full((4, CHANNELS, 32, 32), 128, dtype=torch.uint8)
    nothing = detect(blank, labels[:4])
    assert nothing.objects == 0 and nothing.density == 0.0 and nothing.shape_precision == 0.0
    # Doubling every image side by side keeps the density and doubles the count.
    twice = detect(torch.cat([images, images], dim=3), labels)
    assert twice.objects >= 2 * found.whole


def test_connected_components_separate_touching_diagonals_only_by_background():
    mask = torch.zeros(1, 6, 7, dtype=torch.bool)
    mask[0, 0:2, 0:2] = True  # a block
    mask[0, 2, 2] = True  # touches it diagonally: the same component (8-neighbourhood)
    mask[0, 4:6, 4:7] = True  # a separate bar
    labels = connected_components(mask)[0]
    assert (labels > 0).equal(mask[0])
    assert labels[0, 0] == labels[2, 2] != labels[5, 6]
    assert len(labels[mask[0]].unique()) == 2


def test_specks_are_not_objects():
    image = torch.full((1, CHANNELS, 32, 32), 128, dtype=torch.uint8)
    image[0, 0, 10:12, 10:11] = 255  # a 2-pixel bright speck
    assert detect(image, torch.tensor([0])).objects == 0 and MIN_AREA > 2


def test_bad_arguments_are_named():
    images, labels = render_shapes(2, 16, 16, seed=0)
    with pytest.raises(ValueError, match="uint8"):
        detect(images.float(), labels)
    with pytest.raises(ValueError, match="labels"):
        detect(images, labels[:1])
    with pytest.raises(ValueError, match="kind"):
        corrupt(images, "rotated")
