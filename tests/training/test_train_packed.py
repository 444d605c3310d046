"""``ledit train --max-tokens N``: packed native-resolution training, its loss, exact resume; and fixed-size
training unchanged."""

import json

import numpy as np
import pytest
import torch
from workflow_fixtures import TINY_MODEL_JSON, assert_same_training_state

from ledit.arguments import UsageError
from ledit.cli import run as ledit

FLAGS = ["--model", "LEDiT", "--model-kwargs", TINY_MODEL_JSON, "--num-classes", "2", "--log-every", "1",
         "--num-workers", "0", "--device", "cpu", "--multi-dilation-prob", "0.5"]

# The losses main's trainer (before packed training existed, at ebd286f) logs for the run below, with main's
# extract-latents making the `latent_shards` fixture. CPU fp32 on torch 2.13: regenerate them with main's code if
# the torch version changes.
MAIN_LOSSES = [1.030347466468811, 1.01798415184021, 1.0838812589645386, 1.0954159498214722]


def _losses(results):
    (run,) = results.iterdir()
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_fixed_size_training_is_bit_identical_to_main(latent_shards, tmp_path):
    ledit(["train", "--data-path", str(latent_shards), "--results-dir", str(tmp_path), "--global-batch-size", "3",
           "--max-steps", "4", *FLAGS])
    assert _losses(tmp_path) == MAIN_LOSSES


def _packed(data, results, *extra):
    ledit(["train", "--data-path", str(data), "--results-dir", str(results), "--max-tokens", "80", *FLAGS, *extra])


def test_packed_training_packs_greedily_and_resumes_bit_exactly(native_latent_shards, tmp_path):
    from ledit.data.packing import PackedBatchSampler
    from ledit.data.shards import LatentShardDataset

    data = LatentShardDataset(native_latent_shards)
    tokens = data.latent_sizes.prod(axis=1) // 4
    assert sorted(set(tokens.tolist())) == [4, 12, 14, 15, 16]
    packer = PackedBatchSampler(tokens, 80, seed=0)
    steps = packer.steps_in_epoch(0) + packer.steps_in_epoch(1)
    assert steps >= 4

    # Two epochs and a bit, checkpoints every 2 steps: the run killed after step 2 resumes into the same state.
    full = tmp_path / "full"
    _packed(native_latent_shards, full, "--max-steps", str(steps + 1), "--ckpt-every", "2")
    (run,) = full.iterdir()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, steps + 2))
    assert all(0 < e["tokens_per_s"] and e["images_per_s"] > 0 for e in log)
    final = torch.load(run / "checkpoints" / f"{steps + 1:07d}.pt", weights_only=True)
    assert final["position"] == [2, 1] and final["args"]["max_tokens"] == 80

    resumed = tmp_path / "resumed"
    _packed(native_latent_shards, resumed, "--max-steps", "2", "--ckpt-every", "2")
    (again_run,) = resumed.iterdir()
    ledit(["train", "--resume", str(again_run), "--max-steps", str(steps + 1), "--ckpt-every", "2",
           "--num-workers", "0", "--device", "cpu"])
    again = torch.load(again_run / "checkpoints" / f"{steps + 1:07d}.pt", weights_only=True)
    assert _losses(resumed) == [e["loss"] for e in log]
    assert_same_training_state(again, final)


def test_packed_training_by_epochs_ends_with_a_checkpoint(native_latent_shards, tmp_path):
    from ledit.data.packing import PackedBatchSampler
    from ledit.data.shards import LatentShardDataset

    tokens = LatentShardDataset(native_latent_shards).latent_sizes.prod(axis=1) // 4
    steps = PackedBatchSampler(tokens, 200, seed=0).steps_in_epoch(0)
    ledit(["train", "--data-path", str(native_latent_shards), "--results-dir", str(tmp_path), "--max-tokens", "200",
           "--epochs", "1", "--ckpt-every", "1000", "--loss-per-token", *FLAGS])
    (run,) = tmp_path.iterdir()
    assert [p.name for p in (run / "checkpoints").iterdir()] == [f"{steps:07d}.pt"]
    assert len(_losses(tmp_path)) == steps


