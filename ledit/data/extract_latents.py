"""``ledit extract-latents``: encode an ImageFolder once through the VAE into latent shards (see shards.py).

``--native-resolution`` keeps every image's own size and aspect ratio instead of one centre crop: each image is
shrunk (never enlarged) to an area of at most --height x --width (default --image-size squared) pixels, with
sides that are multiples of 8 x --patch-size, so every latent is a whole number of patches.

Runs on one process or under torchrun (shards are dealt round-robin to ranks). Every shard is written atomically,
so ``--resume`` after a crash or a kill re-encodes only the shards that are missing (and removes the temporaries
of the shard writes the kill cut off).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ledit import arguments
from ledit.arguments import UsageError
from ledit.data.images import ImageFolderDataset, NativeImageFolderDataset, add_image_check_arguments
from ledit.data.packing import as_list
from ledit.data.shards import (
    INDEX_NAME,
    LABELS_NAME,
    NATIVE_SHARD_VERSION,
    SHARD_FORMAT,
    SHARD_VERSION,
    SIZES_NAME,
    ShardError,
    is_native,
    is_shard_dir,
    item_elements,
    open_shard,
    read_index,
    shard_items,
    shard_name,
    shard_offsets,
    shard_shape,
)
from ledit.data.vae import VAE_HELP, encode_moments, load_vae, vae_channels, vae_downsample, vae_scale_factor
from ledit.files import atomic_path, remove_stale_temporaries, write_json_atomic
from ledit.runtime import barrier, cleanup_distributed, setup_distributed

# Index fields that must agree between a run and the run it resumes.
_PLAN_KEYS = ("version", "num_images", "shard_size", "latent_shape", "dtype", "image_size", "vae", "classes",
              "shard_lengths")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-path", required=True, help="ImageFolder root (one sub-folder per class)")
    parser.add_argument("--features-path", required=True, help="output folder for index.json, labels.npy, shards")
    parser.add_argument("--image-size", type=arguments.positive_int, default=256, help="square crop size (DiT's flag)")
    parser.add_argument("--height", type=arguments.positive_int, default=None,
                        help="crop height (overrides --image-size)")
    parser.add_argument("--width", type=arguments.positive_int, default=None,
                        help="crop width (overrides --image-size)")
    parser.add_argument("--native-resolution", action="store_true",
                        help="keep each image's size and aspect ratio: area at most --height x --width (or "
                             "--image-size squared), sides multiples of 8 x --patch-size; for `ledit train "
                             "--max-tokens`")
    parser.add_argument("--patch-size", type=arguments.positive_int, default=None,
                        help="with --native-resolution: the model's patch size, so latent sides are whole patches "
                             "(default 2)")
    parser.add_argument("--vae", default="ema", help=VAE_HELP.replace(" | none (pixel-space models)", ""))
    parser.add_argument("--batch-size", type=arguments.positive_int, default=32,
                        help="images per VAE call (each also encoded flipped)")
    parser.add_argument("--shard-size", type=arguments.positive_int, default=10_000, help="images per shard file")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="storage dtype")
    parser.add_argument("--num-workers", type=arguments.nonnegative_int, default=4)
    add_image_check_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted extraction into --features-path")
    parser.add_argument("--device", type=arguments.device, default=None,
                        help="cuda | cuda:N | cpu (default: cuda if available)")


def _dataset(args, down: int) -> ImageFolderDataset:
    h, w = args.height or args.image_size, args.width or args.image_size
    checks = dict(check=args.check_images, skip_bad=args.skip_bad_images)
    if not args.native_resolution:
        if args.patch_size is not None:
            raise UsageError("--patch-size applies only with --native-resolution: drop it, or add "
                             "--native-resolution")
        return ImageFolderDataset(args.data_path, h, w, **checks)
    multiple = down * (args.patch_size or 2)
    if h * w < multiple * multiple:
        raise UsageError(f"--native-resolution: an area of {h}x{w} pixels cannot hold one {multiple}x{multiple} "
                         f"image (8 x --patch-size): raise --image-size (or --height/--width)")
    return NativeImageFolderDataset(args.data_path, h * w, multiple, **checks)


def _plan(args, dataset: ImageFolderDataset, vae) -> dict:
    down = vae_downsample(vae)
    h, w = args.height or args.image_size, args.width or args.image_size
    if h % down or w % down:
        raise UsageError(f"--height/--width {h}x{w} must be divisible by the VAE's downsampling factor {down}")
    plan = {
        "format": SHARD_FORMAT,
        "version": SHARD_VERSION,
        "num_images": len(dataset),
        "shard_size": args.shard_size,
        "latent_shape": [2 * vae_channels(vae), h // down, w // down],
        "dtype": args.dtype,
        "image_size": [h, w],
        "vae": args.vae,
        "scale_factor": vae_scale_factor(vae),
        "classes": dataset.classes,
        "num_classes": len(dataset.classes),
        "shards": [shard_name(i) for i in range(-(-len(dataset) // args.shard_size))],
        "complete": False,
    }
    if args.native_resolution:  # image_size and latent_shape are then the bound's
        elements = item_elements(plan, _latent_sizes(dataset, down))
        plan.update(version=NATIVE_SHARD_VERSION, max_image_area=h * w, multiple=dataset.multiple,
                    shard_lengths=[int(shard_offsets(plan, elements, i)[-1]) for i in range(len(plan["shards"]))])
    return plan


def _latent_sizes(dataset: ImageFolderDataset, down: int) -> np.ndarray | None:
    """(N, 2) latent (h, w) of every image of a native-resolution dataset; None for a fixed-size one."""
    if not isinstance(dataset, NativeImageFolderDataset):
        return None
    return np.asarray(dataset.sizes, dtype=np.int64).reshape(-1, 2) // down


def _check_resume(root: Path, plan: dict, resume: bool) -> bool:
    """Whether `root` already holds this extraction (then it is continued); every rank checks, so a refusal
    stops them all. Latents of another plan, or any latents without --resume, are refused."""
    if not is_shard_dir(root):
        return False
    if not resume:
        raise UsageError(f"--features-path {str(root)!r} already holds latents: pass --resume to continue it")
    old = read_index(root)
    changed = [k for k in _PLAN_KEYS if old.get(k) != plan.get(k)]
    if changed:
        raise UsageError(f"--resume: {changed} differ from the run in {str(root)!r}; use a new --features-path")
    return True


def _start(root: Path, plan: dict, labels: list[int], sizes: np.ndarray | None) -> None:
    write_json_atomic(root / INDEX_NAME, plan)
    arrays = {LABELS_NAME: np.asarray(labels, dtype=np.int64), SIZES_NAME: sizes}
    for name, array in arrays.items():
        if array is not None:
            with atomic_path(root / name) as tmp, open(tmp, "wb") as f:
                np.save(f, array)


def _shard_done(root: Path, plan: dict, i: int) -> bool:
    if not (root / shard_name(i)).exists():
        return False
    try:
        open_shard(root, plan, i)
        return True
    except ShardError:
        return False  # a foreign or damaged file: encode the shard again


@torch.no_grad()
def _encode_shard(root, plan, i, dataset, vae, args, device, progress) -> None:
    """Encode shard i's images (and their mirror images) into its file, those of one size in one VAE call."""
    items = shard_items(plan, i)
    offsets = shard_offsets(plan, item_elements(plan, _latent_sizes(dataset, vae_downsample(vae))), i)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, items), batch_size=args.batch_size,
                                         num_workers=args.num_workers, collate_fn=as_list)
    out = np.empty(shard_shape(plan, i), dtype=plan["dtype"])
    flat = out.reshape(-1)
    filled = 0
    for batch in loader:
        by_size: dict[tuple, list[int]] = {}
        for j, (image, _) in enumerate(batch):
            by_size.setdefault(tuple(image.shape), []).append(j)
        for members in by_size.values():
            images = torch.stack([batch[j][0] for j in members]).to(device)
            moments = encode_moments(vae, torch.cat([images, images.flip(-1)]))
            plain, flipped = moments.chunk(2)
            for j, block in zip(members, torch.stack([plain, flipped], dim=1).cpu().numpy()):
                flat[offsets[filled + j] : offsets[filled + j + 1]] = block.reshape(-1)
        filled += len(batch)
        progress.update(len(batch))
    with atomic_path(root / shard_name(i)) as tmp, open(tmp, "wb") as f:
        np.save(f, out)


