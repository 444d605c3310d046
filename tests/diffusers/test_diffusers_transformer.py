import inspect
import json

import pytest
import torch
from diffusers_helpers import tiny_ledit

from ledit.diffusers import DiTBaselineTransformer2DModel, LEDiTTransformer2DModel, transformer_for
from ledit.diffusers.transformer import DIFFUSERS_NAMES, ledit_arguments
from ledit.models import DiT, LEDiT

PAIRS = [(LEDiTTransformer2DModel, LEDiT), (DiTBaselineTransformer2DModel, DiT)]
# Non-default values of every option, per family: the config must carry each through save/load.
OPTIONS = {
    "LEDiT": dict(input_size=(8, 12), attention_schedule=[1], scan="raster", locality="conv", conv_post_norm=True,
                  multi_dilation_prob=0.3, attention_scaling=False, mlp_ratio=2.0, class_dropout_prob=0.2,
                  learn_sigma=False),
    "DiT": dict(pos_embed="rope", rope_method="yarn", rope_decouple=False, attention_scaling=True, mlp_ratio=2.0),
}


def defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items() if name != "self"}


@pytest.mark.parametrize("wrapper,ledit_class", PAIRS)
def test_config_names_every_ledit_option_with_ledits_defaults(wrapper, ledit_class):
    """Every constructor argument of the ledit class is in the wrapper's config (under diffusers' name for DiT's
    dimensions), and the wrapper's defaults are the ledit class's: they cannot drift apart."""
    translated = ledit_arguments(defaults(wrapper.__init__))
    assert translated == defaults(ledit_class.__init__)
    carried = {"hidden_size": "attention_head_dim", "learn_sigma": "out_channels", **DIFFUSERS_NAMES}
    assert {carried.get(name, name) for name in defaults(ledit_class.__init__)} == set(defaults(wrapper.__init__))


@pytest.mark.parametrize("family", ["LEDiT", "DiT"])
def test_save_and_load_keep_every_option_and_every_weight(family, tmp_path):
    model = tiny_ledit(family, **OPTIONS[family])
    transformer = transformer_for(model)
    assert transformer.model is model  # a wrapper, not a copy
    transformer.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == type(transformer).__name__
    loaded = type(transformer).from_pretrained(tmp_path)
    assert loaded.model.config == model.config and not loaded.training
    reference = model.state_dict()
    state = loaded.model.state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[key], reference[key]) for key in reference)


def test_forward_is_the_ledit_forward_in_diffusers_conventions():
    model = tiny_ledit()
    transformer = transformer_for(model)
    x, y = torch.randn(2, 4, 8, 14), torch.tensor([3, 10])  # non-square, 10 = the null label
    expected = model(x, torch.tensor([250, 250]), y)
    out = transformer(hidden_states=x, timestep=250, class_labels=y)
    torch.testing.assert_close(out.sample, expected, rtol=0, atol=0)
    (sample,) = transformer(x, torch.tensor([250]), y, return_dict=False)  # 1-element timesteps broadcast
    torch.testing.assert_close(sample, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="timestep is required"):
        transformer(x, class_labels=y)
    with pytest.raises(ValueError, match="class_labels is required"):
        transformer(x, 10)


def test_dtype_and_gradient_checkpointing_through_diffusers_api():
    model = tiny_ledit()
    transformer = transformer_for(model).train()
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), torch.tensor([1, 2])

    def gradients():
        torch.manual_seed(0)  # the same label dropout and dilation draws
        transformer.zero_grad()
        transformer(x, t, y).sample.square().mean().backward()
        return [p.grad.clone() for p in transformer.parameters()]

    plain = gradients()
    transformer.enable_gradient_checkpointing()
    assert transformer.is_gradient_checkpointing and model.grad_checkpointing
    for a, b in zip(plain, gradients()):
        torch.testing.assert_close(a, b)
    transformer.disable_gradient_checkpointing()
    assert not model.grad_checkpointing
    with pytest.raises(ValueError, match="gradient_checkpointing_func"):
        transformer.enable_gradient_checkpointing(gradient_checkpointing_func=torch.utils.checkpoint.checkpoint)
    half = transformer.eval().to(torch.bfloat16)
    assert half.dtype == torch.bfloat16 and model.x_embedder.proj.weight.dtype == torch.bfloat16
    assert half(x.bfloat16(), t, y).sample.dtype == torch.bfloat16


def test_bad_configs_name_the_argument():
    with pytest.raises(ValueError, match=r"out_channels=5 must be in_channels=4 .* or 2 \* in_channels=8"):
        LEDiTTransformer2DModel(sample_size=8, num_layers=1, num_attention_heads=2, attention_head_dim=16,
                                out_channels=5)
    with pytest.raises(ValueError, match="unknown scan"):
        LEDiTTransformer2DModel(sample_size=8, num_layers=1, num_attention_heads=2, attention_head_dim=16, scan="x")
    with pytest.raises(TypeError, match="must be a ledit LEDiT or DiT"):
        transformer_for(torch.nn.Linear(2, 2))
