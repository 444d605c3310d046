"""LEDiT's options: attention schedules, scans, locality modules, multi-dilation, Jin scaling, CFG."""

import math

import pytest
import torch
import torch.nn.functional as F
from model_helpers import TINY, model_inputs

import ledit.models.layers as layers
from ledit.models import DiffusionTransformer, build_model, causal_block_indices, jin_softmax_scale
from ledit.models.locality import DenseConv, ModulatedDWConv
from ledit.ops import dwconv_modulate_reference


@pytest.fixture
def attention_calls(monkeypatch):
    """Records (scan, softmax_scale, grid) of every scan_attention call the model makes."""
    calls = []
    real = layers.scan_attention

    def spy(q, k, v, grid, scan="corner", softmax_scale=None, backend=None):
        calls.append((scan, softmax_scale, tuple(grid)))
        return real(q, k, v, grid, scan=scan, softmax_scale=softmax_scale, backend=backend)

    monkeypatch.setattr(layers, "scan_attention", spy)
    return calls


def test_schedules_give_the_causal_block_indices():
    assert causal_block_indices("alternate", 28) == tuple(range(1, 28, 2))
    assert len(causal_block_indices("alternate", 28)) == 14
    assert causal_block_indices("alternate", 5) == (1, 3)
    assert causal_block_indices("all", 3) == (0, 1, 2)
    assert causal_block_indices("none", 3) == ()
    assert causal_block_indices("single:2", 4) == (2,)
    assert causal_block_indices([3, 0, 3], 4) == (0, 3)
    for bad in ("single:4", [4], [-1]):
        with pytest.raises(ValueError, match="blocks 0..3"):
            causal_block_indices(bad, 4)
    for bad in ("every", "single:x", [1.5], [True], 3):
        with pytest.raises(ValueError, match="valid: alternate, all, none, single:<i>"):
            causal_block_indices(bad, 4)


def test_causal_blocks_run_the_scan_and_the_others_full_attention(tiny, attention_calls):
    model = tiny("LEDiT", depth=4, scan="raster").eval()
    assert model.causal_blocks == (1, 3)
    model(*model_inputs(1, 8, 12))
    assert [scan for scan, _, _ in attention_calls] == ["full", "raster", "full", "raster"]
    assert {grid for _, _, grid in attention_calls} == {(4, 6)}


def test_jin_scaling_value():
    # N_train = 16, N_test = 64, d = 16: sqrt(log_16(64) / 16) = sqrt(1.5 / 16).
    assert jin_softmax_scale(16, 64, 16) == pytest.approx(math.sqrt(1.5 / 16))
    assert jin_softmax_scale(256, 256, 72) == pytest.approx(1 / math.sqrt(72))
    assert jin_softmax_scale(256, 1024, 72) == pytest.approx(math.sqrt(1.25 / 72))
    assert jin_softmax_scale(1, 64, 16) is None and jin_softmax_scale(16, 1, 16) is None


def test_jin_scaling_applies_at_inference_only(tiny, attention_calls):
    model = tiny("LEDiT").eval()
    model(*model_inputs(1, 16, 16))  # 8x8 tokens vs the 4x4 training grid
    assert [s for _, s, _ in attention_calls] == pytest.approx([math.sqrt(1.5 / 16)] * 2)
    attention_calls.clear()
    model.train()(*model_inputs(1, 16, 16))
    assert [s for _, s, _ in attention_calls] == [None, None]
    attention_calls.clear()
    tiny("LEDiT", attention_scaling=False).eval()(*model_inputs(1, 16, 16))
    tiny("DiT").eval()(*model_inputs(1, 16, 16))
    assert [s for _, s, _ in attention_calls] == [None] * 4


