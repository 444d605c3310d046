import json
import os
import shutil
import subprocess
import sys

import torch
from workflow_fixtures import TINY_MODEL_JSON, assert_same_training_state

TRAIN_FLAGS = ["--model", "LEDiT", "--model-kwargs", TINY_MODEL_JSON, "--num-classes", "2", "--global-batch-size", "4",
               "--log-every", "1", "--num-workers", "0", "--device", "cpu", "--multi-dilation-prob", "0.5"]


def torchrun(nproc, *args, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "ledit", *args]
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def read_log(exp_dir):
    return [json.loads(line) for line in (exp_dir / "log.jsonl").read_text().splitlines()]


def test_torchrun_ddp_train_then_resume_under_fsdp_exactly(latent_shards, tmp_path):
    results = tmp_path / "results"
    torchrun(2, "train", "--data-path", str(latent_shards), "--results-dir", str(results), "--max-steps", "5",
             "--ckpt-every", "3", *TRAIN_FLAGS)
    (run,) = results.iterdir()
    assert run.name == "000-LEDiT"
    full = read_log(run)
    assert [e["step"] for e in full] == [1, 2, 3, 4, 5]
    assert all(e["loss"] > 0 and e["images_per_s"] > 0 for e in full)
    final = torch.load(run / "checkpoints" / "0000005.pt", weights_only=True)
    assert set(final) >= {"model", "ema", "opt", "args", "step", "config", "rng"}
    assert final["step"] == 5 and final["args"]["global_batch_size"] == 4 and len(final["rng"]) == 2
    assert final["config"]["multi_dilation_prob"] == 0.5
    assert not all(torch.equal(final["model"][k], final["ema"][k]) for k in final["model"])

    # 10 items over 2 ranks at 2 per rank: 2 steps per epoch. The run killed right after its step-3 checkpoint
    # (mid-epoch), resumed (sharded with FSDP this time, which also proves that checkpoints are interchangeable
    # between DDP and FSDP), crosses into the next epoch: bit-identical state and losses at step 5.
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    (resumed / "checkpoints" / "0000005.pt").unlink()
    (resumed / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in full[:3]))
    torchrun(2, "train", "--data-path", str(latent_shards), "--resume", str(resumed / "checkpoints" / "0000003.pt"),
             "--max-steps", "5", "--ckpt-every", "3", "--fsdp", *TRAIN_FLAGS)
    again = torch.load(resumed / "checkpoints" / "0000005.pt", weights_only=True)
    assert [e["loss"] for e in read_log(resumed)] == [e["loss"] for e in full]
    assert_same_training_state(again, final)
    for rank in range(2):
        assert torch.equal(again["rng"][rank]["cpu"], final["rng"][rank]["cpu"])


def test_torchrun_packed_ddp_train_then_resume_under_fsdp_exactly(native_latent_shards, tmp_path):
    """--max-tokens under DDP: both ranks step together on their own packs; resumed under FSDP, bit-identical."""
    flags = ["--max-tokens", "48", *TRAIN_FLAGS[:6], *TRAIN_FLAGS[8:]]  # no --global-batch-size
    results = tmp_path / "results"
    torchrun(2, "train", "--data-path", str(native_latent_shards), "--results-dir", str(results), "--max-steps", "4",
             "--ckpt-every", "2", *flags)
    (run,) = results.iterdir()
    full = read_log(run)
    assert [e["step"] for e in full] == [1, 2, 3, 4] and all(e["tokens_per_s"] > 0 for e in full)
    final = torch.load(run / "checkpoints" / "0000004.pt", weights_only=True)
    assert not all(torch.equal(final["model"][k], final["ema"][k]) for k in final["model"])

    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    (resumed / "checkpoints" / "0000004.pt").unlink()
    (resumed / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in full[:2]))
    torchrun(2, "train", "--resume", str(resumed / "checkpoints" / "0000002.pt"), "--max-steps", "4",
             "--ckpt-every", "2", "--fsdp", *flags)
    again = torch.load(resumed / "checkpoints" / "0000004.pt", weights_only=True)
    assert [e["loss"] for e in read_log(resumed)] == [e["loss"] for e in full]
    assert again["position"] == final["position"]
    assert_same_training_state(again, final)
