"""The demo's results table (markdown and json) and the conclusion drawn from it, whatever it shows."""

from __future__ import annotations

import json

from ledit.files import atomic_path

REAL_ROW = "real"


def _mean(row: dict, size: str) -> float:
    return row["swd"][size]["mean"]


def markdown_table(rows: list[dict], sizes: list[str], train_size: str) -> str:
    """Rows = [{"key", "label", "swd": {size: {level: x, "mean": x}}}]; one column per size with the mean SWD
    x1e3; the best model in each column (the real-image row aside) in bold."""
    titles = [f"{size} (train)" if size == train_size else size for size in sizes]
    lines = ["| model | " + " | ".join(titles) + " |", "|---|" + "---:|" * len(sizes)]
    models = [row for row in rows if row["key"] != REAL_ROW]
    best = {size: min(_mean(row, size) for row in models) for size in sizes} if models else {}
    for row in rows:
        cells = []
        for size in sizes:
            text = f"{_mean(row, size):.1f}"
            cells.append(f"**{text}**" if row["key"] != REAL_ROW and _mean(row, size) == best[size] else text)
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _largest(sizes: list[str]) -> str:
    def area(size: str) -> int:
        height, width = (int(part) for part in size.split("x"))
        return height * width

    return max(sizes, key=area)


def conclusion(rows: list[dict], sizes: list[str], train_size: str, focus: str = "ledit") -> str:
    """Plain sentences stating what the table shows: the best model at each size, and whether ``focus`` (LEDiT)
    beats every other model at the largest size, with the numbers."""
    models = [row for row in rows if row["key"] != REAL_ROW]
    real = next((row for row in rows if row["key"] == REAL_ROW), None)
    if not models:
        return "No model was run."
    sentences = []
    for size in sizes:
        ranked = sorted(models, key=lambda row: _mean(row, size))
        where = f"At {size} (the training size)" if size == train_size else f"At {size}"
        order = " < ".join(f"{row['label']} {_mean(row, size):.1f}" for row in ranked)
        floor = f"; two real-image sets differ by {_mean(real, size):.1f}" if real else ""
        sentences.append(f"{where}, mean SWD x1e3 (lower is better): {order}{floor}.")

    largest = _largest(sizes)
    focus_row = next((row for row in models if row["key"] == focus), None)
    others = [row for row in models if row["key"] != focus]
    if focus_row is not None and others and largest != train_size:
        best_other = min(others, key=lambda row: _mean(row, largest))
        mine, theirs = _mean(focus_row, largest), _mean(best_other, largest)
        if mine < theirs:
            verdict = (
                f"{focus_row['label']} beats every baseline at {largest}: {mine:.1f} against {theirs:.1f} "
                f"for the best baseline, {best_other['label']} ({100 * (1 - mine / theirs):.0f}% lower)."
            )
        else:
            verdict = (
                f"{focus_row['label']} does NOT beat the best baseline at {largest}: {mine:.1f} against "
                f"{theirs:.1f} for {best_other['label']}."
            )
        sentences.append(verdict)
    sentences.append(
        "Compare models within a column: each size has its own pyramid levels and its own "
        "real-image floor, so numbers in different columns are not on one scale."
    )
    return "\n".join(sentences)


def write_results(json_path: str, markdown_path: str, results: dict) -> None:
    """results.json (everything) and results.md (the command, the table, the conclusion, the timings)."""
    table = markdown_table(results["rows"], results["sizes"], results["train_size"])
    timings = results["timings_s"]
    markdown = "\n".join(
        [
            "# ledit demo results",
            "",
            f"Command: `{results['command']}`",
            "",
            (
                f"Mean sliced Wasserstein distance x1e3 (Laplacian-pyramid 7x7 patches, Karras et al. 2018) between "
                f"{results['config']['num_samples']} samples per model and {results['config']['real_images']} "
                f"fresh procedural images at each size; lower is better. Models trained at {results['train_size']}."
            ),
            "",
            table,
            "",
            results["conclusion"],
            "",
            (
                f"Time: {timings['total']:.0f} s in all ({timings['training']:.0f} s training, "
                f"{timings['sampling']:.0f} s sampling, {timings['scoring']:.0f} s scoring) on {results['machine']}."
            ),
            "",
        ]
    )
    with atomic_path(json_path) as temporary:
        temporary.write_text(json.dumps(results, indent=1) + "\n")
    with atomic_path(markdown_path) as temporary:
        temporary.write_text(markdown)
