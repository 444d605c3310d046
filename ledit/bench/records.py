"""One comparison = the methods timed together in one interleaved loop, with their speedups over the baselines."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ledit.bench.timing import Timing
from ledit.ops.backends import OpBackends

# Extra figures of merit for one method from its median time: TFLOP/s, GB/s, fraction of peak.
Metrics = Callable[[str, float], dict]


def comparison(suite: str, case: dict, pass_name: str, timings: dict[str, Timing | str],
               baselines: Sequence[str], metrics: Metrics, notes: Sequence[str] = ()) -> dict:
    """A JSON-ready record; ``speedups[baseline][method]`` = baseline time / method time (> 1: method faster)."""
    methods = {}
    for name, timing in timings.items():
        role = "baseline" if name in baselines else "ledit"
        if isinstance(timing, str):
            methods[name] = {"role": role, "error": timing}
        else:
            methods[name] = {"role": role, **timing.as_dict(), **metrics(name, timing.median_ms)}
    timed = {name: m["median_ms"] for name, m in methods.items() if "median_ms" in m}
    speedups = {
        base: {name: round(timed[base] / ms, 4) for name, ms in timed.items() if name not in baselines}
        for base in baselines if base in timed
    }
    return {
        "suite": suite,
        "case": case,
        "pass": pass_name,
        "baselines": list(baselines),
        "methods": methods,
        "speedups": speedups,
        "notes": list(notes),
    }


def case_label(suite: str, case: dict) -> str:
    """A record's shape for tables and plots: '32×32 D=72 corner', 'B=4 32×32 C=1152 float32', ..."""
    if suite == "scan_attention":
        return f"{case['grid'][0]}×{case['grid'][1]} D={case['head_dim']} {case['scan']}"
    if suite == "dwconv_modulate":
        return f"B={case['batch']} {case['grid'][0]}×{case['grid'][1]} C={case['channels']} {case['dtype']}"
    if suite == "packed_ops":
        return f"{case['op']} {len(case['grids'])} images, {case['tokens']} tokens, {case['dtype']}"
    if "token_grids" in case:  # a packed batch of mixed sizes
        return f"{case['model']} {case['batch']} mixed sizes, {case['tokens']} tokens"
    return f"{case['model']} {case['image_size']}² B={case['batch']}"


def median_ms(record: dict, method: str):
    """The method's median time in a comparison record, or None when it was not timed."""
    return record["methods"].get(method, {}).get("median_ms")


def timed_backends(op: OpBackends, device_type: str, call_args: tuple,
                   timed_as: dict[str, str]) -> tuple[list[str], list[str]]:
    """The backends to time for one call, and a note for each other one saying why not.

    A backend is timed when it can run and the automatic order of ``device_type`` would try it (so Triton's
    CPU interpreter is never timed). ``timed_as`` maps the backends a suite times as one of its baselines to that
    baseline's name: ``reference`` always (the very same code as an unfused baseline), and the opt-in ``flex``.
    """
    timed, notes = [], []
    for name, reason in op.explain(device_type, *call_args):
        if name in timed_as:
            notes.append(f"{name} timed as the baseline {timed_as[name]}")
        elif reason is None:
            timed.append(name)
        else:
            notes.append(f"{name} not timed: {reason}")
    return timed, notes
