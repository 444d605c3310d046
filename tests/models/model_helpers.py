"""Tiny model settings and inputs shared by the model tests (imported as a top-level module by pytest)."""

import torch

# Tiny models: 8x8 latents, patch 2 -> a 4x4 training grid; hidden 32 with 2 heads -> head dim 16.
TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=10)


def randomize_(model, std=0.1):
    """Give every parameter random values, so zero-initialised (adaLN-Zero) paths carry signal in tests."""
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, std)
    return model


def model_inputs(batch, height, width, num_classes=10, channels=4):
    x = torch.randn(batch, channels, height, width)
    t = torch.randint(0, 1000, (batch,)).float()
    y = torch.randint(0, num_classes, (batch,))
    return x, t, y
