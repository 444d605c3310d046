"""One PNG per run: speedups over the main baseline of each suite, per shape and ledit method."""

from __future__ import annotations

from pathlib import Path

from ledit.bench.records import case_label
from ledit.files import atomic_path
from ledit.runtime import missing_packages

# The baseline each panel divides by, per suite and pass.
PANELS = (
    ("scan_attention", "fwd", "sdpa_bool_mask", "scan_attention forward"),
    ("scan_attention", "fwd+bwd", "sdpa_bool_mask", "scan_attention forward+backward"),
    ("dwconv_modulate", None, "unfused_eager", "dwconv_modulate"),
    ("packed_ops", None, "uniform", "packed ops vs an equal-token batch of one size"),
    ("end_to_end", None, "ledit_reference", "end to end"),
)


def _bars(records: list[dict], pass_name, baseline: str):
    """(labels, {method: speedups}) for the records of one panel."""
    rows = [r for r in records if (pass_name is None or r["pass"] == pass_name) and baseline in r["speedups"]]
    labels, series = [], {}
    for i, r in enumerate(rows):
        label = case_label(r["suite"], r["case"])
        labels.append(label if pass_name else f"{label} {r['pass']}")
        for method, value in r["speedups"][baseline].items():
            series.setdefault(method, [float("nan")] * len(rows))[i] = value
    return labels, series


def plot_unavailable_reason() -> str | None:
    """Why no plot can be drawn here (matplotlib, the bench extra, is not installed), or None."""
    if missing_packages("matplotlib"):
        return "matplotlib is not installed (pip install 'ledit[bench]' or pip install matplotlib)"
    return None


def plot_results(result: dict, path: Path) -> None:
    import matplotlib  # optional (ledit[bench]): plot_unavailable_reason says when it is missing

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(p, _bars([r for r in result["comparisons"] if r["suite"] == p[0]], p[1], p[2])) for p in PANELS]
    panels = [(p, bars) for p, bars in panels if bars[0]]
    fig, axes = plt.subplots(len(panels) or 1, 1, figsize=(11, 2.2 + 0.28 * sum(len(b[0]) for _, b in panels)),
                             squeeze=False)
    for ax, ((_, _, baseline, title), (labels, series)) in zip(axes[:, 0], panels):
        height = 0.8 / max(len(series), 1)
        for j, (method, values) in enumerate(series.items()):
            ax.barh([i + j * height for i in range(len(labels))], values, height=height, label=method)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks([i + height * (len(series) - 1) / 2 for i in range(len(labels))], labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"speedup over {baseline} (> 1: faster)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no ledit backend was timed against a baseline", ha="center", va="center")
        axes[0, 0].set_axis_off()
    fig.suptitle(f"ledit on {result['device']['name']} ({result['date'][:10]}, {result['mode']})", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
