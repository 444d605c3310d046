"""Results files: ``benchmarks/results/<device>-<date>[-quick].{json,md,png}``, each written atomically."""

from __future__ import annotations

from pathlib import Path

from ledit.bench.environment import device_slug
from ledit.bench.plot import plot_results, plot_unavailable_reason
from ledit.bench.records import case_label
from ledit.files import atomic_path, write_json_atomic

SUITE_TITLES = {"scan_attention": "scan_attention", "dwconv_modulate": "dwconv_modulate",
                "packed_ops": "Packed sequences (ops)", "end_to_end": "End to end"}


def results_stem(result: dict) -> str:
    suffix = "-quick" if result["mode"] == "quick" else ""
    return f"{device_slug(result['device'])}-{result['date'][:10]}{suffix}"


def write_results(result: dict, out_dir: Path) -> dict[str, Path]:
    """Write the JSON, the plot and the Markdown of one run, in that order, and return the paths written. The
    measurements are saved first: a plot that cannot be drawn (no matplotlib, or any error drawing it) costs only
    the plot, and ``result["plot_error"]`` and the Markdown say why there is none."""
    stem = Path(out_dir) / results_stem(result)
    paths = {"json": stem.with_suffix(".json"), "md": stem.with_suffix(".md"), "png": stem.with_suffix(".png")}
    write_json_atomic(paths["json"], result)
    result["plot_error"] = plot_unavailable_reason()
    if result["plot_error"] is None:
        try:
            plot_results(result, paths["png"])
        except Exception as error:  # noqa: BLE001 - the measurements are saved; only the picture is lost
            result["plot_error"] = f"drawing it failed ({type(error).__name__}: {error})"
    if result["plot_error"] is not None:
        del paths["png"]
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(render_markdown(result, paths.get("png") and paths["png"].name))
    return paths


def format_ms(ms: float) -> str:
    """A duration for people: '0.412 ms', '85.3 ms', '1.19 s'."""
    return f"{ms / 1e3:.3g} s" if ms >= 1e3 else f"{ms:.3g} ms"


def _ms(entry: dict | None) -> str:
    if entry is None:
        return "—"
    if "error" in entry:
        return "failed"
    return format_ms(entry["median_ms"])


def _rate(entry: dict | None) -> str:
    if not entry or "median_ms" not in entry:
        return "—"
    for key, unit in (("tflops", "TFLOP/s"), ("gbps", "GB/s"), ("samples_per_s", "samples/s")):
        if key in entry:
            return f"{entry[key]:.3g} {unit}"
    return "—"


def suite_table(records: list[dict]) -> list[str]:
    """One row per (shape, pass, ledit method): the baselines' median ms, the method's ms, rate and speedups."""
    baselines = list(dict.fromkeys(b for r in records for b in r["baselines"]))
    head = ["shape", "pass", *baselines, "ledit", "time", "rate", *[f"× vs {b}" for b in baselines]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        shared = [case_label(r["suite"], r["case"]), r["pass"], *[_ms(r["methods"].get(b)) for b in baselines]]
        ours = [m for m, e in r["methods"].items() if e["role"] == "ledit"] or [None]
        for method in ours:
            entry = r["methods"].get(method)
            speedups = [f"{r['speedups'][b][method]:.2f}" if method in r["speedups"].get(b, {}) else "—"
                        for b in baselines]
            row = [*shared, method or "none ran", _ms(entry), _rate(entry), *speedups]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def targets_table(targets: list[dict]) -> list[str]:
    lines = ["| issue | target | measured | status |", "|---|---|---|---|"]
    for t in targets:
        value = "—" if t["value"] is None else f"{t['value']:.3g} ({t['comparison']} {t['threshold']:g})"
        status = t["status"] if t["status"] != "not measured" else f"not measured: {t['detail']}"
        lines.append(f"| #{t['issue']} | {t['target']} | {value} | {status} |")
    return lines


def cpu_threads_label(device: dict) -> str:
    """"AVX2, 2 cores, 1 torch thread": what a CPU timing ran on (results written before the ISA was recorded
    leave it out)."""
    threads = device.get("torch_threads", "?")
    isa = f"{device['vector_isa']}, " if device.get("vector_isa") else ""
    return f"{isa}{device['cores']} cores, {threads} torch thread{'' if threads == 1 else 's'}"


def header_lines(result: dict) -> list[str]:
    device, v = result["device"], result["versions"]
    name = device["name"] + (f" ({cpu_threads_label(device)})" if device["kind"] == "cpu" else "")
    load = result.get("load_average")
    return [
        f"- Device: **{name}**",
        f"- Date: {result['date']}; mode: {result['mode']}; wall time {result['elapsed_s']:.0f} s",
        (f"- torch {v['torch']}, CUDA {v['cuda'] or 'none'}, Triton {v['triton'] or 'none'}, Python {v['python']}, "
        f"ledit {v['ledit']} ({v['git_commit'] or 'no git'}), ledit._C: {v['ledit_C']}"),
        f"- Command: `{result['command']}`",
        *([f"- Load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f}"] if load else []),
    ]


def render_markdown(result: dict, plot_name: str | None) -> str:
    """The Markdown report; without a plot (``plot_name`` None) it says why (``result["plot_error"]``)."""
    plot = f"![benchmark plot]({plot_name})" if plot_name else f"(no plot: {result.get('plot_error')})"
    lines = [f"# ledit benchmarks: {result['device']['name']}", "", *header_lines(result), "",
             ("Times are medians per call over interleaved repeats; × = baseline time / ledit time "
             "(> 1: ledit faster), for the fastest ledit backend of each row."), "",
             plot, "", "## Targets", "", *targets_table(result["targets"]), ""]
    for suite, title in SUITE_TITLES.items():
        records = [r for r in result["comparisons"] if r["suite"] == suite]
        if not records:
            continue
        lines += [f"## {title}", "", *suite_table(records), ""]
        notes = sorted({n for r in records for n in r["notes"]})
        lines += [f"- {n}" for n in notes] + ([""] if notes else [])
    profile = result.get("profile")
    if profile:
        case = profile["case"]
        lines += [(f"## Where one forward spends its time ({case['model']}, {case['image_size']}², "
                  f"{profile['backend']} backends, total {profile['total_ms']:.0f} ms)"), "",
                  "| bucket | ms | share |", "|---|---|---|"]
        lines += [f"| {b} | {e['ms']:.1f} | {e['share']:.1%} |" for b, e in profile["buckets"].items()]
        lines.append("")
    if result.get("errors"):
        lines += ["## Errors", ""] + [f"- {e}" for e in result["errors"]] + [""]
    return "\n".join(lines)
