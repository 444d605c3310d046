"""Checkpoint files: ``{model, ema, opt, args, step}`` (+ ``config``, ``rng``), loadable with
``torch.load(weights_only=True)``, written atomically; safetensors export; safe loading of DiT's legacy files.

facebookresearch/DiT pickles ``args`` as an ``argparse.Namespace``, which ``weights_only=True`` (PyTorch's
default since 2.6) refuses. ``load_dit_checkpoint`` allows exactly that one class and nothing else, so a legacy
file still cannot run code when loaded; ledit itself stores ``args`` as a plain dict.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import zipfile
from pathlib import Path

import torch

from ledit.files import atomic_path

CHECKPOINT_KEYS = ("model", "ema", "opt", "args", "step")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or does not fit the model it is loaded into."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file, then rename: a run killed mid-write leaves the previous file intact."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, allow_namespace: bool = False) -> dict:
    """Load on CPU with weights_only=True (optionally allowing argparse.Namespace, for DiT's own files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    safe = [argparse.Namespace] if allow_namespace else []
    try:
        with torch.serialization.safe_globals(safe):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as e:
        hint = "" if allow_namespace else " (a facebookresearch/DiT training checkpoint? run `ledit convert-dit` first)"
        raise CheckpointError(
            f"cannot load checkpoint {str(path)!r}: truncated, corrupt or not weights-only{hint}: {e}"
        ) from e
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, expected a dict")
    return state


def load_dit_checkpoint(path: str | os.PathLike) -> dict:
    """A facebookresearch/DiT file: a raw state dict, or a training checkpoint {model, ema, opt, args: Namespace}.

    Its ``args`` comes back as a plain dict, so the result can be saved again under weights_only rules."""
    state = load_checkpoint(path, allow_namespace=True)
    if isinstance(state.get("args"), argparse.Namespace):
        state = {**state, "args": vars(state["args"])}
    return state


def inference_weights(state: dict, path: str | os.PathLike = "checkpoint", prefer_ema: bool = True):
    """(state dict, which) from a ledit checkpoint or a raw state dict: EMA weights first, as DiT samples."""
    if "ema" in state and prefer_ema:
        return state["ema"], "ema"
    if "model" in state:
        return state["model"], "model"
    if state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return state, "state dict"
    raise CheckpointError(f"{path} has neither 'ema' nor 'model' weights (keys: {sorted(state)[:8]})")


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
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"config": json.dumps(config or {})})
    return path


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float = 0.9999) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (works on FSDP-sharded DTensors too)."""
    for ema_param, param in zip(ema.parameters(), model.parameters(), strict=True):
        ema_param.lerp_(param.detach(), 1.0 - decay)
