"""SD3's resolution-dependent timestep shift on the DDPM schedule, against values worked out by hand."""

import math

import pytest
import torch

from ledit.diffusion import create_diffusion, shift_schedule


def hand_alpha_bar(t, steps=1000):
    betas = [1e-4 + k * (0.02 - 1e-4) / (steps - 1) for k in range(steps)]
    return math.prod(1 - b for b in betas[: t + 1])


@pytest.mark.parametrize("t", [0, 1, 250, 999])
def test_shift_2_divides_the_snr_by_4(t):
    # alpha_bar' = alpha_bar / (s^2 - (s^2 - 1) alpha_bar) with s = 2, i.e. SNR' = SNR / 4.
    alpha_bar = hand_alpha_bar(t)
    expected = alpha_bar / (4 - 3 * alpha_bar)
    shifted = create_diffusion("", timestep_shift=2.0)
    assert shifted.alphas_cumprod[t].item() == pytest.approx(expected, rel=1e-10)
    snr = alpha_bar / (1 - alpha_bar)
    shifted_snr = shifted.alphas_cumprod[t].item() / (1 - shifted.alphas_cumprod[t].item())
    assert shifted_snr == pytest.approx(snr / 4, rel=1e-8)


def test_step_0_by_hand():
    # alpha_bar_0 = 1 - 1e-4 = 0.9999, shifted: 0.9999 / (4 - 3 * 0.9999) = 0.9999 / 1.0003.
    shifted = create_diffusion("", timestep_shift=2.0).alphas_cumprod[0].item()
    assert shifted == pytest.approx(0.9999 / 1.0003, rel=1e-12)


def test_the_model_is_shown_the_step_with_the_same_noise_level():
    betas = create_diffusion("").betas
    _, tau = shift_schedule(betas, 2.0)
    alpha_bar = torch.cumprod(1 - betas, 0)
    shifted = alpha_bar / (4 - 3 * alpha_bar)
    for t in (0, 10, 300, 700):
        # The original schedule at the fractional step tau_t, log-SNR interpolated, has the shifted SNR.
        lo = int(tau[t])
        frac = tau[t].item() - lo
        log_snr = (alpha_bar / (1 - alpha_bar)).log()
        at_tau = (1 - frac) * log_snr[lo] + frac * log_snr[lo + 1]
        assert at_tau.item() == pytest.approx(math.log(shifted[t] / (1 - shifted[t])), abs=1e-9)
        assert tau[t] > t  # more noise than step t: the model is told a later step
    assert tau[-1].item() == 999  # past the schedule's end: clamped to the last step (pure noise either way)
    assert bool((tau[1:] >= tau[:-1]).all())


def test_respaced_shifted_process_keeps_the_shifted_alpha_bar_and_maps_steps():
    full = create_diffusion("", timestep_shift=2.0)
    spaced = create_diffusion("ddim5", timestep_shift=2.0)
    kept = [0, 200, 400, 600, 800]
    torch.testing.assert_close(spaced.alphas_cumprod, full.alphas_cumprod[kept], rtol=1e-12, atol=0)
    torch.testing.assert_close(spaced.timestep_map, full.timestep_map[kept])
    assert spaced.timestep_map.dtype == torch.float32


def test_shift_1_is_bit_identical_to_no_shift(tiny_model):
    plain, one = create_diffusion("ddim5"), create_diffusion("ddim5", timestep_shift=1.0)
    assert torch.equal(plain.betas, one.betas) and torch.equal(plain.timestep_map, one.timestep_map)
    assert plain.timestep_map.dtype == torch.long
    noise = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1])
    a = plain.ddim_sample_loop(tiny_model, noise.shape, noise, model_kwargs={"y": y})
    b = one.ddim_sample_loop(tiny_model, noise.shape, noise, model_kwargs={"y": y})
    assert torch.equal(a, b)


def test_shift_spends_more_steps_at_high_noise(tiny_model):
    # With s > 1 every kept step is noisier than without, and the sampler still runs end to end.
    plain, shifted = create_diffusion("10"), create_diffusion("10", timestep_shift=math.sqrt(4))
    assert bool((shifted.alphas_cumprod < plain.alphas_cumprod).all())
    out = shifted.p_sample_loop(tiny_model, (1, 2, 4, 4), model_kwargs={"y": torch.tensor([2])},
                                generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 2, 4, 4) and bool(out.isfinite().all())


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_shift_is_rejected(bad):
    with pytest.raises(ValueError, match="timestep_shift must be a finite number > 0"):
        create_diffusion("10", timestep_shift=bad)
