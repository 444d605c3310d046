"""DiT compatibility: facebookresearch/DiT's state-dict keys, sin-cos table, registry names and dims."""

import math

import pytest
import torch
from model_helpers import TINY, model_inputs

from ledit.models import DiT, DiT_models, LEDiT, LEDiT_models, build_model
from ledit.models.pos_embed import interpolate_pos_embed, sincos_2d


def _expected_dit_keys(depth):
    """facebookresearch/DiT models.py's state-dict keys, written out by hand."""
    keys = [
        "pos_embed",
        "x_embedder.proj.weight", "x_embedder.proj.bias",
        "t_embedder.mlp.0.weight", "t_embedder.mlp.0.bias", "t_embedder.mlp.2.weight", "t_embedder.mlp.2.bias",
        "y_embedder.embedding_table.weight",
        "final_layer.linear.weight", "final_layer.linear.bias",
        "final_layer.adaLN_modulation.1.weight", "final_layer.adaLN_modulation.1.bias",
    ]
    for i in range(depth):
        for layer in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1"):
            keys += [f"blocks.{i}.{layer}.weight", f"blocks.{i}.{layer}.bias"]
    return set(keys)


def test_sincos_dit_state_dict_keys_equal_dits(tiny):
    assert set(tiny("DiT").state_dict()) == _expected_dit_keys(TINY["depth"])


def test_dit_xl_2_keys_and_shapes_on_meta():
    with torch.device("meta"):
        model = DiT_models["DiT-XL/2"]()
    state = model.state_dict()
    assert set(state) == _expected_dit_keys(28)
    assert state["pos_embed"].shape == (1, 256, 1152) and not model.pos_embed.requires_grad
    assert state["x_embedder.proj.weight"].shape == (1152, 4, 2, 2)
    assert state["y_embedder.embedding_table.weight"].shape == (1001, 1152)
    assert state["blocks.27.adaLN_modulation.1.weight"].shape == (6 * 1152, 1152)
    assert state["final_layer.linear.weight"].shape == (2 * 2 * 8, 1152)


def test_dit_output_unchanged_after_loading_its_own_state_dict(tiny):
    source = tiny("DiT").eval()
    target = build_model("DiT", **TINY).eval()
    target.load_state_dict(source.state_dict())
    x, t, y = model_inputs(2, 8, 8)
    torch.testing.assert_close(target(x, t, y), source(x, t, y), rtol=0, atol=0)


def test_sincos_table_by_hand():
    # D = 8: the first 4 channels encode the column, the last 4 the row, each [sin p, sin p/100, cos p, cos p/100].
    table = sincos_2d(8, (2, 2))
    def half(p):
        return [math.sin(p), math.sin(p / 100), math.cos(p), math.cos(p / 100)]
    expected = [half(c) + half(r) for r in (0, 1) for c in (0, 1)]  # raster order
    torch.testing.assert_close(table, torch.tensor(expected, dtype=torch.float32))


def test_sincos_extension_and_interpolation():
    trained = sincos_2d(16, (4, 4)).reshape(4, 4, 16)
    extended = sincos_2d(16, (6, 8)).reshape(6, 8, 16)
    torch.testing.assert_close(extended[:4, :4], trained)  # new positions only beyond the trained range
    squeezed = sincos_2d(16, (8, 8), train_grid=(4, 4)).reshape(8, 8, 16)
    torch.testing.assert_close(squeezed[::2, ::2], trained)  # position r of 8 -> r/2 of 4
    model = DiT(**TINY)
    torch.testing.assert_close(model.pos_embed[0], sincos_2d(32, model.train_grid))


def test_learnable_pos_embed_is_bicubically_interpolated(tiny):
    model = tiny("DiT", pos_embed="learnable")
    assert model.pos_embed.requires_grad
    assert model.position_embedding((4, 4)) is model.pos_embed
    with torch.no_grad():
        model.pos_embed.fill_(0.5)
    torch.testing.assert_close(model.position_embedding((6, 10)), torch.full((1, 60, 32), 0.5))
    table = torch.randn(1, 4, 3)
    grid = table.reshape(1, 2, 2, 3).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(3, 5), mode="bicubic", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(1, 15, 3)
    torch.testing.assert_close(interpolate_pos_embed(table, (2, 2), (3, 5)), expected)


@pytest.mark.parametrize("registry, cls", [(DiT_models, DiT), (LEDiT_models, LEDiT)])
def test_registry_names_and_dims(registry, cls):
    dims = {"XL": (28, 1152, 16), "L": (24, 1024, 16), "B": (12, 768, 12), "S": (12, 384, 6)}
    expected = {f"{cls.family}-{size}/{p}": (*d, p) for size, d in dims.items() for p in (2, 4, 8)}
    assert set(registry) == set(expected)
    for name, (depth, hidden, heads, patch) in expected.items():
        with torch.device("meta"):
            model = registry[name]()
        assert type(model) is cls
        assert (len(model.blocks), model.x_embedder.proj.out_channels, model.num_heads, model.patch_size) == (
            depth, hidden, heads, patch)
        assert model.config["name"] == name


def test_config_rebuilds_the_model(tiny):
    import json

    for model in (tiny("LEDiT", attention_schedule=[1], input_size=(8, 12)), tiny("DiT", pos_embed="rope")):
        config = json.loads(json.dumps(model.config))
        rebuilt = build_model(**config)
        assert type(rebuilt) is type(model) and rebuilt.config == model.config
        assert set(rebuilt.state_dict()) == set(model.state_dict())
    with torch.device("meta"):
        xl = build_model("LEDiT-XL/2", scan="raster")
    assert xl.config["name"] == "LEDiT-XL/2" and "depth" not in xl.config
    with torch.device("meta"):
        assert build_model(**xl.config).config == xl.config
