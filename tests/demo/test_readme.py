"""The README generator: blocks rewritten from the runs' files, nothing written when anything is missing."""

import json

import pytest

from ledit.demo import readme
from ledit.demo.report import REAL_ROW

SIZES = ["32x32", "64x64"]


def _results(command, ledit_shape):
    def row(key, label, shape):
        return {"key": key, "label": label,
                "objects": {size: {"shape_precision": value, "density": 3.0} for size, value in zip(SIZES, shape)},
                "swd": {size: {"mean": 10.0 + i} for i, size in enumerate(SIZES)}}

    return {
        "command": command, "machine": "CPU", "sizes": SIZES, "train_size": "32x32",
        "config": {"real_images": 8, "jobs": 3}, "timings_s": {"total": 100.0, "cpu": 190.0},
        "reference_objects": {size: {"density": 3.0} for size in SIZES},
        "detector_check": {"blurred": {size: {"shape_precision": 0.1, "density": 3.0} for size in SIZES}},
        "rows": [row(REAL_ROW, "real images (held out)", [1.0, 1.0]), row("ledit", "LEDiT", ledit_shape),
                 row("dit-rope", "DiT 2D RoPE", [0.8, 0.2])],
        "conclusion": f"conclusion of {command}", "figure": command.split("--out-dir ")[1] + "/demo.png",
    }


def _addons(command):
    def row(model, trial, swd):
        return {"model": model, "trial": trial, "label": trial,
                "swd": {size: {"mean": swd} for size in SIZES},
                "objects": {size: {"shape_precision": 0.5} for size in SIZES}}

    return {"command": command, "machine": "CPU", "sizes": SIZES, "timings_s": {"total": 50.0},
            "figure": command.split("--out-dir ")[1] + "/addons.png",
            "rows": [row(REAL_ROW, REAL_ROW, 1.0), row("LEDiT", "none", 20.0), row("LEDiT", "shift", 15.0)]}


def _write_runs(root, runs):
    for name, flags in runs:
        folder = root / flags[flags.index("--out-dir") + 1]
        folder.mkdir(parents=True, exist_ok=True)
        if name == "addons":
            (folder / "addons.json").write_text(json.dumps(_addons(readme.command(flags))))
        else:
            shape = [0.9, 0.85] if name != "quick" else [0.7, 0.1]
            (folder / "results.json").write_text(json.dumps(_results(readme.command(flags), shape)))


@pytest.fixture
def repo(tmp_path):
    _write_runs(tmp_path, readme.RUNS)
    (tmp_path / "docs" / "demo.md").write_text("intro\n<!-- demo-results:start -->\nold\n<!-- demo-results:end -->\n")
    (tmp_path / "README.md").write_text("# x\n<!-- demo-results:start -->\n<!-- demo-results:end -->\ntext\n"
                                        "<!-- demo-addons:start -->\n<!-- demo-addons:end -->\n")
    return tmp_path


def test_blocks_are_rewritten_from_the_runs(repo):
    assert readme.main(["--root", str(repo)]) == 0
    text = (repo / "README.md").read_text()
    assert "Made by exactly `ledit demo --out-dir docs/demo` (seed 0): 100 s (190 CPU seconds)" in text
    assert "| LEDiT | 0.90 (1.00x) | 0.85 (1.00x) |" in text and text.startswith("# x\n") and "\ntext\n" in text
    assert "conclusion of ledit demo --out-dir docs/demo" in text
    assert "| LEDiT | shift | 15.0 (-25%) · 0.50 | 15.0 (-25%) · 0.50 |" in text
    # --quick flips LEDiT and RoPE at 32x32 shape precision: said, with the order.
    assert "shape_precision at 32x32 (dit-rope > ledit)" in text
    docs = (repo / "docs" / "demo.md").read_text()
    assert docs.startswith("intro\n") and "old" not in docs and "### Second seed: `ledit demo --seed 1" in docs
    assert readme.main(["--root", str(repo)]) == 0  # idempotent
    assert (repo / "README.md").read_text() == text


def test_nothing_is_written_when_a_run_or_a_marker_is_missing(repo, capsys):
    before = (repo / "docs" / "demo.md").read_text()
    (repo / "README.md").write_text("# no markers\n")
    assert readme.main(["--root", str(repo)]) == 2
    assert "has no demo-results block" in capsys.readouterr().err
    assert (repo / "docs" / "demo.md").read_text() == before
    (repo / "docs" / "demo" / "seed1" / "results.json").unlink()
    assert readme.main(["--root", str(repo)]) == 2
    assert "make it with `ledit demo --seed 1 --out-dir docs/demo/seed1`" in capsys.readouterr().err


def test_quick_only_shows_the_quick_preset_and_says_so(tmp_path):
    _write_runs(tmp_path, readme.QUICK_RUNS)  # no full run on disk
    (tmp_path / "docs" / "demo.md").write_text("<!-- demo-results:start -->\n<!-- demo-results:end -->\n")
    (tmp_path / "README.md").write_text("<!-- demo-results:start -->\n<!-- demo-results:end -->\n"
                                        "<!-- demo-addons:start -->\n<!-- demo-addons:end -->\n")
    assert readme.main(["--root", str(tmp_path)]) == 2  # the full runs are missing
    assert readme.main(["--root", str(tmp_path), "--quick-only"]) == 0
    text = (tmp_path / "README.md").read_text()
    assert "**Quick preset only.** These numbers come from `ledit demo --quick --out-dir docs/demo/quick`" in text
    assert "| LEDiT | 0.70 (1.00x) | 0.10 (1.00x) |" in text and "(docs/demo/quick/demo.png)" in text
    assert "Not yet scored on the current demo models: `ledit demo --addons --out-dir docs/demo` needs" in text
    docs = (tmp_path / "docs" / "demo.md").read_text()
    assert "**Quick preset only.**" in docs and "(demo/quick/demo.png)" in docs and "| as drawn |" in docs


def test_rankings_compare_places_and_a_tie_for_first_is_not_the_same_best_model():
    full = _results("ledit demo --out-dir a", [0.9, 0.85])  # LEDiT first in shape precision at both sizes
    tied = _results("ledit demo --out-dir b", [0.8, 0.2])  # LEDiT ties RoPE at both sizes
    assert readme.ranking(tied)["shape_precision at 32x32"] == ["ledit = dit-rope"]
    assert readme.ranking(full)["shape_precision at 64x64"] == ["ledit", "dit-rope"]
    # Density and SWD are equal for both models in these results (a tie everywhere): those columns match.
    assert readme.compare_rankings(full, full).startswith("the same best model in 6 of 6 columns, the same full "
                                                          "order in 6")
    text = readme.compare_rankings(full, tied)
    assert text.startswith("the same best model in 4 of 6 columns, the same full order in 4")
    assert "shape_precision at 64x64 (ledit = dit-rope)" in text
