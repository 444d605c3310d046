"""The forward process, the posterior and the training loss."""

import math

import pytest
import torch

from ledit.diffusion import LossType, ModelVarType, create_diffusion, mean_flat

SHAPE = (3, 2, 5, 7)  # non-square on purpose


def test_create_diffusion_defaults_match_dit():
    diffusion = create_diffusion("")
    assert diffusion.num_timesteps == 1000
    assert diffusion.model_var_type == ModelVarType.LEARNED_RANGE
    assert diffusion.loss_type == LossType.MSE
    assert create_diffusion("", use_kl=True).loss_type == LossType.RESCALED_KL
    assert create_diffusion("", rescale_learned_sigmas=True).loss_type == LossType.RESCALED_MSE
    assert create_diffusion("", learn_sigma=False).model_var_type == ModelVarType.FIXED_LARGE
    assert create_diffusion("", learn_sigma=False, sigma_small=True).model_var_type == ModelVarType.FIXED_SMALL


def test_q_sample_formula():
    diffusion = create_diffusion("")
    x0, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    t = torch.tensor([0, 10, 999])
    x_t = diffusion.q_sample(x0, t, noise=noise)
    for i, step in enumerate(t.tolist()):
        alpha_bar = diffusion.alphas_cumprod[step].item()
        expected = math.sqrt(alpha_bar) * x0[i] + math.sqrt(1 - alpha_bar) * noise[i]
        torch.testing.assert_close(x_t[i], expected)
    mean, variance, log_variance = diffusion.q_mean_variance(x0, t)
    assert mean.shape == variance.shape == log_variance.shape == SHAPE
    torch.testing.assert_close(variance[2, 0, 0, 0].item(), 1 - diffusion.alphas_cumprod[999].item())


def test_posterior_matches_gaussian_conditioning():
    """q(x_{t-1} | x_t, x_0) derived directly: x_{t-1} ~ N(sqrt(ab_{t-1}) x_0, 1 - ab_{t-1}) and
    x_t | x_{t-1} ~ N(sqrt(a_t) x_{t-1}, b_t) give precision 1/(1 - ab_{t-1}) + a_t / b_t."""
    diffusion = create_diffusion("")
    x0, x_t = torch.randn(SHAPE), torch.randn(SHAPE)
    t = torch.tensor([1, 300, 999])
    mean, variance, log_variance = diffusion.q_posterior_mean_variance(x0, x_t, t)
    for i, step in enumerate(t.tolist()):
        beta = diffusion.betas[step].item()
        prev_alpha_bar = diffusion.alphas_cumprod[step - 1].item()
        var = 1 / (1 / (1 - prev_alpha_bar) + (1 - beta) / beta)
        mu = var * (math.sqrt(prev_alpha_bar) * x0[i] / (1 - prev_alpha_bar) + math.sqrt(1 - beta) * x_t[i] / beta)
        torch.testing.assert_close(mean[i], mu)
        assert variance[i].unique().item() == pytest.approx(var, rel=1e-6)
        assert log_variance[i].unique().item() == pytest.approx(math.log(var), rel=1e-6)
    # At t = 0 the posterior is x_0 itself; its log-variance is clipped to the t = 1 value.
    mean0, var0, log_var0 = diffusion.q_posterior_mean_variance(x0[:1], x_t[:1], torch.tensor([0]))
    torch.testing.assert_close(mean0, x0[:1])
    assert var0.max().item() == 0.0
    assert log_var0[0, 0, 0, 0].item() == pytest.approx(diffusion.posterior_log_variance_clipped[1].item(), rel=1e-6)


def true_noise_output(noise, var_values):
    """A model output that predicts exactly the noise that was added, plus the given variance values."""
    return lambda x, t, **_: torch.cat([noise, torch.full_like(noise, var_values)], dim=1)


def test_training_losses_hybrid_loss(tiny_model):
    diffusion = create_diffusion("")
    x0, noise = torch.randn(SHAPE).clamp(-1, 1), torch.randn(SHAPE)
    t = torch.tensor([0, 7, 999])
    y = torch.tensor([0, 1, 2])
    terms = diffusion.training_losses(tiny_model, x0, t, dict(y=y), noise=noise)
    assert set(terms) == {"loss", "mse", "vb"}
    assert all(v.shape == (3,) for v in terms.values())
    torch.testing.assert_close(terms["loss"], terms["mse"] + terms["vb"])
    eps = tiny_model(diffusion.q_sample(x0, t, noise), t, y)[:, :2]
    torch.testing.assert_close(terms["mse"], mean_flat((noise - eps) ** 2))
    terms["loss"].mean().backward()
    assert tiny_model.conv.weight.grad.abs().sum() > 0


def test_vb_is_zero_for_the_true_mean_and_posterior_variance():
    """With eps exact and v = -1 (the posterior variance), p equals q(x_{t-1} | x_t, x_0): KL = 0 for t > 0.
    With v = +1 (beta_t), the KL is 0.5 * (log(b / pv) + pv / b - 1) per element, in bits."""
    diffusion = create_diffusion("")
    x0, noise = torch.randn(SHAPE).clamp(-1, 1), torch.randn(SHAPE)
    t = torch.tensor([1, 500, 999])
    at_posterior = diffusion.training_losses(true_noise_output(noise, -1.0), x0, t, noise=noise)
    assert at_posterior["mse"].abs().max().item() == 0.0
    assert at_posterior["vb"].abs().max().item() < 1e-5
    at_beta = diffusion.training_losses(true_noise_output(noise, 1.0), x0, t, noise=noise)
    for i, step in enumerate(t.tolist()):
        b, pv = diffusion.betas[step].item(), diffusion.posterior_variance[step].item()
        expected = 0.5 * (math.log(b / pv) + pv / b - 1) / math.log(2)
        assert at_beta["vb"][i].item() == pytest.approx(expected, rel=1e-3, abs=1e-6)


