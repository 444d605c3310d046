import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ledit.arguments import UsageError
from ledit.checkpoint import CheckpointError, save_checkpoint
from ledit.cli import run as ledit


def _sample(ckpt, vae, out, *extra):
    ledit(["sample", "--ckpt", str(ckpt), "--vae", str(vae), "--image-size", "64", "--num-sampling-steps", "3",
           "--class-labels", "1", "2", "3", "--nrow", "2", "--device", "cpu", "--output", str(out), *extra])
    return np.asarray(Image.open(out))


@pytest.mark.parametrize("size,sampler", [((64, 64), "ddpm"), ((128, 128), "ddim"), ((48, 96), "ddpm")])
def test_sample_grid_at_1x_2x_and_non_square(latent_ckpt, tiny_vae_dir, tmp_path, size, sampler):
    h, w = size
    grid = _sample(latent_ckpt, tiny_vae_dir, tmp_path / "a.png", "--height", str(h), "--width", str(w),
                   "--sampler", sampler, "--cfg-scale", "4.0")
    assert grid.shape == (2 * (h + 2) + 2, 2 * (w + 2) + 2, 3)
    tile = grid[2 : 2 + h, 2 : 2 + w]
    assert tile.std() > 0 and (grid[: 2] == 0).all()  # an image, and the black padding
    again = _sample(latent_ckpt, tiny_vae_dir, tmp_path / "b.png", "--height", str(h), "--width", str(w),
                    "--sampler", sampler, "--cfg-scale", "4.0")
    np.testing.assert_array_equal(grid, again)
    other_seed = _sample(latent_ckpt, tiny_vae_dir, tmp_path / "c.png", "--height", str(h), "--width", str(w),
                         "--sampler", sampler, "--cfg-scale", "4.0", "--seed", "1")
    assert not np.array_equal(grid, other_seed)


def test_sample_bad_inputs(latent_ckpt, pixel_ckpt, tiny_vae_dir, tmp_path):
    with pytest.raises(ValueError, match=r"60x64 must be divisible by 16 \(VAE factor 8 x patch size 2\)"):
        _sample(latent_ckpt, tiny_vae_dir, tmp_path / "x.png", "--height", "60")
    with pytest.raises(UsageError, match="holds a LEDiT, not --model DiT-XL/2"):
        _sample(latent_ckpt, tiny_vae_dir, tmp_path / "x.png", "--model", "DiT-XL/2")
    with pytest.raises(UsageError, match="pixel-space models need --vae none"):
        _sample(pixel_ckpt, tiny_vae_dir, tmp_path / "x.png")
    with pytest.raises(UsageError, match="--vae none samples RGB pixels.*4 latent channels"):
        _sample(latent_ckpt, "none", tmp_path / "x.png")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _sample(tmp_path / "missing.pt", tiny_vae_dir, tmp_path / "x.png")
    # A raw state dict of another model: the error names the mismatch and the fix.
    sd = torch.load(latent_ckpt, weights_only=True)["ema"]
    save_checkpoint({k: v for k, v in sd.items() if "locality" not in k}, tmp_path / "raw.pt")
    with pytest.raises(CheckpointError, match="does not fit model.*missing.*convert-dit"):
        _sample(tmp_path / "raw.pt", tiny_vae_dir, tmp_path / "x.png", "--model", "LEDiT",
                "--model-kwargs", '{"depth": 2, "hidden_size": 32, "num_heads": 2, "patch_size": 2}',
                "--num-classes", "10")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(latent_ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        _sample(truncated, tiny_vae_dir, tmp_path / "x.png")


def _sample_ddp(ckpt, sample_dir, nproc):
    args = ["sample-ddp", "--ckpt", str(ckpt), "--vae", "none", "--image-size", "8", "--height", "8", "--width", "12",
            "--num-sampling-steps", "2", "--per-proc-batch-size", "3", "--num-fid-samples", "10", "--cfg-scale", "1.5",
            "--sample-dir", str(sample_dir), "--device", "cpu"]
    if nproc == 1:
        ledit(args)
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "ledit", *args]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
    (npz,) = sample_dir.glob("*.npz")
    assert not list(sample_dir.glob("*.parts"))
    with np.load(npz) as archive:
        assert archive.files == ["arr_0"]
        return npz, archive["arr_0"]


def test_sample_ddp_npz_is_adm_format_and_independent_of_world_size(pixel_ckpt, tmp_path):
    npz, one = _sample_ddp(pixel_ckpt, tmp_path / "one", nproc=1)
    assert one.dtype == np.uint8 and one.shape == (10, 8, 12, 3)
    assert "size-8x12" in npz.name and "cfg-1.5" in npz.name
    assert len({one[i].tobytes() for i in range(10)}) == 10
    _, two = _sample_ddp(pixel_ckpt, tmp_path / "two", nproc=2)
    np.testing.assert_array_equal(one, two)


def test_sample_ddp_restart_keeps_finished_batches(pixel_ckpt, tmp_path):
    npz, first = _sample_ddp(pixel_ckpt, tmp_path / "a", nproc=1)
    # A killed run left batch 1 finished (here: marked by zeros); the restart samples only the others.
    parts = npz.with_suffix(".parts")
    parts.mkdir()
    np.save(parts / "000001.npy", np.zeros((3, 8, 12, 3), dtype=np.uint8))
    npz.unlink()
    _, again = _sample_ddp(pixel_ckpt, tmp_path / "a", nproc=1)
    assert (again[3:6] == 0).all()
    np.testing.assert_array_equal(np.delete(again, [3, 4, 5], 0), np.delete(first, [3, 4, 5], 0))


