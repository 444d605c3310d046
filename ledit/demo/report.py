"""The demo's results tables (markdown and json) and the conclusion drawn from them, whatever they show."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

from ledit.demo.detect import CORRUPTION_DESCRIPTION
from ledit.files import atomic_path

REAL_ROW = "real"
FOCUS = "ledit"  # the model the conclusion is about
TOLERANCE = 0.15  # "keeps" a training-size score when within this fraction of it


@dataclass(frozen=True)
class Metric:
    key: str
    title: str  # the table's heading
    value: Callable[[dict, str], float]  # (row, size) -> the number
    digits: int
    # How good a value is, larger is better, given the real images' value at that size.
    goodness: Callable[[float, float], float]

    def text(self, value: float) -> str:
        """The value as the tables print it; values that print the same are tied everywhere (bold, conclusion,
        rankings)."""
        return f"{value:.{self.digits}f}"

    def printed(self, row: dict, size: str) -> str:
        return self.text(self.value(row, size))


METRICS = (
    Metric(
        "shape_precision",
        "Shape precision: the fraction of whole objects drawn with the right shape and size (higher is better; "
        "real images score about 1)",
        lambda row, size: row["objects"][size]["shape_precision"],
        2,
        lambda value, real: value,
    ),
    Metric(
        "density",
        "Object density: objects per 32x32 pixels (closest to the real images' is best)",
        lambda row, size: row["objects"][size]["density"],
        2,
        lambda value, real: -abs(math.log(max(value, 1e-6) / real)),
    ),
    Metric(
        "swd",
        "SWD x1e3: sliced Wasserstein distance on Laplacian-pyramid patches (lower is better; compare within a "
        "column only)",
        lambda row, size: row["swd"][size]["mean"],
        1,
        lambda value, real: -value,
    ),
)
METRIC = {metric.key: metric for metric in METRICS}


def _real(results: dict, metric: Metric, size: str) -> float:
    """The real images' value at ``size``: the large reference set for density, the held-out set otherwise."""
    if metric.key == "density":
        return results["reference_objects"][size]["density"]
    return metric.value(next(row for row in results["rows"] if row["key"] == REAL_ROW), size)


def _models(results: dict) -> list[dict]:
    return [row for row in results["rows"] if row["key"] != REAL_ROW]


def _best(results: dict, metric: Metric, size: str) -> dict:
    real = _real(results, metric, size)
    return max(_models(results), key=lambda row: metric.goodness(metric.value(row, size), real))


def _title(size: str, train_size: str) -> str:
    return f"{size} (train)" if size == train_size else size


def metric_table(results: dict, metric: Metric) -> str:
    """One row per model (the held-out real images first), one column per size; the best model per column in
    bold (ties all bold)."""
    sizes, train_size = results["sizes"], results["train_size"]
    lines = ["| model | " + " | ".join(_title(size, train_size) for size in sizes) + " |",
             "|---|" + "---:|" * len(sizes)]
    best = {size: metric.printed(_best(results, metric, size), size) for size in sizes if _models(results)}
    if metric.key == "density":
        reference = " | ".join(metric.text(results["reference_objects"][size]["density"]) for size in sizes)
        lines.append(f"| real images ({results['config']['real_images']} per size) | {reference} |")
    for row in results["rows"]:
        cells = []
        for size in sizes:
            text = metric.printed(row, size)
            cells.append(f"**{text}**" if row["key"] != REAL_ROW and best[size] == text else text)
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detector_table(results: dict) -> str:
    """Shape precision and density of the held-out real images as they are and spoilt (detect.corrupt)."""
    sizes = results["sizes"]
    real = next(row for row in results["rows"] if row["key"] == REAL_ROW)["objects"]
    lines = ["| real images | " + " | ".join(sizes) + " |", "|---|" + "---:|" * len(sizes)]
    for name, objects in [("as drawn", real), *results["detector_check"].items()]:
        cells = [f"{objects[size]['shape_precision']:.2f} ({objects[size]['density']:.2f})" for size in sizes]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_tables(results: dict) -> str:
    return "\n\n".join(f"{metric.title}:\n\n{metric_table(results, metric)}" for metric in METRICS)


def _change(value: float, reference: float) -> str:
    return f"{100 * (value / reference - 1):+.0f}%" if reference else "n/a"


def _keeps(value: float, reference: float) -> bool:
    return reference > 0 and abs(value / reference - 1) <= TOLERANCE


