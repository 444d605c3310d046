"""Checkpoint files, read and written in one place: ledit's own, and facebookresearch/DiT's.

A ledit checkpoint is ``{model, ema, opt, args, step}`` (plus ``config`` to rebuild the model and ``rng`` to resume
exactly), written atomically, with ``args`` a plain dict so that ``torch.load(weights_only=True)`` reads it.
Every file is read with ``weights_only=True``: tensors and plain containers only, so loading a checkpoint can
never run code. facebookresearch/DiT pickles its training ``args`` as an ``argparse.Namespace``;
``load_dit_checkpoint`` allows exactly that one class more and hands ``args`` back as a dict.

Models and workflows share this module: ``ledit.models.from_dit_checkpoint`` reads DiT files through it,
``ledit train`` writes and resumes through it, ``ledit sample`` and ``ledit convert-dit`` read through it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ledit.files import atomic_path

# Prefixes a wrapped model puts on every key of its state dict: DDP, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# The weights a checkpoint holds, in the order they are preferred for inference (EMA first, as DiT samples).
WEIGHT_KEYS = ("ema", "model")


class CheckpointError(ValueError):
    """A checkpoint that is corrupt, refused by weights-only loading, holds no weights, or does not fit the model
    it is loaded into."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file, then rename: a run killed mid-write leaves the previous file intact."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A ledit checkpoint (or any weights-only torch file holding a dict), loaded on the CPU."""
    return _load(path, allow_dit_args=False)


def load_dit_checkpoint(path: str | os.PathLike) -> dict:
    """A facebookresearch/DiT file: a raw state dict, or a training checkpoint ``{model, ema, opt, args}`` whose
    ``args`` is an ``argparse.Namespace`` (the one class allowed beyond weights-only's). ``args`` comes back as a
    dict, so the result can be saved again under weights-only rules. ledit's own checkpoints load here too."""
    state = _load(path, allow_dit_args=True)
    if isinstance(state.get("args"), argparse.Namespace):
        state = {**state, "args": vars(state["args"])}
    return state


def _load(path: str | os.PathLike, allow_dit_args: bool) -> dict:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a checkpoint path must be a str or os.PathLike, got {type(path).__name__}")
    name = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {name!r} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace] if allow_dit_args else []):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a damaged file fails in any of pickle's, zip's or torch's ways
        raise CheckpointError(_unreadable(name, error, allow_dit_args)) from error
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {name!r} holds a {type(state).__name__}, not a dict (a state dict or a "
                              "training checkpoint)")
    return state


def _unreadable(name: str, error: Exception, allow_dit_args: bool) -> str:
    """Why a file did not load: an object weights-only loading refuses (named), or a damaged file."""
    refused = re.search(r"GLOBAL ([\w.]+)", str(error))
    if refused is None:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else "no detail"  # torch's run to pages
        return (f"cannot read checkpoint {name!r}: truncated, corrupt or not a weights-only torch checkpoint "
                f"({type(error).__name__}: {detail})")
    found = refused.group(1)
    hint = ""
    if found == "argparse.Namespace" and not allow_dit_args:
        hint = " A facebookresearch/DiT training checkpoint? Convert it first: `ledit convert-dit`."
    return (f"cannot read checkpoint {name!r}: it holds a pickled {found}, which weights-only loading refuses "
            f"(unpickling arbitrary objects could run code; a checkpoint holds tensors and plain containers).{hint}")


def checkpoint_weights(state: Mapping, source: str = "checkpoint") -> tuple[dict, str]:
    """(state dict, which) from a loaded checkpoint: its "ema" weights, else its "model" weights, else the file
    itself when it is a raw state dict; ``which`` is "ema", "model" or "state_dict". DDP and torch.compile key
    prefixes are removed. ``source`` names the checkpoint in errors."""
    which = next((key for key in WEIGHT_KEYS if isinstance(state.get(key), Mapping)), "state_dict")
    weights = state[which] if which in WEIGHT_KEYS else state
    for key, value in weights.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{source}: not a state dict: key {key!r} holds a {type(value).__name__}, not a tensor (expected a "
                f"state dict, or a training checkpoint with an 'ema' or 'model' state dict)"
            )
    weights = dict(weights)
    for prefix in WRAPPER_PREFIXES:
        if weights and all(key.startswith(prefix) for key in weights):
            weights = {key[len(prefix):]: value for key, value in weights.items()}
    return weights, which


def load_weights_into(model: torch.nn.Module, weights: dict, source: str) -> None:
    """load_state_dict(strict) with an error that names what does not fit and how to fix it."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    mismatched = [k for k in set(own) & set(weights) if own[k].shape != weights[k].shape]
    if missing or unexpected or mismatched:
        name = getattr(model, "config", {}).get("name", type(model).__name__)
        raise CheckpointError(
            f"{source} does not fit model {name}: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"shape mismatches {sorted(mismatched)[:5]}. "
            "Pass the --model (and size options) it was trained with, or convert a facebookresearch/DiT "
            "checkpoint with `ledit convert-dit`."
        )
    model.load_state_dict(weights)


def export_safetensors(weights: dict, path: str | os.PathLike, config: dict | None = None) -> Path:
    """Write weights as safetensors (atomically), with the model config as JSON metadata."""
    from safetensors.torch import save_file  # optional dependency (ledit[train]): imported when used

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"config": json.dumps(config or {})})
    return path
