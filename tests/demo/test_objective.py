"""v-prediction: the training target and the x0 the samplers see are consistent, at whole and shifted steps."""

import pytest
import torch

from ledit.demo.objective import XStartFromV, _alpha_bar, diffusion_kwargs, sampling_model, training_loss
from ledit.diffusion import create_diffusion
from ledit.diffusion.schedule import shift_schedule
from ledit.models import build_model

TINY = dict(input_size=16, patch_size=4, in_channels=3, hidden_size=32, depth=2, num_heads=4,
            class_dropout_prob=0.0, num_classes=3, learn_sigma=False)


class Oracle(torch.nn.Module):
    """Returns the exact v of a known x0 and noise: the wrapper must then return x0 exactly."""

    def __init__(self, x_start, noise, alphas_cumprod):
        super().__init__()
        self.x_start, self.noise, self.alphas_cumprod = x_start, noise, alphas_cumprod
        self.config = {"name": "oracle"}

    def forward(self, x, t, y):
        alpha_bar = self.alphas_cumprod[t.long()].float().view(-1, 1, 1, 1)
        return alpha_bar.sqrt() * self.noise - (1 - alpha_bar).sqrt() * self.x_start


def test_x_start_from_exact_v_is_exact_and_attributes_are_the_models():
    diffusion = create_diffusion("", learn_sigma=False)
    x_start, noise = torch.rand(4, 3, 8, 8) * 2 - 1, torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    x_t = diffusion.q_sample(x_start, t, noise=noise)
    wrapped = XStartFromV(Oracle(x_start, noise, diffusion.alphas_cumprod), diffusion.alphas_cumprod)
    torch.testing.assert_close(wrapped(x_t, t, None), x_start, atol=1e-5, rtol=0)
    assert wrapped.config == {"name": "oracle"}
    with pytest.raises(ValueError, match="cannot be guided"):
        wrapped.forward_with_cfg(x_t, t, None, cfg_scale=4.0)


def test_fractional_steps_interpolate_the_log_snr_as_the_shifted_schedule_does():
    diffusion = create_diffusion("", learn_sigma=False)
    betas, model_timesteps = shift_schedule(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 2.0)
    shifted_alpha_bar = torch.cumprod(1 - betas, dim=0)
    model = XStartFromV(torch.nn.Identity(), diffusion.alphas_cumprod)
    steps = torch.tensor([100, 400, 700])
    got = _alpha_bar(model.alphas_cumprod, model_timesteps[steps])
    torch.testing.assert_close(got, shifted_alpha_bar[steps].float(), rtol=2e-3, atol=1e-6)


def test_training_loss_trains_v_and_sampling_wraps_only_v_models():
    model = build_model("LEDiT", **TINY)
    diffusion = create_diffusion("", learn_sigma=False, **diffusion_kwargs("v"))
    x_start, noise = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, 3, 16, 16)
    loss = training_loss(diffusion, model, x_start, torch.tensor([3, 800]), torch.tensor([0, 1]), noise, "v")
    loss.backward()
    assert loss.item() > 0 and model.final_layer.linear.weight.grad is not None
    assert isinstance(sampling_model(model, "v", diffusion.alphas_cumprod), XStartFromV)
    assert sampling_model(model, "x0", diffusion.alphas_cumprod) is model
    assert diffusion_kwargs("eps") == {"predict_xstart": False}
    with pytest.raises(ValueError, match="prediction must be one of"):
        diffusion_kwargs("score")
