"""Packed sequences (issue 17): both ops (the model's train step is the ``end_to_end`` suite's
``packed_train_step``) on a pack of mixed-size images against the two ways to avoid packing.

One case is a pack of images of different sizes and aspect ratios at LEDiT-S/2's widths (H = 6, D = 64; C = 384),
run as one ``(1, total_tokens, ...)`` sequence with per-image grids (the ``packed`` method, on each backend that
can take it). The baselines run the same images without packing:

- ``uniform``: an equal-token batch of one size (B images of 16x16, B * 256 = the pack's tokens), the same backend;
  the time ratio is the tokens-per-second ratio, since both move the same tokens.
- ``padded``: every image zero-padded to the pack's largest (h, w), as a batch, the same backend. It computes no
  masks, so it is a lower bound on the cost of padding (a real padded run also masks the padding out).
- ``padded_sdpa_mask`` (attention only): the padded batch through SDPA with a boolean mask per image (its own scan
  mask inside its grid, padding never visible): what one writes without ledit's packed op.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ledit.bench.records import comparison, timed_backends
from ledit.bench.timing import Effort, fwd_bwd, measure, without_grad
from ledit.ops import DWCONV_MODULATE_BACKENDS, SCAN_ATTENTION_BACKENDS, dwconv_modulate, scan_attention, scan_mask

SUITE = "packed_ops"
FWD, FWD_BWD = "fwd", "fwd+bwd"
UNIFORM, PADDED, PADDED_SDPA_MASK = "uniform", "padded", "padded_sdpa_mask"
HEADS, HEAD_DIM, CHANNELS, SCAN = 6, 64, 384, "corner"
UNIFORM_GRID = (16, 16)
# Eight images of 192-320 tokens, aspect ratios 1:4 to 4:1, 2048 tokens in all (= 8 x 16x16); the targets read
# this pack (ledit/bench/targets.py PACKED_MIXED).
MIXED = ((16, 16), (8, 32), (32, 8), (12, 16), (16, 20), (12, 21), (21, 12), (8, 33))


@dataclass(frozen=True)
class PackedCase:
    op: str  # "scan_attention" or "dwconv_modulate"
    grids: tuple[tuple[int, int], ...]
    dtype: torch.dtype
    uniform_grid: tuple[int, int] = UNIFORM_GRID

    def __post_init__(self):
        if self.tokens % (self.uniform_grid[0] * self.uniform_grid[1]):
            raise ValueError(f"the pack's {self.tokens} tokens are no whole number of {self.uniform_grid} images")

    @property
    def uniform_count(self) -> int:
        return self.tokens // (self.uniform_grid[0] * self.uniform_grid[1])

    @property
    def tokens(self) -> int:
        return sum(h * w for h, w in self.grids)

    @property
    def padded_grid(self) -> tuple[int, int]:
        return max(h for h, _ in self.grids), max(w for _, w in self.grids)

    def describe(self) -> dict:
        padded = self.padded_grid
        return {"op": self.op, "grids": [list(g) for g in self.grids], "tokens": self.tokens,
                "uniform": [self.uniform_count, *self.uniform_grid],
                "padded": [len(self.grids), *padded], "padded_tokens": len(self.grids) * padded[0] * padded[1],
                "dtype": str(self.dtype).removeprefix("torch."),
                **({"heads": HEADS, "head_dim": HEAD_DIM, "scan": SCAN} if self.op == "scan_attention"
                   else {"channels": CHANNELS, "kernel_size": 3})}


def plan(device: torch.device, quick: bool) -> list[PackedCase]:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return [PackedCase("scan_attention", MIXED, dtype), PackedCase("dwconv_modulate", MIXED, dtype)]


def _pad(packed: torch.Tensor, grids, padded_grid) -> torch.Tensor:
    """(1, total, ...) packed tokens -> (n, H*W, ...) with each image at the top left of a zero H x W grid."""
    big_h, big_w = padded_grid
    out = packed.new_zeros((len(grids), big_h, big_w, *packed.shape[2:]))
    start = 0
    for i, (h, w) in enumerate(grids):
        out[i, :h, :w] = packed[0, start : start + h * w].reshape(h, w, *packed.shape[2:])
        start += h * w
    return out.flatten(1, 2)


def _padded_masks(case: PackedCase, device: torch.device) -> torch.Tensor:
    """(n, 1, N, N) boolean masks on the padded grid: each image's scan mask inside its grid, and the padding
    tokens seeing only themselves (so no row is empty); padding is never visible to an image token."""
    big_h, big_w = case.padded_grid
    n = big_h * big_w
    masks = torch.eye(n, dtype=torch.bool, device=device).repeat(len(case.grids), 1, 1)
    for i, (h, w) in enumerate(case.grids):
        inside = torch.zeros(big_h, big_w, dtype=torch.bool, device=device)
        inside[:h, :w] = True
        index = inside.flatten().nonzero().flatten()
        masks[i][index[:, None], index[None, :]] = scan_mask((h, w), SCAN, device)
    return masks[:, None]


def _attention_calls(case: PackedCase, device: torch.device, backend: str) -> dict:
    grids = torch.tensor(case.grids, dtype=torch.int32, device=device)
    make = functools.partial(torch.randn, dtype=case.dtype, device=device)
    q, k, v = (make(1, case.tokens, HEADS, HEAD_DIM) for _ in range(3))
    uniform_h, uniform_w = case.uniform_grid
    uniform = [make(case.uniform_count, uniform_h * uniform_w, HEADS, HEAD_DIM) for _ in range(3)]
    padded = [_pad(t, case.grids, case.padded_grid) for t in (q, k, v)]
    masks = _padded_masks(case, device)
    scale = 1.0 / math.sqrt(HEAD_DIM)

    def sdpa_masked(q, k, v):
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=masks, scale=scale)
        return out.transpose(1, 2)

    runs = {
        "packed": (functools.partial(scan_attention, grid=grids, scan=SCAN, backend=backend), [q, k, v]),
        UNIFORM: (functools.partial(scan_attention, grid=case.uniform_grid, scan=SCAN, backend=backend), uniform),
        PADDED: (functools.partial(scan_attention, grid=case.padded_grid, scan=SCAN, backend=backend), padded),
        PADDED_SDPA_MASK: (sdpa_masked, padded),
    }
    return runs


def _dwconv_calls(case: PackedCase, device: torch.device, backend: str) -> dict:
    grids = torch.tensor(case.grids, dtype=torch.int32, device=device)
    make = functools.partial(torch.randn, dtype=case.dtype, device=device)
    weight, bias = make(CHANNELS, 1, 3, 3) * 0.1, make(CHANNELS) * 0.1
    uniform_h, uniform_w = case.uniform_grid

    def run(grid, samples):
        mods = [make(samples, CHANNELS) * 0.1 for _ in range(3)]

        def call(x):
            return dwconv_modulate(x, grid, weight, bias, *mods, residual=x, backend=backend)

        return call

    x = make(1, case.tokens, CHANNELS)
    return {
        "packed": (run(grids, len(case.grids)), [x]),
        UNIFORM: (run(case.uniform_grid, case.uniform_count), [make(case.uniform_count, uniform_h * uniform_w,
                                                                         CHANNELS)]),
        PADDED: (run(case.padded_grid, len(case.grids)), [_pad(x, case.grids, case.padded_grid)]),
    }


def _backend(case: PackedCase, device: torch.device) -> tuple[str, list[str]]:
    """The fastest backend that runs this device's packed calls automatically (reference if none), with notes."""
    grids = torch.tensor(case.grids, dtype=torch.int32, device=device)
    if case.op == "scan_attention":
        q = torch.empty(1, case.tokens, HEADS, HEAD_DIM, dtype=case.dtype, device=device)
        args, registry = (q, q, q, grids, SCAN, None), SCAN_ATTENTION_BACKENDS
    else:
        x = torch.empty(1, case.tokens, CHANNELS, dtype=case.dtype, device=device)
        vec = torch.empty(len(case.grids), CHANNELS, dtype=case.dtype, device=device)
        args, registry = (x, grids, x.new_empty(CHANNELS, 1, 3, 3), None, vec, vec, vec, x, 1, True), \
            DWCONV_MODULATE_BACKENDS
    backends, notes = timed_backends(registry, device.type, args, {})  # the first that runs is the one timed
    return (backends[0] if backends else "reference"), notes


