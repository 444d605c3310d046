"""``ledit sample-ddp``: many samples over torchrun ranks into one ADM-compatible .npz (DiT's sample_ddp.py).

Batch b draws its labels and noise from a generator seeded with (global seed, b), and batches are dealt to
ranks round-robin, so the sample set does not depend on the number of GPUs. Every finished batch is saved
atomically, so a killed run restarted with the same flags only samples the batches that are missing. The parts
folder records the batch layout (``layout.json``); a restart with another --per-proc-batch-size, checkpoint or
VAE is refused rather than mixed into an archive that matches neither run.

    torchrun --nproc_per_node=8 -m ledit sample-ddp --ckpt ckpt.pt --height 512 --width 512 \\
        --cfg-scale 1.5 --num-sampling-steps 250 --num-fid-samples 50000
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ledit import arguments
from ledit.arguments import UsageError
from ledit.data.npz import write_image_npz
from ledit.files import atomic_path, remove_stale_temporaries, write_json_atomic
from ledit.runtime import barrier, cleanup_distributed, setup_distributed
from ledit.sampling.common import add_sampling_arguments, load_sampling_setup, sample_batch

LAYOUT_NAME = "layout.json"  # in the parts folder: what its batches were sampled with


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_sampling_arguments(parser, cfg_scale=1.5)
    parser.add_argument("--per-proc-batch-size", type=arguments.positive_int, default=32)
    parser.add_argument("--num-fid-samples", type=arguments.positive_int, default=50_000)
    parser.add_argument("--sample-dir", default="samples")
    parser.add_argument("--global-seed", type=arguments.seed, default=0)


def run_name(args, model_name: str, height: int, width: int, addons) -> str:
    """DiT's folder naming, plus the size, the sampler and the add-ons that are on."""
    ckpt = Path(args.ckpt).stem
    extra = f"-{addons.describe()}" if addons.describe() else ""
    return (f"{model_name}-{ckpt}-size-{height}x{width}-vae-{Path(args.vae).name}-cfg-{args.cfg_scale}"
            f"-{args.sampler}{args.num_sampling_steps}{extra}-seed-{args.global_seed}").replace("/", "-")


def batch_layout(args) -> dict:
    """What the batches in a parts folder depend on beyond the run name: the batch size (batch b's labels and
    noise are drawn for that many images) and the files the name only abbreviates."""
    vae = str(Path(args.vae).resolve()) if Path(args.vae).is_dir() else args.vae
    return {"per_proc_batch_size": args.per_proc_batch_size, "ckpt": str(Path(args.ckpt).resolve()), "vae": vae}


def check_layout(parts: Path, layout: dict) -> None:
    """Refuse to add batches to a parts folder sampled with another layout: the archive would match neither run."""
    finished = sorted(parts.glob("[0-9]*.npy")) if parts.is_dir() else []
    path = parts / LAYOUT_NAME
    if path.is_file():
        recorded = json.loads(path.read_text())
    elif finished:  # made before layouts were recorded: a batch's size is still in its file
        recorded = {**layout, "per_proc_batch_size": np.load(finished[0], mmap_mode="r").shape[0]}
    else:
        return
    if recorded.get("per_proc_batch_size") != layout["per_proc_batch_size"]:
        size = recorded.get("per_proc_batch_size")
        raise UsageError(
            f"{parts} holds {len(finished)} batches sampled with --per-proc-batch-size {size}, this run asks for "
            f"{layout['per_proc_batch_size']}, and batches of both cannot be mixed: re-run with --per-proc-batch-size "
            f"{size} to continue, or delete {parts} to start over")
    for key, flag in (("ckpt", "--ckpt"), ("vae", "--vae")):
        if recorded.get(key) != layout[key]:
            raise UsageError(f"{parts} holds batches sampled with {flag} {recorded.get(key)}, this run uses "
                             f"{layout[key]} (the sample name abbreviates it): pass another --sample-dir, or delete "
                             f"{parts} to start over")


def main(args: argparse.Namespace) -> None:
    ctx = setup_distributed(args.device)
    model, vae, addons, (height, width) = load_sampling_setup(args, ctx.device)
    num_classes = model.num_classes
    out = Path(args.sample_dir) / f"{run_name(args, model.config['name'], height, width, addons)}.npz"
    parts = out.with_suffix(".parts")
    num_batches = math.ceil(args.num_fid_samples / args.per_proc_batch_size)
    layout = batch_layout(args)
    done = {b for b in range(num_batches) if (parts / f"{b:06d}.npy").exists()}
    check_layout(parts, layout)
    mine = [b for b in range(ctx.rank, num_batches, ctx.world_size) if b not in done]
    barrier()  # every rank has read the parts folder before rank 0 changes it
    if ctx.is_main:
        parts.mkdir(parents=True, exist_ok=True)
        for tmp in remove_stale_temporaries(parts):
            print(f"removed {tmp}, a batch that a killed run did not finish")
        write_json_atomic(parts / LAYOUT_NAME, layout)
        print(f"sampling {args.num_fid_samples} images at {height}x{width} into {out} "
              f"({num_batches} batches over {ctx.world_size} ranks, {len(done)} already done)")
    barrier()
    for b in tqdm(mine, desc="batches (rank 0)", disable=not ctx.is_main):
        generator = torch.Generator(ctx.device).manual_seed(args.global_seed * 1_000_003 + b)
        labels = torch.randint(0, num_classes, (args.per_proc_batch_size,), generator=generator, device=ctx.device)
        images = sample_batch(model, vae, labels, height, width, cfg_scale=args.cfg_scale, sampler=args.sampler,
                               num_steps=args.num_sampling_steps, generator=generator, addons=addons)
        with atomic_path(parts / f"{b:06d}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, images.numpy())
    barrier()
    if ctx.is_main:
        batches = (np.load(parts / f"{b:06d}.npy") for b in range(num_batches))
        write_image_npz(out, batches, args.num_fid_samples, height, width)
        shutil.rmtree(parts)
        print(f"saved .npz file to {out} [shape=({args.num_fid_samples}, {height}, {width}, 3)]")
    cleanup_distributed()