def test_greedy_packs_keep_the_order_and_the_bound():
    from ledit.data.packing import PackedBatchSampler, greedy_packs

    assert greedy_packs([3, 4, 2, 5, 1, 1], 6) == [[0], [1, 2], [3, 4], [5]]
    assert greedy_packs([6, 6], 6) == [[0], [1]]
    with pytest.raises(ValueError, match="7 tokens does not fit in max_tokens=6"):
        greedy_packs([7], 6)
    # Every rank steps the same number of times; a resumed sampler continues at its pack.
    tokens = np.random.default_rng(0).integers(1, 20, 101)
    ranks = [PackedBatchSampler(tokens, 40, 3, r, seed=2) for r in range(3)]
    for sampler in ranks:
        sampler.set_epoch(4)
    packs = [list(sampler) for sampler in ranks]
    assert len({len(p) for p in packs}) == 1
    assert all(sum(tokens[i] for i, _ in pack) <= 40 for rank in packs for pack in rank)
    ranks[1].set_epoch(4, start=3)
    assert list(ranks[1]) == packs[1][3:]


def test_per_image_loss_weights_each_image_equally():
    """Per image: an image's mean over its tokens, averaged over images; per token: every token counts once. A
    pack of same-size images gives the batched mean either way."""
    from ledit.models.packing import loss_weights

    grids = torch.tensor([[1, 1], [2, 2]])
    losses = torch.tensor([1.0, 3.0, 3.0, 3.0, 3.0])
    assert (losses * loss_weights(grids, 5, per_token=False, normaliser=2)).sum().item() == pytest.approx(2.0)
    assert (losses * loss_weights(grids, 5, per_token=True, normaliser=5)).sum().item() == pytest.approx(13 / 5)


def test_packed_loss_equals_each_image_s_own_loss():
    """The training loss of a pack, per image, equals the mean of the images' own losses (same latents, timesteps,
    noise)."""
    from workflow_fixtures import TINY_MODEL

    from ledit.diffusion import create_diffusion
    from ledit.models import build_model
    from ledit.models.packing import PackedDenoiser, loss_weights, pack, token_timesteps

    torch.manual_seed(0)
    model = build_model("LEDiT", input_size=8, num_classes=4, **TINY_MODEL).eval()
    with torch.no_grad():  # random weights everywhere, so the zero-initialised (adaLN-Zero) paths carry signal
        for param in model.parameters():
            param.normal_(0, 0.1)
    diffusion = create_diffusion("")
    latents = [torch.randn(4, h, w) for h, w in ((2, 2), (6, 10), (8, 8))]
    noises = [torch.randn_like(x) for x in latents]
    t, y = torch.tensor([0, 400, 999]), torch.tensor([1, 2, 3])
    x, grids = pack(latents, 2)
    losses = diffusion.training_losses(PackedDenoiser(model, grids), x, token_timesteps(t, grids, x.shape[0]),
                                       dict(y=y), noise=pack(noises, 2)[0])["loss"]
    packed = (losses * loss_weights(grids, x.shape[0], per_token=False, normaliser=3)).sum()
    alone = [diffusion.training_losses(model, xi[None], t[i : i + 1], dict(y=y[i : i + 1]), noise=ni[None])["loss"]
             for i, (xi, ni) in enumerate(zip(latents, noises))]
    torch.testing.assert_close(packed, torch.cat(alone).mean(), rtol=1e-5, atol=1e-6)


def test_packed_training_bad_flags(native_latent_shards, latent_shards, image_folder, tmp_path):
    with pytest.raises(UsageError, match="holds native-resolution latents of several sizes: .*--max-tokens N"):
        ledit(["train", "--data-path", str(native_latent_shards), "--results-dir", str(tmp_path), *FLAGS])
    with pytest.raises(UsageError, match="--max-tokens 10 cannot hold the largest image .* 16 tokens"):
        ledit(["train", "--data-path", str(native_latent_shards), "--results-dir", str(tmp_path),
               "--max-tokens", "10", *FLAGS])
    with pytest.raises(UsageError, match="--max-tokens packs latents: .*ImageFolder.*--native-resolution"):
        ledit(["train", "--data-path", str(image_folder), "--results-dir", str(tmp_path), "--max-tokens", "64",
               *FLAGS])
    with pytest.raises(UsageError, match="--loss-per-token applies to packed training: add --max-tokens"):
        ledit(["train", "--data-path", str(latent_shards), "--results-dir", str(tmp_path), "--loss-per-token",
               *FLAGS])
    with pytest.raises(UsageError, match="--max-tokens packs images of several sizes.*learnable.*pos_embed='sincos'"):
        ledit(["train", "--data-path", str(native_latent_shards), "--results-dir", str(tmp_path), "--max-tokens",
               "64", "--model", "DiT", "--model-kwargs", json.dumps({**json.loads(TINY_MODEL_JSON),
                                                                     "pos_embed": "learnable"}), *FLAGS[4:-2]])
    assert not any(tmp_path.iterdir())
