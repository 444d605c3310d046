"""``scan_attention`` against SDPA (boolean mask, unmasked, ``is_causal``) and compiled FlexAttention.

Every backend of the automatic order that can run on the device is timed (``SCAN_ATTENTION_BACKENDS.explain``),
forced per call with ``backend=``. The ``reference`` backend is not timed separately: it *is* one of the SDPA
baselines (``sdpa_bool_mask`` for the 2D masks, ``sdpa_is_causal`` for raster, ``sdpa_unmasked`` for full), so its
ratio is that baseline's. FlexAttention runs twice, as the baselines ``flex_attention`` (the call a user writes:
the scan's mask_mod on raster-order tokens, where a 2D scan leaves almost no block empty) and ``flex`` (the opt-in
``flex`` backend: 2D tile order, the strongest FlexAttention baseline). The SDPA baselines run on the same
(B, N, H, D) tensors through transposed views, exactly as a user of ``flash_attn``'s layout would call SDPA.
Boolean masks and BlockMasks are built once, outside the timing.

TFLOP/s count only the pairs a method must compute: 4*B*H*D*visible_pairs forward, times 3.5 for
forward+backward (backward = 2.5x forward, the FlashAttention convention); the unmasked bar counts N^2 pairs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from ledit.bench.records import comparison, timed_backends
from ledit.bench.timing import Effort, fwd_bwd, measure, without_grad
from ledit.ops import SCAN_ATTENTION_BACKENDS, SCANS, scan_attention, scan_mask, visible_pairs
from ledit.ops.masks import visible

SUITE = "scan_attention"
HEADS = 16
FWD, FWD_BWD = "fwd", "fwd+bwd"
BWD_FLOP_FACTOR = 3.5

SDPA_BOOL_MASK, SDPA_UNMASKED, SDPA_IS_CAUSAL = "sdpa_bool_mask", "sdpa_unmasked", "sdpa_is_causal"
FLEX, FLEX_TILED = "flex_attention", "flex"
# The SDPA call the reference backend makes for each scan.
REFERENCE_IS = {"full": SDPA_UNMASKED, "raster": SDPA_IS_CAUSAL}


@dataclass(frozen=True)
class AttentionCase:
    grid: tuple[int, int]
    head_dim: int
    scan: str
    batch: int
    dtype: torch.dtype
    passes: tuple[str, ...] = (FWD, FWD_BWD)
    flex: bool = True
    heads: int = HEADS

    @property
    def tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def describe(self) -> dict:
        pairs = visible_pairs(self.grid, self.scan)
        return {
            "grid": list(self.grid), "tokens": self.tokens, "batch": self.batch, "heads": self.heads,
            "head_dim": self.head_dim, "scan": self.scan, "dtype": str(self.dtype).removeprefix("torch."),
            "visible_pairs": pairs, "visible_fraction": round(pairs / self.tokens**2, 4),
        }


def plan(device: torch.device, quick: bool) -> list[AttentionCase]:
    """The shapes: LEDiT-XL/2's token grids at 256², 512², 1024² (16x16, 32x32, 64x64), H=16, D=72 (+64, 128).

    On GPU the batch keeps 16k tokens per call (B = 16384 / N, as the FlashAttention papers do), in bf16, with
    every mask and FlexAttention everywhere. On the 2-core CPU, B = 1 in fp32, and the sweep is trimmed to what
    fits the time budget: FlexAttention costs ~20 s of compilation per (grid, mask), and a 64x64 fwd+bwd ~2 s per
    call, so at 64x64 those run for the default ``corner`` mask only (every mask gets them at 32x32), and
    D = 64 and 128 run at 16x16 and 32x32.
    """
    grids = ((16, 16), (32, 32), (64, 64))
    if device.type == "cuda":
        dims = (72,) if quick else (72, 64, 128)
        return [AttentionCase(g, d, s, 16384 // (g[0] * g[1]), torch.bfloat16, flex=s != "full")
                for d in dims for g in grids for s in SCANS]
    fp32 = torch.float32
    if quick:
        return [AttentionCase((16, 16), 72, s, 1, fp32, flex=s == "corner") for s in SCANS] + [
            AttentionCase((32, 32), 72, s, 1, fp32, passes=(FWD, FWD_BWD) if s == "corner" else (FWD,), flex=False)
            for s in SCANS] + [
            # Issue 3's CPU target: corner at N = 4096, D = 72, forward.
            AttentionCase((64, 64), 72, "corner", 1, fp32, passes=(FWD,), flex=False)]
    cases = [AttentionCase((16, 16), 72, s, 1, fp32, flex=s == "corner") for s in SCANS]
    cases += [AttentionCase((32, 32), 72, s, 1, fp32, flex=s != "full") for s in SCANS]
    cases += [AttentionCase((64, 64), 72, s, 1, fp32, passes=(FWD, FWD_BWD) if s == "corner" else (FWD,),
                            flex=s == "corner") for s in SCANS]
    return cases + [AttentionCase(g, d, "corner", 1, fp32, flex=False) for d in (64, 128) for g in grids[:2]]


def _flex_mask_mod(grid: tuple[int, int], scan: str):
    w = grid[1]

    def mask_mod(batch, head, q_index, k_index):
        return visible(q_index // w, q_index % w, k_index // w, k_index % w, w, scan)

    return mask_mod


@functools.lru_cache(maxsize=4)
def _flex_block_mask(grid: tuple[int, int], scan: str, device: torch.device):
    n = grid[0] * grid[1]
    return create_block_mask(_flex_mask_mod(grid, scan), None, None, n, n, device=device)


def _baselines(case: AttentionCase, device: torch.device) -> dict[str, Callable]:
    """name -> f(q, k, v) on (B, N, H, D) tensors, for the baselines that apply to this scan."""
    scale = 1.0 / math.sqrt(case.head_dim)

    def sdpa(**kwargs):
        def run(q, k, v):
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 scale=scale, **kwargs)
            return out.transpose(1, 2)
        return run

    fns = {SDPA_UNMASKED: sdpa()}
    if case.scan == "full":
        return fns
    fns[SDPA_BOOL_MASK] = sdpa(attn_mask=scan_mask(case.grid, case.scan, device))
    if case.scan == "raster":
        fns[SDPA_IS_CAUSAL] = sdpa(is_causal=True)
    if case.flex:
        torch._dynamo.reset()  # a fresh compile cache per case: no recompile limit across the sweep
        compiled = torch.compile(flex_attention, dynamic=False)
        block_mask = _flex_block_mask(case.grid, case.scan, device)

        def flex(q, k, v):
            out = compiled(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=block_mask,
                           scale=scale)
            return out.transpose(1, 2)

        fns[FLEX] = flex
        fns[FLEX_TILED] = functools.partial(scan_attention, grid=case.grid, scan=case.scan, softmax_scale=scale,
                                            backend="flex")
    return fns


def _metrics(case: AttentionCase, pass_name: str, peak_tflops):
    n2 = case.tokens**2
    pairs = {SDPA_UNMASKED: n2, SDPA_IS_CAUSAL: visible_pairs(case.grid, "raster")}
    default_pairs = visible_pairs(case.grid, case.scan)
    factor = BWD_FLOP_FACTOR if pass_name == FWD_BWD else 1.0

    def metrics(name: str, ms: float) -> dict:
        flops = 4 * case.batch * case.heads * case.head_dim * pairs.get(name, default_pairs) * factor
        tflops = flops / (ms * 1e-3) / 1e12
        out = {"tflops": round(tflops, 4)}
        if peak_tflops:
            out["fraction_of_peak"] = round(tflops / peak_tflops, 4)
        return out

    return metrics


def build_calls(case: AttentionCase, device: torch.device) -> tuple[dict, list[str], list[str]]:
    """({pass: {method: zero-argument call}}, baseline names, notes on the backends not timed)."""
    shape = (case.batch, case.tokens, case.heads, case.head_dim)
    q, k, v = (torch.randn(shape, dtype=case.dtype, device=device) for _ in range(3))
    backends, notes = timed_backends(SCAN_ATTENTION_BACKENDS, device.type, (q, k, v, case.grid, case.scan, None),
                                     {"reference": REFERENCE_IS.get(case.scan, SDPA_BOOL_MASK), "flex": FLEX_TILED})
    fns = {name: functools.partial(scan_attention, grid=case.grid, scan=case.scan, backend=name)
           for name in backends}
    baselines = _baselines(case, device)
    fns.update(baselines)
    qg, kg, vg = (t.detach().clone().requires_grad_() for t in (q, k, v))
    grad = torch.randn_like(q)
    calls = {
        FWD: {name: without_grad(functools.partial(fn, q, k, v)) for name, fn in fns.items()},
        FWD_BWD: {name: fwd_bwd(functools.partial(fn, qg, kg, vg), [qg, kg, vg], grad) for name, fn in fns.items()},
    }
    return {p: calls[p] for p in case.passes}, list(baselines), notes


def run_case(case: AttentionCase, device: torch.device, effort: Effort, device_info: dict) -> list[dict]:
    calls, baselines, notes = build_calls(case, device)
    return [comparison(SUITE, case.describe(), pass_name, measure(pass_calls, device, effort), baselines,
                       _metrics(case, pass_name, device_info.get("peak_tflops_bf16")), notes)
            for pass_name, pass_calls in calls.items()]
