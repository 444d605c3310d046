"""Native-resolution training: a LEDiT-S/2 train step on a packed batch of mixed sizes (issue 17).

Three ways to train on the same tokens, timed in one interleaved loop, same model, same optimizer step:
- ``packed``: six images of six token grids (16x16, 12x20, 20x12, 16x16, 2x8, 8x2: 1024 tokens, aspect ratios
  from 1:4 to 4:1) in one packed sequence (``ledit.models.packing``);
- ``equal_tokens``: a batch of four 16x16 images, the same 1024 tokens at one size (the baseline packing must
  keep up with: target >= 0.9x its tokens per second);
- ``padded``: the six images zero-padded to the largest height and width (20x20), the loss masked to the real
  pixels: what training mixed sizes costs without packing (2400 tokens; target: packed >= 1.3x faster).
The token counts of ``packed`` and ``equal_tokens`` are equal, so their time ratio is their tokens/s ratio.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ledit.bench.records import comparison
from ledit.bench.timing import Effort, measure
from ledit.models import NUM_TRAIN_TIMESTEPS, build_model
from ledit.models.packing import pack

SUITE = "end_to_end"
TASK = "packed_train_step"
PACKED, EQUAL_TOKENS, PADDED = "packed", "equal_tokens", "padded"
LATENT_CHANNELS, NUM_CLASSES = 4, 1000
# Token grids (h, w) of the packed batch and of the equal-token one-size batch: 1024 tokens each.
MIXED_GRIDS = ((16, 16), (12, 20), (20, 12), (16, 16), (2, 8), (8, 2))
EQUAL_GRIDS = ((16, 16),) * 4


@dataclass(frozen=True)
class PackedCase:
    model: str
    mixed_grids: tuple[tuple[int, int], ...]
    equal_grids: tuple[tuple[int, int], ...]

    @property
    def patch(self) -> int:
        return int(self.model.rsplit("/", 1)[1])

    def describe(self) -> dict:
        tokens = sum(h * w for h, w in self.mixed_grids)
        return {"task": TASK, "model": self.model, "image_size": "mixed", "batch": len(self.mixed_grids),
                "token_grids": [list(g) for g in self.mixed_grids], "tokens": tokens,
                "equal_token_grids": [list(g) for g in self.equal_grids], "dtype": "float32"}


def plan(device: torch.device, quick: bool) -> list[PackedCase]:
    """One case on either device (the issue's target is the CPU): LEDiT-S/2, 1024 tokens of mixed sizes."""
    return [PackedCase("LEDiT-S/2", MIXED_GRIDS, EQUAL_GRIDS)]


def _latents(grids, patch: int, generator: torch.Generator) -> list[torch.Tensor]:
    return [torch.randn(LATENT_CHANNELS, h * patch, w * patch, generator=generator) for h, w in grids]


def _step(model, optimizer, inputs: tuple, target: torch.Tensor, mask: torch.Tensor | None, grids=None) -> None:
    optimizer.zero_grad(set_to_none=True)
    out = model(*inputs, grids=grids)
    error = (out - target).pow(2)
    loss = error.mean() if mask is None else (error * mask).sum() / mask.sum()
    loss.backward()
    optimizer.step()


def build_calls(case: PackedCase, device: torch.device) -> dict:
    """{method: zero-argument train step} for the three ways of training on the case's images."""
    torch.manual_seed(0)
    model = build_model(case.model, input_size=16 * case.patch, num_classes=NUM_CLASSES).to(device).train()
    model.multi_dilation_prob = 0.0  # the same dilation in every step of every method
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    mixed = _latents(case.mixed_grids, case.patch, generator)
    equal = torch.stack(_latents(case.equal_grids, case.patch, generator))
    n, out_channels = len(mixed), model.out_channels

    def conditions(count):
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (count,), generator=generator).to(device)
        return t, torch.randint(0, NUM_CLASSES, (count,), generator=generator).to(device)

    packed, grids = pack(mixed, case.patch)
    height, width = max(x.shape[1] for x in mixed), max(x.shape[2] for x in mixed)
    padded = torch.zeros(n, LATENT_CHANNELS, height, width)
    mask = torch.zeros(n, out_channels, height, width)
    for i, x in enumerate(mixed):
        padded[i, :, : x.shape[1], : x.shape[2]] = x
        mask[i, :, : x.shape[1], : x.shape[2]] = 1.0

    def target_like(x, channels_dim=1):
        shape = list(x.shape)
        shape[channels_dim] = out_channels
        return torch.randn(shape, generator=generator).to(device)

    return {
        PACKED: functools.partial(_step, model, optimizer, (packed.to(device), *conditions(n)),
                                  target_like(packed), None, grids),
        EQUAL_TOKENS: functools.partial(_step, model, optimizer, (equal.to(device), *conditions(len(equal))),
                                        target_like(equal), None),
        PADDED: functools.partial(_step, model, optimizer, (padded.to(device), *conditions(n)), target_like(padded),
                                  mask.to(device)),
    }


def run_case(case: PackedCase, device: torch.device, effort: Effort, device_info: dict) -> list[dict]:
    timings = measure(build_calls(case, device), device, effort)
    tokens = {PACKED: sum(h * w for h, w in case.mixed_grids), EQUAL_TOKENS: sum(h * w for h, w in case.equal_grids),
              PADDED: len(case.mixed_grids) * max(h for h, _ in case.mixed_grids) * max(w for _, w in case.mixed_grids)}

    def metrics(name: str, ms: float) -> dict:
        return {"tokens_per_s": round(tokens[name] / (ms * 1e-3), 1), "tokens": tokens[name]}

    return [comparison(SUITE, case.describe(), TASK, timings, [EQUAL_TOKENS, PADDED], metrics)]
