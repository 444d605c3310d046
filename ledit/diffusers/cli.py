"""``ledit diffusers``: conversions between ledit checkpoints and diffusers folders.

    # a ledit checkpoint -> a LEDiTPipeline folder (transformer, DDIM scheduler, the given local VAE)
    ledit diffusers export --ckpt results/000-LEDiT-XL-2/checkpoints/0100000.pt --vae ema --output ledit-xl-pipeline
    # ... or the transformer alone (no --vae)
    ledit diffusers export --ckpt model.pt --output ledit-xl-transformer
    # diffusers' DiT-XL-2 folder -> a LEDiT through the paper's fine-tuning initialisation (or --model DiT-XL/2)
    ledit diffusers import --folder DiT-XL-2-256 --output LEDiT-XL-2-from-DiT-256.pt
    # a folder ledit exported -> back to a ledit checkpoint (bit-exact weights)
    ledit diffusers import --folder ledit-xl-pipeline --output model.pt
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from ledit import arguments
from ledit.arguments import UsageError
from ledit.checkpoint import export_safetensors, save_checkpoint
from ledit.data.vae import VAE_HELP, load_vae
from ledit.diffusers.convert import (
    DIT_CLASS_NAMES,
    dit_model_arguments,
    export_pipeline,
    folder_class_name,
    ledit_checkpoint,
    ledit_scheduler,
    load_diffusers_dit,
    model_from_checkpoint,
    transformer_folder,
)
from ledit.diffusers.transformer import TRANSFORMER_CLASSES, transformer_for
from ledit.models import MODEL_NAMES
from ledit.training.convert_dit import convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="{export,import}")
    export = actions.add_parser("export", help="a ledit checkpoint -> a diffusers folder (pipeline or transformer)")
    e = export.add_argument
    e("--ckpt", required=True, help="ledit checkpoint (from `ledit train`, `convert-dit` or `diffusers import`); EMA "
                                    "weights preferred")
    e("--output", required=True, help="folder to write")
    e("--vae", default=None, help=f"write a full LEDiTPipeline with this VAE: {VAE_HELP}. Without it: the "
                                  "transformer alone")
    e("--scheduler", choices=("ddim", "ddpm"), default=None,
      help="the pipeline's scheduler: DiT's DDIM (default), or DDPM with the learned variance (any diffusers "
           "scheduler can be swapped in later)")
    e("--id2label", default=None, help="JSON file of class names, {id: 'name, other name'}, or a diffusers "
                                       "model_index.json holding one (DiT's); kept in the pipeline's model_index.json")
    importer = actions.add_parser("import", help="a diffusers folder -> a ledit checkpoint")
    i = importer.add_argument
    i("--folder", required=True, help="a diffusers DiTTransformer2DModel folder (e.g. DiT-XL-2-256's transformer/), "
                                      "a folder ledit exported, or a pipeline folder holding either")
    i("--output", required=True, type=arguments.file_with_suffix(".pt", ".pth"), help="ledit checkpoint to write (.pt)")
    i("--model", type=arguments.one_of(MODEL_NAMES, "model"), default=None,
      help="for a DiT folder: the ledit model to build (default: the LEDiT of the DiT's size, the paper's "
           "fine-tuning start; 'DiT-XL/2' or 'DiT' for the DiT itself)")
    i("--model-kwargs", type=arguments.json_object, default={}, metavar="JSON",
      help="for a DiT folder: options of the new model")
    i("--safetensors", action="store_true", help="also write the EMA weights as .safetensors")


def read_id2label(path: str | None) -> dict | None:
    if path is None:
        return None
    data = json.loads(Path(path).read_text())
    mapping = data.get("id2label", data) if isinstance(data, dict) else None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) and str(k).isdigit() for k, v in mapping.items()):
        raise ValueError(f"--id2label {path}: expected {{class id: 'name, other name'}} (or a model_index.json with "
                         "an 'id2label' entry)")
    return mapping


@contextlib.contextmanager
def new_folder(path: str):
    """Yield a temporary folder beside ``path`` that becomes ``path`` when the block succeeds: a failed export
    leaves nothing behind, and an existing folder is never mixed with a new one."""
    output = Path(path)
    if output.exists():
        raise FileExistsError(f"--output {path} exists; remove it or choose another folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.tmp-"))
    try:
        yield tmp
        os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export(args: argparse.Namespace) -> None:
    if args.vae is None and (args.scheduler or args.id2label):
        raise UsageError("--scheduler and --id2label belong to a pipeline: pass --vae (none for a pixel-space model)")
    model = model_from_checkpoint(args.ckpt)
    scheduler = args.scheduler or "ddim"
    id2label = read_id2label(args.id2label)
    vae = None if args.vae is None else load_vae(args.vae)
    with new_folder(args.output) as folder:
        if args.vae is None:
            transformer_for(model).save_pretrained(folder)
        else:
            export_pipeline(model, folder, vae=vae, id2label=id2label,
                            scheduler=ledit_scheduler(scheduler, model.learn_sigma))
    what = "transformer folder" if args.vae is None else f"LEDiTPipeline folder (VAE {args.vae}, {scheduler})"
    print(f"exported {model.config['name']} from {args.ckpt} -> {what} {args.output}")


def import_folder(args: argparse.Namespace) -> None:
    folder = transformer_folder(args.folder)
    class_name = folder_class_name(folder)
    wrappers = {cls.__name__: cls for cls in TRANSFORMER_CLASSES.values()}
    if class_name in wrappers:
        if args.model is not None or args.model_kwargs:
            raise UsageError(f"--folder {args.folder} holds a ledit {class_name}, whose config fixes the model: drop "
                             "--model / --model-kwargs")
        model = wrappers[class_name].from_pretrained(folder).model
        checkpoint = ledit_checkpoint(model, converted_from=str(args.folder))
        print(f"imported {model.config['name']} from {args.folder}")
    elif class_name in DIT_CLASS_NAMES:
        state, config = load_diffusers_dit(folder)
        name, arguments = dit_model_arguments(state, config, args.model, args.model_kwargs)
        checkpoint, report, _ = convert(state, name, **arguments)
        checkpoint["args"]["converted_from"] = str(args.folder)
        print(f"converted diffusers {class_name} {args.folder} -> {checkpoint['config']['name']}")
        print(f"  loaded {len(report.loaded)} tensors (qkv fused, per-block embedders shared)")
        print(f"  added (freshly initialised) {len(report.initialized)}: {', '.join(report.initialized) or '-'}")
    else:
        raise ValueError(f"--folder {args.folder}: {folder} holds a {class_name or 'model without _class_name'}; "
                         f"expected {', '.join([*DIT_CLASS_NAMES, *wrappers])}")
    out = save_checkpoint(checkpoint, args.output)
    print(f"  wrote {out}")
    if args.safetensors:
        exported = export_safetensors(checkpoint["ema"], out.with_suffix(".safetensors"), checkpoint["config"])
        print(f"  EMA weights: {exported}")


def main(args: argparse.Namespace) -> None:
    (export if args.action == "export" else import_folder)(args)
