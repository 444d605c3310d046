"""LEDiTPipeline against ledit's own sampling: same seed, same images."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers_helpers import tiny_ledit
from PIL import Image

from ledit.cli import run as ledit
from ledit.diffusers import LEDiTPipeline, export_pipeline, ledit_scheduler
from ledit.sampling.addons import SamplingAddons
from ledit.sampling.loop import sample_latents

# The stated tolerances against ledit's own sampling on the same weights and seed: decoded images to one uint8
# level (ledit truncates 127.5 x + 128 as DiT's sample_ddp.py does, diffusers rounds 255 (x / 2 + 1 / 2)), latents
# to RTOL of their largest value (diffusers keeps its alpha tables in float32, ledit in float64; measured: at most
# 5e-7, with every add-on, DDIM and DDPM).
RTOL = 1e-5


@pytest.fixture(scope="module")
def pipe(pipeline_dir):
    return LEDiTPipeline.from_pretrained(pipeline_dir)


def pipeline_latents(pipe, labels, size, steps, seed=0, cfg=4.0, **addons):
    generator = torch.Generator().manual_seed(seed)
    return pipe(labels, height=8 * size[0], width=8 * size[1], guidance_scale=cfg, num_inference_steps=steps,
                generator=generator, output_type="latent", **addons).images


def ledit_latents(model, labels, size, steps, sampler="ddim", seed=0, cfg=4.0, addons=None):
    """What `ledit sample` runs for one batch: the starting noise is the generator's first draw."""
    generator = torch.Generator().manual_seed(seed)
    respacing = f"ddim{steps}" if sampler == "ddim" else str(steps)
    return sample_latents(model, torch.tensor(labels), size, respacing=respacing, sampler=sampler, cfg_scale=cfg,
                          addons=addons, generator=generator,
                          initial_noise=lambda s: torch.randn(len(labels), model.in_channels, *s, generator=generator))


def assert_same_latents(ours, reference):
    torch.testing.assert_close(ours, reference, rtol=0, atol=RTOL * float(reference.abs().max()))


def test_ddim_pipeline_gives_ledit_sample_ddims_images(pipe, ledit_ckpt, tiny_vae_dir, tmp_path):
    """The issue's equivalence: DDIM, seed 3, a 2:1 image above the training size, CFG 4 -> `ledit sample`'s PNG."""
    labels, height, width = [1, 2, 3], 64, 128
    ledit(["sample", "--ckpt", str(ledit_ckpt), "--vae", str(tiny_vae_dir), "--image-size", "64", "--height",
           str(height), "--width", str(width), "--sampler", "ddim", "--num-sampling-steps", "5", "--seed", "3",
           "--class-labels", *map(str, labels), "--nrow", "3", "--device", "cpu", "--output", str(tmp_path / "s.png")])
    grid = np.asarray(Image.open(tmp_path / "s.png")).astype(int)
    images = pipe(labels, height=height, width=width, num_inference_steps=5,
                  generator=torch.Generator().manual_seed(3)).images
    assert [image.size for image in images] == [(width, height)] * 3
    for i, image in enumerate(images):
        tile = grid[2 : 2 + height, 2 + i * (width + 2) : 2 + i * (width + 2) + width]
        difference = np.abs(np.asarray(image).astype(int) - tile)
        assert difference.max() <= 1 and tile.std() > 0
    reference = ledit_latents(pipe.transformer.model, labels, (8, 16), 5, seed=3)
    assert_same_latents(pipeline_latents(pipe, labels, (8, 16), 5, seed=3), reference)


def test_ddpm_with_the_learned_variance_is_ledits_ddpm(pipe):
    """DDPMScheduler with variance_type learned_range and linspace spacing: ledit's DDPM over "N" respaced steps,
    noise draw for noise draw."""
    default = pipe.scheduler
    try:
        pipe.scheduler = ledit_scheduler("ddpm")
        ours = pipeline_latents(pipe, [4, 5], (8, 12), 6, seed=1)
    finally:
        pipe.scheduler = default
    assert_same_latents(ours, ledit_latents(pipe.transformer.model, [4, 5], (8, 12), 6, sampler="ddpm", seed=1))


TEMPERATURES = dict(temperature_full="fitv2-log", temperature_causal="none", temperature_until=0.5)
ADDONS = [
    (dict(timestep_shift="auto"), SamplingAddons(timestep_shift="auto")),
    (dict(cfg_scale_per_doubling=0.5, guidance_interval=(0.2, 0.8)),
     SamplingAddons(cfg_scale_per_doubling=0.5, guidance_interval=(0.2, 0.8))),
    (TEMPERATURES, SamplingAddons(model_options=TEMPERATURES)),
    (dict(stem_dilation=2, stem_dilation_until=0.6),
     SamplingAddons(model_options=dict(stem_dilation=2, stem_dilation_until=0.6))),
    (dict(lowres_renoise=0.6, timestep_shift=1.5), SamplingAddons(lowres_renoise=0.6, timestep_shift=1.5)),
]


@pytest.mark.parametrize("arguments,addons", ADDONS, ids=["shift", "cfg-schedule", "temperature", "stem", "lowres"])
def test_every_addon_is_a_pipeline_argument_with_ledits_effect(pipe, arguments, addons):
    """At 2x per side (16x16 latents from 8x8 training): each add-on changes the samples, exactly as in ledit."""
    model = pipe.transformer.model
    ours = pipeline_latents(pipe, [1, 7], (16, 16), 5, **arguments)
    reference = ledit_latents(model, [1, 7], (16, 16), 5, addons=addons)
    assert_same_latents(ours, reference)
    assert not torch.allclose(ours, pipeline_latents(pipe, [1, 7], (16, 16), 5), rtol=0, atol=1e-3)
    assert model.inference_options == type(model.inference_options)()  # restored after the call


