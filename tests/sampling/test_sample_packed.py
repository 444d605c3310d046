"""``ledit sample --sizes``: several sizes in one packed batch, each image what it would be alone."""

import numpy as np
import pytest
import torch
from PIL import Image
from workflow_fixtures import TINY_MODEL

from ledit.arguments import UsageError
from ledit.cli import run as ledit
from ledit.sampling.addons import SamplingAddons
from ledit.sampling.loop import sample_latents, sample_packed_latents


def _tiny_model():
    from ledit.models import build_model

    torch.manual_seed(0)
    model = build_model("LEDiT", input_size=8, in_channels=4, num_classes=10, **TINY_MODEL)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("cfg_scale", [1.0, 4.0])
def test_packed_sampling_equals_each_size_alone_with_ddim(cfg_scale):
    model = _tiny_model()
    model.set_inference_options(stem_dilation=2)  # a model-side add-on, applied per image
    sizes, labels = [(8, 8), (6, 10), (16, 16), (2, 2)], torch.tensor([1, 2, 3, 4])
    noises = [torch.randn(4, *size, generator=torch.Generator().manual_seed(i)) for i, size in enumerate(sizes)]
    options = dict(respacing="ddim4", sampler="ddim", cfg_scale=cfg_scale, addons=SamplingAddons(timestep_shift=2.0))
    queue = iter(noises)
    packed = sample_packed_latents(model, labels, sizes, initial_noise=lambda size: next(queue), **options)
    for i, size in enumerate(sizes):
        alone = sample_latents(model, labels[i : i + 1], size, initial_noise=lambda size, i=i: noises[i][None],
                               **options)[0]
        assert packed[i].shape == (4, *size)
        torch.testing.assert_close(packed[i], alone, rtol=1e-4, atol=1e-4)


def test_sample_sizes_grid_has_one_row_per_size(pixel_ckpt, tmp_path):
    flags = ["sample", "--ckpt", str(pixel_ckpt), "--vae", "none", "--num-sampling-steps", "3", "--sampler", "ddim",
             "--device", "cpu", "--cfg-scale", "4.0"]
    ledit([*flags, "--sizes", "8x8,6x10,4x4", "--class-labels", "1", "2", "--output", str(tmp_path / "mixed.png")])
    grid = np.asarray(Image.open(tmp_path / "mixed.png"))
    assert grid.shape == (3 * (8 + 2) + 2, 2 * (10 + 2) + 2, 3)  # cells of the largest height and width
    assert grid[2:10, 2:10].std() > 0 and grid[14:20, 2:12].std() > 0 and grid[24:28, 2:6].std() > 0
    assert (grid[24:28, 6:12] == 0).all()  # a 4x4 image leaves the rest of its cell black
    # The first image starts from the generator's first draw, as the first image of a one-size run does.
    ledit([*flags, "--height", "8", "--width", "8", "--class-labels", "1", "--output", str(tmp_path / "one.png")])
    alone = np.asarray(Image.open(tmp_path / "one.png"))[2:10, 2:10].astype(int)
    assert np.abs(grid[2:10, 2:10].astype(int) - alone).max() <= 1  # uint8 rounding of fp32 differences


@pytest.mark.parametrize("extra, message", [
    (["--sizes", "8x8", "--height", "8"], "--sizes gives every sample size: drop --height/--width"),
    (["--sizes", "8x8,9x8"], "--sizes: 9x8 must be divisible by 2"),
    (["--sizes", "8x8,8"], "'8' is not a size; use HEIGHTxWIDTH"),
    (["--sizes", "8x8,16x16", "--timestep-shift", "auto"], "--timestep-shift auto cannot apply to a packed batch"),
])
def test_sample_sizes_bad_inputs(pixel_ckpt, tmp_path, extra, message):
    with pytest.raises(UsageError, match=message):
        ledit(["sample", "--ckpt", str(pixel_ckpt), "--vae", "none", "--num-sampling-steps", "2", "--device", "cpu",
               "--output", str(tmp_path / "x.png"), *extra])
    assert not (tmp_path / "x.png").exists()