def test_softmax_scale_is_overridable_per_sample(tiny):
    """A (B,) tensor from softmax_scale (e.g. chosen from t) scales each sample's logits."""
    model = tiny("LEDiT", attention_schedule="all").eval()
    x, t, y = model_inputs(2, 8, 8)
    default = model(x, t, y)
    model.softmax_scale = lambda block_index, grid, t: torch.tensor([0.25, 0.25])  # = 1/sqrt(16)
    torch.testing.assert_close(model(x, t, y), default)
    model.softmax_scale = lambda block_index, grid, t: torch.tensor([0.5, 0.25])
    changed = model(x, t, y)
    torch.testing.assert_close(changed[1], default[1])
    assert not torch.allclose(changed[0], default[0])
    model.softmax_scale = lambda block_index, grid, t: 0.5
    torch.testing.assert_close(model(x, t, y)[0], changed[0])


@pytest.fixture
def dilations(monkeypatch):
    """Records the dilation every locality module (stem or per block) runs with."""
    seen = []
    for cls in (DenseConv, ModulatedDWConv):
        real = cls.forward

        def spy(self, x, c, grid, dilation=1, _real=real):
            seen.append(dilation)
            return _real(self, x, c, grid, dilation)

        monkeypatch.setattr(cls, "forward", spy)
    return seen


@pytest.mark.parametrize("options", [dict(locality="dwconv"), dict(locality="conv"),
                                     dict(locality_placement="every_block")])
def test_multi_dilation_switches_in_training_only(tiny, dilations, options):
    inputs = model_inputs(2, 8, 8)
    always = tiny("LEDiT", multi_dilation_prob=1.0, **options)
    always.train()(*inputs)
    assert dilations and set(dilations) == {2}
    dilations.clear()
    always.eval()(*inputs)
    assert dilations and set(dilations) == {1}
    dilations.clear()
    tiny("LEDiT", multi_dilation_prob=0.0, **options).train()(*inputs)
    assert set(dilations) == {1}


def test_multi_dilation_probability():
    from ledit.models import LEDiT

    model = LEDiT(input_size=8, hidden_size=32, depth=1, num_heads=2, num_classes=10, multi_dilation_prob=0.25)
    draws = [model.draw_dilation() for _ in range(400)]
    assert set(draws) == {1, 2} and 60 <= draws.count(2) <= 140
    assert {model.eval().draw_dilation() for _ in range(50)} == {1}


def test_locality_modules_compute_their_formulas():
    torch.manual_seed(0)
    x, c = torch.randn(2, 12, 8), torch.randn(2, 8)
    dense = DenseConv(8)
    torch.testing.assert_close(dense(x, c, (3, 4)), x)  # identity init
    with torch.no_grad():
        dense.conv.weight.normal_(), dense.conv.bias.normal_()
    image = x.transpose(1, 2).reshape(2, 8, 3, 4)
    for dilation in (1, 2):
        expected = F.conv2d(image, dense.conv.weight, dense.conv.bias, padding=dilation, dilation=dilation)
        torch.testing.assert_close(dense(x, c, (3, 4), dilation), expected.flatten(2).transpose(1, 2))

    dw = ModulatedDWConv(8)
    torch.testing.assert_close(dw(x, c, (3, 4)), x)  # zero-initialised gate
    with torch.no_grad():
        dw.adaLN_modulation[-1].weight.normal_()
    shift, scale, gate = dw.adaLN_modulation(c).chunk(3, dim=1)
    for dilation in (1, 2):
        expected = dwconv_modulate_reference(x, (3, 4), dw.conv.weight, dw.conv.bias, shift, scale, gate,
                                             residual=x, dilation=dilation)
        torch.testing.assert_close(dw(x, c, (3, 4), dilation), expected)


