import json

import numpy as np
import pytest
import torch
from PIL import Image

from ledit.arguments import UsageError
from ledit.cli import run as ledit
from ledit.data import LatentShardDataset, ShardError, center_crop_arr, list_image_folder
from ledit.data.images import image_to_tensor
from ledit.data.vae import load_vae


def _extract(image_folder, vae, out, *extra):
    ledit(["extract-latents", "--data-path", str(image_folder), "--features-path", str(out), "--vae", str(vae),
           "--image-size", "64", "--batch-size", "3", "--shard-size", "4", "--num-workers", "0", "--device", "cpu",
           *extra])


def test_extract_latents_shards_resume_and_corruption(image_folder, tiny_vae_dir, tmp_path):
    out = tmp_path / "latents"
    _extract(image_folder, tiny_vae_dir, out)
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] and index["num_images"] == 10 and index["latent_shape"] == [8, 8, 8]
    assert index["shards"] == ["shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]
    assert [np.load(out / s, mmap_mode="r").shape[0] for s in index["shards"]] == [4, 4, 2]

    # Item 5 holds the VAE posterior of the centre crop, and of its mirror image.
    data = LatentShardDataset(out)
    paths, labels, _ = list_image_folder(image_folder)
    vae = load_vae(str(tiny_vae_dir))
    with Image.open(paths[5]) as image:
        x = image_to_tensor(center_crop_arr(image, 64))[None]
    for flip in (False, True):
        moments, label = data[(5, flip)]
        expected = vae.encode(x.flip(-1) if flip else x).latent_dist.parameters[0]
        torch.testing.assert_close(moments, expected, atol=2e-3, rtol=2e-3)
        assert label == labels[5] == 1

    # Resume after a kill: shard 1 lost, index not yet complete; the other shards are not re-encoded.
    before = {s: (out / s).read_bytes() for s in index["shards"]}
    mtime0 = (out / "shard-00000.npy").stat().st_mtime_ns
    (out / "shard-00001.npy").unlink()
    (out / "index.json").write_text(json.dumps({**index, "complete": False}))
    with pytest.raises(ShardError, match="unfinished"):
        LatentShardDataset(out)
    with pytest.raises(UsageError, match="already holds latents: pass --resume"):
        _extract(image_folder, tiny_vae_dir, out)
    _extract(image_folder, tiny_vae_dir, out, "--resume")
    assert {s: (out / s).read_bytes() for s in index["shards"]} == before
    assert (out / "shard-00000.npy").stat().st_mtime_ns == mtime0
    with pytest.raises(ValueError, match="differ from the run"):
        _extract(image_folder, tiny_vae_dir, out, "--resume", "--dtype", "float32")

    # A truncated shard is named in the error, with the fix.
    raw = (out / "shard-00002.npy").read_bytes()
    (out / "shard-00002.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ShardError, match=r"shard-00002.npy.* truncated or corrupt.*--resume"):
        LatentShardDataset(out)


def test_extract_latents_bad_inputs(image_folder, tiny_vae_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _extract(tmp_path / "nowhere", tiny_vae_dir, tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="--vae .*hf download"):
        _extract(image_folder, tmp_path / "no-vae", tmp_path / "b")
    with pytest.raises(ValueError, match="divisible by the VAE's downsampling factor 8"):
        _extract(image_folder, tiny_vae_dir, tmp_path / "c", "--height", "60")


def test_extract_latents_refuses_unreadable_images_before_encoding(image_folder, tiny_vae_dir, tmp_path):
    import shutil

    images = tmp_path / "images"
    shutil.copytree(image_folder, images)
    (images / "dog" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "latents"
    with pytest.raises(ValueError, match=r"1 unreadable image: .*broken.png .*--skip-bad-images"):
        _extract(images, tiny_vae_dir, out)
    assert not out.exists()
    _extract(images, tiny_vae_dir, out, "--skip-bad-images")
    assert json.loads((out / "index.json").read_text())["num_images"] == 10
