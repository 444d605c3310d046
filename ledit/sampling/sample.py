"""``ledit sample``: an image grid from a checkpoint, at any --height/--width (DiT's sample.py); PNG, or the format
the extension of --output names.

    ledit sample --ckpt results/000-LEDiT-XL-2/checkpoints/0100000.pt --height 512 --width 512 --cfg-scale 4.0
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
from ledit.sampling.common import add_sampling_arguments, load_sampling_setup, sample_batch

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
    parser.add_argument("--nrow", type=arguments.positive_int, default=4, help="images per grid row")
    parser.add_argument("--output", type=arguments.file_with_suffix(*IMAGE_FORMATS), default="sample.png",
                        help="the grid image; its extension picks the format (PNG, JPEG, WebP, BMP, TIFF)")


def image_grid(images: np.ndarray, nrow: int, padding: int = 2) -> np.ndarray:
    """uint8 NHWC -> one uint8 HWC grid with black padding (torchvision.utils.make_grid's layout)."""
    n, h, w, c = images.shape
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    grid = np.zeros((rows * (h + padding) + padding, ncol * (w + padding) + padding, c), dtype=np.uint8)
    for i, image in enumerate(images):
        top, left = padding + (i // ncol) * (h + padding), padding + (i % ncol) * (w + padding)
        grid[top : top + h, left : left + w] = image
    return grid


def main(args: argparse.Namespace) -> None:
    device = default_device(args.device)
    torch.manual_seed(args.seed)
    model, vae, addons, (height, width) = load_sampling_setup(args, device)
    num_classes = model.num_classes
    labels = args.class_labels or (DIT_CLASS_LABELS if num_classes == 1000 else [i % num_classes for i in range(8)])
    if not all(0 <= label < num_classes for label in labels):
        raise UsageError(f"--class-labels {labels} must lie in [0, {num_classes}) (the model's classes)")
    generator = torch.Generator(device).manual_seed(args.seed)
    images = sample_batch(model, vae, torch.tensor(labels, device=device), height, width, cfg_scale=args.cfg_scale,
                           sampler=args.sampler, num_steps=args.num_sampling_steps, generator=generator,
                           addons=addons, progress=True)
    image_format = IMAGE_FORMATS[Path(args.output).suffix.lower()]
    options = {"quality": LOSSY_QUALITY} if image_format in ("JPEG", "WEBP") else {}
    with atomic_path(args.output) as tmp:
        Image.fromarray(image_grid(images.numpy(), args.nrow)).save(tmp, format=image_format, **options)
    print(f"saved {len(labels)} samples at {height}x{width} to {args.output}")
