"""``ledit bench``: time the kernels and models against SDPA, FlexAttention and unfused PyTorch, on the CPU and
on the GPU when one is visible, and write ``<out-dir>/<device>-<date>[-quick].{json,md,png}`` per device.

Backends are discovered from the op registries, so a newly registered backend shows up with no change here.
``--quick`` (under 3 minutes on a 2-core CPU) covers every comparison at the smaller shapes plus the shapes
the CPU targets are defined at; the full run adds the 64x64 grids, D = 64 and 128, and torch.compile end to end.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import time
from pathlib import Path

import torch

from ledit import arguments
from ledit.bench import attention, dwconv, end_to_end, packed, packed_ops
from ledit.bench.breakdown import profile_forward
from ledit.bench.environment import device_info, versions
from ledit.bench.plot import plot_unavailable_reason
from ledit.bench.records import case_label
from ledit.bench.results import write_results
from ledit.bench.targets import check_targets
from ledit.bench.timing import Effort
from ledit.ops.examples import explain_example_calls
from ledit.runtime import DeviceUnavailableError

SUITES = {
    "attention": attention, "dwconv": dwconv, "packed-ops": packed_ops, "end-to-end": end_to_end, "packed": packed,
}
DEFAULT_OUT_DIR = Path("benchmarks") / "results"
SCHEMA_VERSION = 1


# (device type, quick) -> repeats wanted, the floor, and the seconds one comparison's loop should take.
EFFORT = {
    ("cpu", True): Effort(5, 3, 3.0),
    ("cpu", False): Effort(15, 3, 8.0),
    ("cuda", True): Effort(30, 10, 3.0),
    ("cuda", False): Effort(100, 10, 10.0),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="smaller shapes and no end-to-end torch.compile on CPU (< 3 min on 2 cores)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: the CPU, and the GPU too when one is visible (one results file each)")
    parser.add_argument("--suites", type=arguments.comma_list(SUITES), default=tuple(SUITES),
                        help=f"comma-separated subset of {', '.join(SUITES)} (default: all)")
    parser.add_argument("--no-profile", action="store_true", help="skip the torch.profiler breakdown of a forward")
    parser.add_argument("--repeats", type=arguments.positive_int, default=None,
                        help="repeats per comparison (default by device/mode)")
    parser.add_argument("--threads", type=arguments.positive_int, default=None,
                        help="torch CPU threads (default: torch's, one per core); 1 gives stable ratios on a "
                             "machine other jobs keep busy, where OpenMP threads wait on each other")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                        help=f"where results files go (default: {DEFAULT_OUT_DIR})")


def _devices(choice: str) -> list[torch.device]:
    if choice == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError("--device cuda but no CUDA GPU is visible to torch; use --device cpu")
    if choice == "auto":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [torch.device(choice)]


def command_line(args: argparse.Namespace) -> str:
    parts = ["ledit", "bench"] + (["--quick"] if args.quick else [])
    parts += ["--device", args.device, "--suites", ",".join(args.suites), "--out-dir", str(args.out_dir)]
    parts += ["--repeats", str(args.repeats)] if args.repeats else []
    parts += ["--threads", str(args.threads)] if args.threads else []
    parts += ["--no-profile"] if args.no_profile else []
    return shlex.join(parts)


def backend_report(device: torch.device) -> dict:
    """Which backend each op would use on this device for LEDiT-XL/2's head dim, and why the others not."""
    return {op_name: {name: reason or "ok" for name, reason in choices}
            for op_name, choices in explain_example_calls(device).items()}


def run_device(device: torch.device, args: argparse.Namespace) -> dict:
    started = time.time()
    info = device_info(device)
    effort = EFFORT[(device.type, args.quick)]
    if args.repeats:
        effort = Effort(args.repeats, min(args.repeats, effort.min_repeats), effort.budget_s)
    result = {
        "schema": SCHEMA_VERSION, "mode": "quick" if args.quick else "full", "command": command_line(args),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": info, "versions": versions(), "backends": backend_report(device),
        "settings": {
            "repeats": effort.repeats, "min_repeats": effort.min_repeats, "budget_s_per_comparison": effort.budget_s,
            "timer": "CUDA events, L2 flushed" if device.type == "cuda" else "perf_counter, interleaved",
        },
        "load_average": None, "comparisons": [], "errors": [], "profile": None,
    }
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for suite_name in args.suites:
        suite = SUITES[suite_name]
        for case in suite.plan(device, args.quick):
            described = case.describe()
            label = f"{suite.SUITE} {case_label(suite.SUITE, described)} {described.get('task', '')}".strip()
            print(f"[{time.time() - started:6.0f}s] {device.type}: {label}", flush=True)
            try:
                result["comparisons"] += suite.run_case(case, device, effort, info)
            except Exception as error:  # noqa: BLE001 - one failing shape must not lose the rest of the run
                result["errors"].append(f"{label}: {type(error).__name__}: {error}")
    if not args.no_profile and "end-to-end" in args.suites:
        case = end_to_end.plan(device, args.quick)[-1]
        print(f"[{time.time() - started:6.0f}s] {device.type}: profile {case_label(end_to_end.SUITE, case.describe())}",
              flush=True)
        try:
            result["profile"] = profile_forward(case, device)
        except Exception as error:  # noqa: BLE001
            result["errors"].append(f"profile {case.describe()}: {type(error).__name__}: {error}")
    if load_start is not None:
        result["load_average"] = [load_start, os.getloadavg()[0]]
    result["targets"] = check_targets(result["comparisons"], info["kind"])
    result["elapsed_s"] = round(time.time() - started, 1)
    return result


def main(args: argparse.Namespace) -> None:
    devices = _devices(args.device)
    # The plot comes last and only from data already written; without matplotlib there is none, and the reason is
    # said before the timing starts.
    no_plot = plot_unavailable_reason()
    if no_plot:
        print(f"ledit bench: no plot: {no_plot}; the JSON and Markdown results are written as usual")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    for device in devices:
        result = run_device(device, args)
        paths = write_results(result, args.out_dir)
        print(f"\n{device.type}: {result['device']['name']}, {result['elapsed_s']:.0f} s; wrote "
              + ", ".join(str(p) for p in paths.values()))
        if result.get("plot_error"):
            print(f"  no plot: {result['plot_error']}")
        for target in result["targets"]:
            if target["device_kind"] == result["device"]["kind"]:
                value = "—" if target["value"] is None else f"{target['value']:.3g}"
                print(f"  [{target['status']}] #{target['issue']} {target['target']}: {value}")
        for error in result["errors"]:
            print(f"  error: {error}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="ledit bench", description=__doc__)
    add_arguments(parser)
    main(parser.parse_args())
