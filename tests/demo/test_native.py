"""``ledit demo --native-resolution``: the packed batches, the packed loss, the one training loop (whose fixed-size
path must not change), the cache keys, the flags, and a tiny end-to-end run that reuses the plain demo's
checkpoint. Never the quality."""

import copy
import json
from dataclasses import replace

import pytest
import torch

from ledit import cli
from ledit.arguments import UsageError
from ledit.demo import run
from ledit.demo.config import flag_values, resolve_config
from ledit.demo.dataset import CHANNELS, SHAPE_CLASSES, derive_seed, render_shapes, to_model_range
from ledit.demo.objective import diffusion_kwargs, training_loss
from ledit.demo.packed_batches import draw_packed_batch, side_choices, token_budget
from ledit.demo.train import (
    TrainingConfig,
    cache_key,
    initialised_model,
    learning_rate,
    native_size_batch,
    train_model,
    training_record,
    training_timesteps,
)
from ledit.demo.variants import VARIANTS
from ledit.diffusion import create_diffusion
from ledit.models.packing import pack, unpack

TINY_MODEL = {"input_size": 16, "patch_size": 4, "in_channels": CHANNELS, "hidden_size": 32, "depth": 2,
              "num_heads": 4, "class_dropout_prob": 0.0, "num_classes": len(SHAPE_CLASSES), "learn_sigma": False}
TRAINING = TrainingConfig(image_size=16, steps=2, batch_size=3, lr=1e-3, warmup_steps=1, ema_decay=0.9, seed=0)
# A demo far too small to mean anything, to check files and the cache.
TINY = ["--quick", "--threads", "1", "--train-steps", "2", "--batch-size", "4", "--hidden-size", "32", "--depth", "2",
        "--num-samples", "3", "--sampling-steps", "2", "--real-images", "4", "--swd-descriptors", "8",
        "--swd-projections", "8"]


def test_packed_batch_fills_the_token_budget_greedily_with_sizes_of_the_range():
    budget = token_budget(batch_size=8, image_size=32, patch_size=4)
    x, labels, grids = draw_packed_batch((24, 40), budget, 4, seed=3)
    tokens = int(grids.prod(1).sum())
    assert x.shape == (tokens, 1, 4, 4) and labels.shape == (grids.shape[0],)
    assert budget - 100 < tokens <= budget  # the next image, at most 10x10 tokens, did not fit
    assert set(grids.flatten().tolist()) <= {6, 7, 8, 9, 10}
    assert len({tuple(grid) for grid in grids.tolist()}) > 3  # mixed sizes and aspect ratios
    assert labels.tolist() == [i % len(SHAPE_CLASSES) for i in range(len(labels))]
    # Each image is a real scene of its size (objects at full brightness, a dark background), in [-1, 1].
    for image in unpack(x, grids):
        assert image.min() >= -1 and image.max() <= 1 and (image > 0.8).any() and (image < 0).float().mean() > 0.5
    again = draw_packed_batch((24, 40), budget, 4, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(again, (x, labels, grids)))
    assert not torch.equal(draw_packed_batch((24, 40), budget, 4, seed=4)[2], grids)
    # Over many steps every side of the range is drawn, for heights and widths alike.
    seen = torch.cat([draw_packed_batch((24, 40), budget, 4, seed=s)[2] for s in range(6)])
    assert set(seen[:, 0].tolist()) == set(seen[:, 1].tolist()) == {6, 7, 8, 9, 10}