def build_calls(case: PackedCase, device: torch.device) -> tuple[dict, list[str], list[str]]:
    """({pass: {method: zero-argument call}}, baseline names, notes)."""
    backend, notes = _backend(case, device)
    runs = (_attention_calls if case.op == "scan_attention" else _dwconv_calls)(case, device, backend)
    calls = {FWD: {}, FWD_BWD: {}}
    for name, (fn, inputs) in runs.items():
        calls[FWD][name] = without_grad(functools.partial(fn, *inputs))
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        calls[FWD_BWD][name] = fwd_bwd(functools.partial(fn, *leaves), leaves, torch.randn_like(inputs[0]))
    return calls, [name for name in runs if name != "packed"], [f"every method runs the {backend} backend"
                                                                 " (but padded_sdpa_mask)", *notes]


def _metrics(case: PackedCase):
    def metrics(name: str, ms: float) -> dict:
        # Image tokens per second: every method moves the pack's token count of images (the padded ones plus
        # padding, the uniform one in other images).
        return {"image_tokens_per_s": round(case.tokens / (ms * 1e-3), 1)}

    return metrics


def run_case(case: PackedCase, device: torch.device, effort: Effort, device_info: dict) -> list[dict]:
    calls, baselines, notes = build_calls(case, device)
    return [comparison(SUITE, case.describe(), pass_name, measure(pass_calls, device, effort), baselines,
                       _metrics(case), notes)
            for pass_name, pass_calls in calls.items()]
