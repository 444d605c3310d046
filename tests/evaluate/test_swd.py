import pytest
import torch
import torch.nn.functional as F

from ledit.evaluate.swd import (
    _upsample,
    laplacian_pyramid,
    level_descriptors,
    sliced_wasserstein,
    sliced_wasserstein_descriptors,
    wasserstein_1d,
)

FAST = {"descriptors_per_image": 32, "num_projections": 64}


def _smooth_noise(n, h=32, w=32, seed=0):
    """Images of one fixed distribution: random noise blurred a little, in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 3, h, w, generator=generator)
    return F.avg_pool2d(noise, 3, stride=1, padding=1, count_include_pad=False)


def test_1d_wasserstein_by_hand():
    # Equal sizes: sorted samples pair up, every pair is 1 apart.
    assert wasserstein_1d(torch.tensor([[0.0, 1, 2, 3]]), torch.tensor([[1.0, 2, 3, 4]])).item() == pytest.approx(1.0)
    # Unequal sizes: quantile functions {0 on [0,1/2), 1 on [1/2,1]} and {0, 0.5, 1 on thirds} differ by 0.5
    # on [1/3, 2/3), so W1 = 0.5 * 1/3.
    assert wasserstein_1d(torch.tensor([[0.0, 1]]), torch.tensor([[0.0, 0.5, 1]])).item() == pytest.approx(1 / 6)


def test_sliced_distance_of_1d_points_is_exact_w1():
    # In one dimension every unit direction is +-1, so the sliced distance is the plain W1 distance.
    a = torch.tensor([[3.0], [0.0], [2.0], [1.0]])
    b = torch.tensor([[4.0], [2.0], [1.0], [3.0]])
    generator = torch.Generator().manual_seed(0)
    assert sliced_wasserstein_descriptors(a, b, num_projections=16, generator=generator).item() == pytest.approx(1.0)


def test_pyramid_levels_and_exact_reconstruction():
    images = torch.rand(2, 3, 64, 48)
    levels = laplacian_pyramid(images, min_resolution=16)
    assert [tuple(level.shape[-2:]) for level in levels] == [(64, 48), (32, 24)]
    square = laplacian_pyramid(torch.rand(1, 3, 64, 64))
    assert [tuple(lv.shape[-2:]) for lv in square] == [(64, 64), (32, 32), (16, 16)]
    assert [tuple(lv.shape[-2:]) for lv in laplacian_pyramid(torch.rand(1, 3, 33, 65))] == [(33, 65), (17, 33)]

    reconstruction = levels[-1]
    for band in reversed(levels[:-1]):
        reconstruction = band + _upsample(reconstruction, band.shape[-2:])
    torch.testing.assert_close(reconstruction, images)


def test_identical_sets_give_zero_and_level_keys():
    images = _smooth_noise(8, 64, 32)
    result = sliced_wasserstein(images, images.clone(), **FAST)
    assert list(result) == ["64x32", "32x16", "mean"]
    assert all(value == 0.0 for value in result.values())


def test_shifted_and_blurred_sets_are_farther_than_a_fresh_draw():
    reference = _smooth_noise(16, seed=1)
    same_distribution = _smooth_noise(16, seed=2)
    brighter = (same_distribution + 0.15).clamp(0, 1)
    blurred = F.avg_pool2d(same_distribution, 3, stride=1, padding=1, count_include_pad=False)

    baseline = sliced_wasserstein(reference, same_distribution, **FAST)
    shifted = sliced_wasserstein(reference, brighter, **FAST)
    smoothed = sliced_wasserstein(reference, blurred, **FAST)
    assert shifted["mean"] > 3 * baseline["mean"]
    assert smoothed["mean"] > 3 * baseline["mean"]
    # Blur removes fine detail, so it shows most on the finest (band-pass) level.
    assert smoothed["32x32"] > 3 * baseline["32x32"]


def test_symmetric_and_reproducible():
    a, b = _smooth_noise(6, seed=3), _smooth_noise(10, seed=4) * 0.8
    forward = sliced_wasserstein(a, b, seed=7, **FAST)
    backward = sliced_wasserstein(b, a, seed=7, **FAST)
    for key in forward:
        assert backward[key] == pytest.approx(forward[key], rel=1e-5)
    assert sliced_wasserstein(a, b, seed=7, **FAST) == forward
    assert sliced_wasserstein(a, b, seed=8, **FAST) != forward


def test_uint8_and_float_of_the_same_images_agree():
    a, b = _smooth_noise(6, seed=5), _smooth_noise(6, seed=6) ** 2
    as_uint8 = [(x * 255).round().to(torch.uint8) for x in (a, b)]
    from_uint8 = sliced_wasserstein(*as_uint8, **FAST)
    from_float = sliced_wasserstein(*(x.float() / 255 * 2 - 1 for x in as_uint8), **FAST)
    for key in from_uint8:
        assert from_float[key] == pytest.approx(from_uint8[key], rel=1e-3)


@pytest.mark.parametrize(
    "a, b, message",
    [
        (torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 16), "same \\(C, H, W\\)"),
        (torch.rand(2, 3, 32, 32), torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "one value scale"),
        (torch.rand(3, 32, 32), torch.rand(2, 3, 32, 32), "images_a must have shape"),
        (torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8), "min_resolution"),
        (torch.rand(0, 3, 32, 32), torch.rand(2, 3, 32, 32), "images_a is empty"),
    ],
)
def test_bad_input_is_named(a, b, message):
    with pytest.raises((ValueError, TypeError), match=message):
        sliced_wasserstein(a, b)


def test_descriptors_do_not_depend_on_the_chunking():
    # Large sets are decomposed a chunk at a time; the patches must be those of one pass over all images.
    images = (_smooth_noise(7, 32, 48, seed=9) * 255).to(torch.uint8)
    for level in (0, 1):
        whole = level_descriptors(images, level, count=5, size=7, min_resolution=16, seed=3, chunk_size=256)
        chunked = level_descriptors(images, level, count=5, size=7, min_resolution=16, seed=3, chunk_size=3)
        assert whole.shape == (35, 49, 3)
        torch.testing.assert_close(chunked, whole, rtol=0, atol=0)
