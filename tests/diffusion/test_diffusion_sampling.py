"""DDPM and DDIM sampling end to end on a tiny model, at non-square shapes."""

import pytest
import torch

from ledit.diffusion import create_diffusion

SHAPE = (2, 2, 5, 7)


def sample(diffusion, model, method, generator=None, noise=None, **kwargs):
    y = torch.tensor([1, 3])
    loop = diffusion.ddim_sample_loop if method == "ddim" else diffusion.p_sample_loop
    return loop(model, SHAPE, noise, model_kwargs=dict(y=y), generator=generator, **kwargs)


@pytest.mark.parametrize("method, respacing", [("ddpm", "4"), ("ddim", "ddim5"), ("ddpm", "3,2")])
def test_loops_run_end_to_end_at_non_square_shapes(tiny_model, method, respacing):
    seen_timesteps = []
    model = tiny_model

    def recording_model(x, t, y):
        seen_timesteps.append(t.tolist())
        return model(x, t, y)

    diffusion = create_diffusion(respacing)
    out = sample(diffusion, recording_model, method, device="cpu", generator=torch.Generator().manual_seed(0))
    assert out.shape == SHAPE and torch.isfinite(out).all()
    assert out.abs().max() <= 1.0  # the last step returns the clipped x_0 prediction, without noise
    # The model always sees original timesteps, latest first, one per sample.
    expected = [[s, s] for s in sorted(diffusion.timestep_map.tolist(), reverse=True)]
    assert seen_timesteps == expected


@pytest.mark.parametrize("method, kwargs", [("ddpm", {}), ("ddim", {"eta": 1.0})])
def test_generator_seed_reproduces_samples_exactly(tiny_model, method, kwargs):
    diffusion = create_diffusion("5")
    first = sample(diffusion, tiny_model, method, torch.Generator().manual_seed(7), **kwargs)
    torch.manual_seed(123)  # the global RNG must not matter
    again = sample(diffusion, tiny_model, method, torch.Generator().manual_seed(7), **kwargs)
    other = sample(diffusion, tiny_model, method, torch.Generator().manual_seed(8), **kwargs)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_stochastic_steps_draw_fresh_noise_from_the_generator(tiny_model):
    """Same x_T, different generators: DDPM and DDIM(eta=1) differ, DDIM(eta=0) is deterministic."""
    diffusion = create_diffusion("5")
    noise = torch.randn(SHAPE)
    ddpm = [sample(diffusion, tiny_model, "ddpm", torch.Generator().manual_seed(s), noise) for s in (1, 2)]
    assert not torch.allclose(*ddpm)
    eta1 = [sample(diffusion, tiny_model, "ddim", torch.Generator().manual_seed(s), noise, eta=1.0) for s in (1, 2)]
    assert not torch.allclose(*eta1)
    eta0 = [sample(diffusion, tiny_model, "ddim", torch.Generator().manual_seed(s), noise, eta=0.0) for s in (1, 2)]
    assert torch.equal(*eta0)
    assert torch.equal(eta0[0], sample(diffusion, tiny_model, "ddim", None, noise))


