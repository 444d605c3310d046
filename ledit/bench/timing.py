"""Timing that can be trusted on a shared machine: warmup, interleaved repeats, medians.

Every method of one comparison is timed in the same loop, round-robin, so a burst of load from another process
slows all of them alike and their ratios stay meaningful (single-method timings on the shared 2-core CPU are
bimodal from run to run). On CPU one sample is ``number`` back-to-back calls timed with ``perf_counter``, with
``number`` calibrated in warmup so a sample lasts at least ``min_sample_s``. On CUDA one sample is one call
between CUDA events, after a write to a buffer larger than L2 so no input stays cached from the previous call.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

# Larger than any current GPU's L2 (H100: 50 MB, H200: 60 MB), so zeroing it evicts the inputs.
L2_FLUSH_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Effort:
    """How long one comparison may take: repeats wanted, the floor, and the seconds its loop should use."""

    repeats: int
    min_repeats: int = 3
    budget_s: float = float("inf")
    warmup: int = 1


@dataclass
class Timing:
    """The median and spread of one method's samples, in milliseconds per call."""

    median_ms: float
    min_ms: float
    q1_ms: float
    q3_ms: float
    repeats: int
    calls_per_sample: int

    def as_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _quartiles(samples: list[float]) -> tuple[float, float]:
    if len(samples) < 2:
        return samples[0], samples[0]
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, q3


class _CpuClock:
    def __init__(self, min_sample_s: float):
        self.min_sample_s = min_sample_s

    def calibrate(self, fn: Callable[[], object]) -> tuple[int, float | None]:
        """Calls per sample, and the calibration call's time when it already makes a whole sample."""
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        number = max(1, math.ceil(self.min_sample_s / max(elapsed, 1e-9)))
        return number, (elapsed * 1e3 if number == 1 else None)

    def sample_ms(self, fn: Callable[[], object], number: int) -> float:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - start) * 1e3 / number


class _CudaClock:
    def __init__(self, device: torch.device):
        self.device = device
        self.flush_buffer = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=device)

    def calibrate(self, fn: Callable[[], object]) -> tuple[int, float | None]:
        fn()  # one call, so measure() learns how long a round takes (its sample would lack the L2 flush)
        return 1, None

    def sample_ms(self, fn: Callable[[], object], number: int) -> float:
        self.flush_buffer.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(self.device)
        return start.elapsed_time(end)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(methods: dict[str, Callable[[], object]], device: torch.device, effort: Effort,
            min_sample_s: float = 0.02) -> dict[str, Timing | str]:
    """Time every method in one interleaved loop; returns its Timing, or the error that stopped it.

    ``effort.repeats`` drops (not below ``effort.min_repeats``) so the loop takes about ``effort.budget_s``
    seconds, which keeps a whole CPU run short when one shape is slow. A method that raises in warmup is
    reported by its error message and left out of the loop, so one broken baseline (say, a torch.compile
    failure) never hides the others.
    """
    if effort.repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {effort.repeats}")
    clock = _CudaClock(device) if device.type == "cuda" else _CpuClock(min_sample_s)
    results: dict[str, Timing | str] = {}
    calls: dict[str, int] = {}
    samples: dict[str, list[float]] = {}
    round_s = 0.0
    for name, fn in methods.items():
        try:
            for _ in range(max(effort.warmup, 1)):  # first calls compile, allocate, fill caches
                fn()
            synchronize(device)
            start = time.perf_counter()
            calls[name], first_sample = clock.calibrate(fn)
            synchronize(device)
            round_s += (time.perf_counter() - start) * calls[name]
        except Exception as error:  # noqa: BLE001 - recorded in the results, see docstring
            results[name] = f"{type(error).__name__}: {_first_line(error)}"
            continue
        # A slow call already is a whole sample: keep it rather than pay for it again.
        samples[name] = [first_sample] if first_sample is not None else []
    repeats = effort.repeats
    if round_s > 0 and effort.budget_s < repeats * round_s:
        repeats = max(min(repeats, effort.min_repeats), int(effort.budget_s / round_s))
    order = list(calls)
    for repeat in range(repeats - min(len(s) for s in samples.values()) if samples else 0):
        # Rotate the order so no method always runs right after the same neighbour.
        shift = repeat % len(order) if order else 0
        for name in order[shift:] + order[:shift]:
            samples[name].append(clock.sample_ms(methods[name], calls[name]))
    for name in methods:
        if name in samples:
            q1, q3 = _quartiles(samples[name])
            results[name] = Timing(statistics.median(samples[name]), min(samples[name]), q1, q3,
                                   len(samples[name]), calls[name])
    return results


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else ""


def fwd_bwd(forward: Callable[[], torch.Tensor], inputs: list[torch.Tensor],
            grad_out: torch.Tensor) -> Callable[[], None]:
    """A zero-argument call running forward then backward, dropping the inputs' grads first (no accumulate op)."""

    def step():
        for t in inputs:
            t.grad = None
        forward().backward(grad_out)

    return step


def without_grad(fn: Callable[[], object]) -> Callable[[], object]:
    """A zero-argument call running ``fn`` under ``torch.no_grad`` (forward-only timings skip autograd's graph)."""

    def call():
        with torch.no_grad():
            return fn()

    return call