@pytest.mark.parametrize("sides, budget, message", [
    ((26, 40), 2048, "not divisible by --patch-size 4"),
    ((24, 40), 64, "does not fit the token budget of 64"),
])
def test_side_choices_refuse_ranges_that_cannot_be_trained(sides, budget, message):
    with pytest.raises(ValueError, match=message):
        side_choices(sides, 4, budget)


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_packed_loss_is_the_mean_of_each_images_own_loss(prediction):
    torch.manual_seed(0)
    model = VARIANTS["ledit"].build({**TINY_MODEL, "input_size": 32}).eval()
    diffusion = create_diffusion("", learn_sigma=False, **diffusion_kwargs(prediction))
    images = [to_model_range(render_shapes(1, h, w, seed=h * w)[0][0]) for h, w in ((24, 40), (32, 32), (40, 28))]
    labels, t = torch.tensor([0, 1, 0]), torch.tensor([10, 500, 990])
    noises = [torch.randn_like(image) for image in images]
    x, grids = pack(images, 4)
    noise, _ = pack(noises, 4)
    packed = training_loss(diffusion, model, x, t, labels, noise, prediction, grids)
    alone = [training_loss(diffusion, model, image[None], t[i : i + 1], labels[i : i + 1], noises[i][None], prediction)
             for i, image in enumerate(images)]
    # Per image, not per token: the 24x40 image weighs as much as the 32x32 one.
    torch.testing.assert_close(packed, torch.stack(alone).mean(), rtol=1e-5, atol=1e-6)