def test_sampling_prefers_the_ema_weights(pixel_ckpt, tmp_path):
    state = torch.load(pixel_ckpt, weights_only=True)
    broken = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state["ema"].items()}
    save_checkpoint({**state, "model": broken}, tmp_path / "ema-good.pt")
    save_checkpoint({**state, "ema": broken}, tmp_path / "ema-broken.pt")
    flags = ["--vae", "none", "--image-size", "8", "--num-sampling-steps", "2", "--device", "cpu"]
    ledit(["sample", "--ckpt", str(tmp_path / "ema-good.pt"), "--output", str(tmp_path / "good.png"), *flags])
    ledit(["sample", "--ckpt", str(pixel_ckpt), "--output", str(tmp_path / "ref.png"), *flags])
    reference = np.asarray(Image.open(tmp_path / "ref.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "good.png")), reference)
    ledit(["sample", "--ckpt", str(tmp_path / "ema-broken.pt"), "--output", str(tmp_path / "bad.png"), *flags])
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "bad.png")), reference)


def test_output_format_follows_the_extension(pixel_ckpt, tmp_path):
    flags = ["--vae", "none", "--num-sampling-steps", "2", "--class-labels", "1", "--device", "cpu"]
    magic = {"png": b"\x89PNG", "jpg": b"\xff\xd8\xff", "webp": b"RIFF"}
    for suffix, start in magic.items():
        ledit(["sample", "--ckpt", str(pixel_ckpt), "--output", str(tmp_path / f"grid.{suffix}"), *flags])
        assert (tmp_path / f"grid.{suffix}").read_bytes().startswith(start), suffix


def test_sample_flags_that_contradict_the_checkpoint_are_refused(latent_ckpt, tiny_vae_dir, tmp_path):
    # --image-size is the training size (DiT's flag): omitted, it is the checkpoint's (64 here), not 256.
    grid = _sample(latent_ckpt, tiny_vae_dir, tmp_path / "default.png")
    assert grid.shape == (2 * (64 + 2) + 2, 2 * (64 + 2) + 2, 3)
    for flags, message in [
        (["--image-size", "128"], r"--image-size 128: --ckpt .* was trained at 64x64 .*--height/--width"),
        (["--model-kwargs", '{"depth": 3}'], "--model-kwargs describes the model of a raw state dict"),
        (["--num-classes", "1000"], r"--num-classes 1000: --ckpt .* models 10 classes"),
        (["--class-labels", "10"], r"--class-labels \[10\] must lie in \[0, 10\)"),
    ]:
        with pytest.raises(UsageError, match=message):
            _sample(latent_ckpt, tiny_vae_dir, tmp_path / "x.png", *flags)
    assert not (tmp_path / "x.png").exists()


def test_sample_ddp_refuses_to_mix_batch_layouts(pixel_ckpt, tmp_path):
    """Parts of a killed run with --per-proc-batch-size 3 are neither reused by index nor failed on at the end by a
    restart with 2: it is refused up front, saying how to continue and how to start over."""
    npz, first = _sample_ddp(pixel_ckpt, tmp_path / "a", nproc=1)
    parts = npz.with_suffix(".parts")
    parts.mkdir()
    np.save(parts / "000001.npy", first[3:6])  # the killed run's finished batch (made before layouts were kept)
    (parts / ".000002.npy.tmp-4194321").write_bytes(b"half a batch")  # its unfinished one (no such pid)
    npz.unlink()
    before = sorted(p.name for p in parts.iterdir())
    args = ["sample-ddp", "--ckpt", str(pixel_ckpt), "--vae", "none", "--image-size", "8", "--height", "8",
            "--width", "12", "--num-sampling-steps", "2", "--num-fid-samples", "10", "--cfg-scale", "1.5",
            "--sample-dir", str(tmp_path / "a"), "--device", "cpu"]
    for size in ("2", "4"):
        message = (f"holds 1 batches sampled with --per-proc-batch-size 3, this run asks for {size}.*re-run with "
                   "--per-proc-batch-size 3 to continue, or delete ")
        with pytest.raises(UsageError, match=message):
            ledit([*args, "--per-proc-batch-size", size])
        assert sorted(p.name for p in parts.iterdir()) == before
    _, again = _sample_ddp(pixel_ckpt, tmp_path / "a", nproc=1)  # the same layout continues, and the archive
    np.testing.assert_array_equal(again, first)  # matches the uninterrupted run

    # A layout recorded by this version names the checkpoint too: another file of the same name is refused.
    parts.mkdir()
    (parts / "layout.json").write_text(json.dumps({"per_proc_batch_size": 3, "ckpt": "/elsewhere/pixel.pt",
                                                   "vae": "none"}))
    with pytest.raises(UsageError, match=r"sampled with --ckpt /elsewhere/pixel.pt, this run uses .*pixel.pt"):
        ledit([*args, "--per-proc-batch-size", "3"])
