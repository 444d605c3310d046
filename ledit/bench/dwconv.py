"""``dwconv_modulate`` against the unfused PyTorch sequence (eager and compiled) and a ``torch.clone`` of x.

The op runs as in LEDiT's locality module: LayerNorm on, gate on, residual = x, 3x3 kernel, dilation 1.
Every backend that can run on the device is timed, forced with ``backend=``; ``reference`` *is* the eager
unfused sequence, so it is timed once, as ``unfused_eager``. The op is bandwidth-bound, so GB/s count the bytes
it cannot avoid: x read and out written forward (2 activation streams, the same as a clone), plus x and the
output gradient read and dx written backward (5 streams for forward+backward).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ledit.bench.records import comparison, timed_backends
from ledit.bench.timing import Effort, fwd_bwd, measure, without_grad
from ledit.ops import DWCONV_MODULATE_BACKENDS, dwconv_modulate, dwconv_modulate_reference

SUITE = "dwconv_modulate"
FWD, FWD_BWD = "fwd", "fwd+bwd"
UNFUSED_EAGER, UNFUSED_COMPILED, CLONE = "unfused_eager", "unfused_compiled", "clone"
STREAMS = {FWD: 2, FWD_BWD: 5}
KERNEL_SIZE = 3


@dataclass(frozen=True)
class DwconvCase:
    batch: int
    grid: tuple[int, int]
    channels: int
    dtype: torch.dtype

    def describe(self) -> dict:
        return {"batch": self.batch, "grid": list(self.grid), "tokens": self.grid[0] * self.grid[1],
                "channels": self.channels, "kernel_size": KERNEL_SIZE, "dilation": 1, "norm": True, "gate": True,
                "residual": "x", "dtype": str(self.dtype).removeprefix("torch."),
                "x_megabytes": round(self.activation_bytes / 1e6, 2)}

    @property
    def activation_bytes(self) -> int:
        return self.batch * self.grid[0] * self.grid[1] * self.channels * torch.finfo(self.dtype).bits // 8


def plan(device: torch.device, quick: bool) -> list[DwconvCase]:
    """CPU: issue 4's anchor shape (B=4, 32x32, C=1152); GPU: LEDiT-XL/2 at 512², B=32, far larger than L2."""
    if device.type == "cuda":
        return [DwconvCase(32, (32, 32), 1152, torch.bfloat16)] + ([] if quick else [
            DwconvCase(4, (32, 32), 1152, torch.bfloat16), DwconvCase(32, (32, 32), 1152, torch.float32)])
    return [DwconvCase(4, (32, 32), 1152, torch.float32)] + ([] if quick else [
        DwconvCase(32, (32, 32), 1152, torch.float32)])


def _inputs(case: DwconvCase, device: torch.device) -> dict:
    b, c = case.batch, case.channels
    make = functools.partial(torch.randn, dtype=case.dtype, device=device)
    x = make(b, case.grid[0] * case.grid[1], c)
    return {"x": x, "weight": make(c, 1, KERNEL_SIZE, KERNEL_SIZE) * 0.1, "bias": make(c) * 0.1,
            "shift": make(b, c) * 0.1, "scale": make(b, c) * 0.1, "gate": make(b, c)}


def _metrics(case: DwconvCase, pass_name: str, peak_gbps):
    def metrics(name: str, ms: float) -> dict:
        gbps = STREAMS[pass_name] * case.activation_bytes / (ms * 1e-3) / 1e9
        out = {"gbps": round(gbps, 3)}
        if peak_gbps:
            out["fraction_of_peak_bandwidth"] = round(gbps / peak_gbps, 4)
        return out

    return metrics


def build_calls(case: DwconvCase, device: torch.device) -> tuple[dict, dict, list[str]]:
    """({pass: {method: zero-argument call}}, {pass: baseline names}, notes on the backends not timed)."""
    inputs = _inputs(case, device)
    i = inputs
    call_args = (i["x"], case.grid, i["weight"], i["bias"], i["shift"], i["scale"], i["gate"], i["x"], 1, True)
    backends, notes = timed_backends(DWCONV_MODULATE_BACKENDS, device.type, call_args,
                                   {"reference": UNFUSED_EAGER})
    torch._dynamo.reset()  # a fresh compile cache per case: no recompile limit across the sweep

    def op(fn, t):
        return fn(t["x"], case.grid, t["weight"], t["bias"], t["shift"], t["scale"], t["gate"], t["x"])

    fns = {name: functools.partial(dwconv_modulate, backend=name) for name in backends}
    fns[UNFUSED_EAGER] = dwconv_modulate_reference
    fns[UNFUSED_COMPILED] = torch.compile(dwconv_modulate_reference, dynamic=False)
    grads = {name: t.detach().clone().requires_grad_() for name, t in inputs.items()}
    grad_out = torch.randn_like(inputs["x"])
    calls = {
        FWD: {**{name: without_grad(functools.partial(op, fn, inputs)) for name, fn in fns.items()},
              CLONE: without_grad(inputs["x"].clone)},
        FWD_BWD: {name: fwd_bwd(functools.partial(op, fn, grads), list(grads.values()), grad_out)
                  for name, fn in fns.items()},
    }
    baselines = {FWD: [UNFUSED_EAGER, UNFUSED_COMPILED, CLONE], FWD_BWD: [UNFUSED_EAGER, UNFUSED_COMPILED]}
    return calls, baselines, notes


def run_case(case: DwconvCase, device: torch.device, effort: Effort, device_info: dict) -> list[dict]:
    calls, baselines, notes = build_calls(case, device)
    return [comparison(SUITE, case.describe(), pass_name, measure(pass_calls, device, effort), baselines[pass_name],
                       _metrics(case, pass_name, device_info.get("peak_gbps")), notes)
            for pass_name, pass_calls in calls.items()]
