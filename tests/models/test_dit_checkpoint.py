"""from_dit_checkpoint: DiT weights into LEDiT (and other baselines), with clear errors on mismatches."""

import argparse

import pytest
import torch
from model_helpers import TINY, model_inputs

from ledit.models import CheckpointLoadReport, from_dit_checkpoint


@pytest.fixture
def dit_state(tiny):
    return tiny("DiT").state_dict()


def _save(path, obj):
    torch.save(obj, path)
    return path


def test_round_trip_from_a_training_checkpoint_prefers_ema(tiny, tmp_path, dit_state):
    model_weights = {k: torch.zeros_like(v) for k, v in dit_state.items()}
    path = _save(tmp_path / "0100000.pt", {"model": model_weights, "ema": dit_state, "opt": {}, "args": {"lr": 1e-4},
                                           "step": 3})
    model, report = from_dit_checkpoint(path, name="LEDiT", **TINY)
    assert isinstance(report, CheckpointLoadReport)
    assert report.source == "ema"
    assert report.dropped == ("pos_embed",)
    assert set(report.initialized) == {"locality.conv.weight", "locality.conv.bias",
                                       "locality.adaLN_modulation.1.weight", "locality.adaLN_modulation.1.bias"}
    assert set(report.loaded) == set(dit_state) - {"pos_embed"}
    state = model.state_dict()
    for key in report.loaded:
        torch.testing.assert_close(state[key], dit_state[key], rtol=0, atol=0)
    assert model.config["name"] == "LEDiT" and model.train_grid == (4, 4)


@pytest.mark.parametrize("locality", ["dwconv", "conv"])
def test_fresh_locality_starts_as_the_identity(dit_state, locality):
    """With no causal blocks, LEDiT from DiT weights computes exactly DiT-without-PE on the same weights."""
    ledit_model, _ = from_dit_checkpoint(dit_state, name="LEDiT", attention_schedule="none", locality=locality,
                                         attention_scaling=False, **TINY)
    nope_dit, report = from_dit_checkpoint(dit_state, name="DiT", pos_embed="none", **TINY)
    assert report.dropped == ("pos_embed",) and report.initialized == ()
    x, t, y = model_inputs(2, 8, 12)
    torch.testing.assert_close(ledit_model.eval()(x, t, y), nope_dit.eval()(x, t, y))


def test_sincos_dit_loads_everything_and_input_size_is_read_off_pos_embed(tiny):
    big = tiny("DiT", input_size=12).state_dict()  # a 6x6 training grid
    model, report = from_dit_checkpoint(big, name="DiT", **{k: v for k, v in TINY.items() if k != "input_size"})
    assert report.dropped == () and report.initialized == () and report.source == "state_dict"
    assert model.train_grid == (6, 6)
    torch.testing.assert_close(model.pos_embed, big["pos_embed"])


def test_a_dit_training_checkpoint_with_namespace_args_loads_from_its_path(tmp_path, dit_state):
    """facebookresearch/DiT's train.py pickles its args as an argparse.Namespace; the path loads all the same."""
    path = _save(tmp_path / "0050000.pt", {"model": dit_state, "ema": dit_state, "opt": {},
                                           "args": argparse.Namespace(model="DiT-XL/2", global_batch_size=256)})
    with pytest.raises(Exception, match="weights_only|Namespace"):
        torch.load(path, weights_only=True)
    model, report = from_dit_checkpoint(path, name="LEDiT", **TINY)
    assert report.source == "ema" and set(report.loaded) == set(dit_state) - {"pos_embed"}


def test_wrapper_prefixes_are_stripped(dit_state):
    wrapped = {"module." + k: v for k, v in dit_state.items()}
    _, report = from_dit_checkpoint(wrapped, name="LEDiT", **TINY)
    assert set(report.loaded) == set(dit_state) - {"pos_embed"}


def test_wrong_model_size_names_the_key_and_the_size(dit_state):
    with pytest.raises(ValueError, match=r"x_embedder.proj.weight.*\(32, 4, 2, 2\).*\(1152, 4, 2, 2\).*depth 2, "
                                         r"hidden 32, patch 2"):
        from_dit_checkpoint(dit_state, name="LEDiT-XL/2", num_classes=10)
    with pytest.raises(ValueError, match="y_embedder.embedding_table.weight"):
        from_dit_checkpoint(dit_state, name="LEDiT", **{**TINY, "num_classes": 12})


def test_missing_and_unexpected_keys_are_named(dit_state):
    extra = {**dit_state, "blocks.0.attn.q_norm.weight": torch.ones(16)}
    with pytest.raises(ValueError, match=r"keys that LEDiT does not.*blocks.0.attn.q_norm.weight"):
        from_dit_checkpoint(extra, name="LEDiT", **TINY)
    missing = {k: v for k, v in dit_state.items() if k != "blocks.1.mlp.fc2.bias"}
    with pytest.raises(ValueError, match=r"lacks DiT backbone keys.*blocks.1.mlp.fc2.bias"):
        from_dit_checkpoint(missing, name="LEDiT", **TINY)


def test_unreadable_inputs(tmp_path, dit_state):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_dit_checkpoint(tmp_path / "absent.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights-only torch checkpoint"):
        from_dit_checkpoint(corrupt)
    with pytest.raises(ValueError, match="holds a list, not a dict"):
        from_dit_checkpoint(_save(tmp_path / "list.pt", [torch.ones(1)]))
    with pytest.raises(ValueError, match="key 'step' holds a int"):
        from_dit_checkpoint({**dit_state, "step": 3}, name="LEDiT", **TINY)
    with pytest.raises(TypeError, match="file path or a state dict"):
        from_dit_checkpoint(42)
