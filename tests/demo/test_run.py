"""End-to-end `ledit demo` on a configuration far too small to mean anything: checks the files, the table's
structure, the cache and reproducibility, never the quality."""

import json

import pytest
from PIL import Image

from ledit import cli
from ledit.arguments import UsageError
from ledit.demo import run

TINY = [
    "--quick",
    "--threads",
    "1",
    "--train-steps",
    "2",
    "--batch-size",
    "4",
    "--hidden-size",
    "32",
    "--depth",
    "2",
    "--num-samples",
    "3",
    "--sampling-steps",
    "2",
    "--real-images",
    "4",
    "--sizes",
    "32x32,16x32",
    "--swd-descriptors",
    "8",
    "--swd-projections",
    "8",
]


def test_tiny_demo_writes_figure_and_tables_and_reuses_checkpoints(tmp_path, capsys, demo_args):
    out = tmp_path / "demo"
    run.main(demo_args(*TINY, "--jobs", "2", "--out-dir", str(out)))  # two worker processes
    printed = capsys.readouterr().out
    assert str(out / "demo.png") in printed and str(out / "results.md") in printed

    results = json.loads((out / "results.json").read_text())
    assert results["sizes"] == ["32x32", "16x32"] and results["train_size"] == "32x32"
    keys = [row["key"] for row in results["rows"]]
    assert keys == ["real", "ledit", "dit-rope", "dit-rope-yarn", "dit-sincos"]
    for row in results["rows"]:
        assert list(row["swd"]) == ["32x32", "16x32"]
        assert list(row["swd"]["32x32"]) == ["32x32", "16x16", "mean"]
        assert list(row["swd"]["16x32"]) == ["16x32", "mean"]
        assert set(row["objects"]["16x32"]) >= {"shape_precision", "density", "objects", "whole_objects"}
    real = results["rows"][0]["objects"]
    # Every whole real object matches (a 16-pixel-high canvas holds no whole object of 12-16 px: 0 of 0 there).
    assert real["32x32"]["whole_objects"] > 0
    assert all(real[size]["matched"] == real[size]["whole_objects"] for size in results["sizes"])
    assert set(results["detector_check"]) == {"blurred", "cut", "stretched"}
    assert set(results["reference_objects"]) == {"32x32", "16x32"}
    # The YaRN variant is the RoPE model's weights sampled differently: one checkpoint, three trained models.
    assert len(results["training"]) == 3
    assert not any(entry["cached"] for entry in results["training"].values())
    assert results["timings_s"]["cpu"] > 0
    by_key = {row["key"]: row for row in results["rows"]}
    assert by_key["dit-rope-yarn"]["model_config"]["rope_method"] == "yarn"
    assert by_key["dit-rope"]["model_config"]["rope_method"] == "none"

    table = (out / "results.md").read_text()
    assert "| model | 32x32 (train) | 16x32 |" in table and "Shape precision" in table and "Detector check" in table
    assert results["conclusion"] in table
    assert results["command"].startswith("ledit demo") and "--train-steps 2" in results["command"]

    figure = Image.open(out / "demo.png")
    assert figure.mode == "RGB" and figure.height > 5 * 2 * 32  # five rows of 2x-enlarged 32-pixel samples

    # A re-run in this process loads every checkpoint from the cache and reproduces the numbers exactly.
    run.main(demo_args(*TINY, "--jobs", "1", "--out-dir", str(out)))
    again = json.loads((out / "results.json").read_text())
    assert all(entry["cached"] for entry in again["training"].values())
    assert [row["swd"] for row in again["rows"]] == [row["swd"] for row in results["rows"]]
    assert [row["objects"] for row in again["rows"]] == [row["objects"] for row in results["rows"]]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "ledit,unet"], "--models: unknown"),
        (["--sizes", "32x30"], "not divisible by --patch-size 4"),
        (["--sizes", "big"], "bad size 'big'"),
        (["--sizes", "32x32,8x32"], "8x32 is below 16 pixels"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--jobs", "0"], "--jobs must be >= 1"),
        (["--train-steps", "0"], "--train-steps must be >= 1"),
        (["--hidden-size", "60"], "--hidden-size / --num-heads"),
        (["--figure-samples", "99"], "--figure-samples 99 exceeds"),
        (["--timestep-shift", "-1"], "--timestep-shift must be 'auto'"),
        (["--guidance-interval", "0.1,0.5"], "need classifier-free guidance"),
        (["--models", "ledit", "--rope-dynamic", "dy-ntk"],
         "--rope-dynamic dy-ntk: rope_dynamic='dy-ntk' needs a RoPE"),
        (["--models", "dit-rope", "--stem-dilation", "2"], "--stem-dilation 2: stem_dilation=2 re-dilates"),
    ],
)
def test_bad_flags_raise_a_usage_error_naming_the_flag(argv, message, tmp_path):
    with pytest.raises(UsageError, match=message):
        cli.run(["demo", "--out-dir", str(tmp_path), *argv])
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_ledit_command_reports_a_bad_setting_in_one_line_with_status_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--out-dir", str(tmp_path), "--jobs", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "ledit demo: error: --jobs must be >= 1, got 0\n"
    assert not any(tmp_path.iterdir())
