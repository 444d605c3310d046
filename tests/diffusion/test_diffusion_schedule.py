"""Noise schedules and respacing against values worked out by hand."""

import math

import pytest
import torch

from ledit.diffusion import create_diffusion, get_named_beta_schedule, respace_betas, space_timesteps


def hand_linear_betas(steps):
    start, end = 1e-4 * 1000 / steps, 0.02 * 1000 / steps
    return [start + k * (end - start) / (steps - 1) for k in range(steps)]


def hand_alpha_bar(betas, t):
    return math.prod(1 - b for b in betas[: t + 1])


@pytest.mark.parametrize("steps", [1000, 100])
def test_linear_betas_are_scaled_to_the_step_count(steps):
    betas = get_named_beta_schedule("linear", steps)
    assert betas.dtype == torch.float64 and betas.shape == (steps,)
    torch.testing.assert_close(betas, torch.tensor(hand_linear_betas(steps), dtype=torch.float64), rtol=1e-12, atol=0)
    assert betas[0].item() == pytest.approx(1e-4 * 1000 / steps)
    assert betas[-1].item() == pytest.approx(0.02 * 1000 / steps)


def test_alphas_cumprod_and_derived_coefficients():
    diffusion = create_diffusion("")
    betas = hand_linear_betas(1000)
    for t in (0, 1, 500, 999):
        alpha_bar = hand_alpha_bar(betas, t)
        assert diffusion.alphas_cumprod[t].item() == pytest.approx(alpha_bar, rel=1e-10)
        assert diffusion.sqrt_recipm1_alphas_cumprod[t].item() == pytest.approx(math.sqrt(1 / alpha_bar - 1), rel=1e-10)
    # The well-known end point of Ho et al.'s schedule: almost no signal left.
    assert diffusion.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)
    assert diffusion.alphas_cumprod_prev[0].item() == 1.0
    assert diffusion.alphas_cumprod_next[-1].item() == 0.0


def test_cosine_schedule_follows_alpha_bar():
    betas = get_named_beta_schedule("squaredcos_cap_v2", 50)

    def f(s):
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    alpha_bar = torch.cumprod(1 - betas, 0)
    assert alpha_bar[10].item() == pytest.approx(f(11 / 50) / f(0), rel=1e-9)
    assert betas.max().item() == pytest.approx(0.999)  # the cap at the very end


@pytest.mark.parametrize(
    "steps, spec, expected",
    [
        (1000, "ddim5", {0, 200, 400, 600, 800}),
        (1000, "4", {0, 333, 666, 999}),  # stride 999/3
        (10, "2,3", {0, 4, 5, 7, 9}),  # sections [0, 5) and [5, 10)
        (7, "2,2", {0, 3, 4, 6}),  # the first section is one longer: [0, 4) and [4, 7)
        (6, "5", {0, 1, 2, 4, 5}),  # 0, 1.25, 2.5, 3.75, 5 rounded half to even, as DiT does
        (10, 3, {0, 4, 9}),  # an int reads like "3": 0, 4.5 -> 4, 9
        (10, [1, 1], {0, 5}),
        (10, "", set(range(10))),
        (10, None, set(range(10))),
    ],
)
def test_space_timesteps_by_hand(steps, spec, expected):
    assert space_timesteps(steps, spec) == expected


def test_dit_respacing_250():
    kept = sorted(space_timesteps(1000, "250"))
    assert len(kept) == 250 and kept[0] == 0 and kept[-1] == 999
    assert kept[:5] == [0, 4, 8, 12, 16]


@pytest.mark.parametrize(
    "spec, match",
    [
        ("fast", "not understood"),
        ("ddimx", "not understood"),
        ("10,a", "not understood"),
        ("ddim999", "no integer stride"),
        ("1001", "cannot give 1001"),
        ("10,600", "section 1 spans 500"),
        ("0", "at least one step"),
        ("5,-1", "at least one step"),
    ],
)
def test_bad_respacing_strings_raise_clear_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        create_diffusion(spec)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="unknown noise_schedule='cosine'"):
        get_named_beta_schedule("cosine", 1000)
    with pytest.raises(ValueError, match="diffusion_steps >= 20"):
        create_diffusion("", diffusion_steps=10)
    with pytest.raises(ValueError, match="use_timesteps"):
        respace_betas(get_named_beta_schedule("linear", 100), [0, 100])


def test_respaced_betas_keep_alpha_bar_at_kept_steps():
    full = create_diffusion("")
    spaced = create_diffusion("ddim5")
    betas = hand_linear_betas(1000)
    assert spaced.num_timesteps == 5
    assert spaced.timestep_map.tolist() == [0, 200, 400, 600, 800]
    # beta'_k = 1 - alpha_bar(s_k) / alpha_bar(s_{k-1}), with beta'_0 = beta_0.
    assert spaced.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    expected = 1 - hand_alpha_bar(betas, 200) / hand_alpha_bar(betas, 0)
    assert spaced.betas[1].item() == pytest.approx(expected, rel=1e-10)
    torch.testing.assert_close(spaced.alphas_cumprod, full.alphas_cumprod[spaced.timestep_map], rtol=1e-12, atol=0)

    four = create_diffusion("4")
    assert four.timestep_map.tolist() == [0, 333, 666, 999]
    torch.testing.assert_close(four.alphas_cumprod, full.alphas_cumprod[[0, 333, 666, 999]], rtol=1e-12, atol=0)


def test_single_step_process_is_usable():
    diffusion = create_diffusion("1")
    assert diffusion.timestep_map.tolist() == [0]
    assert torch.isfinite(diffusion.posterior_log_variance_clipped).all()
