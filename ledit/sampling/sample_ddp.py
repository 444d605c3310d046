"""``ledit sample-ddp``: many samples over torchrun ranks into one ADM-compatible .npz (DiT's sample_ddp.py).

Batch b draws its labels and noise from a generator seeded with (global seed, b), and batches are dealt to
ranks round-robin, so the sample set does not depend on the number of GPUs. Every finished batch is saved
atomically, so a killed run restarted with the same flags only samples the batches that are missing.

    torchrun --nproc_per_node=8 -m ledit sample-ddp --ckpt ckpt.pt --height 512 --width 512 \\
        --cfg-scale 1.5 --num-sampling-steps 250 --num-fid-samples 50000
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ledit.data.npz import write_image_npz
from ledit.files import atomic_path
from ledit.runtime import barrier, cleanup_distributed, setup_distributed
from ledit.sampling.common import add_sampling_arguments, load_sampling_setup, sample_batch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_sampling_arguments(parser, cfg_scale=1.5)
    parser.add_argument("--per-proc-batch-size", type=int, default=32)
    parser.add_argument("--num-fid-samples", type=int, default=50_000)
    parser.add_argument("--sample-dir", default="samples")
    parser.add_argument("--global-seed", type=int, default=0)


def run_name(args, model_name: str, height: int, width: int, addons) -> str:
    """DiT's folder naming, plus the size, the sampler and the add-ons that are on."""
    ckpt = Path(args.ckpt).stem
    extra = f"-{addons.describe()}" if addons.describe() else ""
    return (f"{model_name}-{ckpt}-size-{height}x{width}-vae-{Path(args.vae).name}-cfg-{args.cfg_scale}"
            f"-{args.sampler}{args.num_sampling_steps}{extra}-seed-{args.global_seed}").replace("/", "-")


def main(args: argparse.Namespace) -> None:
    ctx = setup_distributed(args.device)
    model, vae, addons, (height, width) = load_sampling_setup(args, ctx.device)
    num_classes = model.num_classes
    out = Path(args.sample_dir) / f"{run_name(args, model.config['name'], height, width, addons)}.npz"
    parts = out.with_suffix(".parts")
    num_batches = math.ceil(args.num_fid_samples / args.per_proc_batch_size)
    done = {b for b in range(num_batches) if (parts / f"{b:06d}.npy").exists()}
    mine = [b for b in range(ctx.rank, num_batches, ctx.world_size) if b not in done]
    if ctx.is_main:
        parts.mkdir(parents=True, exist_ok=True)
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