def test_vb_gradient_reaches_only_the_variance_channels():
    diffusion = create_diffusion("")
    x0 = torch.randn(SHAPE).clamp(-1, 1)
    output = torch.randn(SHAPE[0], 4, *SHAPE[2:], requires_grad=True)
    terms = diffusion.training_losses(lambda x, t: output, x0, torch.tensor([0, 3, 600]))
    (vb_grad,) = torch.autograd.grad(terms["vb"].sum(), output, retain_graph=True)
    assert vb_grad[:, :2].abs().max().item() == 0.0  # the mean is detached in the VB term
    assert (vb_grad[:, 2:].abs().sum(dim=(1, 2, 3)) > 0).all()  # every sample's variance gets a gradient
    (mse_grad,) = torch.autograd.grad(terms["mse"].sum(), output)
    assert mse_grad[:, 2:].abs().max().item() == 0.0 and mse_grad[:, :2].abs().min().item() > 0


def test_rescaled_losses():
    x0, noise = torch.randn(SHAPE).clamp(-1, 1), torch.randn(SHAPE)
    output = torch.randn(SHAPE[0], 4, *SHAPE[2:])
    t = torch.tensor([0, 30, 99])

    def model(x, t):
        return output

    plain = create_diffusion("", diffusion_steps=100).training_losses(model, x0, t, noise=noise)
    rescaled = create_diffusion("", diffusion_steps=100, rescale_learned_sigmas=True).training_losses(
        model, x0, t, noise=noise
    )
    torch.testing.assert_close(rescaled["vb"], plain["vb"] * 0.1)  # T / 1000
    kl = create_diffusion("", diffusion_steps=100, use_kl=True).training_losses(model, x0, t, noise=noise)
    assert set(kl) == {"loss"}
    torch.testing.assert_close(kl["loss"], plain["vb"] * 100)  # the whole bound, times T


def test_fixed_sigma_path(tiny_model_fixed_sigma):
    x0, noise, t = torch.randn(SHAPE), torch.randn(SHAPE), torch.tensor([0, 1, 999])
    y = torch.zeros(3, dtype=torch.long)
    large = create_diffusion("", learn_sigma=False)
    terms = large.training_losses(tiny_model_fixed_sigma, x0, t, dict(y=y), noise=noise)
    assert set(terms) == {"loss", "mse"}
    torch.testing.assert_close(terms["loss"], terms["mse"])
    out = large.p_mean_variance(tiny_model_fixed_sigma, x0, t, model_kwargs=dict(y=y))
    assert out["variance"][0].unique().item() == pytest.approx(large.posterior_variance[1].item(), rel=1e-6)
    assert out["variance"][2].unique().item() == pytest.approx(large.betas[999].item(), rel=1e-6)
    small = create_diffusion("", learn_sigma=False, sigma_small=True)
    out = small.p_mean_variance(tiny_model_fixed_sigma, x0, t, model_kwargs=dict(y=y))
    assert out["variance"][2].unique().item() == pytest.approx(small.posterior_variance[999].item(), rel=1e-6)


def test_learned_range_interpolates_log_variance():
    diffusion = create_diffusion("")
    x = torch.randn(1, 2, 3, 4)
    t = torch.tensor([500])
    out = diffusion.p_mean_variance(lambda x, t: torch.cat([x, torch.zeros_like(x)], 1), x, t)
    expected = 0.5 * (diffusion.betas[500].log() + diffusion.posterior_log_variance_clipped[500]).item()
    assert out["log_variance"].unique().item() == pytest.approx(expected, rel=1e-6)


def test_model_may_return_an_output_extra_pair():
    diffusion = create_diffusion("")
    x = torch.randn(1, 2, 3, 4)
    out = diffusion.p_mean_variance(lambda x, t: (torch.cat([x, x], 1), {"attention": 1}), x, torch.tensor([5]))
    assert out["extra"] == {"attention": 1} and out["mean"].shape == x.shape


def test_predict_xstart_mean_type():
    diffusion = create_diffusion("", predict_xstart=True, learn_sigma=False)
    x0, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    terms = diffusion.training_losses(lambda x, t: x0 + 0.5, x0, torch.tensor([1, 2, 3]), noise=noise)
    torch.testing.assert_close(terms["mse"], torch.full((3,), 0.25))


def test_bad_inputs_raise_clear_errors(tiny_model, tiny_model_fixed_sigma):
    diffusion = create_diffusion("")
    x0, y = torch.randn(SHAPE), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"expected \(3, 4, 5, 7\) \(2\*C channels"):
        diffusion.training_losses(tiny_model_fixed_sigma, x0, torch.tensor([1, 2, 3]), dict(y=y))
    with pytest.raises(ValueError, match=r"t must be an integer tensor of shape \(3,\)"):
        diffusion.training_losses(tiny_model, x0, torch.tensor([1, 2]), dict(y=y))
    with pytest.raises(ValueError, match="t must be an integer tensor"):
        diffusion.training_losses(tiny_model, x0, torch.tensor([1.0, 2.0, 3.0]), dict(y=y))
    with pytest.raises(ValueError, match=r"t must be an integer tensor of shape \(3,\)"):
        diffusion.q_sample(x0, torch.tensor(5))
    with pytest.raises(ValueError, match="noise has shape"):
        diffusion.training_losses(tiny_model, x0, torch.tensor([1, 2, 3]), dict(y=y), noise=torch.randn(3, 2, 5, 6))