def test_every_block_placement_and_post_norm_modules(tiny):
    model = tiny("LEDiT", locality_placement="every_block", depth=3)
    assert model.locality is None
    keys = set(model.state_dict())
    for i in range(3):
        assert {f"blocks.{i}.local_conv.conv.weight", f"blocks.{i}.local_conv.adaLN_modulation.1.weight"} <= keys
    # Each branch has its own adaLN chunks; the block's six DiT chunks (and so DiT checkpoints) are unchanged.
    assert model.blocks[0].adaLN_modulation[-1].weight.shape == (6 * 32, 32)
    assert model.blocks[0].local_conv.adaLN_modulation[-1].weight.shape == (3 * 32, 32)

    fresh = tiny("LEDiT", randomized=False, locality_placement="every_block", depth=3)
    for block in fresh.blocks:  # adaLN-Zero: every branch starts as the identity, as the stem does
        assert not block.local_conv.adaLN_modulation[-1].weight.any()
        assert not block.local_conv.adaLN_modulation[-1].bias.any()
        assert block.local_conv.conv.weight.any()  # a zero gate learns only through non-zero taps

    normed = tiny("LEDiT", conv_post_norm=True).eval()
    assert {"locality_norm.weight", "locality_norm.bias"} <= set(normed.state_dict())
    x, c = torch.randn(1, 4, 8, 8), torch.randn(1, 32)
    raw = normed.locality(normed.x_embedder(x), c, (4, 4), 1)
    expected = F.layer_norm(raw, (32,), normed.locality_norm.weight, normed.locality_norm.bias, eps=1e-6)
    torch.testing.assert_close(normed.embed_tokens(x, c, (4, 4), 1, torch.tensor([500.0])), expected)


def test_blocks_are_built_with_their_scans_and_the_stem_leaves_the_seeded_backbone_as_dits():
    """Under one seed, a stem LEDiT's backbone starts from exactly DiT's weights: a controlled comparison."""
    options = {**TINY, "depth": 4}
    torch.manual_seed(0)
    dit = build_model("DiT", pos_embed="none", **options)
    torch.manual_seed(0)
    ledit = build_model("LEDiT", scan="raster", **options)
    assert [block.attn.scan for block in ledit.blocks] == ["full", "raster", "full", "raster"]
    assert [block.attn.scan for block in dit.blocks] == ["full"] * 4
    dit_state, ledit_state = dit.state_dict(), ledit.state_dict()
    assert all(torch.equal(ledit_state[key], value) for key, value in dit_state.items())
    with pytest.raises(ValueError, match="gives 3 blocks' scans for depth=4"):
        DiffusionTransformer(**options, scans=["full"] * 3)
    with pytest.raises(ValueError, match=r"unknown scans \['diagonal'\]; valid scans: full, raster"):
        DiffusionTransformer(**options, scans=["full", "diagonal", "full", "full"])


@pytest.mark.parametrize("name", ["LEDiT", "DiT"])
def test_forward_with_cfg(tiny, name):
    model = tiny(name).eval()
    x, t, _ = model_inputs(4, 8, 12)
    y = torch.tensor([1, 2, 10, 10])  # conditional half, then the null label
    half = x[:2]
    plain = model(torch.cat([half, half]), t, y)
    cond, uncond = plain[:2], plain[2:]
    out = model.forward_with_cfg(x, t, y, cfg_scale=4.0)
    guided = uncond[:, :3] + 4.0 * (cond[:, :3] - uncond[:, :3])
    torch.testing.assert_close(out[:, :3], torch.cat([guided, guided]))
    torch.testing.assert_close(out[:, 3:], plain[:, 3:])
    out_all = model.forward_with_cfg(x, t, y, cfg_scale=4.0, cfg_channels="all")
    guided_all = uncond[:, :4] + 4.0 * (cond[:, :4] - uncond[:, :4])
    torch.testing.assert_close(out_all[:, :4], torch.cat([guided_all, guided_all]))
    torch.testing.assert_close(out_all[:, 4:], plain[:, 4:])
    with pytest.raises(ValueError, match="cfg_channels"):
        model.forward_with_cfg(x, t, y, 4.0, cfg_channels=5)
    with pytest.raises(ValueError, match="even batch"):
        model.forward_with_cfg(x[:3], t[:3], y[:3], 4.0)
