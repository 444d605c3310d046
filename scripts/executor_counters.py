"""The CUDA kernels' counters on the CPU executor at one representative shape per op and pass, as the table in
docs/cuda-executor.md ("Counters of the kernels").

    python scripts/executor_counters.py --label wmma    # measure this build's kernels, save, rewrite the table
    python scripts/executor_counters.py                 # only rewrite the table from the saved measurements

A measurement runs each op's forward and backward torch ops of ledit._C_emulated (build it with
LEDIT_BUILD_EMULATED=1) on fixed inputs and records every launch's counters; it is saved as
benchmarks/results/executor-counters-<label>.json. The table shows every saved measurement, oldest first, so a new
kernel's rows sit under those of the kernel it replaces. Nothing here knows a kernel: launches are listed by the
name the executor gives them, and the per-pass ratios use only what the op itself must do (useful FLOPs: 4·D per
visible query-key pair forward, 2.5 times that backward; compulsory bytes: every tensor the op reads or writes,
once).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import functools
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "cuda-executor.md"
START, END = "<!-- executor-counters:start -->", "<!-- executor-counters:end -->"
MMA_FLOPS = 2 * 16 * 8 * 16  # one mma.sync m16n8k16
SHARED_KINDS = (("shared_load", "ld"), ("shared_store", "st"), ("ldmatrix", "ldsm"), ("cp_async_shared", "cp.async"))
HEADER = ("| build | pass / kernel | launch (blocks × threads, shared KB) | mma.sync | tensor-core FLOPs ÷ useful | "
          "shared instructions | shared wavefronts ÷ ideal | shared wavefronts per mma | "
          "global KB: per instruction / distinct | ÷ compulsory bytes | distinct bytes per useful FLOP | sector use | "
          "barriers per block |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def attention_case(ops, dtype=torch.bfloat16, grid=(16, 16), dim=72, scan="corner"):
    """(title, [(pass, run -> (the op's arguments, its results), useful FLOPs)]); the default is LEDiT-XL/2's
    attention at 256² (a 16 x 16 token grid, head dim 72), one batch and head."""
    from ledit.bench.attention import BWD_FLOP_FACTOR
    from ledit.ops.masks import visible_pairs

    gen = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(1, grid[0] * grid[1], 1, dim, generator=gen).to(dtype) for _ in range(4))
    forward = (q, k, v, *grid, scan, dim**-0.5)
    out, lse = ops.scan_attention_fwd(*forward)
    backward = (dout, q, k, v, out, lse, *grid, scan, dim**-0.5)
    flops = 4 * dim * visible_pairs(grid, scan)
    title = f"scan_attention: {scan} scan, {grid[0]} × {grid[1]} grid, D = {dim}, B = H = 1, {_dtype_name(dtype)}"
    return title, [("fwd", lambda: (forward, ops.scan_attention_fwd(*forward)), flops),
                   ("bwd", lambda: (backward, ops.scan_attention_bwd(*backward)), flops * (BWD_FLOP_FACTOR - 1))]


def dwconv_case(ops, dtype=torch.bfloat16, grid=(16, 16), channels=128, kernel=3):
    """(title, passes) as attention_case; LEDiT's locality module (LayerNorm, gate, residual = the input)."""
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    x = randn(1, grid[0] * grid[1], channels).to(dtype)
    weight, bias = randn(channels, 1, kernel, kernel) / kernel, randn(channels)
    shift, scale, gate = randn(1, channels), randn(1, channels), randn(1, channels)
    forward = (x, *grid, weight, bias, shift, scale, gate, x, 1, True)
    _, mean, rstd = ops.dwconv_modulate_fwd(*forward)
    backward = (randn(*x.shape).to(dtype), x, *grid, weight, shift, scale, gate, mean, rstd, 1, True)
    title = (f"dwconv_modulate: {grid[0]} × {grid[1]} grid, C = {channels}, k = {kernel}, dilation 1, LayerNorm, "
             f"gate, residual = x, B = 1, {_dtype_name(dtype)}")
    return title, [("fwd", lambda: (forward, ops.dwconv_modulate_fwd(*forward)), 0),
                   ("bwd", lambda: (backward, ops.dwconv_modulate_bwd(*backward)), 0)]


CASES = (functools.partial(attention_case, dtype=torch.bfloat16),
         functools.partial(attention_case, dtype=torch.float16), dwconv_case)


def _tensor_bytes(values) -> int:
    return sum(t.nbytes for t in values if isinstance(t, torch.Tensor))


def measure(label: str, cases=CASES) -> dict:
    """Every launch's counters for each case's passes, on ledit._C_emulated."""
    from ledit.ops.extension import EMULATED_LIBRARY, load_emulated_extension

    ext, why_not = load_emulated_extension()
    if ext is None:
        sys.exit(f"executor_counters: {why_not}")
    ops = getattr(torch.ops, EMULATED_LIBRARY)
    measured = []
    for case in cases:
        title, passes = case(ops)
        results = []
        for name, run, flops in passes:
            ext.clear_launches()
            args, outputs = run()
            results.append({"pass": name, "useful_flops": flops,
                            "compulsory_bytes": _tensor_bytes(args) + _tensor_bytes(outputs),
                            "launches": ext.launches()})
        measured.append({"title": title, "passes": results})
    return {"label": label, "commit": kernels_commit(), "date": datetime.date.today().isoformat(), "cases": measured}


def kernels_commit(tree: Path = ROOT) -> str:
    """The commit the kernels (tree's csrc/) were measured at, '-dirty' when csrc/ has uncommitted changes."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=tree, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain", "--", "csrc") else "")


def _ratio(a: float, b: float, digits: int = 2) -> str:
    return f"{a / b:.{digits}f}" if b else "—"


def _row(build: str, what: str, launch: str, c: dict, useful_flops: float = 0, compulsory_bytes: int = 0) -> str:
    """One table row of counters c; the per-pass columns (useful FLOPs, compulsory bytes) are '—' when 0."""
    present = [(kind, short) for kind, short in SHARED_KINDS if c[f"{kind}_instructions"]]
    instructions = " · ".join(f"{short} {c[f'{kind}_instructions']}" for kind, short in present) or "—"
    conflicts = " · ".join(f"{short} {_ratio(c[f'{kind}_wavefronts'], c[f'{kind}_ideal_wavefronts'])}"
                           for kind, short in present) or "—"
    wavefronts = sum(c[f"{kind}_wavefronts"] for kind, _ in SHARED_KINDS)
    # Global traffic in sectors: per instruction (no cache) and distinct over the launch (a cache holding it all);
    # an fp32 atomic moves 4 bytes either way.
    sector_bytes = 32 * (c["global_load_sectors"] + c["global_store_sectors"])
    traffic = sector_bytes + 4 * c["global_atomics"]
    distinct = 32 * (c["global_load_unique_sectors"] + c["global_store_unique_sectors"]) + 4 * c["global_atomics"]
    compulsory = f"{_ratio(traffic, compulsory_bytes)} / {_ratio(distinct, compulsory_bytes)}"
    columns = [
        build, what, launch, str(c["mma"] or "—"), _ratio(c["mma"] * MMA_FLOPS, useful_flops),
        instructions, conflicts, _ratio(wavefronts, c["mma"]), f"{traffic / 1e3:.1f} / {distinct / 1e3:.1f}",
        compulsory if compulsory_bytes else "—", _ratio(distinct, useful_flops, 4),
        _ratio(c["global_load_bytes"] + c["global_store_bytes"], sector_bytes),
        _ratio(c["block_barriers"], c["blocks"], 1),
    ]
    return "| " + " | ".join(columns) + " |"


def _sum(launches: list[dict]) -> collections.Counter:
    return sum((collections.Counter(launch["counters"]) for launch in launches), collections.Counter())


def render(records: list[dict]) -> str:
    """Markdown: per case title, for each record holding it, a row per pass (its launches summed) and per launch."""
    titles = list(dict.fromkeys(case["title"] for record in records for case in record["cases"]))
    lines = []
    for title in titles:
        lines += [f"**{title}**", "", HEADER]
        for record in records:
            build = f"{record['label']} ({record['commit']}, {record['date']})"
            for case in (case for case in record["cases"] if case["title"] == title):
                for p in case["passes"]:
                    count = len(p["launches"])
                    lines.append(_row(build, f"**{p['pass']}**", f"{count} launch{'es' if count > 1 else ''}",
                                      _sum(p["launches"]), p["useful_flops"], p["compulsory_bytes"]))
                    for launch in p["launches"]:
                        c = launch["counters"]
                        shape = f"{c['blocks']} × {c['threads'] // c['blocks']}, {launch['shared_bytes'] / 1024:.1f}"
                        lines.append(_row(build, f"{p['pass']}: `{launch['kernel']}`", shape, c))
        lines.append("")
    return "\n".join(lines)


def replace_block(text: str, table: str, doc: Path = DOC, start: str = START, end: str = END) -> str:
    """doc's text with its start ... end block holding table; exits when the markers are missing."""
    if start not in text or end not in text:
        sys.exit(f"{doc.relative_to(ROOT)} has no {start} ... {end} block to hold the generated table")
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{table}{end}{rest.split(end, 1)[1]}"


def saved_records(results_dir: Path = RESULTS_DIR) -> list[dict]:
    """The saved measurements, oldest first (by date, then by when their commits were made)."""
    records = [json.loads(p.read_text()) for p in sorted(results_dir.glob("executor-counters-*.json"))]
    return sorted(records, key=lambda record: (record["date"], _commit_time(record["commit"])))


def _commit_time(commit: str) -> str:
    """The commit's ISO time, or '' where this checkout does not hold it."""
    out = subprocess.run(["git", "show", "-s", "--format=%cI", commit.removesuffix("-dirty")], cwd=ROOT,
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", help="measure this build's kernels and save them under this name (e.g. wmma)")
    args = parser.parse_args(argv)
    if args.label:
        path = RESULTS_DIR / f"executor-counters-{args.label}.json"
        path.write_text(json.dumps(measure(args.label), indent=1) + "\n")
        print(f"executor_counters: wrote {path.relative_to(ROOT)}")
    records = saved_records()
    if not records:
        sys.exit(f"executor_counters: no saved measurements in {RESULTS_DIR}; run with --label NAME first")
    DOC.write_text(replace_block(DOC.read_text(), render(records)))
    print(f"executor_counters: rewrote the table in {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
