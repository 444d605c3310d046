"""Guidance over the run: the resolution-dependent CFG scale and the guidance interval."""

import math

import pytest
import torch

from ledit.sampling.guidance import GuidanceInterval, guided_model, resolution_cfg_scale, token_ratio


class RecordingModel:
    """forward / forward_with_cfg that record what ran, returning the label as the prediction."""

    num_classes = 4
    patch_size = 2
    train_grid = (4, 4)

    def __init__(self):
        self.calls = []

    def forward(self, x, t, y):
        self.calls.append(("cond", t.tolist()))
        return y.float().view(-1, 1, 1, 1).expand_as(x).clone()

    def forward_with_cfg(self, x, t, y, cfg_scale):
        scale = cfg_scale if isinstance(cfg_scale, float) else cfg_scale.flatten().tolist()
        self.calls.append(("cfg", t.tolist(), scale))
        half = len(x) // 2
        out = y.float().view(-1, 1, 1, 1).expand_as(x)
        cond, uncond = out[:half], out[half:]
        guided = uncond + cfg_scale * (cond - uncond)
        return torch.cat([guided, guided])


def test_resolution_cfg_scale_values():
    assert resolution_cfg_scale(1.5, 4.0, 0.25) == 2.0  # 256^2 -> 512^2: two doublings of the token count
    assert resolution_cfg_scale(1.5, 16.0, 0.25) == 2.5
    assert resolution_cfg_scale(1.5, 9.0, 0.5) == pytest.approx(1.5 + 0.5 * math.log2(9))
    assert resolution_cfg_scale(1.5, 1.0, 0.25) == 1.5  # the training size keeps the base scale
    assert resolution_cfg_scale(1.5, 0.25, 0.25) == 1.5  # and so does anything smaller
    assert resolution_cfg_scale(4.0, 16.0, 0.0) == 4.0  # off: the constant scale


def test_token_ratio():
    model = RecordingModel()  # trained on a 4x4 grid of 2x2 patches: 8x8 latents
    assert token_ratio(model, 8, 8) == 1.0
    assert token_ratio(model, 16, 16) == 4.0
    assert token_ratio(model, 24, 16) == 6.0


def test_interval_switches_between_guided_and_conditional_at_the_bounds():
    model = RecordingModel()
    guided = GuidanceInterval(model, 3.0, (0.2, 0.6), num_timesteps=1000)
    x = torch.zeros(4, 1, 2, 2)
    y = torch.tensor([1, 2, 4, 4])  # labels, then the null label
    for step, branch in [(999, "cond"), (601, "cond"), (600, "cfg"), (400, "cfg"), (200, "cfg"), (199, "cond"),
                         (0, "cond")]:
        model.calls.clear()
        out = guided(x, torch.full((4,), step), y)
        assert model.calls[0][0] == branch, step
        if branch == "cond":  # only the conditional half ran, copied to both halves
            assert model.calls == [("cond", [step, step])]
            assert out[:, 0, 0, 0].tolist() == [1.0, 2.0, 1.0, 2.0]
        else:  # DiT's guidance: uncond + 3 * (cond - uncond) with uncond = 4
            assert out[:, 0, 0, 0].tolist() == [-5.0, -2.0, -5.0, -2.0]


def test_interval_with_per_sample_timesteps_guides_only_the_samples_inside():
    model = RecordingModel()
    guided = GuidanceInterval(model, 3.0, (0.2, 0.6), num_timesteps=1000)
    t = torch.tensor([500, 900, 500, 900])
    out = guided(torch.zeros(4, 1, 2, 2), t, torch.tensor([1, 2, 4, 4]))
    assert model.calls == [("cfg", [500, 900, 500, 900], [3.0, 1.0])]
    assert out[:2, 0, 0, 0].tolist() == [-5.0, 2.0]  # guided, conditional


def test_guided_model_keeps_dit_semantics_without_an_interval():
    model = RecordingModel()
    fn, doubled = guided_model(model, 1.0, (0.2, 0.6), num_timesteps=1000)
    assert fn == model.forward and not doubled  # scale 1: no guidance at all, interval or not
    fn, doubled = guided_model(model, 4.0, None, num_timesteps=1000)
    assert doubled and fn.func == model.forward_with_cfg and fn.keywords == {"cfg_scale": 4.0}
    fn, doubled = guided_model(model, 4.0, (0.0, 0.5), num_timesteps=500)
    assert isinstance(fn, GuidanceInterval) and fn.num_timesteps == 500
