"""Bad input gets an error naming the argument and what would be valid."""

import pytest
import torch
from model_helpers import TINY, model_inputs

from ledit.models import DiT_models, build_model


@pytest.fixture
def model(tiny):
    return tiny("LEDiT").eval()


def test_bad_forward_inputs(model):
    x, t, y = model_inputs(2, 8, 8)
    cases = [
        ((x[0], t, y), ValueError, r"x must be a \(B, C, H, W\)"),
        ((x.long(), t, y), TypeError, "x.dtype=torch.int64 is not supported"),
        ((x.double(), t, y), TypeError, "x.dtype=torch.float64 is not supported"),
        ((x.bfloat16(), t, y), TypeError, "parameters are torch.float32.*autocast"),
        ((x[:, :3], t, y), ValueError, "3 channels but the model takes in_channels=4"),
        ((torch.randn(2, 4, 9, 8), t, y), ValueError, "9 x 8 must both be divisible by patch_size=2"),
        ((x, t[:1], y), ValueError, r"t must be a tensor of shape \(B,\) = \(2,\)"),
        ((x, t, y[:, None]), ValueError, r"y must be a tensor of shape \(B,\)"),
        ((x, t, y.float()), TypeError, "y must hold integer class labels"),
        ((x, t, torch.tensor([0, 11])), ValueError, r"class label 11, outside \[0, 10\].*null label"),
        ((x, t, torch.tensor([-1, 0])), ValueError, r"class label -1, outside \[0, 10\]"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            model(*args)
    model(x, t, torch.tensor([10, 9]))  # the null label is valid


def test_label_range_without_a_null_label(tiny):
    model = tiny("DiT", class_dropout_prob=0.0)
    x, t, _ = model_inputs(1, 8, 8)
    with pytest.raises(ValueError, match=r"class label 10, outside \[0, 9\]$"):
        model(x, t, torch.tensor([10]))


def test_autocast_inputs_are_accepted(model):
    x, t, y = model_inputs(2, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x.bfloat16(), t, y).shape == (2, 8, 8, 8)


def test_bad_constructor_arguments():
    cases = [
        (dict(name="LEDiT-XXL/2"), "unknown model name 'LEDiT-XXL/2'; valid names: LEDiT-XL/2, LEDiT-XL/4"),
        (dict(name="LEDiT", attention_schedule="half"), "valid: alternate, all, none, single:<i>"),
        (dict(name="LEDiT", scan="zigzag"), "valid scans: full, raster, lower_right, neighborhood, corner"),
        (dict(name="LEDiT", locality="conv5"), "valid: dwconv, conv, none"),
        (dict(name="LEDiT", locality_placement="mlp"), "valid: stem, every_block"),
        (dict(name="LEDiT", locality="conv", locality_placement="every_block"), "needs locality='dwconv'"),
        (dict(name="LEDiT", locality="none", conv_post_norm=True), "conv_post_norm"),
        (dict(name="LEDiT", multi_dilation_prob=1.5), r"multi_dilation_prob must be in \[0, 1\]"),
        (dict(name="DiT", pos_embed="alibi"), "valid: sincos, learnable, rope, none"),
        (dict(name="DiT", pos_embed="rope", rope_method="dynamic"), "valid methods: none, pi, ntk, yarn, riflex"),
        (dict(name="DiT", rope_method="ntk"), "applies only to pos_embed='rope'"),
        (dict(name="DiT", pos_embed="rope", sincos_mode="interpolate"), "applies only to pos_embed='sincos'"),
        (dict(name="DiT", sincos_mode="stretch"), "valid: extend, interpolate"),
        (dict(name="LEDiT", hidden_size=36, num_heads=3), "36/3 = 12 must be a multiple of 8"),
        (dict(name="LEDiT", hidden_size=32, num_heads=3), "divisible by num_heads=3"),
        (dict(name="LEDiT", input_size=9), "input_size=9 must be divisible by patch_size=2"),
    ]
    for kwargs, message in cases:
        name = kwargs.pop("name")
        with pytest.raises(ValueError, match=message):
            build_model(name, **{**TINY, **kwargs} if name in ("LEDiT", "DiT") else kwargs)
    with pytest.raises(TypeError, match="DiT-S/2 fixes depth.*build_model"):
        DiT_models["DiT-S/2"](depth=3)
