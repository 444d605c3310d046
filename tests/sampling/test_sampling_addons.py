"""The add-ons end to end on a tiny LEDiT: all off is bit-identical to DiT's sampling, the low-resolution
reference pipeline's shapes and seeds (DDPM and DDIM), the resolution shift, and flag parsing."""

import argparse

import pytest
import torch
from workflow_fixtures import TINY_MODEL

from ledit.diffusion import create_diffusion
from ledit.models import NUM_TRAIN_TIMESTEPS, build_model
from ledit.sampling.addons import SamplingAddons, add_addon_arguments, addons_from_args
from ledit.sampling.loop import sample_latents
from ledit.sampling.lowres import refine_from_reference, renoise_step

TRAIN = 8  # latent pixels: a 4x4 token grid with patch 2


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_model("LEDiT", input_size=TRAIN, in_channels=4, num_classes=10, **TINY_MODEL).eval()
    with torch.no_grad():  # adaLN-Zero starts at zero output: perturb so every path matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


LABELS = torch.tensor([1, 7])


def noise_source(seed):
    def initial_noise(size):
        return torch.randn(len(LABELS), 4, *size, generator=torch.Generator().manual_seed(seed))

    return initial_noise


def run(model, size, sampler="ddpm", cfg_scale=4.0, addons=None, seed=0, steps=4):
    respacing = f"ddim{steps}" if sampler == "ddim" else str(steps)
    return sample_latents(model, LABELS, size, respacing=respacing, sampler=sampler, cfg_scale=cfg_scale,
                          initial_noise=noise_source(seed), addons=addons,
                          generator=torch.Generator().manual_seed(seed + 100))


def dit_sampling(model, size, sampler, cfg_scale, seed=0, steps=4):
    """The sampling code before the add-ons existed (DiT's sample.py), as the reference."""
    respacing = f"ddim{steps}" if sampler == "ddim" else str(steps)
    diffusion = create_diffusion(respacing)
    generator = torch.Generator().manual_seed(seed + 100)
    z = noise_source(seed)(size)
    if cfg_scale > 1.0:
        z = torch.cat([z, z])
        kwargs = {"y": torch.cat([LABELS, torch.full_like(LABELS, 10)]), "cfg_scale": cfg_scale}
        fn = model.forward_with_cfg
    else:
        kwargs, fn = {"y": LABELS}, model.forward
    loop = diffusion.ddim_sample_loop if sampler == "ddim" else diffusion.p_sample_loop
    out = loop(fn, z.shape, z, clip_denoised=False, model_kwargs=kwargs, generator=generator)
    return out.chunk(2)[0] if cfg_scale > 1.0 else out


@pytest.mark.parametrize("sampler,cfg_scale", [("ddpm", 4.0), ("ddim", 1.0), ("ddpm", 1.0)])
def test_all_addons_off_is_bit_identical_to_dit_sampling(model, sampler, cfg_scale):
    reference = dit_sampling(model, (16, 12), sampler, cfg_scale)
    assert torch.equal(run(model, (16, 12), sampler, cfg_scale), reference)
    explicit_off = SamplingAddons(cfg_scale_per_doubling=0.0, guidance_interval=None, timestep_shift=1.0,
                                  lowres_renoise=None, model_options=None)
    assert torch.equal(run(model, (16, 12), sampler, cfg_scale, explicit_off), reference)
    # A guidance interval covering every step is DiT's guidance, bit for bit.
    assert torch.equal(run(model, (16, 12), sampler, cfg_scale, SamplingAddons(guidance_interval=(0.0, 1.0))),
                       reference)


def test_dits_diffusion_has_the_steps_the_models_are_trained_on():
    assert create_diffusion("").num_timesteps == create_diffusion("ddim25").original_num_steps == NUM_TRAIN_TIMESTEPS


