"""A small run of the compiled kernels for a first GPU run and for compute-sanitizer (docs/gpu-first-run.md).

Odd shapes (partial tiles, D not a power of two, D = 256, dilation 2 with k = 7, a packed sequence of mixed grids
for dwconv_modulate), forward and backward of scan_attention and dwconv_modulate on one backend, each compared with
the reference in float64; the saved lse against the masked logsumexp; the attention backward run twice under
torch.use_deterministic_algorithms(True) and compared bit for bit (its default dQ adds with atomics; the
deterministic path must match exactly), the dwconv backward twice as it is (no atomics).
Small enough to finish in a minute or two under `compute-sanitizer --tool memcheck|racecheck|initcheck`.

    python scripts/cuda_smoke.py                 # cuda backend; prints a table, exits 1 on any failure
    python scripts/cuda_smoke.py --backend cpu   # the same checks on the CPU kernels (checks this script)
"""

from __future__ import annotations

import argparse
import math
import sys

import torch

from ledit.ops import dwconv_modulate, dwconv_modulate_reference, scan_attention_reference
from ledit.ops.masks import scan_mask

# Relative error (max |fast - ref| / max |ref|) allowed per dtype: loose, meant to catch indexing and masking bugs;
# the tests in tests/ops apply the exact 2x rule.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}
LSE_TOLERANCE = 1e-3  # natural-log units: lse is accumulated in fp32 whatever the input dtype

ATTENTION_CASES = [  # (grid, head dim, scan)
    ((1, 1), 8, "corner"),
    ((5, 7), 40, "corner"),
    ((9, 33), 72, "raster"),
    ((8, 8), 72, "neighborhood"),
    ((16, 16), 72, "corner"),
    ((3, 5), 256, "lower_right"),
    ((7, 7), 128, "full"),
]
# A packed sequence (docs/kernels-dwconv.md, "Packed sequences"): these images back to back in one call.
MIXED_PACK = ((1, 1), (3, 5), (17, 9), (24, 40))
DWCONV_CASES = [  # (grid or MIXED_PACK, channels, k, dilation, norm)
    ((1, 1), 8, 3, 1, True),
    ((7, 5), 72, 7, 2, True),
    ((33, 17), 40, 5, 1, False),
    ((16, 16), 96, 3, 2, True),
    (MIXED_PACK, 40, 7, 2, True),
]


def relative_error(fast: torch.Tensor, ref: torch.Tensor) -> float:
    """max |fast - ref| over max |ref|, or over 1 where ref is near zero (the dq of a lone token is 0 exactly)."""
    if not torch.isfinite(fast).all():
        return math.inf
    return (fast.double() - ref).abs().max().item() / max(ref.abs().max().item(), 1.0)


def attention_case(grid, dim, scan, dtype, device):
    h, w = grid
    q, k, v, dout = (torch.randn(2, h * w, 3, dim, device=device) for _ in range(4))
    scale = 1.0 / math.sqrt(dim)
    low = [t.to(dtype) for t in (q, k, v, dout)]
    out, lse = torch.ops.ledit.scan_attention_fwd(*low[:3], h, w, scan, scale)
    grads = torch.ops.ledit.scan_attention_bwd(low[3], *low[:3], out, lse, h, w, scan, scale)
    torch.use_deterministic_algorithms(True)
    try:
        once, again = (torch.ops.ledit.scan_attention_bwd(low[3], *low[:3], out, lse, h, w, scan, scale)
                       for _ in range(2))
    finally:
        torch.use_deterministic_algorithms(False)
    leaves = [t.to(dtype).double().requires_grad_() for t in (q, k, v)]
    ref = scan_attention_reference(*leaves, grid, scan, scale)
    ref.backward(low[3].double())
    scores = torch.einsum("bqhd,bkhd->bhqk", *leaves[:2]).detach() * scale
    ref_lse = scores.masked_fill(~scan_mask(grid, scan, device), -math.inf).logsumexp(-1)
    errors = {"out": relative_error(out, ref.detach())}
    errors.update({name: relative_error(g, leaf.grad) for name, g, leaf in zip(("dq", "dk", "dv"), grads, leaves)})
    errors.update({f"{name} (deterministic)": relative_error(g, leaf.grad)
                   for name, g, leaf in zip(("dq", "dk", "dv"), once, leaves)})
    lse_error = (lse.double() - ref_lse).abs().max().item()
    deterministic = all(torch.equal(a, b) for a, b in zip(once, again))
    return errors, lse_error, deterministic


