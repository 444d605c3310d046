"""Forward and backward of every model family at 1x, 1.5x, 2x the training grid and at non-square grids."""

import pytest
import torch
from model_helpers import model_inputs

from ledit.ops import SCANS

FAMILIES = [
    ("DiT", dict(pos_embed="sincos")),
    ("DiT", dict(pos_embed="sincos", sincos_mode="interpolate")),
    ("DiT", dict(pos_embed="learnable")),
    ("DiT", dict(pos_embed="none")),
    ("DiT", dict(pos_embed="sincos", attention_scaling=True)),
    *[("DiT", dict(pos_embed="rope", rope_method=m)) for m in ("none", "pi", "ntk", "yarn", "riflex")],
    ("DiT", dict(pos_embed="rope", rope_method="yarn", rope_decouple=False)),
    ("LEDiT", dict()),
    ("LEDiT", dict(locality="conv")),
    ("LEDiT", dict(locality="none")),
    ("LEDiT", dict(locality_placement="every_block")),
    ("LEDiT", dict(conv_post_norm=True, locality="conv")),
    ("LEDiT", dict(attention_schedule="all", depth=3)),
    ("LEDiT", dict(attention_schedule="none")),
    ("LEDiT", dict(attention_schedule="single:0")),
    ("LEDiT", dict(attention_schedule=[0, 2], depth=3)),
    *[("LEDiT", dict(scan=s)) for s in SCANS],
]
# Latent sizes for the 8x8 training latent: 1x, 1.5x, 2x, and non-square (token grids 4x6 and 6x3).
LATENTS = [(8, 8), (12, 12), (16, 16), (8, 12), (12, 6)]


def _id(family):
    name, options = family
    return name + "-" + "-".join(f"{k}={v}" for k, v in options.items())


@pytest.mark.parametrize("family", FAMILIES, ids=[_id(f) for f in FAMILIES])
def test_forward_backward_at_any_grid(tiny, family):
    name, options = family
    model = tiny(name, **options)
    for height, width in LATENTS:
        model.zero_grad()
        x, t, y = model_inputs(2, height, width)
        x.requires_grad_(True)
        for mode in (model.eval, model.train):
            mode()
            out = model(x, t, y)
            assert out.shape == (2, 8, height, width)
            assert torch.isfinite(out).all()
        out.square().mean().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        for param_name, param in model.named_parameters():
            if param.requires_grad:
                assert param.grad is not None and torch.isfinite(param.grad).all(), param_name


def test_output_channels_without_learned_sigma(tiny):
    model = tiny("LEDiT", learn_sigma=False)
    x, t, y = model_inputs(1, 8, 10)
    assert model(x, t, y).shape == (1, 4, 8, 10)


def test_grad_checkpointing_gives_the_same_gradients(tiny):
    model = tiny("LEDiT", multi_dilation_prob=0.0)
    x, t, y = model_inputs(2, 8, 12)
    grads = []
    for enabled in (False, True):
        model.set_grad_checkpointing(enabled)
        model.zero_grad()
        torch.manual_seed(1)  # same label dropout in both runs
        model(x, t, y).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for plain, checkpointed in zip(*grads, strict=True):
        torch.testing.assert_close(plain, checkpointed)


def _roll_patches(x, shift):
    return torch.roll(x, shifts=shift, dims=-1)


@pytest.mark.parametrize(
    "name, options, equivariant",
    [
        ("DiT", dict(pos_embed="none"), True),
        ("LEDiT", dict(attention_schedule="none", locality="none"), True),
        ("DiT", dict(pos_embed="sincos"), False),
        ("LEDiT", dict(attention_schedule="none", locality="dwconv"), False),  # zero padding marks the border
        ("LEDiT", dict(attention_schedule="all", locality="none"), False),  # the scan order is positional
    ],
)
def test_position_enters_only_through_the_position_modules(tiny, name, options, equivariant):
    """Rolling the latent by whole patches rolls the output iff the model has no absolute position signal."""
    model = tiny(name, **options).eval()
    x, t, y = model_inputs(2, 8, 8)
    rolled_then_run = model(_roll_patches(x, 2), t, y)
    run_then_rolled = _roll_patches(model(x, t, y), 2)
    assert torch.allclose(rolled_then_run, run_then_rolled, atol=1e-5) == equivariant
