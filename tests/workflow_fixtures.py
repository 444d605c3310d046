"""Tiny local stand-ins shared by the workflow tests (data, training, sampling, evaluation): an ImageFolder of
random images, a randomly initialised 8x-downsampling AutoencoderKL saved with save_pretrained (the real
weights' loading path, with nothing downloaded), and tiny DiT/LEDiT model settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

# hidden 32, depth 2, head dim 16: seconds per training step on 2 busy cores.
TINY_MODEL = {"depth": 2, "hidden_size": 32, "num_heads": 2, "patch_size": 2}
TINY_MODEL_JSON = json.dumps(TINY_MODEL)


def make_image_folder(root, classes=("cat", "dog"), per_class=5, sizes=((72, 80), (64, 64), (96, 70)), seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("images") / "train")


@pytest.fixture(scope="session")
def tiny_vae_dir(tmp_path_factory):
    import torch
    from diffusers.models import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    path = tmp_path_factory.mktemp("vae") / "tiny-vae"
    vae.save_pretrained(path)
    return path


def assert_same_training_state(again: dict, final: dict) -> None:
    """Two training checkpoints hold bit-identical weights, EMA and optimizer state (a resumed run's and an
    uninterrupted one's)."""
    import torch

    for part in ("model", "ema"):
        for key, value in final[part].items():
            assert torch.equal(again[part][key], value), (part, key)
    for name, state in final["opt"]["state"].items():
        for key, value in state.items():
            assert torch.equal(again["opt"]["state"][name][key], value), (name, key)
