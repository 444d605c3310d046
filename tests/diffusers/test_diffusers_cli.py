"""`ledit diffusers export|import`: ledit -> diffusers -> ledit and diffusers DiT -> ledit, bit-exact on the weights."""

import json

import pytest
import torch

from ledit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ledit.cli import run as ledit
from ledit.diffusers import LEDiTPipeline, dit_state_dict_to_diffusers
from ledit.diffusers.convert import model_from_checkpoint


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("layout", ["pipeline", "transformer"])
def test_ledit_to_diffusers_to_ledit_is_bit_exact(layout, pipeline_dir, ledit_ckpt, tmp_path):
    folder = pipeline_dir
    if layout == "transformer":
        folder = tmp_path / "transformer"
        ledit(["diffusers", "export", "--ckpt", str(ledit_ckpt), "--output", str(folder)])
        assert (folder / "config.json").is_file() and not (folder / "model_index.json").exists()
    ledit(["diffusers", "import", "--folder", str(folder), "--output", str(tmp_path / "back.pt"), "--safetensors"])
    original, back = load_checkpoint(ledit_ckpt), load_checkpoint(tmp_path / "back.pt")
    assert back["config"] == original["config"] and back["args"]["converted_from"] == str(folder)
    assert_same_weights(back["ema"], original["ema"])
    assert (tmp_path / "back.safetensors").is_file()


def test_diffusers_dit_to_ledit_checkpoints_that_sample(diffusers_dit_dir, tiny_vae_dir, tmp_path, capsys):
    """The default is the paper's fine-tuning start (a LEDiT of the DiT's size); --model DiT keeps the DiT, whose
    weights go back to diffusers' bit for bit. Both checkpoints are ordinary ledit checkpoints."""
    ledit(["diffusers", "import", "--folder", str(diffusers_dit_dir), "--output", str(tmp_path / "ledit.pt")])
    report = capsys.readouterr().out
    assert "-> LEDiT" in report and "locality.conv.weight" in report
    ledit(["diffusers", "import", "--folder", str(diffusers_dit_dir), "--output", str(tmp_path / "dit.pt"),
           "--model", "DiT", "--model-kwargs", '{"sincos_mode": "interpolate"}'])
    dit = load_checkpoint(tmp_path / "dit.pt")
    assert dit["config"]["name"] == "DiT" and dit["config"]["sincos_mode"] == "interpolate"
    from diffusers import DiTTransformer2DModel

    original = DiTTransformer2DModel.from_pretrained(diffusers_dit_dir).state_dict()
    assert_same_weights(dit_state_dict_to_diffusers(dit["ema"]), original)
    ledit(["sample", "--ckpt", str(tmp_path / "ledit.pt"), "--vae", str(tiny_vae_dir), "--image-size", "64",
           "--width", "96", "--num-sampling-steps", "2", "--class-labels", "3", "--device", "cpu",
           "--output", str(tmp_path / "s.png")])
    assert (tmp_path / "s.png").is_file()


def test_export_with_class_names_and_the_ddpm_scheduler(ledit_ckpt, tiny_vae_dir, tmp_path):
    index = tmp_path / "model_index.json"  # DiT's published folder keeps its ImageNet names here
    names = {"0": "tench, Tinca tinca", "1": "goldfish"}
    index.write_text(json.dumps({"_class_name": "DiTPipeline", "id2label": names}))
    ledit(["diffusers", "export", "--ckpt", str(ledit_ckpt), "--vae", str(tiny_vae_dir), "--scheduler", "ddpm",
           "--id2label", str(index), "--output", str(tmp_path / "pipe")])
    pipe = LEDiTPipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.get_label_ids(["goldfish", "tench"]) == [1, 0]
    assert type(pipe.scheduler).__name__ == "DDPMScheduler" and pipe.scheduler.config.variance_type == "learned_range"


def test_cli_errors_name_the_flag_and_the_fix(ledit_ckpt, pipeline_dir, tiny_vae_dir, tmp_path):
    save_checkpoint(load_checkpoint(ledit_ckpt)["ema"], tmp_path / "raw.pt")
    with pytest.raises(CheckpointError, match="carries no model config"):
        ledit(["diffusers", "export", "--ckpt", str(tmp_path / "raw.pt"), "--output", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="holds a ledit LEDiTTransformer2DModel.*drop --model"):
        ledit(["diffusers", "import", "--folder", str(pipeline_dir), "--output", str(tmp_path / "x.pt"),
               "--model", "DiT"])
    with pytest.raises(ValueError, match="holds a AutoencoderKL; expected DiTTransformer2DModel"):
        ledit(["diffusers", "import", "--folder", str(tiny_vae_dir), "--output", str(tmp_path / "x.pt")])
    (tmp_path / "labels.json").write_text(json.dumps(["tench"]))
    with pytest.raises(ValueError, match=r"--id2label .*labels.json: expected \{class id"):
        ledit(["diffusers", "export", "--ckpt", str(ledit_ckpt), "--vae", str(tiny_vae_dir), "--id2label",
               str(tmp_path / "labels.json"), "--output", str(tmp_path / "y")])
    with pytest.raises(ValueError, match="--scheduler and --id2label belong to a pipeline: pass --vae"):
        ledit(["diffusers", "export", "--ckpt", str(ledit_ckpt), "--scheduler", "ddpm", "--output",
               str(tmp_path / "x")])
    with pytest.raises(FileExistsError, match="exists; remove it or choose another folder"):
        ledit(["diffusers", "export", "--ckpt", str(ledit_ckpt), "--output", str(pipeline_dir)])
    model = model_from_checkpoint(ledit_ckpt)
    with pytest.raises(ValueError, match="pass the AutoencoderKL it was trained with"):
        from ledit.diffusers import export_pipeline

        export_pipeline(model, tmp_path / "z")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.json", "raw.pt"]  # nothing half-written