def oracle_model(x0, full_alphas_cumprod, variance_value=0.0):
    """Predicts the exact noise that turns the known x0 into x_t (at the original timestep it is given)."""

    def model(x_t, t):
        alpha_bar = full_alphas_cumprod.float()[t].view(-1, 1, 1, 1)
        eps = (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()
        return torch.cat([eps, torch.full_like(eps, variance_value)], dim=1)

    return model


def standardized(x_t, x0, alpha_bar):
    """The noise that x_t carries if x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps."""
    return (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()


def test_ddpm_steps_keep_the_forward_marginals():
    """Ancestral steps through the exact posterior (eps known, v = -1) must leave x_t ~ q(x_t | x0) at every
    step: the noise each sample carries stays standard normal. Wrong posterior means or variances break this."""
    shape = (256, 1, 8, 8)
    x0 = torch.rand(shape) * 1.8 - 0.9
    full = create_diffusion("")
    diffusion = create_diffusion("10")
    model = oracle_model(x0, full.alphas_cumprod, variance_value=-1.0)
    steps = list(diffusion.p_sample_loop_progressive(model, shape, device="cpu",
                                                     generator=torch.Generator().manual_seed(0)))
    previous_steps = diffusion.timestep_map.tolist()[::-1][1:]  # the step each yielded sample is at
    for out, step in zip(steps, previous_steps):
        eps = standardized(out["sample"], x0, full.alphas_cumprod[step].float())
        assert abs(eps.mean().item()) < 0.03 and abs(eps.std().item() - 1) < 0.03, step


def test_ddim_eta0_keeps_the_initial_noise_direction():
    """Deterministic DDIM with the exact eps moves along x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps_T."""
    x0 = torch.rand(SHAPE) * 1.8 - 0.9
    full = create_diffusion("")
    diffusion = create_diffusion("ddim10")
    noise = torch.randn(SHAPE)
    eps_T = standardized(noise, x0, full.alphas_cumprod[diffusion.timestep_map[-1]].float())
    steps = list(diffusion.ddim_sample_loop_progressive(oracle_model(x0, full.alphas_cumprod), SHAPE, noise))
    for out, step in zip(steps[:-1], diffusion.timestep_map.tolist()[::-1][1:]):
        torch.testing.assert_close(standardized(out["sample"], x0, full.alphas_cumprod[step].float()), eps_T,
                                   atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method, respacing", [("ddpm", "10"), ("ddim", "ddim10"), ("ddim", "7,3"), ("ddpm", "")])
def test_samplers_recover_x0_from_a_model_that_knows_the_noise(method, respacing):
    x0 = torch.rand(SHAPE) * 1.8 - 0.9  # inside [-1, 1] so clipping is a no-op
    model = oracle_model(x0, create_diffusion("").alphas_cumprod)
    diffusion = create_diffusion(respacing)
    loop = diffusion.ddim_sample_loop if method == "ddim" else diffusion.p_sample_loop
    out = loop(model, SHAPE, device="cpu", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


def test_progressive_loop_yields_every_step(tiny_model):
    diffusion = create_diffusion("4")
    steps = list(
        diffusion.ddim_sample_loop_progressive(
            tiny_model, SHAPE, model_kwargs=dict(y=torch.tensor([0, 1])), generator=torch.Generator().manual_seed(0)
        )
    )
    assert len(steps) == 4 and all(set(s) == {"sample", "pred_xstart"} for s in steps)


def test_ddim_reverse_step_inverts_a_ddim_step():
    x0 = torch.rand(SHAPE) * 1.8 - 0.9
    diffusion = create_diffusion("ddim10")
    model = oracle_model(x0, create_diffusion("").alphas_cumprod)
    t = torch.full((2,), 4)
    x_t = diffusion.q_sample(x0, t)
    x_prev = diffusion.ddim_sample(model, x_t, t)["sample"]
    back = diffusion.ddim_reverse_sample(model, x_prev, t - 1)["sample"]
    torch.testing.assert_close(back, x_t, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="eta=0.0"):
        diffusion.ddim_reverse_sample(model, x_prev, t - 1, eta=0.5)


def test_classifier_free_guidance_batches(tiny_model):
    """DiT's sample.py pattern: a 2B batch of [z, z], labels [y, null], model.forward_with_cfg."""
    diffusion = create_diffusion("4")
    z = torch.randn(SHAPE)
    z = torch.cat([z, z])
    y = torch.cat([torch.tensor([1, 3]), torch.tensor([4, 4])])
    samples = diffusion.p_sample_loop(
        tiny_model.forward_with_cfg, z.shape, z, clip_denoised=False,
        model_kwargs=dict(y=y, cfg_scale=4.0), progress=False, generator=torch.Generator().manual_seed(0),
    )  # no device: taken from the noise (DiT passes device=; a bound method's module works too)
    assert samples.shape == (4, *SHAPE[1:])
    guided, _ = samples.chunk(2)
    unguided = diffusion.p_sample_loop(
        tiny_model.forward_with_cfg, z.shape, z, clip_denoised=False,
        model_kwargs=dict(y=y, cfg_scale=1.0), generator=torch.Generator().manual_seed(0),
    ).chunk(2)[0]
    assert not torch.allclose(guided, unguided)
    # Without noise or device, the device comes from the module behind the bound method.
    out = diffusion.ddim_sample_loop(tiny_model.forward_with_cfg, z.shape, model_kwargs=dict(y=y, cfg_scale=1.5))
    assert out.device == next(tiny_model.parameters()).device


def test_classifier_guidance_shifts_the_mean_by_variance_times_gradient(tiny_model):
    diffusion = create_diffusion("4")
    x, t, y = torch.randn(SHAPE), torch.full((2,), 2), torch.tensor([0, 1])
    gradient = torch.randn(SHAPE)
    plain = diffusion.p_sample(tiny_model, x, t, model_kwargs=dict(y=y), generator=torch.Generator().manual_seed(0))
    guided = diffusion.p_sample(
        tiny_model, x, t, cond_fn=lambda x, t, y: gradient, model_kwargs=dict(y=y),
        generator=torch.Generator().manual_seed(0),
    )
    variance = diffusion.p_mean_variance(tiny_model, x, t, model_kwargs=dict(y=y))["variance"]
    torch.testing.assert_close(guided["sample"] - plain["sample"], variance * gradient)


def test_progress_bar(tiny_model, capsys):
    diffusion = create_diffusion("3")
    diffusion.p_sample_loop(tiny_model, SHAPE, model_kwargs=dict(y=torch.tensor([0, 1])), progress=True)
    assert "3/3" in capsys.readouterr().err


def test_sampling_bad_inputs(tiny_model):
    diffusion = create_diffusion("3")
    kwargs = dict(model_kwargs=dict(y=torch.tensor([0, 1])))
    with pytest.raises(ValueError, match=r"noise has shape \(2, 2, 5, 6\) but shape=\(2, 2, 5, 7\)"):
        diffusion.p_sample_loop(tiny_model, SHAPE, torch.randn(2, 2, 5, 6), **kwargs)
    with pytest.raises(ValueError, match="shape must be"):
        diffusion.ddim_sample_loop(tiny_model, (2,), **kwargs)
    with pytest.raises(ValueError, match="eta must be >= 0"):
        diffusion.ddim_sample_loop(tiny_model, SHAPE, eta=-0.5, **kwargs)
    with pytest.raises(ValueError, match="pass device= or noise="):
        diffusion.p_sample_loop(lambda x, t: x, SHAPE)
    with pytest.raises(ValueError, match="learn_sigma"):
        diffusion.p_sample_loop(lambda x, t: x, SHAPE, device="cpu")


@pytest.mark.gpu
def test_cuda_sampling_matches_cpu_given_a_cpu_generator(tiny_model):
    """A CPU generator seeds a CUDA run: the same noise is drawn, so results agree with the CPU run."""
    diffusion = create_diffusion("5")
    cpu = sample(diffusion, tiny_model, "ddpm", torch.Generator().manual_seed(3), device="cpu")
    cuda_model = tiny_model.to("cuda")

    def model(x, t, y):
        return cuda_model(x, t, y.to(x.device))

    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # TF32 convs would dominate the difference
        on_cuda = sample(diffusion, model, "ddpm", torch.Generator().manual_seed(3), device="cuda")
    assert on_cuda.device.type == "cuda"
    torch.testing.assert_close(on_cuda.cpu(), cpu, atol=1e-3, rtol=1e-3)
    cuda_generator = [torch.Generator("cuda").manual_seed(3) for _ in range(2)]
    first, again = (sample(diffusion, model, "ddim", g, device="cuda", eta=1.0) for g in cuda_generator)
    assert torch.equal(first, again)


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_start_step_runs_only_the_steps_from_there(tiny_model, method):
    """SDEdit-style refinement (the low-resolution reference add-on): x is given at an inner step."""
    seen_timesteps = []

    def recording_model(x, t, y):
        seen_timesteps.append(t[0].item())
        return tiny_model(x, t, y)

    diffusion = create_diffusion("ddim5" if method == "ddim" else "5")
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    out = sample(diffusion, recording_model, method, torch.Generator().manual_seed(1), noise=x, start_step=2)
    assert out.shape == SHAPE
    assert seen_timesteps == diffusion.timestep_map[:3].flip(0).tolist()
    last = diffusion.num_timesteps - 1
    full = sample(diffusion, tiny_model, method, torch.Generator().manual_seed(1), noise=x)
    assert torch.equal(sample(diffusion, tiny_model, method, torch.Generator().manual_seed(1), noise=x,
                              start_step=last), full)
    with pytest.raises(ValueError, match=r"start_step must be an internal step in \[0, 4\]"):
        sample(diffusion, tiny_model, method, noise=x, start_step=5)
