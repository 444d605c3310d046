import pytest
import torch
from torch import nn


class TinyDenoiser(nn.Module):
    """A DiT-shaped stand-in: forward(x, t, y) -> (B, 2C or C, *spatial), and DiT's forward_with_cfg."""

    def __init__(self, channels=2, learn_sigma=True, num_classes=4):
        super().__init__()
        self.channels = channels
        self.conv = nn.Conv2d(channels, channels * (2 if learn_sigma else 1), 3, padding=1)
        self.class_embedding = nn.Embedding(num_classes + 1, channels)  # the last index is the null class

    def forward(self, x, t, y):
        time = torch.sin(t.float() / 100.0).view(-1, 1, 1, 1)
        return self.conv(x + time + self.class_embedding(y)[:, :, None, None])

    def forward_with_cfg(self, x, t, y, cfg_scale):
        """DiT's guidance: both halves of the batch get cond + scale * (cond - uncond) on eps."""
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half]), t, y)
        eps, rest = out[:, : self.channels], out[:, self.channels :]
        cond_eps, uncond_eps = eps.chunk(2)
        half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        return torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)


@pytest.fixture
def tiny_model():
    return TinyDenoiser().eval()


@pytest.fixture
def tiny_model_fixed_sigma():
    return TinyDenoiser(learn_sigma=False).eval()