def test_bad_arguments_are_named(pipe):
    with pytest.raises(ValueError, match=r"height x width = 60 x 64 must both be divisible by 16 .* e.g. 64 x 64"):
        pipe([1], height=60, width=64, num_inference_steps=1)
    for labels in ([10], [], [1.0]):
        with pytest.raises(ValueError, match=r"class_labels must be class ids in \[0, 10\)"):
            pipe(labels, num_inference_steps=1)
    with pytest.raises(ValueError, match="^timestep_shift must be"):
        pipe([1], num_inference_steps=1, timestep_shift=0)
    with pytest.raises(ValueError, match="^guidance_interval 0.9,0.1"):
        pipe([1], num_inference_steps=1, guidance_interval=(0.9, 0.1))
    with pytest.raises(ValueError, match="rope_dynamic='dy-ntk' needs a RoPE model"):
        pipe([1], num_inference_steps=1, rope_dynamic="dy-ntk")
    with pytest.raises(ValueError, match="output_type must be one of"):
        pipe([1], num_inference_steps=1, output_type="jpeg")
    with pytest.raises(ValueError, match=r"latents has shape \(1, 4, 8, 8\); this call starts from \(1, 4, 8, 16\)"):
        pipe([1], width=128, num_inference_steps=1, latents=torch.randn(1, 4, 8, 8))


def test_outputs_latents_and_schedulers_are_diffusers(pipe):
    generator = torch.Generator().manual_seed(0)
    np_images = pipe([1, 2], height=48, width=96, num_inference_steps=2, generator=generator, output_type="np").images
    assert np_images.shape == (2, 48, 96, 3) and 0 <= np_images.min() and np_images.max() <= 1
    (pt_images,) = pipe([1], num_inference_steps=2, output_type="pt", return_dict=False)
    assert pt_images.shape == (1, 3, 64, 64)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    given = pipe([1], num_inference_steps=2, latents=noise, output_type="latent").images
    drawn = pipe([1], num_inference_steps=2, generator=torch.Generator().manual_seed(5), output_type="latent").images
    torch.testing.assert_close(given, drawn, rtol=0, atol=0)
    default = pipe.scheduler
    try:
        for scheduler in (EulerDiscreteScheduler, DPMSolverMultistepScheduler):
            pipe.scheduler = scheduler.from_config(default.config)
            for shift in (1.0, "auto"):
                images = pipe([3], height=128, width=64, num_inference_steps=4, timestep_shift=shift,
                              lowres_renoise=0.5, output_type="np").images
                assert images.shape == (1, 128, 64, 3) and np.isfinite(images).all()
    finally:
        pipe.scheduler = default


def test_id2label_survives_save_and_load(tmp_path):
    pipe = export_pipeline(tiny_ledit(in_channels=3), tmp_path / "pixels", vae=None,
                           id2label={0: "tench, Tinca tinca", 7: "cock"})
    loaded = LEDiTPipeline.from_pretrained(tmp_path / "pixels")
    assert loaded.vae is None and loaded.labels == pipe.labels == {"Tinca tinca": 0, "cock": 7, "tench": 0}
    assert loaded.get_label_ids("cock") == [7] and loaded.get_label_ids(["tench", "cock"]) == [0, 7]
    with pytest.raises(ValueError, match=r"unknown class names \['hen'\]"):
        loaded.get_label_ids("hen")
    image = loaded([7], height=16, width=32, num_inference_steps=2, output_type="np").images  # pixel space
    assert image.shape == (1, 16, 32, 3)


def test_diffusion_pipeline_from_pretrained_loads_it_offline(pipeline_dir, tmp_path):
    """diffusers' generic loader, in a fresh process with the Hub switched off: diffusers >= 0.38 asks for
    trust_remote_code before it runs the folder's one-line ledit_pipeline.py (older ones run it), then it loads
    ledit's own class."""
    version_asks = "tuple(map(int, diffusers.__version__.split('.')[:2])) >= (0, 38)"
    script = f"""
import torch
import diffusers
from diffusers import DiffusionPipeline
try:
    DiffusionPipeline.from_pretrained({str(pipeline_dir)!r})
    asked = False
except ValueError as error:
    assert "trust_remote_code" in str(error), error
    asked = True
assert asked == ({version_asks}), diffusers.__version__
pipe = DiffusionPipeline.from_pretrained({str(pipeline_dir)!r}, trust_remote_code=True)
image = pipe([1], height=32, width=64, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
print(type(pipe).__module__, type(pipe).__name__, image.size, asked)
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    module, name, width, height, _ = done.stdout.split()[-5:]
    assert (module, name, width, height) == ("ledit.diffusers.pipeline", "LEDiTPipeline", "(64,", "32)")
    index = json.loads((pipeline_dir / "model_index.json").read_text())
    assert index["_class_name"] == ["ledit_pipeline", "LEDiTPipeline"]
    assert index["transformer"] == ["ledit.diffusers.transformer", "LEDiTTransformer2DModel"]
    assert (pipeline_dir / "ledit_pipeline.py").read_text().endswith("from ledit.diffusers import LEDiTPipeline  "
                                                                     "# noqa: F401\n")
