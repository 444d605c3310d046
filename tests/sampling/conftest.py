import pytest
import torch
from workflow_fixtures import TINY_MODEL, tiny_vae_dir  # noqa: F401  (fixture)

from ledit.checkpoint import save_checkpoint


def save_tiny_checkpoint(path, in_channels, input_size, seed=0):
    """A tiny LEDiT with random (not zero-initialised) weights, saved as `ledit train` does."""
    from ledit.models import build_model

    torch.manual_seed(seed)
    model = build_model("LEDiT", input_size=input_size, in_channels=in_channels, num_classes=10, **TINY_MODEL)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sd = model.state_dict()
    save_checkpoint({"model": sd, "ema": sd, "opt": None, "args": {}, "step": 0, "config": model.config}, path)
    return path


@pytest.fixture(scope="session")
def latent_ckpt(tmp_path_factory):
    """A tiny LEDiT on 4-channel 8x8 latents (64x64 images through the tiny VAE)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "latent.pt", in_channels=4, input_size=8)


@pytest.fixture(scope="session")
def pixel_ckpt(tmp_path_factory):
    """A tiny LEDiT on 8x8 RGB pixels (--vae none)."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "pixel.pt", in_channels=3, input_size=8)
