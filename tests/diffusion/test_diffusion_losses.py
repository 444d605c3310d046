"""Likelihood terms against analytic values."""

import math

import pytest
import torch

from ledit.diffusion import discretized_gaussian_log_likelihood, mean_flat, normal_kl


def test_normal_kl_matches_closed_form_and_torch_distributions():
    # KL(N(1, 4) || N(0, 1)) = 0.5 * (4 + 1 - 1 - ln 4)
    kl = normal_kl(torch.tensor(1.0), math.log(4.0), 0.0, 0.0)
    assert kl.item() == pytest.approx(0.5 * (4.0 - math.log(4.0)), rel=1e-6)

    m1, m2 = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    lv1, lv2 = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, (0.5 * lv1).exp()), torch.distributions.Normal(m2, (0.5 * lv2).exp())
    )
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected)
    assert normal_kl(m1, lv1, m1, lv1).abs().max().item() < 1e-15


def test_normal_kl_needs_a_tensor():
    with pytest.raises(TypeError, match="at least one tensor"):
        normal_kl(0.0, 0.0, 1.0, 0.0)


def test_discretized_log_likelihood_of_one_interior_bin():
    x, mean, log_scale = 0.2, 0.1, math.log(0.3)

    def tanh_cdf(v):  # the approximation DiT uses, written out by hand
        return 0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))

    def exact_cdf(v):
        return 0.5 * (1 + math.erf(v / math.sqrt(2)))

    lo, hi = (x - 1 / 255 - mean) / 0.3, (x + 1 / 255 - mean) / 0.3
    got = discretized_gaussian_log_likelihood(
        torch.tensor([x], dtype=torch.float64),
        means=torch.tensor([mean], dtype=torch.float64),
        log_scales=torch.tensor([log_scale], dtype=torch.float64),
    ).item()
    assert got == pytest.approx(math.log(tanh_cdf(hi) - tanh_cdf(lo)), rel=1e-9)
    assert got == pytest.approx(math.log(exact_cdf(hi) - exact_cdf(lo)), abs=2e-3)  # close to the exact Gaussian


def test_discretized_levels_form_a_distribution():
    """The 256 levels' bins tile the real line, so their probabilities sum to one."""
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, log_scale in [(0.0, math.log(0.5)), (0.9, math.log(0.05)), (-2.0, 0.0)]:
        means, log_scales = torch.full_like(levels, mean), torch.full_like(levels, log_scale)
        log_probs = discretized_gaussian_log_likelihood(levels, means=means, log_scales=log_scales)
        assert log_probs.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    # The edge bins extend to infinity: a mean far below -1 puts almost all mass on the level -1.
    far = discretized_gaussian_log_likelihood(levels[:1], means=torch.tensor([-5.0], dtype=torch.float64),
                                              log_scales=torch.zeros(1, dtype=torch.float64))
    assert far.exp().item() == pytest.approx(1.0, abs=1e-4)


def test_discretized_log_likelihood_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        discretized_gaussian_log_likelihood(torch.zeros(2, 3), means=torch.zeros(2, 3), log_scales=torch.zeros(3))


def test_mean_flat_keeps_the_batch():
    x = torch.arange(24.0).view(2, 3, 4)
    torch.testing.assert_close(mean_flat(x), torch.tensor([5.5, 17.5]))