def conclusion(results: dict, focus: str = FOCUS) -> str:
    """Plain sentences stating what the tables show: how close ``focus`` (LEDiT) comes to the real images at the
    training size, whether it keeps its shape precision and density above it, how each baseline fails, and every
    column a baseline wins."""
    sizes, train_size = results["sizes"], results["train_size"]
    models = _models(results)
    if not models:
        return "No model was run."
    shape, density, swd = METRIC["shape_precision"], METRIC["density"], METRIC["swd"]

    def relative_density(row, size):
        return density.value(row, size) / _real(results, density, size)

    sentences = []
    mine = next((row for row in models if row["key"] == focus), None)
    if mine is not None and train_size in sizes:
        ratio = shape.value(mine, train_size) / max(_real(results, shape, train_size), 1e-6)
        sentences.append(
            f"At the training size {train_size}, {mine['label']} draws {shape.value(mine, train_size):.0%} of its "
            f"whole objects right, {ratio:.2f}x the real images' {_real(results, shape, train_size):.0%}, at "
            f"{relative_density(mine, train_size):.2f}x their density."
        )
        drawn = shape.value(mine, train_size) > 0
        if not drawn:
            sentences.append(f"It draws no whole object right at {train_size}, so above it only its density can be "
                             "kept or lost.")
        for size in sizes:
            if size == train_size:
                continue
            kept_shape = not drawn or _keeps(shape.value(mine, size), shape.value(mine, train_size))
            kept_density = _keeps(relative_density(mine, size), relative_density(mine, train_size))
            kept_all = "keeps both" if drawn else "keeps its density"
            verdict = kept_all if kept_shape and kept_density else "does NOT keep " + " and ".join(
                name for name, kept in (("its shape precision", kept_shape), ("its density", kept_density)) if not kept
            )
            sentences.append(
                f"At {size} {mine['label']} {verdict} (within {TOLERANCE:.0%} of {train_size}): shape precision "
                f"{shape.value(mine, size):.2f} ({_change(shape.value(mine, size), shape.value(mine, train_size))}), "
                f"density {relative_density(mine, size):.2f}x real "
                f"({_change(relative_density(mine, size), relative_density(mine, train_size))})."
            )
    for row in models:
        if row is mine:
            continue
        failures = []
        for size in sizes:
            if size == train_size:
                continue
            notes = []
            if shape.value(row, train_size) > 0 and not _keeps(shape.value(row, size), shape.value(row, train_size)):
                notes.append(f"shape precision {shape.value(row, size):.2f} (vs {shape.value(row, train_size):.2f})")
            if relative_density(row, size) > 1 + TOLERANCE:
                notes.append(f"{relative_density(row, size):.2f}x the real density (too many objects)")
            elif relative_density(row, size) < 1 - TOLERANCE:
                notes.append(f"{relative_density(row, size):.2f}x the real density (too few objects)")
            if notes:
                failures.append(f"at {size} " + ", ".join(notes))
        sentences.append(
            f"{row['label']}: " + ("; ".join(failures) if failures else "keeps its training-size shape precision and "
                                   "density at every size") + "."
        )
    if mine is not None:
        lost, tied = [], []
        for metric in (shape, density, swd):
            for size in sizes:
                best = _best(results, metric, size)
                text = metric.printed(mine, size)
                # As the tables print (and bold) them: a lead that does not show in the printed digits is a tie.
                if metric.printed(best, size) != text:
                    lost.append(f"{metric.key} at {size} ({best['label']} {metric.printed(best, size)} vs {text})")
                elif any(row is not mine and metric.printed(row, size) == text for row in models):
                    tied.append(f"{metric.key} at {size} ({text})")
        sentences.append(
            f"Columns a baseline wins: {'; '.join(lost)}." if lost
            else f"{mine['label']} is best{' or tied' if tied else ''} in every column of every table."
        )
        if tied:
            sentences.append(f"Columns tied with a baseline: {'; '.join(tied)}.")
    return "\n".join(sentences)


def write_results(json_path: str, markdown_path: str, results: dict) -> None:
    """results.json (everything) and results.md (the command, the tables, the conclusion, the timings)."""
    timings, config = results["timings_s"], results["config"]
    markdown = "\n".join(
        [
            "# ledit demo results",
            "",
            f"Command: `{results['command']}`",
            "",
            (
                f"{config['num_samples']} samples per model and size, the same starting noise and classes for every "
                f"model; SWD against {config['real_images']} fresh procedural images per size. Models trained at "
                f"{results['train_size']}."
            ),
            "",
            markdown_tables(results),
            "",
            results["conclusion"],
            "",
            "Detector check: shape precision (density) of the held-out real images as drawn and spoilt the ways a "
            f"model spoils them ({CORRUPTION_DESCRIPTION}):",
            "",
            detector_table(results),
            "",
            (
                f"Time: {timings['total']:.0f} s in all ({timings['training_and_sampling']:.0f} s training and "
                f"sampling, {config['jobs']} models at a time, and {timings['scoring']:.0f} s scoring, each model's "
                f"samples as they came in; "
                f"{timings['cpu']:.0f} CPU seconds) on {results['machine']}."
            ),
            "",
        ]
    )
    with atomic_path(json_path) as temporary:
        temporary.write_text(json.dumps(results, indent=1) + "\n")
    with atomic_path(markdown_path) as temporary:
        temporary.write_text(markdown)
