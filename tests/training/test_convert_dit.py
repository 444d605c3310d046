import argparse

import pytest
import torch
from workflow_fixtures import TINY_MODEL

from ledit.checkpoint import CheckpointError, load_checkpoint
from ledit.cli import run as ledit
from ledit.models import build_model


def _write_dit_training_checkpoint(path):
    """A checkpoint exactly as facebookresearch/DiT's train.py writes it: args pickled as an argparse.Namespace."""
    torch.manual_seed(0)
    model = build_model("DiT", input_size=8, num_classes=10, **TINY_MODEL)
    ema = build_model("DiT", input_size=8, num_classes=10, **TINY_MODEL)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    args = argparse.Namespace(model="DiT-XL/2", image_size=64, num_classes=10, global_batch_size=256)
    torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "args": args}, path)
    return model.state_dict(), ema.state_dict()


def test_convert_dit_training_checkpoint_to_ledit(tmp_path, capsys, tiny_vae_dir):
    src = tmp_path / "0050000.pt"
    model_sd, ema_sd = _write_dit_training_checkpoint(src)
    with pytest.raises(Exception, match="weights_only|Namespace"):
        torch.load(src, weights_only=True)
    out = tmp_path / "ledit.pt"
    ledit(["convert-dit", "--ckpt", str(src), "--model", "LEDiT", "--model-kwargs",
           '{"depth": 2, "hidden_size": 32, "num_heads": 2, "patch_size": 2}', "--output", str(out), "--safetensors"])
    report = capsys.readouterr().out
    assert "(ema weights) -> LEDiT" in report and "dropped 1: pos_embed" in report
    assert "added (freshly initialised)" in report and "locality" in report

    converted = torch.load(out, weights_only=True)
    assert converted["config"]["name"] == "LEDiT" and converted["config"]["num_classes"] == 10
    assert converted["config"]["input_size"] == 8 and converted["args"]["global_batch_size"] == 256
    for key, value in ema_sd.items():
        if key != "pos_embed":
            assert torch.equal(converted["ema"][key], value), key
            assert torch.equal(converted["model"][key], model_sd[key]), key
    assert "pos_embed" not in converted["ema"]
    added = set(converted["ema"]) - set(ema_sd)
    assert added and all("locality" in k for k in added)

    from safetensors.torch import load_file

    assert set(load_file(out.with_suffix(".safetensors"))) == set(converted["ema"])
    # The converted checkpoint samples as is, at twice DiT's size.
    ledit(["sample", "--ckpt", str(out), "--vae", str(tiny_vae_dir), "--image-size", "64", "--height", "128",
           "--num-sampling-steps", "2", "--device", "cpu", "--output", str(tmp_path / "x.png")])
    assert (tmp_path / "x.png").stat().st_size > 0


def test_convert_raw_dit_state_dict_to_ledit_dit_keeps_every_key(tmp_path, capsys):
    model = build_model("DiT", input_size=8, num_classes=10, learn_sigma=False, **TINY_MODEL)
    torch.save(model.state_dict(), tmp_path / "raw.pt")
    ledit(["convert-dit", "--ckpt", str(tmp_path / "raw.pt"), "--model", "DiT", "--model-kwargs",
           '{"depth": 2, "hidden_size": 32, "num_heads": 2, "patch_size": 2}', "--output", str(tmp_path / "dit.pt")])
    assert "dropped 0: -" in capsys.readouterr().out
    converted = load_checkpoint(tmp_path / "dit.pt")
    assert converted["config"]["learn_sigma"] is False
    assert all(torch.equal(converted["ema"][k], v) for k, v in model.state_dict().items())


def test_convert_dit_bad_inputs(tmp_path):
    torch.save({"model": {"weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a DiT checkpoint.*lack "):
        ledit(["convert-dit", "--ckpt", str(tmp_path / "other.pt"), "--output", str(tmp_path / "o.pt")])
    _write_dit_training_checkpoint(tmp_path / "tiny.pt")
    with pytest.raises(ValueError, match="shape|keys"):  # a tiny DiT is not a DiT-XL/2
        ledit(["convert-dit", "--ckpt", str(tmp_path / "tiny.pt"), "--model", "LEDiT-XL/2", "--output",
               str(tmp_path / "o.pt")])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        ledit(["convert-dit", "--ckpt", str(tmp_path / "junk.pt"), "--output", str(tmp_path / "o.pt")])
    assert not (tmp_path / "o.pt").exists()