def test_renoise_step_picks_the_noisiest_step_at_or_below_the_strength():
    assert create_diffusion("10").timestep_map.tolist() == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert renoise_step(create_diffusion("10"), 0.5) == 4  # step 444
    assert renoise_step(create_diffusion("ddim10"), 0.5) == 5  # step 500 (t/T = 0.5 exactly)
    assert renoise_step(create_diffusion("ddim10"), 0.05) == 0
    with pytest.raises(ValueError, match=r"strength must lie in \(0, 1\)"):
        renoise_step(create_diffusion("10"), 1.0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_lowres_pipeline_shapes_seeds_and_composition(model, sampler):
    addons = SamplingAddons(lowres_renoise=0.5)
    out = run(model, (16, 16), sampler, 4.0, addons, steps=6)
    assert out.shape == (2, 4, 16, 16) and bool(out.isfinite().all())
    assert torch.equal(run(model, (16, 16), sampler, 4.0, addons, steps=6), out)  # same seeds, same samples
    assert not torch.equal(run(model, (16, 16), sampler, 4.0, addons, seed=1, steps=6), out)
    assert not torch.equal(run(model, (16, 16), sampler, 4.0, steps=6), out)  # the add-on changes the samples

    # It is exactly: sample at the training size, then upsample, re-noise and refine with the same generator.
    respacing = "ddim6" if sampler == "ddim" else "6"
    generator = torch.Generator().manual_seed(100)
    reference = sample_latents(model, LABELS, (TRAIN, TRAIN), respacing=respacing, sampler=sampler, cfg_scale=4.0,
                               initial_noise=noise_source(0), generator=generator)
    y = torch.cat([LABELS, torch.full_like(LABELS, 10)])
    refined = refine_from_reference(create_diffusion(respacing), lambda x, t, y: model.forward_with_cfg(x, t, y, 4.0),
                                    reference, (16, 16), 0.5, sampler, {"y": y}, generator, duplicate=True)
    assert torch.equal(refined.chunk(2)[0], out)


def test_lowres_at_the_training_size_is_plain_sampling(model):
    assert torch.equal(run(model, (TRAIN, TRAIN), addons=SamplingAddons(lowres_renoise=0.5)),
                       run(model, (TRAIN, TRAIN)))


def test_auto_shift_is_sqrt_of_the_token_ratio(model):
    # 16x16 latents = 4x the training tokens: auto = sqrt(4) = 2.
    auto = run(model, (16, 16), "ddim", 1.0, SamplingAddons(timestep_shift="auto"))
    assert torch.equal(auto, run(model, (16, 16), "ddim", 1.0, SamplingAddons(timestep_shift=2.0)))
    assert not torch.equal(auto, run(model, (16, 16), "ddim", 1.0))
    # At the training size auto is sqrt(1) = 1: no shift, bit for bit.
    assert torch.equal(run(model, (TRAIN, TRAIN), "ddim", 1.0, SamplingAddons(timestep_shift="auto")),
                       run(model, (TRAIN, TRAIN), "ddim", 1.0))


def test_resolution_cfg_scale_is_applied_above_the_training_size(model):
    # 16x16 = two doublings of the token count: 2.0 + 2 * 0.5 = 3.0.
    ramped = run(model, (16, 16), "ddim", 2.0, SamplingAddons(cfg_scale_per_doubling=0.5))
    assert torch.equal(ramped, run(model, (16, 16), "ddim", 3.0))
    # Even from no guidance at the training size (1.0 -> 2.0 at 16x16).
    assert torch.equal(run(model, (16, 16), "ddim", 1.0, SamplingAddons(cfg_scale_per_doubling=0.5)),
                       run(model, (16, 16), "ddim", 2.0))


def parse(*flags):
    parser = argparse.ArgumentParser()
    add_addon_arguments(parser)
    return addons_from_args(parser.parse_args(list(flags)))


def test_flags_to_options():
    assert parse() == SamplingAddons()
    assert parse().describe() == ""
    addons = parse("--cfg-scale-per-doubling", "0.25", "--guidance-interval", "0.1,0.7", "--timestep-shift", "auto",
                   "--lowres-renoise", "0.6", "--temperature-causal", "none", "--stem-dilation", "2")
    assert addons == SamplingAddons(0.25, (0.1, 0.7), "auto", 0.6, {"temperature_causal": "none", "stem_dilation": 2})
    assert addons.describe() == "cfgpd0.25-gi0.1-0.7-shiftauto-lowres0.6-stemdilation2-temperaturecausalnone"
    assert parse("--timestep-shift", "1.5").timestep_shift == 1.5


@pytest.mark.parametrize("flags,message", [
    (["--guidance-interval", "0.7,0.1"], "--guidance-interval 0.7,0.1: need 0 <= LO < HI <= 1"),
    (["--guidance-interval", "0.5"], "--guidance-interval '0.5': write LO,HI"),
    (["--timestep-shift", "big"], "--timestep-shift 'big': give a number > 0"),
    (["--timestep-shift", "0"], "--timestep-shift must be 'auto'"),
    (["--lowres-renoise", "1.5"], r"--lowres-renoise must lie in \(0, 1\)"),
    (["--cfg-scale-per-doubling", "nan"], "--cfg-scale-per-doubling must be a finite number"),
])
def test_bad_flags_are_rejected_naming_the_flag(flags, message):
    with pytest.raises(ValueError, match=message):
        parse(*flags)


def test_bad_choice_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit):
        parse("--temperature-full", "hot")
    assert "--temperature-full: invalid choice: 'hot'" in capsys.readouterr().err
