"""diffusers' DiTTransformer2DModel (the published DiT-XL-2 format) -> ledit, checked against diffusers' own model."""

import json
import shutil

import pytest
import torch
from diffusers_helpers import tiny_diffusers_dit

from ledit.diffusers import dit_state_dict_from_diffusers, dit_state_dict_to_diffusers, dit_to_ledit, load_diffusers_dit
from ledit.models import from_dit_checkpoint


def facebookresearch_timesteps(dit):
    """Make diffusers' DiT compute DiT's own function: facebookresearch/DiT's timestep frequencies
    10000^(-i/128) (diffusers' CombinedTimestepLabelEmbeddings uses downscale_freq_shift=1: 10000^(-i/127)) and
    LayerNorm eps 1e-6 before the MLP (diffusers' default norm_eps is 1e-5)."""
    for block in dit.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0
        block.norm3.eps = 1e-6
    return dit


INPUTS = dict(x=torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1)),
              t=torch.tensor([0, 500, 999]), y=torch.tensor([1, 5, 10]))  # 10: the null label


def test_round_trip_is_bit_exact_on_every_weight(diffusers_dit_dir):
    """diffusers DiT -> ledit DiT -> diffusers DiT: every tensor bit for bit (qkv fused and split again, one copy
    of the embedders shared out to every block again)."""
    original = tiny_diffusers_dit().state_dict()
    model, report = dit_to_ledit(diffusers_dit_dir, name="DiT")
    assert report.initialized == ("pos_embed",) and report.dropped == ()  # diffusers' sin-cos table is a buffer
    back = dit_state_dict_to_diffusers(model.state_dict())
    assert back.keys() == original.keys()
    for key, value in original.items():
        assert torch.equal(back[key], value), key


def test_converted_dit_computes_what_diffusers_dit_computes_with_dits_timestep_features(diffusers_dit_dir):
    """The same weights give the same outputs, fp32 rounding apart, once diffusers' model uses facebookresearch's
    timestep frequencies and eps; ledit's DiT is facebookresearch's, the function the weights were trained as."""
    model, _ = dit_to_ledit(diffusers_dit_dir, name="DiT")
    assert model.config["name"] == "DiT" and model.position_encoding == "sincos"
    dit = facebookresearch_timesteps(tiny_diffusers_dit())
    with torch.no_grad():
        expected = dit(INPUTS["x"], INPUTS["t"], INPUTS["y"]).sample
        torch.testing.assert_close(model.eval()(**INPUTS), expected, rtol=1e-5, atol=1e-5)


def test_stock_diffusers_dit_departs_from_dit_in_its_timestep_features(diffusers_dit_dir):
    """What the previous test patches is what differs: stock diffusers' DiT is not DiT's function (shown so a
    diffusers release that fixes it is noticed)."""
    model, _ = dit_to_ledit(diffusers_dit_dir, name="DiT")
    with torch.no_grad():
        ours = model.eval()(**INPUTS)
        stock = tiny_diffusers_dit()(INPUTS["x"], INPUTS["t"], INPUTS["y"]).sample
        aligned = facebookresearch_timesteps(tiny_diffusers_dit())(INPUTS["x"], INPUTS["t"], INPUTS["y"]).sample
    assert (ours - stock).abs().max() > 1000 * (ours - aligned).abs().max()


def test_ledit_from_diffusers_dit_is_the_papers_fine_tuning_start(diffusers_dit_dir):
    """The default target is the LEDiT of the DiT's size: DiT's weights, pos_embed gone, the locality conv added
    as the identity, so with no causal block and no temperature it computes the converted DiT without PE."""
    ledit, report = dit_to_ledit(diffusers_dit_dir, attention_schedule="none", attention_scaling=False)
    assert ledit.config["name"] == "LEDiT" and ledit.config["depth"] == 3
    assert all(key.startswith("locality.") for key in report.initialized) and report.initialized
    nope, _ = dit_to_ledit(diffusers_dit_dir, name="DiT", pos_embed="none")
    state, config = load_diffusers_dit(diffusers_dit_dir)
    direct, _ = from_dit_checkpoint(state, name="DiT", input_size=config["sample_size"], num_classes=10,
                                    pos_embed="none", depth=3, hidden_size=32, patch_size=2, num_heads=2)
    with torch.no_grad():
        torch.testing.assert_close(ledit.eval()(**INPUTS), nope.eval()(**INPUTS), rtol=0, atol=0)
        torch.testing.assert_close(direct.eval()(**INPUTS), nope(**INPUTS), rtol=0, atol=0)


def test_published_layout_and_legacy_class_name_load(diffusers_dit_dir, tmp_path):
    """facebook/DiT-XL-2-256's layout: a pipeline folder whose transformer/config.json says Transformer2DModel."""
    folder = tmp_path / "DiT-pipeline"
    shutil.copytree(diffusers_dit_dir, folder / "transformer")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    config_path = folder / "transformer" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "_class_name": "Transformer2DModel"}))
    state, config = load_diffusers_dit(folder)
    reference, _ = load_diffusers_dit(diffusers_dit_dir)
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)


def test_what_does_not_convert_says_why(tmp_path):
    state = tiny_diffusers_dit().state_dict()
    diverged = dict(state)
    key = "transformer_blocks.2.norm1.emb.timestep_embedder.linear_1.weight"
    diverged[key] = state[key] + 1
    with pytest.raises(ValueError, match="transformer_blocks.2.*differs from block 0's copy"):
        dit_state_dict_from_diffusers(diverged)
    with pytest.raises(ValueError, match="it lacks 'transformer_blocks.1.attn1.to_q.bias'"):
        dit_state_dict_from_diffusers({k: v for k, v in state.items() if k != "transformer_blocks.1.attn1.to_q.bias"})
    with pytest.raises(ValueError, match="no place for.*extra"):
        dit_state_dict_from_diffusers({**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(FileNotFoundError, match="neither a diffusers model folder"):
        load_diffusers_dit(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="holds a 'UNet2DModel'.*expected a DiT transformer"):
        load_diffusers_dit(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "DiTTransformer2DModel",
                                                      "norm_type": "ada_norm_zero"}))
    with pytest.raises(FileNotFoundError, match="has no weights"):
        load_diffusers_dit(tmp_path)