def _pre_native_train_model(model, training):
    """The fixed-size training loop as it was before the batch drawing became a parameter (the oracle)."""
    diffusion = create_diffusion("", learn_sigma=False, **diffusion_kwargs(training.prediction))
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=0.0)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    generator = torch.Generator().manual_seed(derive_seed("train-noise", training.seed))
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(training.seed)
        for step in range(training.steps):
            images, labels = render_shapes(training.batch_size, training.image_size, training.image_size,
                                           derive_seed("train", training.seed, step))
            x = to_model_range(images)
            t = training_timesteps(x.shape[0], diffusion.num_timesteps, training.timesteps, generator)
            noise = torch.randn(x.shape, generator=generator)
            alpha_bar = diffusion.alphas_cumprod.to(torch.float32)[t].view(-1, 1, 1, 1)
            target = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x
            loss = ((model(diffusion.q_sample(x, t, noise=noise), t, labels) - target) ** 2).mean()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(training, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            decay = min(training.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for ema_param, param in zip(ema.parameters(), model.parameters()):
                    ema_param.lerp_(param, 1 - decay)
    return ema.state_dict()


def _model(variant="ledit"):
    return initialised_model(lambda: VARIANTS[variant].build(TINY_MODEL), TRAINING.seed)


def test_the_fixed_size_training_is_bit_identical_to_before_and_its_cache_key_unchanged():
    training = replace(TRAINING, steps=3, timesteps="logit-normal", lr_schedule="cosine")  # the demo's recipe
    new, old = train_model(_model(), training), _pre_native_train_model(_model(), training)
    assert new.keys() == old.keys()
    for name in new:
        assert torch.equal(new[name], old[name]), name
    # The optional field, unset, is not part of the record: the plain demo's cached checkpoints stay valid.
    assert "native_sides" not in training_record(training)
    config = _model().config
    native = replace(training, native_sides=(16, 24))
    other_range = replace(native, native_sides=(16, 20))
    assert cache_key(config, native) not in (cache_key(config, training), cache_key(config, other_range))


def test_native_training_packs_mixed_sizes_and_changes_the_weights():
    training = replace(TRAINING, native_sides=(12, 20))  # budget 3 x 4x4 tokens; images of 3x3 to 5x5 tokens
    drawn = []

    def recording(training, patch_size):
        draw = native_size_batch(training, patch_size)
        return lambda step: drawn.append(draw(step)) or drawn[-1]

    weights = train_model(_model(), training, batches=recording)
    assert len(drawn) == training.steps
    assert all(x.shape[0] == grids.prod(1).sum() <= 48 and len(labels) == len(grids) for x, labels, grids in drawn)
    assert len({tuple(grid) for _, _, grids in drawn for grid in grids.tolist()}) > 1
    again = train_model(_model(), training)  # the default batches of a native config: the same, reproducibly
    assert all(torch.equal(again[name], weights[name]) for name in weights)
    dense = train_model(_model(), TRAINING)
    assert any(not torch.equal(weights[name], dense[name]) for name in weights)


@pytest.mark.parametrize("variant", ["ledit", "dit-rope"])
def test_the_demo_models_packed_forward_equals_each_images_own(variant, demo_args):
    config = resolve_config(demo_args("--native-resolution"))
    model_size, training = run.model_and_training(config)
    model = initialised_model(lambda: VARIANTS[variant].build(model_size), 0).eval()
    torch.manual_seed(1)
    latents = [torch.randn(1, h, w) for h, w in ((24, 40), (32, 32), (40, 24), (28, 36))]
    t, y = torch.tensor([3, 250, 600, 999]), torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        packed = model(latents, t, y)
        for i, latent in enumerate(latents):
            torch.testing.assert_close(packed[i], model(latent[None], t[i : i + 1], y[i : i + 1])[0],
                                       rtol=1e-4, atol=1e-5)
    assert training.native_sides == (24, 40)


@pytest.mark.parametrize("argv, message", [
    (["--native-resolution", "--native-sides", "26-40"], "--native-sides 26-40 is not divisible by --patch-size 4"),
    (["--native-resolution", "--native-sides", "40-24"], "--native-sides '40-24': write MIN-MAX"),
    (["--native-resolution", "--batch-size", "1"], "does not fit the token budget of 64; lower --native-sides or "
                                                   "raise --batch-size"),
    (["--native-resolution", "--addons"], "--native-resolution and --addons are two runs"),
    (["--native-sides", "24-40"], "--native-sides applies to --native-resolution"),
    (["--native-resolution", "--models", "ledit,unet"], "--models: unknown"),
])
def test_bad_native_flags_raise_a_usage_error_naming_the_flag(argv, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        cli.run(["demo", "--out-dir", str(tmp_path), *argv])
    assert not any(tmp_path.iterdir())


def test_native_defaults_and_the_repeated_command(demo_args):
    config = resolve_config(demo_args("--native-resolution"))
    assert config.models == "ledit,dit-rope" and config.sizes == ("32x32", "48x48", "64x64", "96x96", "32x64")
    assert resolve_config(demo_args("--native-resolution", "--sizes", "48x96")).sizes == ("48x96",)
    plain = demo_args()
    assert "native_sides" not in flag_values(resolve_config(plain))  # a plain run's command stays valid


def test_tiny_native_demo_reuses_the_plain_demos_ledit_and_writes_its_files(tmp_path, capsys, demo_args):
    out = tmp_path / "demo"
    tiny = [*TINY, "--jobs", "1", "--out-dir", str(out), "--models", "ledit"]
    run.main(demo_args(*tiny))
    run.main(demo_args(*tiny, "--native-resolution", "--native-sides", "16-24", "--sizes", "32x32,48x48"))
    printed = capsys.readouterr().out
    assert str(out / "native.png") in printed and str(out / "native.md") in printed
    results = json.loads((out / "native.json").read_text())
    assert [row["key"] for row in results["rows"]] == ["real", "ledit-native", "ledit-fixed"]
    assert [row["label"] for row in results["rows"][1:]] == ["LEDiT, native 16-24 px", "LEDiT, fixed 32x32"]
    assert results["training"]["ledit-fixed"]["cached"] and not results["training"]["ledit-native"]["cached"]
    assert results["training"]["ledit-fixed"]["checkpoint"] != results["training"]["ledit-native"]["checkpoint"]
    assert results["sizes"] == ["32x32", "48x48"] and "--native-resolution" in results["command"]
    table = (out / "native.md").read_text()
    assert "| LEDiT, native 16-24 px |" in table and results["conclusion"] in table
    assert "loaded from the checkpoint cache: ledit-fixed" in table
    # The plain demo's own files are untouched by the variant.
    assert json.loads((out / "results.json").read_text())["rows"][1]["key"] == "ledit"