def dwconv_case(grid, channels, k, dilation, norm, dtype, device, backend):
    if grid is MIXED_PACK:  # one packed row, a modulation row per image, the grids as a device tensor
        batch, rows, n = 1, len(grid), sum(h * w for h, w in grid)
        grid = torch.tensor(grid, dtype=torch.int32, device=device)
    else:
        batch, rows, n = 2, 2, grid[0] * grid[1]
    x = 1.5 * torch.randn(batch, n, channels, device=device) + 0.5
    params = [torch.randn(channels, 1, k, k, device=device) / k, torch.randn(channels, device=device)]
    params += [0.5 * torch.randn(rows, channels, device=device) for _ in range(2)]
    params += [torch.randn(rows, channels, device=device)]
    grad_out = torch.randn(batch, n, channels, device=device)

    def run(fn, cast, backend_kwargs):
        leaves = [t.to(dtype).clone() if cast else t.to(dtype).double() for t in [x] + params]
        leaves = [t.requires_grad_() for t in leaves]
        xx, weight, bias, shift, scale, gate = leaves
        out = fn(xx, grid, weight, bias, shift, scale, gate, xx, dilation, norm, **backend_kwargs)
        out.backward(grad_out.to(out.dtype))
        return [out.detach()] + [leaf.grad for leaf in leaves]

    fast = run(dwconv_modulate, True, {"backend": backend})
    again = run(dwconv_modulate, True, {"backend": backend})
    ref = run(dwconv_modulate_reference, False, {})
    names = ("out", "dx", "dweight", "dbias", "dshift", "dscale", "dgate")
    errors = {name: relative_error(f, r) for name, f, r in zip(names, fast, ref)}
    return errors, all(torch.equal(a, b) for a, b in zip(fast, again))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args()
    device = args.backend
    torch.manual_seed(0)
    failures = 0
    dtypes = (torch.bfloat16, torch.float16) if device == "cuda" else (torch.float32, torch.bfloat16)
    for dtype in dtypes:
        for grid, dim, scan in ATTENTION_CASES:
            errors, lse_error, deterministic = attention_case(grid, dim, scan, dtype, device)
            ok = max(errors.values()) <= TOLERANCE[dtype] and lse_error <= LSE_TOLERANCE and deterministic
            failures += not ok
            worst = " ".join(f"{name}={e:.1e}" for name, e in errors.items())
            print(f"{'ok  ' if ok else 'FAIL'} scan_attention {str(dtype)[6:]:8} grid={grid} D={dim} {scan}: {worst} "
                  f"lse={lse_error:.1e} deterministic={deterministic}")
    dwconv_dtypes = (torch.float32, torch.bfloat16, torch.float16) if device == "cuda" else (torch.float32,)
    for dtype in dwconv_dtypes:
        for grid, channels, k, dilation, norm in DWCONV_CASES:
            errors, deterministic = dwconv_case(grid, channels, k, dilation, norm, dtype, device, args.backend)
            ok = max(errors.values()) <= TOLERANCE[dtype] and deterministic
            failures += not ok
            worst = " ".join(f"{name}={e:.1e}" for name, e in errors.items())
            shape = "packed=" + "+".join(f"{h}x{w}" for h, w in grid) if grid is MIXED_PACK else f"grid={grid}"
            print(f"{'ok  ' if ok else 'FAIL'} dwconv_modulate {str(dtype)[6:]:8} {shape} C={channels} k={k} "
                  f"dilation={dilation} norm={norm}: {worst} deterministic={deterministic}")
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
