"""What ``ledit train`` does to experiment folders and how ``--resume`` settles the run's settings: a new run never
writes into an existing experiment, a failed start leaves no folder, a resumed run keeps the settings it started
with (refusing a flag that contradicts them, logging one that may change), removes what a killed run left behind
and does not log a step twice. Before/after file checks throughout."""

import importlib.util
import json
import logging
import os

import pytest
import torch
from workflow_fixtures import TINY_MODEL_JSON

from ledit.arguments import UsageError
from ledit.cli import run as ledit
from ledit.training import train

FLAGS = ["--model", "LEDiT", "--model-kwargs", TINY_MODEL_JSON, "--num-classes", "2", "--global-batch-size", "2",
         "--log-every", "1", "--num-workers", "0", "--device", "cpu"]


def _train(data, results, *extra):
    ledit(["train", "--data-path", str(data), "--results-dir", str(results), *FLAGS, *extra])


def _snapshot(folder):
    """{relative path: bytes} of every file under folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _steps(exp):
    return [json.loads(line)["step"] for line in (exp / "log.jsonl").read_text().splitlines()]


def test_a_new_run_takes_the_next_free_index_and_never_touches_another_experiment(latent_shards, tmp_path):
    results = tmp_path / "results"
    _train(latent_shards, results, "--max-steps", "1")
    _train(latent_shards, results, "--max-steps", "1")
    (results / "000-LEDiT" / "checkpoints" / "0000001.pt").unlink()
    (results / "000-LEDiT" / "log.jsonl").unlink()
    (results / "000-LEDiT" / "checkpoints").rmdir()
    (results / "000-LEDiT").rmdir()  # deleted by hand while 001 exists
    (results / "notes").mkdir()  # and a folder that is no experiment
    before = _snapshot(results / "001-LEDiT")
    _train(latent_shards, results, "--max-steps", "1")
    assert sorted(p.name for p in results.iterdir()) == ["001-LEDiT", "002-LEDiT", "notes"]
    assert _snapshot(results / "001-LEDiT") == before
    assert _steps(results / "002-LEDiT") == [1]


def test_a_run_that_fails_leaves_no_folder(latent_shards, tmp_path, monkeypatch):
    results = tmp_path / "results"
    with pytest.raises(UsageError, match="cannot fill one batch of 16"):  # refused after the data is read
        _train(latent_shards, results, "--global-batch-size", "16")
    assert not results.exists() or not any(results.iterdir())

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(train, "update_ema", out_of_memory)  # fails in the first step, before any log or checkpoint
    with pytest.raises(RuntimeError, match="out of memory"):
        _train(latent_shards, results, "--max-steps", "2")
    assert not any(results.iterdir())


def test_missing_safetensors_is_found_before_training(latent_shards, tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "safetensors" else
                        find_spec(name, *a))
    with pytest.raises(ImportError, match="--save-safetensors needs safetensors, which is not installed: pip install"):
        _train(latent_shards, tmp_path / "results", "--max-steps", "1", "--save-safetensors")
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())


@pytest.fixture(scope="module")
def uninterrupted(latent_shards, tmp_path_factory):
    """A 4-step run with a non-default EMA decay and checkpoints at steps 2 and 4."""
    results = tmp_path_factory.mktemp("uninterrupted")
    _train(latent_shards, results, "--max-steps", "4", "--ckpt-every", "2", "--ema-decay", "0.5")
    (run,) = results.iterdir()
    return run


def _killed_after_step_3(run, target):
    """A copy of `run` as a kill right after step 3 leaves it: the step-4 checkpoint never written, a temporary
    of it half-written, and the log with steps 1..3 and a line cut off mid-write."""
    target.mkdir()
    for name, data in _snapshot(run).items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(data)
    (target / "checkpoints" / "0000004.pt").unlink()
    dead_pid = 2**22 + 17  # above Linux's pid_max default: no such process
    (target / "checkpoints" / f".0000004.pt.tmp-{dead_pid}").write_bytes(b"half a checkpoint")
    (target / "checkpoints" / f".0000004.pt.tmp-{os.getppid()}").write_bytes(b"a write still running")
    lines = (run / "log.jsonl").read_text().splitlines(keepends=True)
    (target / "log.jsonl").write_text("".join(lines[:3]) + lines[3][:10])
    return target


def test_resume_keeps_the_run_s_settings_and_tidies_what_the_kill_left(uninterrupted, tmp_path, caplog):
    resumed = _killed_after_step_3(uninterrupted, tmp_path / "resumed")
    # The same command line minus the run-defining flags (and the data path): all of them come from the checkpoint.
    with caplog.at_level(logging.INFO, logger="ledit.train"):
        ledit(["train", "--resume", str(resumed), "--num-workers", "0", "--device", "cpu", "--log-every", "1"])
    final, again = (torch.load(p / "checkpoints" / "0000004.pt", weights_only=True) for p in (uninterrupted, resumed))
    assert again["args"]["ema_decay"] == 0.5 and again["args"]["model_kwargs"] == json.loads(TINY_MODEL_JSON)
    for part in ("model", "ema"):
        for key, value in final[part].items():
            assert torch.equal(again[part][key], value), (part, key)
    checkpoints = sorted(p.name for p in (resumed / "checkpoints").iterdir())
    assert checkpoints == [f".0000004.pt.tmp-{os.getppid()}", "0000002.pt", "0000004.pt"]  # the dead write is gone
    assert _steps(resumed) == [1, 2, 3, 4]  # resumed at step 2: steps 3 and the cut line dropped, then logged again
    logged = [(resumed / "log.jsonl").read_text().splitlines()[:2], (uninterrupted / "log.jsonl").read_text(
        ).splitlines()[:2]]
    assert logged[0] == logged[1]
    assert "dropped 2 lines after step 2" in caplog.text and "removed" in caplog.text


@pytest.mark.parametrize("flag, value, message", [
    ("--ema-decay", "0.9", "--ema-decay 0.9 conflicts with the resumed run, which has 0.5"),
    ("--global-batch-size", "4", "--global-batch-size 4 conflicts with the resumed run, which has 2"),
    ("--model", "DiT", "--model DiT conflicts with the resumed run, which has LEDiT"),
    ("--model-kwargs", '{"depth": 3}', '--model-kwargs {"depth": 3} conflicts'),
    ("--lr", "0.5", "--lr 0.5 conflicts with the resumed run, which has 0.0001"),
    ("--vae", "mse", "--vae mse conflicts with the resumed run, which has ema"),
    ("--no-bf16", None, None),  # agrees with the run (bf16 off): accepted
])
def test_resume_refuses_a_flag_that_contradicts_the_run(uninterrupted, tmp_path, flag, value, message):
    resumed = _killed_after_step_3(uninterrupted, tmp_path / "resumed")
    before = _snapshot(resumed)
    argv = ["train", "--resume", str(resumed), "--num-workers", "0", "--device", "cpu", flag,
            *([value] if value else [])]
    if message is None:
        ledit(argv)
        assert (resumed / "checkpoints" / "0000004.pt").is_file()
        return
    with pytest.raises(UsageError, match=message + ".*drop " + flag):
        ledit(argv)
    assert _snapshot(resumed) == before  # refused before anything was touched


def test_resume_logs_the_settings_it_changes(uninterrupted, tmp_path, caplog):
    resumed = _killed_after_step_3(uninterrupted, tmp_path / "resumed")
    with caplog.at_level(logging.INFO, logger="ledit.train"):
        ledit(["train", "--resume", str(resumed), "--num-workers", "0", "--device", "cpu", "--max-steps", "5",
               "--ckpt-every", "5"])
    assert "resumed with --max-steps 5 (the run had 4)" in caplog.text
    assert "resumed with --ckpt-every 5 (the run had 2)" in caplog.text
    assert sorted(p.name for p in (resumed / "checkpoints").glob("*.pt")) == ["0000002.pt", "0000005.pt"]
    assert torch.load(resumed / "checkpoints" / "0000005.pt", weights_only=True)["args"]["max_steps"] == 5


def test_resume_of_an_image_folder_run_keeps_its_image_size_and_vae(image_folder, tiny_vae_dir, tmp_path):
    results = tmp_path / "results"
    ledit(["train", "--data-path", str(image_folder), "--vae", str(tiny_vae_dir), "--image-size", "64",
           "--results-dir", str(results), "--max-steps", "1", *FLAGS])
    (run,) = results.iterdir()
    # Resumed without --image-size or --vae: the run goes on at 64 px through its VAE, not at the defaults 256/ema.
    ledit(["train", "--resume", str(run), "--max-steps", "2", "--num-workers", "0", "--device", "cpu"])
    state = torch.load(run / "checkpoints" / "0000002.pt", weights_only=True)
    assert state["args"]["image_size"] == 64 and state["args"]["vae"] == str(tiny_vae_dir)
    assert state["config"]["input_size"] == 8
    with pytest.raises(UsageError, match="--image-size 256 conflicts with the resumed run, which has 64"):
        ledit(["train", "--resume", str(run), "--max-steps", "3", "--image-size", "256", "--device", "cpu"])


def test_resume_refuses_a_checkpoint_that_is_not_a_training_checkpoint(tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match=r"is not a checkpoint of `ledit train`: it lacks \['ema', 'opt', 'args'"):
        ledit(["train", "--resume", str(tmp_path / "weights.pt"), "--device", "cpu"])


def test_claiming_an_index_another_run_just_took_moves_on(tmp_path, monkeypatch):
    from pathlib import Path

    from ledit.training.experiment import claim_experiment_dir

    (tmp_path / "005-DiT-XL-2").mkdir()
    (tmp_path / "notes").mkdir()
    assert claim_experiment_dir(str(tmp_path), "LEDiT-XL/2").name == "006-LEDiT-XL-2"
    # A run that listed the folder before another run created 006 and 007 tries 006 first, then takes 008.
    (tmp_path / "007-LEDiT-XL-2").mkdir()
    listed_before = [tmp_path / "005-DiT-XL-2", tmp_path / "notes"]
    monkeypatch.setattr(Path, "iterdir", lambda self: iter(listed_before) if self == tmp_path else iter([]))
    claimed = claim_experiment_dir(str(tmp_path), "LEDiT-XL/2")
    assert claimed.name == "008-LEDiT-XL-2" and (claimed / "checkpoints").is_dir()
