"""The performance targets of issues 3, 4 and 6, checked against one run's comparison records.

Each target reads one figure from the records (a speedup or a time ratio) and compares it with its threshold;
it is "met", "missed", or "not measured" with the reason (wrong device, backend not built, method failed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ledit.bench.records import median_ms

MET, MISSED, NOT_MEASURED = "met", "missed", "not measured"


def find(records: list[dict], suite: str, pass_name: str, **case) -> list[dict]:
    """Records of ``suite`` and ``pass_name`` whose case has every given key equal to the given value."""
    return [r for r in records
            if r["suite"] == suite and r["pass"] == pass_name and all(r["case"].get(k) == v for k, v in case.items())]


def _speedup(suite, pass_name, method, baseline, **case) -> Callable[[list[dict]], tuple[float | None, str]]:
    """The smallest speedup of ``method`` over ``baseline`` among the matching records."""

    def read(records):
        matches = find(records, suite, pass_name, **case)
        if not matches:
            return None, "shape not in this run"
        values = []
        for record in matches:
            value = record["speedups"].get(baseline, {}).get(method)
            if value is None:
                return None, f"{method} or {baseline} not timed ({_why_missing(record, method, baseline)})"
            values.append(value)
        return min(values), f"min over {len(values)} shape(s)"

    return read


def _time_ratio(suite, numerator, denominator, method, minus_one=False, **case):
    """The largest time ratio (numerator pass or method) / (denominator), e.g. fwd+bwd over fwd."""

    def read(records):
        values = []
        for record in find(records, suite, numerator[0], **case):
            other = [r for r in find(records, suite, denominator[0], **case) if r["case"] == record["case"]]
            top = median_ms(record, numerator[1] or method)
            bottom = median_ms(other[0], denominator[1] or method) if other else None
            if top is None or bottom is None:
                return None, f"{method} not timed ({_why_missing(record, method, denominator[1] or method)})"
            values.append(top / bottom - (1.0 if minus_one else 0.0))
        if not values:
            return None, "shape not in this run"
        return max(values), f"max over {len(values)} shape(s)"

    return read


def _why_missing(record: dict, *methods: str) -> str:
    for method in methods:
        entry = record["methods"].get(method)
        if entry is None:
            skipped = [n for n in record.get("notes", []) if n.startswith(f"{method} ")]
            return skipped[0] if skipped else f"{method} not run"
        if "error" in entry:
            return f"{method} failed: {entry['error']}"
    return "unknown"


@dataclass(frozen=True)
class Target:
    name: str
    issue: int
    device_kind: str  # "cpu" or "gpu"
    text: str
    read: Callable[[list[dict]], tuple[float | None, str]]
    threshold: float
    at_least: bool  # True: value >= threshold is met; False: value <= threshold is met

    def check(self, records: list[dict], device_kind: str) -> dict:
        out = {"name": self.name, "issue": self.issue, "device_kind": self.device_kind, "target": self.text,
               "threshold": self.threshold, "comparison": ">=" if self.at_least else "<="}
        if device_kind != self.device_kind:
            return {**out, "status": NOT_MEASURED, "value": None, "detail": f"needs a {self.device_kind} run"}
        value, detail = self.read(records)
        if value is None:
            return {**out, "status": NOT_MEASURED, "value": None, "detail": detail}
        met = value >= self.threshold if self.at_least else value <= self.threshold
        return {**out, "status": MET if met else MISSED, "value": round(value, 4), "detail": detail}


ATTN, DWCONV, E2E, PACKED_OPS = "scan_attention", "dwconv_modulate", "end_to_end", "packed_ops"
CORNER_4096 = {"grid": [64, 64], "head_dim": 72, "scan": "corner"}
DWCONV_CPU = {"batch": 4, "grid": [32, 32], "channels": 1152, "dtype": "float32"}
# The packed suite's pack (ledit/bench/packed_ops.py MIXED): eight images of 192-320 tokens, 2048 in all.
PACKED_MIXED = {"grids": [[16, 16], [8, 32], [32, 8], [12, 16], [16, 20], [12, 21], [21, 12], [8, 33]]}
DWCONV_GPU = {"batch": 32, "grid": [32, 32], "channels": 1152, "dtype": "bfloat16"}

TARGETS = (
    Target("attention-cpu-vs-bool-mask", 3, "cpu",
           "cpu backend >= 1.5x SDPA with a boolean mask, corner, 64x64 grid (N=4096), D=72, forward",
           _speedup(ATTN, "fwd", "cpu", "sdpa_bool_mask", **CORNER_4096), 1.5, True),
    Target("attention-h100-free-mask", 3, "gpu",
           "cuda forward >= SDPA unmasked (the mask costs nothing), corner, D=72, every grid",
           _speedup(ATTN, "fwd", "cuda", "sdpa_unmasked", scan="corner", head_dim=72), 1.0, True),
    Target("attention-h100-backward", 3, "gpu",
           "cuda backward <= 2.5x forward (backward = fwd+bwd - fwd), corner, D=72, every grid",
           _time_ratio(ATTN, ("fwd+bwd", None), ("fwd", None), "cuda", minus_one=True, scan="corner", head_dim=72),
           2.5, False),
    Target("attention-h100-vs-flex", 3, "gpu",
           "cuda forward >= 1.3x FlexAttention with the same mask in 2D tile order (the flex backend), corner, D=72, "
           "every grid",
           _speedup(ATTN, "fwd", "cuda", "flex", scan="corner", head_dim=72), 1.3, True),
    Target("dwconv-cpu-vs-eager", 4, "cpu",
           "cpu backend >= 3x the eager unfused sequence, B=4, 32x32, C=1152, forward",
           _speedup(DWCONV, "fwd", "cpu", "unfused_eager", **DWCONV_CPU), 3.0, True),
    Target("dwconv-cpu-vs-compile", 4, "cpu",
           "cpu backend >= 1.5x torch.compile of the unfused sequence, B=4, 32x32, C=1152, forward",
           _speedup(DWCONV, "fwd", "cpu", "unfused_compiled", **DWCONV_CPU), 1.5, True),
    Target("dwconv-h100-vs-clone", 4, "gpu",
           "cuda forward time <= 1.15x torch.clone(x), LEDiT-XL/2 at 512², B=32, bf16",
           _time_ratio(DWCONV, ("fwd", "cuda"), ("fwd", "clone"), "cuda", **DWCONV_GPU), 1.15, False),
    Target("dwconv-h100-backward", 4, "gpu",
           "cuda backward <= 2x forward (backward = fwd+bwd - fwd), LEDiT-XL/2 at 512², B=32, bf16",
           _time_ratio(DWCONV, ("fwd+bwd", None), ("fwd", None), "cuda", minus_one=True, **DWCONV_GPU), 2.0, False),
    *(Target(f"packed-ops-cpu-{op}-{pass_name}-vs-{baseline}", 17, "cpu",
             f"packed {op} {pass_name} >= {threshold}x the {text}, cpu backend, 8 mixed images (2048 tokens)",
             _speedup(PACKED_OPS, pass_name, "packed", baseline, op=op, **PACKED_MIXED), threshold, True)
      for op in (ATTN, DWCONV) for pass_name in ("fwd", "fwd+bwd")
      for baseline, threshold, text in (("uniform", 0.9, "tokens/s of an equal-token batch of 16x16 images"),
                                        ("padded", 1.3, "speed of padding every image to the largest"))),
    Target("sampling-h100-1024", 6, "gpu",
           "LEDiT-XL/2 sampling step at 1024² >= 1.5x the same model on the reference backend",
           _speedup(E2E, "sampling_step", "ledit", "ledit_reference", model="LEDiT-XL/2", image_size=1024), 1.5, True),
    Target("packed-cpu-vs-equal-tokens", 17, "cpu",
           "LEDiT-S/2 train step, packed batch of mixed sizes >= 0.9x the tokens/s of an equal-token batch of one size",
           _speedup(E2E, "packed_train_step", "packed", "equal_tokens", model="LEDiT-S/2"), 0.9, True),
    Target("packed-cpu-vs-padded", 17, "cpu",
           "LEDiT-S/2 train step on a packed batch of mixed sizes >= 1.3x padding every image to the largest (masked)",
           _speedup(E2E, "packed_train_step", "packed", "padded", model="LEDiT-S/2"), 1.3, True),
    Target("forward-cpu-1024", 6, "cpu",
           "LEDiT-S/2 forward at a 64x64 token grid (1024²) >= 1.3x the same model on the reference backend",
           _speedup(E2E, "sampling_step", "ledit", "ledit_reference", model="LEDiT-S/2", image_size=1024), 1.3, True),
)


def check_targets(records: list[dict], device_kind: str) -> list[dict]:
    return [target.check(records, device_kind) for target in TARGETS]
