import pytest
import torch

from ledit.demo.dataset import CHANNELS
from ledit.demo.train import (
    TrainingConfig,
    cache_key,
    initialised_model,
    learning_rate,
    trained_weights,
    training_timesteps,
)
from ledit.models import build_model

TINY_MODEL = {
    "input_size": 16,
    "patch_size": 4,
    "in_channels": CHANNELS,
    "hidden_size": 32,
    "depth": 2,
    "num_heads": 4,
    "class_dropout_prob": 0.0,
    "num_classes": 3,
    "learn_sigma": False,
}
TRAINING = TrainingConfig(image_size=16, steps=2, batch_size=3, lr=1e-3, warmup_steps=1, ema_decay=0.9, seed=0)


def test_cache_key_follows_everything_that_changes_the_weights():
    config = build_model("LEDiT", **TINY_MODEL).config
    key = cache_key(config, TRAINING)
    assert cache_key(dict(config), TRAINING) == key
    assert cache_key({**config, "scan": "raster"}, TRAINING) != key
    assert cache_key(config, TrainingConfig(**{**TRAINING.__dict__, "steps": 3})) != key
    assert cache_key(config, TrainingConfig(**{**TRAINING.__dict__, "prediction": "x0"})) != key


def _model():
    return initialised_model(lambda: build_model("LEDiT", **TINY_MODEL), TRAINING.seed)


def test_training_is_reproducible_cached_and_survives_a_corrupt_cache(tmp_path, capsys):
    first, path, cached = trained_weights(_model(), TRAINING, str(tmp_path), "t")
    assert not cached
    again, same_path, cached = trained_weights(_model(), TRAINING, str(tmp_path), "t")
    assert cached and same_path == path
    for name in first:
        torch.testing.assert_close(again[name], first[name], rtol=0, atol=0)

    with open(path, "wb") as corrupt:
        corrupt.write(b"not a checkpoint")
    retrained, _, cached = trained_weights(_model(), TRAINING, str(tmp_path), "t")
    assert not cached and "unreadable" in capsys.readouterr().out
    # Same seed: same initial weights whatever the global RNG did, same data stream, same trained weights.
    torch.randn(100)
    for name in first:
        torch.testing.assert_close(retrained[name], first[name], rtol=0, atol=0)


def test_logit_normal_timesteps_favour_mid_noise_and_stay_in_range():
    generator = torch.Generator().manual_seed(0)
    uniform = training_timesteps(20000, 1000, "uniform", generator)
    logit_normal = training_timesteps(20000, 1000, "logit-normal", generator)
    for steps in (uniform, logit_normal):
        assert steps.dtype == torch.long and steps.min() >= 0 and steps.max() <= 999
    mid = lambda steps: ((steps >= 250) & (steps < 750)).float().mean().item()  # noqa: E731
    assert mid(uniform) == pytest.approx(0.5, abs=0.02)
    assert mid(logit_normal) == pytest.approx(0.728, abs=0.02)  # P(|z| < logit(0.75) = 1.0986)
    with pytest.raises(ValueError, match="timesteps"):
        training_timesteps(2, 1000, "cosine", generator)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    cosine = TrainingConfig(**{**TRAINING.__dict__, "steps": 100, "warmup_steps": 10, "lr_schedule": "cosine"})
    constant = TrainingConfig(**{**cosine.__dict__, "lr_schedule": "constant"})
    assert learning_rate(constant, 0) == pytest.approx(1e-4) and learning_rate(constant, 99) == pytest.approx(1e-3)
    assert learning_rate(cosine, 50) == pytest.approx(0.5e-3)
    assert 0 < learning_rate(cosine, 99) < learning_rate(cosine, 98) < 1e-5
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate(TrainingConfig(**{**cosine.__dict__, "lr_schedule": "step"}), 0)
