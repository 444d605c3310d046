import numpy as np
import pytest
import torch
from PIL import Image

from ledit.data import ImageFolderDataset, center_crop_arr, list_image_folder
from ledit.data.images import image_to_tensor, to_uint8_nhwc
from ledit.data.sampler import ResumableDistributedSampler


def test_center_crop_keeps_the_centre_at_any_aspect():
    # Three vertical bands red | green | blue: a centre crop of a wide image must be all green.
    arr = np.zeros((100, 300, 3), dtype=np.uint8)
    arr[:, :100, 0] = arr[:, 100:200, 1] = arr[:, 200:, 2] = 255
    square = center_crop_arr(Image.fromarray(arr), 32)
    assert square.shape == (32, 32, 3) and square.dtype == np.uint8
    assert (square[..., 1] > 200).all() and (square[..., [0, 2]] < 60).all()
    wide = center_crop_arr(Image.fromarray(arr), 16, 40)
    assert wide.shape == (16, 40, 3)


def test_center_crop_matches_adm_on_squares():
    # ADM's reference steps, written out: BOX-halve while >= 2x, BICUBIC to the short side, crop the centre.
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8))
    expected = image.resize((100, 75), Image.BOX).resize((50, 37), Image.BOX)
    expected = np.asarray(expected.resize((round(50 * 32 / 37), 32), Image.BICUBIC))
    left = (expected.shape[1] - 32) // 2
    np.testing.assert_array_equal(center_crop_arr(image, 32), expected[:, left : left + 32])


def test_image_folder_order_and_errors(image_folder, tmp_path):
    paths, labels, classes = list_image_folder(image_folder)
    assert classes == ["cat", "dog"] and labels == [0] * 5 + [1] * 5
    assert paths == sorted(paths)
    data = ImageFolderDataset(image_folder, 16, 24)
    x, y = data[(6, False)]
    flipped, _ = data[(6, True)]
    assert x.shape == (3, 16, 24) and y == 1 and -1 <= x.min() and x.max() <= 1
    assert np.array_equal(flipped.numpy(), x.flip(-1).numpy())
    with pytest.raises(FileNotFoundError, match="data folder .* does not exist"):
        list_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folders"):
        list_image_folder(tmp_path / "empty")


def test_sampler_partitions_and_resumes_exactly():
    ranks = [ResumableDistributedSampler(10, 3, r, seed=5) for r in range(3)]
    for s in ranks:
        s.set_epoch(2)
    keys = [list(s) for s in ranks]
    assert all(len(k) == 4 for k in keys)  # padded to 12 = 3 x 4
    assert {i for k in keys for i, _ in k} == set(range(10))
    resumed = ResumableDistributedSampler(10, 3, 1, seed=5)
    resumed.set_epoch(2, start=3)
    assert list(resumed) == keys[1][3:]
    other_epoch = ResumableDistributedSampler(10, 3, 1, seed=5)
    other_epoch.set_epoch(3)
    assert list(other_epoch) != keys[1]


def test_to_uint8_nhwc_inverts_image_to_tensor_exactly():
    arr = np.arange(256, dtype=np.uint8).reshape(8, 32, 1).repeat(3, axis=2)
    images = image_to_tensor(arr)[None]
    assert np.array_equal(to_uint8_nhwc(images)[0].numpy(), arr)
    assert to_uint8_nhwc(torch.tensor([-2.0, 2.0]).view(1, 1, 1, 2)).flatten().tolist() == [0, 255]  # clamped


def _folder_with_bad_images(tmp_path):
    """An ImageFolder of 4 good images, a file that is no image, an empty file and a PNG cut off mid-data (its
    header is intact: only decoding finds it)."""
    from workflow_fixtures import make_image_folder

    root = make_image_folder(tmp_path / "images", classes=("a", "b"), per_class=2)
    (root / "a" / "garbage.png").write_bytes(b"this is not an image")
    (root / "b" / "empty.jpg").write_bytes(b"")
    good = (root / "b" / "000.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    return root


def test_bad_images_are_found_before_the_run_by_name(tmp_path):
    from ledit.data.images import find_bad_images

    root = _folder_with_bad_images(tmp_path)
    paths, _, _ = list_image_folder(root)
    names = {i: p.name for i, p in enumerate(paths)}
    header = {names[i]: reason for i, reason in find_bad_images(paths, "header").items()}
    assert sorted(header) == ["empty.jpg", "garbage.png"] and "UnidentifiedImageError" in header["garbage.png"]
    full = {names[i] for i in find_bad_images(paths, "full")}
    assert full == {"empty.jpg", "garbage.png", "truncated.png"}
    assert find_bad_images(paths, "none") == {}
    with pytest.raises(ValueError, match=r"2 unreadable images: .*garbage.png \(UnidentifiedImageError.*empty.jpg.*"
                                         r"--skip-bad-images"):
        ImageFolderDataset(root, 16)


def test_skip_bad_images_leaves_them_out_and_logs_them(tmp_path, caplog):
    root = _folder_with_bad_images(tmp_path)
    with caplog.at_level("WARNING", logger="ledit.data"):
        data = ImageFolderDataset(root, 16, check="full", skip_bad=True)
    assert len(data) == 4 and "skipping 3 unreadable images" in caplog.text
    assert [p.name for p in data.paths] == ["000.png", "001.png", "000.png", "001.png"]
    assert data.labels == [0, 0, 1, 1]
    # A file that passes the header check but cannot be decoded when drawn: named, or replaced with --skip.
    header_only = ImageFolderDataset(root, 16, check="header", skip_bad=True)
    index = [p.name for p in header_only.paths].index("truncated.png")
    with caplog.at_level("WARNING", logger="ledit.data"):
        x, label = header_only[index]
    assert "skipping unreadable image" in caplog.text
    # It is the last file: the next image wraps around to the first, which comes with its own label.
    first, first_label = header_only[0]
    assert torch.equal(x, first) and label == first_label == 0
    header_only.skip_bad = False
    with pytest.raises(ValueError, match=r"cannot read image .*truncated.png.*--skip-bad-images"):
        header_only[index]
