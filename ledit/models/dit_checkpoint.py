"""Start a model (LEDiT by default) from a facebookresearch/DiT checkpoint: the paper's fine-tuning recipe.

Every DiT backbone weight is copied; DiT's ``pos_embed`` is dropped when the new model has no absolute PE;
modules DiT lacks (the locality conv, its norm, per-block conv branches) keep their fresh initialisation,
which is the identity function for LEDiT's locality modules. Anything else that does not match is an error
naming the key.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Mapping, Union

import torch

from ledit.checkpoint import checkpoint_weights, load_dit_checkpoint
from ledit.models.backbone import DiffusionTransformer
from ledit.models.configs import DIT_ARGUMENTS, MODEL_SIZES
from ledit.models.registry import build_model

DROPPABLE_KEYS = ("pos_embed",)


@dataclass(frozen=True)
class CheckpointLoadReport:
    """What ``from_dit_checkpoint`` did.

    Attributes:
        source: which weights were read: "ema" or "model" (from a DiT training checkpoint) or "state_dict".
        loaded: model keys copied from the checkpoint.
        dropped: checkpoint keys the model has no place for (DiT's ``pos_embed``).
        initialized: model keys left at their fresh initialisation (modules DiT does not have).
    """

    source: str
    loaded: tuple[str, ...]
    dropped: tuple[str, ...]
    initialized: tuple[str, ...]


def dit_state_dict(path_or_state_dict) -> tuple[dict, str]:
    """(state dict, source) from a DiT state dict, a DiT training checkpoint ({"model", "ema", ...}) or a path
    to either (read by ``ledit.checkpoint.load_dit_checkpoint``: weights-only, DiT's Namespace args allowed)."""
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        return checkpoint_weights(load_dit_checkpoint(path_or_state_dict), os.fspath(path_or_state_dict))
    if isinstance(path_or_state_dict, Mapping):
        return checkpoint_weights(path_or_state_dict, "the DiT state dict")
    raise TypeError(
        f"path_or_state_dict must be a file path or a state dict, got {type(path_or_state_dict).__name__}"
    )


def _describe_size(state: Mapping) -> str:
    """Human description of a DiT state dict's size, e.g. "DiT-XL/2 (depth 28, hidden 1152, patch 2)"."""
    embed = state.get("x_embedder.proj.weight")
    if embed is None or embed.dim() != 4:
        return "an unrecognised size (no 4-d x_embedder.proj.weight)"
    hidden, patch = embed.shape[0], embed.shape[-1]
    depth = len({key.split(".")[1] for key in state if key.startswith("blocks.")})
    dims = f"depth {depth}, hidden {hidden}, patch {patch}"
    for size, (size_depth, size_hidden, _) in MODEL_SIZES.items():
        if (size_depth, size_hidden) == (depth, hidden):
            return f"DiT-{size}/{patch} ({dims})"
    return f"a custom size ({dims})"


def _inferred_input_size(state: Mapping):
    """DiT's (square) latent size from its pos_embed table and patch size, or None if it cannot be read off."""
    pos_embed, embed = state.get("pos_embed"), state.get("x_embedder.proj.weight")
    if pos_embed is None or embed is None or pos_embed.dim() != 3:
        return None
    side = math.isqrt(pos_embed.shape[1])
    return side * embed.shape[-1] if side * side == pos_embed.shape[1] else None


def _backbone_keys(model: DiffusionTransformer) -> set[str]:
    """The state-dict keys DiT's backbone has at this model's size (built on the meta device, no memory)."""
    with torch.device("meta"):
        backbone = DiffusionTransformer(**{key: model._config_kwargs[key] for key in DIT_ARGUMENTS})
    return set(backbone.state_dict())


def from_dit_checkpoint(path_or_state_dict: Union[str, os.PathLike, Mapping], name: str = "LEDiT-XL/2", **kwargs):
    """Build ``name`` (any registry or class name) and load a facebookresearch/DiT checkpoint into it.

    Args:
        path_or_state_dict: a path to a DiT file (read with ``torch.load(weights_only=True)``; a training
            checkpoint's ``argparse.Namespace`` args are allowed), a DiT state dict, or a DiT training checkpoint
            dict {"model", "ema", ...} (its "ema" weights are preferred).
        name: the model to build (default "LEDiT-XL/2"); its size must match the checkpoint's.
        **kwargs: the model's other options. ``input_size`` defaults to the checkpoint's (read off pos_embed),
            so a DiT-XL/2-512 checkpoint gives a model trained at 64x64 latents (attention scaling's N_train).

    Returns:
        (model, report): the model in train mode on CPU, and a ``CheckpointLoadReport``.

    Raises:
        FileNotFoundError: no file at the path.
        ledit.checkpoint.CheckpointError (a ValueError): the file is corrupt or holds objects weights-only
            loading refuses, or a value is not a tensor.
        ValueError: the checkpoint has keys the model lacks, lacks backbone keys, or a tensor's shape differs
            (wrong model size, num_classes, learn_sigma or input_size); the message names the key.
    """
    state, source = dit_state_dict(path_or_state_dict)
    if "input_size" not in kwargs and _inferred_input_size(state) is not None:
        kwargs["input_size"] = _inferred_input_size(state)
    with torch.device("meta"):  # check compatibility first, so a wrong size fails fast even for XL
        probe = build_model(name, **kwargs)
    target = probe.state_dict()
    size = _describe_size(state)

    for key, value in state.items():
        if key in target and value.shape != target[key].shape:
            raise ValueError(
                f"checkpoint tensor {key!r} has shape {tuple(value.shape)} but {name} expects "
                f"{tuple(target[key].shape)}: the checkpoint is {size}; pick the matching model name, or the "
                f"matching num_classes / learn_sigma / input_size"
            )
    unexpected = sorted(set(state) - set(target) - set(DROPPABLE_KEYS))
    if unexpected:
        raise ValueError(f"checkpoint has keys that {name} does not: {unexpected[:8]}"
                         f"{' ...' if len(unexpected) > 8 else ''} (checkpoint is {size})")
    missing = sorted((_backbone_keys(probe) & set(target)) - set(state))
    if missing:
        raise ValueError(f"checkpoint lacks DiT backbone keys of {name}: {missing[:8]}"
                         f"{' ...' if len(missing) > 8 else ''} (checkpoint is {size})")
    model = build_model(name, **kwargs)
    loaded = {key: value for key, value in state.items() if key in target}
    model.load_state_dict(loaded, strict=False)
    report = CheckpointLoadReport(
        source=source,
        loaded=tuple(sorted(loaded)),
        dropped=tuple(sorted(set(state) - set(target))),
        initialized=tuple(sorted(set(target) - set(state))),
    )
    return model, report
