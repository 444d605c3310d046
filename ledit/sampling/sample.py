"""``ledit sample``: an image grid from a checkpoint, at any --height/--width (DiT's sample.py); PNG, or the format
the extension of --output names.

    ledit sample --ckpt results/000-LEDiT-XL-2/checkpoints/0100000.pt --height 512 --width 512 --cfg-scale 4.0

``--sizes 256x256,512x384`` samples every class label at every size in one packed batch (``ledit.models.packing``):
the grid then has one row per size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ledit import arguments
from ledit.arguments import UsageError
from ledit.files import atomic_path
from ledit.runtime import default_device
from ledit.sampling.common import (
    add_sampling_arguments,
    check_size,
    load_sampling_setup,
    sample_batch,
    sample_packed_batch,
)
from ledit.sampling.loop import check_packed_addons

# DiT's sample.py classes: 207 golden retriever, 360 otter, 387 red panda, 974 geyser, 88 macaw, 979 valley,
# 417 balloon, 279 arctic fox.
DIT_CLASS_LABELS = [207, 360, 387, 974, 88, 979, 417, 279]


# The formats --output can be written in, by extension; lossy ones at high quality.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
                 ".tiff": "TIFF"}
LOSSY_QUALITY = 95


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_sampling_arguments(parser, cfg_scale=4.0)
    parser.add_argument("--seed", type=arguments.seed, default=0)
    parser.add_argument("--class-labels", type=arguments.nonnegative_int, nargs="+", default=None,
                        help="default: DiT's eight classes")
    parser.add_argument("--sizes", type=arguments.size_list, default=None, metavar="HxW,...",
                        help="sample every class label at each of these sizes (pixels), e.g. 256x256,512x384, in one "
                             "packed batch; the grid has one row per size (replaces --height/--width and --nrow)")
    parser.add_argument("--nrow", type=arguments.positive_int, default=4, help="images per grid row")
    parser.add_argument("--output", type=arguments.file_with_suffix(*IMAGE_FORMATS), default="sample.png",
                        help="the grid image; its extension picks the format (PNG, JPEG, WebP, BMP, TIFF)")


def image_grid(images, nrow: int, padding: int = 2) -> np.ndarray:
    """uint8 HWC images (an NHWC array, or a list of any sizes) -> one uint8 HWC grid with black padding
    (torchvision.utils.make_grid's layout; images of several sizes sit top-left in cells of the largest)."""
    h, w = max(image.shape[0] for image in images), max(image.shape[1] for image in images)
    n, c = len(images), images[0].shape[2]
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    grid = np.zeros((rows * (h + padding) + padding, ncol * (w + padding) + padding, c), dtype=np.uint8)
    for i, image in enumerate(images):
        top, left = padding + (i // ncol) * (h + padding), padding + (i % ncol) * (w + padding)
        grid[top : top + image.shape[0], left : left + image.shape[1]] = image
    return grid


def main(args: argparse.Namespace) -> None:
    device = default_device(args.device)
    torch.manual_seed(args.seed)
    if args.sizes is not None and (args.height or args.width):
        raise UsageError("--sizes gives every sample size: drop --height/--width")
    model, vae, addons, (height, width) = load_sampling_setup(args, device)
    if args.sizes is not None:
        for size in args.sizes:
            check_size(*size, model, vae, "--sizes:")
        with arguments.flag_errors("--sizes", ValueError):
            check_packed_addons(addons)
        refusal = model.packing_refusal()
        if refusal is not None:
            raise UsageError(f"--sizes samples a packed batch, which --ckpt {args.ckpt} cannot run: {refusal}")
    num_classes = model.num_classes
    labels = args.class_labels or (DIT_CLASS_LABELS if num_classes == 1000 else [i % num_classes for i in range(8)])
    if not all(0 <= label < num_classes for label in labels):
        raise UsageError(f"--class-labels {labels} must lie in [0, {num_classes}) (the model's classes)")
    generator = torch.Generator(device).manual_seed(args.seed)
    if args.sizes is None:
        images = sample_batch(model, vae, torch.tensor(labels, device=device), height, width,
                              cfg_scale=args.cfg_scale, sampler=args.sampler, num_steps=args.num_sampling_steps,
                              generator=generator, addons=addons, progress=True).numpy()
        nrow, what = args.nrow, f"{len(labels)} samples at {height}x{width}"
    else:
        sizes = [size for size in args.sizes for _ in labels]
        images = [image.numpy() for image in sample_packed_batch(
            model, vae, torch.tensor(labels * len(args.sizes), device=device), sizes, cfg_scale=args.cfg_scale,
            sampler=args.sampler, num_steps=args.num_sampling_steps, generator=generator, addons=addons,
            progress=True)]
        nrow = len(labels)
        what = f"{len(images)} samples at {', '.join(f'{h}x{w}' for h, w in args.sizes)} in one packed batch"
    image_format = IMAGE_FORMATS[Path(args.output).suffix.lower()]
    options = {"quality": LOSSY_QUALITY} if image_format in ("JPEG", "WEBP") else {}
    with atomic_path(args.output) as tmp:
        Image.fromarray(image_grid(images, nrow)).save(tmp, format=image_format, **options)
    print(f"saved {what} to {args.output}")
