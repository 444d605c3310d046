"""The one checkpoint reader: weights-only loading (a file can never run code), DiT's Namespace args where asked
for, a clear error naming the file for anything else, and the choice of weights to run."""

import argparse
import os

import pytest
import torch

from ledit.checkpoint import (
    CheckpointError,
    checkpoint_weights,
    load_checkpoint,
    load_dit_checkpoint,
    load_weights_into,
    save_checkpoint,
)

WEIGHTS = {"layer.weight": torch.arange(6.0).view(2, 3), "layer.bias": torch.ones(2)}


class RunsCode:
    """A pickle that calls a function when unpickled: what weights-only loading exists to refuse."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_save_then_load_round_trips_on_the_cpu(tmp_path):
    state = {"model": WEIGHTS, "ema": WEIGHTS, "opt": None, "args": {"lr": 1e-4}, "step": 7}
    path = save_checkpoint(state, tmp_path / "run" / "0000007.pt")
    loaded = load_checkpoint(path)
    assert loaded["step"] == 7 and loaded["args"] == {"lr": 1e-4}
    assert all(torch.equal(loaded["ema"][k], v) and loaded["ema"][k].device.type == "cpu" for k, v in WEIGHTS.items())
    assert list(path.parent.iterdir()) == [path]


def test_a_pickle_that_would_run_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "the-pickle-ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": WEIGHTS, "payload": RunsCode(marker)}, path)
    for load in (load_checkpoint, load_dit_checkpoint):
        with pytest.raises(CheckpointError, match=r"evil\.pt.*holds a pickled posix\.mkdir.*could run code"):
            load(path)
    assert not marker.exists()


def test_dit_namespace_args_load_only_through_the_dit_reader(tmp_path):
    path = tmp_path / "dit.pt"
    torch.save({"model": WEIGHTS, "args": argparse.Namespace(model="DiT-XL/2", global_batch_size=256)}, path)
    with pytest.raises(CheckpointError, match=r"dit\.pt.*argparse\.Namespace.*ledit convert-dit"):
        load_checkpoint(path)
    state = load_dit_checkpoint(path)
    assert state["args"] == {"model": "DiT-XL/2", "global_batch_size": 256}
    save_checkpoint(state, tmp_path / "again.pt")  # a plain dict now: weights-only readable
    assert load_checkpoint(tmp_path / "again.pt")["args"]["global_batch_size"] == 256


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", "truncated"])
def test_damaged_files_name_the_file(tmp_path, content):
    if content == "truncated":
        save_checkpoint({"model": WEIGHTS}, tmp_path / "whole.pt")
        content = (tmp_path / "whole.pt").read_bytes()[:300]
    path = tmp_path / "damaged.pt"
    path.write_bytes(content)
    for load in (load_checkpoint, load_dit_checkpoint):
        with pytest.raises(CheckpointError, match=r"cannot read checkpoint '.*damaged\.pt': truncated, corrupt"):
            load(path)


def test_missing_files_non_dicts_and_non_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint '.*absent\.pt' does not exist"):
        load_checkpoint(tmp_path / "absent.pt")
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a dict"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(TypeError, match="str or os.PathLike, got dict"):
        load_checkpoint(WEIGHTS)


def test_checkpoint_weights_prefers_ema_then_model_then_the_raw_state_dict():
    other = {k: v + 1 for k, v in WEIGHTS.items()}
    assert checkpoint_weights({"model": other, "ema": WEIGHTS})[1] == "ema"
    weights, which = checkpoint_weights({"model": other, "ema": None, "step": 3})
    assert which == "model" and torch.equal(weights["layer.bias"], other["layer.bias"])
    weights, which = checkpoint_weights({"module._orig_mod." + k: v for k, v in WEIGHTS.items()})
    assert which == "state_dict" and set(weights) == set(WEIGHTS)  # DDP and torch.compile prefixes removed
    with pytest.raises(CheckpointError, match=r"run\.pt: not a state dict: key 'step' holds a int"):
        checkpoint_weights({"step": 3, "opt": {}}, "run.pt")


def test_load_weights_into_names_what_does_not_fit():
    model = torch.nn.Sequential()
    model.add_module("layer", torch.nn.Linear(3, 2))
    load_weights_into(model, WEIGHTS, "w.pt")
    assert torch.equal(model.layer.weight, WEIGHTS["layer.weight"])
    with pytest.raises(CheckpointError, match=r"w\.pt does not fit model Sequential: missing \['layer\.bias'\]"):
        load_weights_into(model, {"layer.weight": WEIGHTS["layer.weight"]}, "w.pt")
    with pytest.raises(CheckpointError, match=r"shape mismatches \['layer\.bias'\]"):
        load_weights_into(model, {**WEIGHTS, "layer.bias": torch.ones(3)}, "w.pt")
