"""Training batches of mixed sizes for ``ledit demo --native-resolution``: every step, procedural images whose
height and width are drawn independently and uniformly from the multiples of the patch size in a side range
(24-40 px by default), packed greedily into one sequence of the fixed-size run's token budget, as
``ledit train --max-tokens`` packs (``ledit.data.packing.greedy_packs``).

The budget is the fixed-size run's tokens per step, batch_size x (image_size / patch_size)^2, so the two runs
spend the same compute per step; the mean image of a symmetric side range has about as many tokens as the
training size's, so a step also holds about as many images.
"""

from __future__ import annotations

import torch

from ledit.data.packing import greedy_packs
from ledit.demo.dataset import SHAPE_CLASSES, derive_seed, render_shapes, to_model_range
from ledit.demo.scoring import parse_int_pair
from ledit.models.packing import pack


def parse_side_range(text: str) -> tuple[int, int]:
    """``"24-40"`` -> (24, 40); ``"32"`` -> (32, 32)."""
    sides = parse_int_pair(text, "-")
    if sides is None or sides[0] < 1 or sides[0] > sides[1]:
        raise ValueError(f"--native-sides {text!r}: write MIN-MAX in pixels, e.g. 24-40, with 1 <= MIN <= MAX")
    return sides


def side_choices(sides: tuple[int, int], patch_size: int, budget: int) -> list[int]:
    """The sides an image may have: every multiple of ``patch_size`` in the range (both ends included). Refuses
    a range whose ends are not multiples (so the range means what it says) and one whose largest image does not
    fit the ``budget`` of tokens."""
    low, high = sides
    if low % patch_size or high % patch_size:
        raise ValueError(f"--native-sides {low}-{high} is not divisible by --patch-size {patch_size}; use multiples "
                         f"of {patch_size}, e.g. {patch_size * max(1, round(low / patch_size))}-"
                         f"{patch_size * max(1, round(high / patch_size))}")
    largest = (high // patch_size) ** 2
    if budget < largest:
        raise ValueError(f"--native-sides {low}-{high}: a {high}x{high} image ({largest} tokens) does not fit the "
                         f"token budget of {budget}; lower --native-sides or raise --batch-size")
    return list(range(low, high + 1, patch_size))


def token_budget(batch_size: int, image_size: int, patch_size: int) -> int:
    """The fixed-size run's tokens per step."""
    return batch_size * (image_size // patch_size) ** 2


def draw_packed_batch(
    sides: tuple[int, int], budget: int, patch_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step's packed batch, deterministically from ``seed``: (x (T, C, p, p) in [-1, 1], labels (n,), grids
    (n, 2) int32). Sizes are drawn until one does not fit the budget (greedy, in order); the classes cycle over
    the images as ``render_shapes``' default."""
    choices = torch.tensor(side_choices(sides, patch_size, budget))
    generator = torch.Generator().manual_seed(derive_seed("sizes", seed))
    # Enough candidates that the last never fits: the budget over the smallest image, plus one.
    candidates = budget // (choices[0].item() // patch_size) ** 2 + 1
    heights, widths = choices[torch.randint(len(choices), (2, candidates), generator=generator)]
    tokens = ((heights // patch_size) * (widths // patch_size)).tolist()
    chosen = greedy_packs(tokens, budget)[0]
    labels = torch.arange(len(chosen)) % len(SHAPE_CLASSES)
    # One render at the largest side, each image its top-left crop: the scenes are stationary (dataset.py), so a
    # crop is distributed as a scene rendered at its size, and one call is ~10x faster than one per image.
    canvases, _ = render_shapes(len(chosen), sides[1], sides[1], derive_seed("scenes", seed), labels)
    crops = [to_model_range(canvas[:, : heights[i], : widths[i]]) for canvas, i in zip(canvases, chosen)]
    x, grids = pack(crops, patch_size)
    return x, labels, grids