def main(args: argparse.Namespace) -> None:
    ctx = setup_distributed(args.device)
    root = Path(args.features_path)
    if args.vae == "none":
        raise UsageError("extract-latents needs a VAE: pass --vae ema|mse|<folder> "
                         "(pixel-space models train on the images directly)")
    vae = load_vae(args.vae, ctx.device)
    dataset = _dataset(args, vae_downsample(vae))
    plan = _plan(args, dataset, vae)
    resuming = _check_resume(root, plan, args.resume)
    barrier()  # every rank has looked at the folder before rank 0 writes to it
    if ctx.is_main and resuming:
        for tmp in remove_stale_temporaries(root):
            print(f"removed {tmp}, a shard write that a killed run did not finish")
    elif ctx.is_main:
        _start(root, plan, dataset.labels, _latent_sizes(dataset, vae_downsample(vae)))
    barrier()
    mine = [i for i in range(len(plan["shards"])) if i % ctx.world_size == ctx.rank and not _shard_done(root, plan, i)]
    todo = sum(len(shard_items(plan, i)) for i in mine)
    with tqdm(total=todo, unit="img", desc=f"encode (rank {ctx.rank})", disable=not ctx.is_main) as progress:
        for i in mine:
            _encode_shard(root, plan, i, dataset, vae, args, ctx.device, progress)
    barrier()
    if ctx.is_main:
        for i in range(len(plan["shards"])):
            open_shard(root, plan, i)
        write_json_atomic(root / INDEX_NAME, {**read_index(root), "complete": True})
        sizes = " at native resolution" if is_native(plan) else ""
        print(f"wrote {plan['num_images']} images x 2 flips{sizes} in {len(plan['shards'])} shards to {root}")
    cleanup_distributed()
