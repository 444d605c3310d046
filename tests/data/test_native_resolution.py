"""``ledit extract-latents --native-resolution``: variable-size latent shards, each image at its own aspect ratio."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from workflow_fixtures import make_image_folder

from ledit.arguments import UsageError
from ledit.cli import run as ledit
from ledit.data import LatentShardDataset, ShardError, center_crop_arr, list_image_folder
from ledit.data.images import image_to_tensor, native_size
from ledit.data.vae import load_vae

# (height, width) of the images: wider, square, taller, very wide, and larger than the bound.
SIZES = ((72, 80), (64, 64), (96, 70), (40, 130), (200, 150))


@pytest.mark.parametrize(
    "width, height, expected",
    [
        (64, 64, (64, 64)),  # within the bound: kept
        (48, 40, (32, 48)),  # within the bound: sides rounded down to multiples of 16
        (80, 72, (48, 64)),  # shrunk to area <= 64^2: 60.7 x 67.5 -> 48 x 64
        (150, 200, (64, 48)),  # shrunk to area <= 64^2: 73.9 x 55.4 -> 64 x 48
        (130, 40, (32, 112)),  # shrunk: 35.5 x 115.4 -> 32 x 112 (aspect 3.5 vs 3.25)
        (20, 20, (16, 16)),  # never enlarged, but at least one multiple
        (4000, 10, (16, 64 * 64 // 16)),  # an extreme aspect ratio keeps one multiple on its short side
    ],
)
def test_native_size_keeps_area_within_the_bound_and_sides_whole(width, height, expected):
    size = native_size(width, height, 64 * 64, 16)
    assert size == expected
    assert size[0] % 16 == 0 and size[1] % 16 == 0
    assert size[0] * size[1] <= 64 * 64


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("mixed") / "train", sizes=SIZES)


def _extract(folder, vae, out, *extra):
    ledit(["extract-latents", "--data-path", str(folder), "--features-path", str(out), "--vae", str(vae),
           "--image-size", "64", "--batch-size", "3", "--shard-size", "4", "--num-workers", "0", "--device", "cpu",
           "--native-resolution", *extra])


def test_native_shards_hold_each_image_at_its_own_size(mixed_folder, tiny_vae_dir, tmp_path):
    out = tmp_path / "native"
    _extract(mixed_folder, tiny_vae_dir, out)
    index = json.loads((out / "index.json").read_text())
    assert index["version"] == 2 and index["complete"] and index["max_image_area"] == 64 * 64
    assert index["latent_shape"] == [8, 8, 8] and index["multiple"] == 16  # the bound's latent; 8 x patch 2

    data = LatentShardDataset(out)
    assert data.native and len(data) == 10
    paths, labels, _ = list_image_folder(mixed_folder)
    expected_sizes = []
    for path in paths:
        with Image.open(path) as image:
            height, width = native_size(*image.size, 64 * 64, 16)
        expected_sizes.append([height // 8, width // 8])
    assert data.latent_sizes.tolist() == expected_sizes
    assert len({tuple(s) for s in expected_sizes}) == 4  # the batches mix sizes: encoded in groups of one size

    vae = load_vae(str(tiny_vae_dir))
    for i in (3, 4, 9):
        with Image.open(paths[i]) as image:
            x = image_to_tensor(center_crop_arr(image, *native_size(*image.size, 64 * 64, 16)))[None]
        for flip in (False, True):
            moments, label = data[(i, flip)]
            assert moments.shape == (8, *expected_sizes[i])
            expected = vae.encode(x.flip(-1) if flip else x).latent_dist.parameters[0]
            torch.testing.assert_close(moments, expected, atol=2e-3, rtol=2e-3)
            assert label == labels[i]

    # Resume re-encodes only a lost shard, into the same bytes; another bound is another extraction.
    before = (out / "shard-00001.npy").read_bytes()
    (out / "shard-00001.npy").unlink()
    (out / "index.json").write_text(json.dumps({**index, "complete": False}))
    _extract(mixed_folder, tiny_vae_dir, out, "--resume")
    assert (out / "shard-00001.npy").read_bytes() == before
    with pytest.raises(UsageError, match="differ from the run"):
        _extract(mixed_folder, tiny_vae_dir, out, "--resume", "--patch-size", "4")

    # Sizes that disagree with the shards are named.
    sizes = np.load(out / "sizes.npy")
    np.save(out / "sizes.npy", sizes[::-1].copy())
    with pytest.raises(ShardError, match="sizes.npy.* disagrees with the shard lengths"):
        LatentShardDataset(out)


def test_native_resolution_bad_flags(mixed_folder, tiny_vae_dir, tmp_path):
    with pytest.raises(UsageError, match="--patch-size applies only with --native-resolution"):
        ledit(["extract-latents", "--data-path", str(mixed_folder), "--features-path", str(tmp_path / "a"),
               "--vae", str(tiny_vae_dir), "--patch-size", "2", "--device", "cpu"])
    with pytest.raises(UsageError, match="cannot hold one 32x32 image .*raise --image-size"):
        _extract(mixed_folder, tiny_vae_dir, tmp_path / "b", "--image-size", "16", "--patch-size", "4")
