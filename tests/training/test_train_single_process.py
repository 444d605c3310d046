
import pytest
import torch
from workflow_fixtures import TINY_MODEL_JSON

from ledit.arguments import UsageError
from ledit.checkpoint import CheckpointError, save_checkpoint
from ledit.cli import run as ledit

FLAGS = ["--model", "LEDiT", "--model-kwargs", TINY_MODEL_JSON, "--num-classes", "2", "--global-batch-size", "2",
         "--log-every", "1", "--num-workers", "0", "--device", "cpu"]


def test_train_from_raw_images_through_the_vae(image_folder, tiny_vae_dir, tmp_path):
    ledit(["train", "--data-path", str(image_folder), "--vae", str(tiny_vae_dir), "--image-size", "64",
           "--results-dir", str(tmp_path), "--max-steps", "2", "--ckpt-every", "2", "--bf16", "--grad-checkpointing",
           "--save-safetensors", *FLAGS])
    (run,) = tmp_path.iterdir()
    ckpt = torch.load(run / "checkpoints" / "0000002.pt", weights_only=True)
    assert ckpt["config"]["input_size"] == 8 and ckpt["config"]["in_channels"] == 4
    assert ckpt["args"]["bf16"] and ckpt["args"]["grad_checkpointing"]
    from safetensors.torch import load_file

    exported = load_file(run / "checkpoints" / "0000002.safetensors")
    assert all(torch.equal(exported[k], v) for k, v in ckpt["ema"].items())
    assert len((run / "log.jsonl").read_text().splitlines()) == 2


def test_train_bad_inputs(image_folder, latent_shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-path .* does not exist"):
        ledit(["train", "--data-path", str(tmp_path / "nowhere"), "--results-dir", str(tmp_path), *FLAGS])
    with pytest.raises(ValueError, match="--fsdp needs torchrun"):
        ledit(["train", "--data-path", str(latent_shards), "--results-dir", str(tmp_path / "r"), "--fsdp", *FLAGS])
    with pytest.raises(ValueError, match="--multi-dilation-prob applies to LEDiT"):
        ledit(["train", "--data-path", str(latent_shards), "--results-dir", str(tmp_path / "r"), *FLAGS,
               "--model", "DiT", "--multi-dilation-prob", "0.2"])
    with pytest.raises(ValueError, match="cannot fill one batch"):
        ledit(["train", "--data-path", str(latent_shards), "--results-dir", str(tmp_path / "r"), *FLAGS,
               "--global-batch-size", "16"])
    # Resuming: the wrong model, and a checkpoint without optimizer state.
    ledit(["train", "--data-path", str(latent_shards), "--results-dir", str(tmp_path / "ok"), "--max-steps", "1",
           *FLAGS])
    (ckpt,) = (tmp_path / "ok").glob("*/checkpoints/0000001.pt")
    with pytest.raises(UsageError, match="--model DiT-S/2 conflicts with the resumed run, which has LEDiT"):
        ledit(["train", "--data-path", str(latent_shards), "--resume", str(ckpt), *FLAGS, "--model", "DiT-S/2"])
    state = torch.load(ckpt, weights_only=True)
    save_checkpoint({**state, "opt": None}, tmp_path / "converted.pt")
    with pytest.raises(CheckpointError, match="no optimizer state.*--init-from-dit"):
        ledit(["train", "--data-path", str(latent_shards), "--resume", str(tmp_path / "converted.pt"), *FLAGS])
    with pytest.raises(FileNotFoundError, match="no checkpoints"):
        ledit(["train", "--data-path", str(latent_shards), "--resume", str(tmp_path), *FLAGS])


@pytest.mark.parametrize("form", ["state dict", "DiT training checkpoint"])
def test_init_from_dit_fine_tunes_from_dit_weights(latent_shards, tmp_path, form):
    import argparse

    from workflow_fixtures import TINY_MODEL

    from ledit.models import build_model

    dit = build_model("DiT", input_size=8, num_classes=2, **TINY_MODEL)
    if form == "state dict":
        torch.save(dit.state_dict(), tmp_path / "DiT-tiny.pt")
    else:  # as facebookresearch/DiT's train.py writes it: args pickled as an argparse.Namespace
        torch.save({"model": dit.state_dict(), "ema": dit.state_dict(), "opt": {},
                    "args": argparse.Namespace(model="DiT-XL/2", global_batch_size=256)}, tmp_path / "DiT-tiny.pt")
    ledit(["train", "--data-path", str(latent_shards), "--results-dir", str(tmp_path / "r"), "--max-steps", "1",
           "--init-from-dit", str(tmp_path / "DiT-tiny.pt"), "--lr", "0", *FLAGS])
    (ckpt,) = (tmp_path / "r").glob("*/checkpoints/0000001.pt")
    model = torch.load(ckpt, weights_only=True)["model"]
    # lr 0: the weights after one step are DiT's, minus pos_embed, plus LEDiT's locality module.
    assert "pos_embed" not in model and any("locality" in k for k in model)
    assert all(torch.equal(model[k], v) for k, v in dit.state_dict().items() if k != "pos_embed")


def test_the_model_kwargs_help_example_works_with_the_default_model(capsys):
    import argparse
    import json

    from ledit.models import build_model
    from ledit.training.settings import CUSTOM_SIZE_EXAMPLE, DEFAULTS, MODEL_KWARGS_EXAMPLE, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.print_help()
    text = " ".join(capsys.readouterr().out.split())
    assert f"e.g. '{json.dumps(MODEL_KWARGS_EXAMPLE)}'" in text
    assert f"--model LEDiT --model-kwargs '{json.dumps(CUSTOM_SIZE_EXAMPLE)}'" in text
    with torch.device("meta"):
        assert build_model(DEFAULTS["model"], **MODEL_KWARGS_EXAMPLE).config["scan"] == "raster"
        assert len(build_model("LEDiT", **CUSTOM_SIZE_EXAMPLE).blocks) == 12
