"""``ledit convert-dit``: a facebookresearch/DiT checkpoint -> a ledit DiT or LEDiT checkpoint.

Reads a raw DiT state dict (the released ``DiT-XL-2-256x256.pt``) or a DiT training checkpoint
``{model, ema, opt, args: argparse.Namespace}``. The latter needs ``argparse.Namespace`` unpickled: it is the
only class allowed beyond weights_only's tensors and containers, so loading still cannot run code. The output is
a ledit checkpoint (``args`` as a dict, ``config`` to rebuild the model) that ``torch.load(weights_only=True)``,
``ledit sample`` and ``ledit train --init-from-dit`` read. A report lists the keys dropped (DiT's ``pos_embed``
for LEDiT) and added (LEDiT's locality module, freshly initialised as the identity).

    ledit convert-dit --ckpt DiT-XL-2-256x256.pt --model LEDiT-XL/2 --output LEDiT-XL-2-from-DiT-256.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ledit import arguments
from ledit.checkpoint import export_safetensors, load_dit_checkpoint, save_checkpoint
from ledit.models import MODEL_NAMES, from_dit_checkpoint
from ledit.runtime import require_packages


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="facebookresearch/DiT checkpoint (.pt)")
    parser.add_argument("--model", type=arguments.one_of(MODEL_NAMES, "model"), default="LEDiT-XL/2",
                        help="ledit model to build (size must match the DiT's)")
    parser.add_argument("--model-kwargs", type=arguments.json_object, default={}, metavar="JSON",
                        help="options of the new model, e.g. '{\"scan\": \"raster\"}'")
    parser.add_argument("--output", required=True, type=arguments.file_with_suffix(".pt", ".pth"),
                        help="ledit checkpoint to write (.pt)")
    parser.add_argument("--safetensors", action="store_true", help="also write the EMA weights as .safetensors")


DIT_KEYS = ("x_embedder.proj.weight", "final_layer.linear.weight", "y_embedder.embedding_table.weight")


def dit_dimensions(weights: dict) -> dict:
    """in_channels, learn_sigma and num_classes of a DiT state dict, read off its tensors."""
    in_channels, patch = weights["x_embedder.proj.weight"].shape[1], weights["x_embedder.proj.weight"].shape[-1]
    out_channels = weights["final_layer.linear.weight"].shape[0] // (patch * patch)
    # DiT's label table has one extra row, the null class of classifier-free guidance.
    num_classes = weights["y_embedder.embedding_table.weight"].shape[0] - 1
    return {"in_channels": in_channels, "learn_sigma": out_channels == 2 * in_channels, "num_classes": num_classes}


def convert(state: dict, name: str, **kwargs):
    """(ledit checkpoint dict, conversion report, which weights it describes) from a loaded DiT file.

    A training checkpoint's "model" and "ema" weights are both converted; the report describes the EMA's."""
    parts = {k: state[k] for k in ("model", "ema") if k in state} or {"model": state}
    for part, weights in parts.items():
        missing = [k for k in DIT_KEYS if k not in weights]
        if missing:
            raise ValueError(f"not a DiT checkpoint: its {part!r} weights lack {missing}")
    kwargs = {**dit_dimensions(next(iter(parts.values()))), **kwargs}
    converted, reports, config = {}, {}, None
    for part, weights in parts.items():
        model, reports[part] = from_dit_checkpoint(weights, name=name, **kwargs)
        converted[part], config = model.state_dict(), model.config
    which = "ema" if "ema" in parts else ("model" if "model" in state else "state dict")
    converted.setdefault("ema", converted["model"])
    converted.setdefault("model", converted["ema"])
    dit_args = state.get("args") or {}
    checkpoint = {**converted, "opt": None, "step": 0, "config": config,
                  "args": {"converted_from_dit": True, **{k: v for k, v in dit_args.items() if _json_safe(v)}}}
    return checkpoint, reports["ema" if "ema" in parts else "model"], which


def _json_safe(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def main(args: argparse.Namespace) -> None:
    if args.safetensors:
        require_packages("--safetensors", "safetensors")
    state = load_dit_checkpoint(args.ckpt)
    with arguments.flag_errors(f"--model {args.model} --model-kwargs {json.dumps(args.model_kwargs)}", TypeError):
        checkpoint, report, which = convert(state, args.model, **args.model_kwargs)
    checkpoint["args"]["converted_from"] = str(args.ckpt)
    out = save_checkpoint(checkpoint, args.output)
    print(f"converted {args.ckpt} ({which} weights) -> {checkpoint['config']['name']} at {out}")
    if state.get("args"):
        print("  (a DiT training checkpoint: read with weights_only=True, argparse.Namespace the one allowed class)")
    print(f"  loaded {len(report.loaded)} tensors")
    print(f"  dropped {len(report.dropped)}: {', '.join(report.dropped) or '-'}")
    print(f"  added (freshly initialised) {len(report.initialized)}: {', '.join(report.initialized) or '-'}")
    if args.safetensors:
        exported = export_safetensors(checkpoint["ema"], Path(out).with_suffix(".safetensors"), checkpoint["config"])
        print(f"  EMA weights: {exported}")
