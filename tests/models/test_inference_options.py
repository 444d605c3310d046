"""Inference-only model add-ons (``ledit.models.inference``): formulas against hand-worked values, the timestep
schedules, the re-dilated stem, validation, and bit-identical defaults.

Tiny models: 4x4 training grid (N_train = 16), head dim 16; 2x is an 8x8 grid (N_test = 64).
"""

import math

import pytest
import torch
from model_helpers import model_inputs

from ledit.models import INFERENCE_TEMPERATURES, InferenceOptions, temperature_softmax_scale
from ledit.models.rope import DYNAMIC_ROPE_METHODS, dynamic_rope_frequencies, rope_tables
from ledit.models.scaling import jin_softmax_scale

THETA = [1.0, 0.1, 0.01, 0.001]  # head_dim 16 -> 4 frequencies per axis, 10000^(-2j/8)
MODELS = [
    ("LEDiT", {}),
    ("LEDiT", dict(locality="conv", attention_scaling=False)),
    ("DiT", dict(pos_embed="sincos")),
    ("DiT", dict(pos_embed="learnable")),
    ("DiT", dict(pos_embed="rope", rope_method="yarn")),
    ("DiT", dict(pos_embed="none", attention_scaling=True)),
]


def _close(actual, expected, rtol=1e-6):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32), rtol=rtol, atol=1e-9)


def _forward_before(model, x, t, y):
    """The models' forward as it was before the add-ons: Jin et al. on every layer iff attention_scaling, the
    static RoPE tables, the stem at the drawn dilation; computed here from the model's own modules."""
    grid = model.token_grid(*x.shape[-2:])
    c = model.t_embedder(t) + model.y_embedder(y, False)
    tokens = model.x_embedder(x)
    if getattr(model, "pos_embed", None) is not None:
        tokens = tokens + model.position_embedding(grid)
    if getattr(model, "locality", None) is not None:
        tokens = model.locality(tokens, c, grid, 1)
    rope = model.rope.tables(grid, x.device) if getattr(model, "rope", None) is not None else None
    scale = jin_softmax_scale(16, math.prod(grid), model.head_dim) if model.attention_scaling else None
    for block in model.blocks:
        tokens = block(tokens, c, grid, scale, rope, 1)
    return model.unpatchify(model.final_layer(tokens, c), grid)


@pytest.mark.parametrize("name,options", MODELS)
@pytest.mark.parametrize("size", [8, 16])
def test_default_options_are_bit_identical_to_the_plain_forward(tiny, name, options, size):
    model = tiny(name, **options).eval()
    x, t, y = model_inputs(2, size, size)
    with torch.no_grad():
        assert torch.equal(model(x, t, y), _forward_before(model, x, t, y))
        model.set_inference_options(model.inference_options)  # re-setting the defaults changes nothing
        assert torch.equal(model(x, t, y), _forward_before(model, x, t, y))


def test_attention_scaling_sets_the_default_temperatures(tiny):
    assert tiny("LEDiT").inference_options == InferenceOptions()
    plain = InferenceOptions(temperature_full="none", temperature_causal="none")
    assert tiny("LEDiT", attention_scaling=False).inference_options == plain
    assert tiny("DiT").inference_options == plain  # DiT's default attention_scaling=False


def test_set_inference_options_replaces_fields_and_validates(tiny):
    model = tiny("LEDiT")
    new = model.set_inference_options(temperature_full="fitv2-log", stem_dilation=2)
    assert new is model.inference_options
    assert (new.temperature_full, new.temperature_causal, new.stem_dilation) == ("fitv2-log", "jin", 2)
    again = model.set_inference_options(InferenceOptions(), temperature_until=0.25)
    assert again == InferenceOptions(temperature_until=0.25)
    with pytest.raises(ValueError, match=r"temperature_full='hot' .*'jin', 'fitv2-log', 'lumina', 'none'"):
        model.set_inference_options(temperature_full="hot")
    with pytest.raises(ValueError, match="temperature_until must be a fraction"):
        model.set_inference_options(temperature_until=1.5)
    with pytest.raises(ValueError, match="stem_dilation_until must be a fraction"):
        model.set_inference_options(stem_dilation_until=-0.1)
    with pytest.raises(ValueError, match="stem_dilation must be an int >= 1"):
        model.set_inference_options(stem_dilation=0)
    with pytest.raises(TypeError, match=r"unknown inference option\(s\) \['temperature'\]"):
        model.set_inference_options(temperature="jin")
    assert model.inference_options == InferenceOptions(temperature_until=0.25)  # a refused change keeps the old


@pytest.mark.parametrize("name,options", [
    ("LEDiT", {}), ("DiT", dict(pos_embed="sincos")), ("DiT", dict(pos_embed="none")),
])
def test_rope_dynamic_needs_a_rope_model(tiny, name, options):
    with pytest.raises(ValueError, match=r"rope_dynamic='dy-ntk' needs a RoPE model"):
        tiny(name, **options).set_inference_options(rope_dynamic="dy-ntk")
    assert tiny("DiT", pos_embed="rope").set_inference_options(rope_dynamic="dy-ntk").rope_dynamic == "dy-ntk"


@pytest.mark.parametrize("name,options", [
    ("DiT", {}), ("LEDiT", dict(locality="none")), ("LEDiT", dict(locality_placement="every_block")),
])
def test_stem_dilation_needs_a_stem_locality_conv(tiny, name, options):
    with pytest.raises(ValueError, match="stem_dilation=2 re-dilates LEDiT's stem locality conv"):
        tiny(name, **options).set_inference_options(stem_dilation=2)
