"""Structure of ``ledit bench --quick`` output: every suite, baseline, ratio, target and file is there.

The suites' plans are swapped for tiny shapes so the whole pipeline (timing, records, targets, Markdown, plot)
runs in seconds; no assertion is about how fast anything is.
"""

import json

import pytest
import torch

from ledit.arguments import UsageError
from ledit.bench import attention, cli, dwconv, end_to_end, packed, packed_ops
from ledit.bench.environment import device_slug
from ledit.bench.targets import MET, MISSED, NOT_MEASURED, TARGETS
from ledit.cli import run as ledit_run


def tiny_run(out_dir, device: str):
    """``ledit bench --quick`` on ``device`` with the suites' plans swapped for tiny shapes: (result, files)."""
    fp32 = torch.float32
    low = torch.bfloat16 if device == "cuda" else fp32  # the GPU kernels' dtype
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attention, "plan", lambda device, quick: [
            attention.AttentionCase((3, 5), 72, "corner", 1, low, heads=2, flex=True),
            attention.AttentionCase((2, 3), 72, "raster", 1, low, heads=2, passes=("fwd",), flex=False),
        ])
        patch.setattr(dwconv, "plan", lambda device, quick: [dwconv.DwconvCase(1, (3, 4), 8, low)])
        patch.setattr(packed_ops, "plan", lambda device, quick: [
            packed_ops.PackedCase(op, ((2, 3), (1, 4), (5, 2)), low, uniform_grid=(2, 2))
            for op in ("scan_attention", "dwconv_modulate")])
        patch.setattr(end_to_end, "plan", lambda device, quick: [
            end_to_end.ModelCase(end_to_end.TRAIN_STEP, "LEDiT-S/8", 128, 1, fp32, False),
            end_to_end.ModelCase(end_to_end.SAMPLING_STEP, "LEDiT-S/8", 128, 1, fp32, False),
        ])
        patch.setattr(packed, "plan", lambda device, quick: [
            packed.PackedCase("LEDiT-S/8", ((2, 2), (1, 3), (3, 1), (1, 1), (1, 1)), ((2, 3), (2, 3)))])
        threads = torch.get_num_threads()
        try:
            ledit_run(["bench", "--quick", "--device", device, "--repeats", "2", "--threads", "1",
                        "--out-dir", str(out_dir)])
        finally:
            torch.set_num_threads(threads)
    files = sorted(out_dir.iterdir())
    result = json.loads(next(f for f in files if f.suffix == ".json").read_text())
    return result, files


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One tiny CPU run shared by the tests of this module."""
    return tiny_run(tmp_path_factory.mktemp("results"), "cpu")


def test_files_are_written_under_the_device_and_date(quick_run):
    result, files = quick_run
    stem = f"{device_slug(result['device'])}-{result['date'][:10]}-quick"
    assert [f.name for f in files] == [f"{stem}.json", f"{stem}.md", f"{stem}.png"]
    assert files[2].read_bytes().startswith(b"\x89PNG")
    markdown = files[1].read_text()
    for heading in ("## Targets", "## scan_attention", "## dwconv_modulate", "## Packed sequences (ops)",
                    "## End to end", "## Where one forward"):
        assert heading in markdown
    assert result["device"]["name"] in markdown


def test_result_records_where_the_numbers_came_from(quick_run):
    result, _ = quick_run
    assert result["mode"] == "quick" and result["schema"] == cli.SCHEMA_VERSION
    assert result["command"].startswith("ledit bench --quick --device cpu")
    assert "--threads 1" in result["command"] and result["device"]["torch_threads"] == 1
    assert result["device"]["kind"] == "cpu" and result["device"]["name"]
    assert result["versions"]["torch"] == torch.__version__
    assert set(result["backends"]) == {"scan_attention", "dwconv_modulate"}
    assert result["errors"] == []


def test_every_comparison_has_timings_and_ratios_to_each_timed_baseline(quick_run):
    result, _ = quick_run
    assert {r["suite"] for r in result["comparisons"]} == {"scan_attention", "dwconv_modulate", "packed_ops",
                                                           "end_to_end"}
    for record in result["comparisons"]:
        timed = {m for m, e in record["methods"].items() if "median_ms" in e}
        for name, entry in record["methods"].items():
            assert ("median_ms" in entry) != ("error" in entry), (name, entry)
        assert set(record["speedups"]) == {b for b in record["baselines"] if b in timed}
        ours = {m for m in timed if record["methods"][m]["role"] == "ledit"}
        for ratios in record["speedups"].values():
            assert set(ratios) == ours
            assert all(r > 0 for r in ratios.values())


def test_attention_is_compared_with_every_sdpa_flavour_and_flex(quick_run):
    result, _ = quick_run
    records = {(r["case"]["scan"], r["pass"]): r for r in result["comparisons"] if r["suite"] == "scan_attention"}
    assert set(records) == {("corner", "fwd"), ("corner", "fwd+bwd"), ("raster", "fwd")}
    corner = records[("corner", "fwd")]
    assert {"sdpa_bool_mask", "sdpa_unmasked", "flex_attention", "flex"} <= set(corner["methods"])
    assert corner["methods"]["flex"]["role"] == "baseline" and "median_ms" in corner["methods"]["flex"]
    assert "sdpa_is_causal" in records[("raster", "fwd")]["methods"]
    assert corner["case"]["visible_pairs"] == 15 * 15 - 3 * 10  # minus (row pairs) x (col pairs) with r' > r, c' > c
    assert all("tflops" in e for e in corner["methods"].values() if "median_ms" in e)
    assert "reference timed as the baseline sdpa_bool_mask" in corner["notes"]
    assert "flex timed as the baseline flex" in corner["notes"]


def test_dwconv_reports_bandwidth_against_clone_and_the_unfused_sequence(quick_run):
    result, _ = quick_run
    fwd = next(r for r in result["comparisons"] if r["suite"] == "dwconv_modulate" and r["pass"] == "fwd")
    assert fwd["baselines"] == ["unfused_eager", "unfused_compiled", "clone"]
    assert all("gbps" in e for e in fwd["methods"].values() if "median_ms" in e)


def test_packed_ops_are_compared_with_a_uniform_batch_and_padding(quick_run):
    result, _ = quick_run
    records = {(r["case"]["op"], r["pass"]): r for r in result["comparisons"] if r["suite"] == "packed_ops"}
    assert set(records) == {(op, p) for op in ("scan_attention", "dwconv_modulate") for p in ("fwd", "fwd+bwd")}
    attention_fwd = records[("scan_attention", "fwd")]
    assert attention_fwd["baselines"] == ["uniform", "padded", "padded_sdpa_mask"]
    assert records[("dwconv_modulate", "fwd")]["baselines"] == ["uniform", "padded"]
    assert attention_fwd["case"]["uniform"] == [5, 2, 2] and attention_fwd["case"]["tokens"] == 20
    assert attention_fwd["case"]["padded"] == [3, 5, 4] and attention_fwd["case"]["padded_tokens"] == 60
    assert all(set(r["speedups"]) == set(r["baselines"]) for r in records.values())
    assert any("runs the cpu backend" in note for note in attention_fwd["notes"])


def test_end_to_end_compares_ledit_with_reference_and_dit(quick_run):
    result, _ = quick_run
    records = [r for r in result["comparisons"] if r["suite"] == "end_to_end" and r["pass"] != packed.TASK]
    assert [r["pass"] for r in records] == ["train_step", "sampling_step"]
    for record in records:
        assert set(record["methods"]) == {"ledit", "ledit_reference", "dit_sdpa"}
        assert set(record["speedups"]) == {"ledit_reference", "dit_sdpa"}
    assert result["profile"]["buckets"] and sum(b["share"] for b in result["profile"]["buckets"].values()) > 0.99


def test_packed_training_is_compared_with_one_size_and_with_padding(quick_run):
    result, _ = quick_run
    (record,) = [r for r in result["comparisons"] if r["pass"] == packed.TASK]
    assert set(record["methods"]) == {"packed", "equal_tokens", "padded"}
    assert set(record["speedups"]) == {"equal_tokens", "padded"}
    tokens = {name: entry["tokens"] for name, entry in record["methods"].items()}
    assert tokens == {"packed": 12, "equal_tokens": 12, "padded": 5 * 3 * 3}
    assert all(entry["tokens_per_s"] > 0 for entry in record["methods"].values())


def test_every_target_is_reported_with_a_status(quick_run):
    result, _ = quick_run
    assert [t["name"] for t in result["targets"]] == [t.name for t in TARGETS]
    for target in result["targets"]:
        assert target["status"] in (MET, MISSED, NOT_MEASURED)
        if target["device_kind"] == "gpu":
            assert target["status"] == NOT_MEASURED and "gpu" in target["detail"]
    # The tiny shapes are not the targets' shapes, so no CPU target can claim a result.
    assert all(t["value"] is None for t in result["targets"])


def test_bad_suite_names_are_refused(tmp_path):
    with pytest.raises(UsageError, match="--suites.*unknown nope; choose a comma-separated subset of attention"):
        ledit_run(["bench", "--suites", "attention,nope", "--out-dir", str(tmp_path)])
    assert not any(tmp_path.iterdir())


@pytest.mark.gpu
def test_gpu_run_times_the_gpu_backends_and_reports_fractions_of_peak(tmp_path):
    result, files = tiny_run(tmp_path, "cuda")
    assert result["device"]["kind"] == "gpu" and len(files) == 3 and result["errors"] == []
    attention_fwd = next(r for r in result["comparisons"] if r["suite"] == "scan_attention" and r["pass"] == "fwd")
    timed = [m for m, e in attention_fwd["methods"].items() if e["role"] == "ledit" and "median_ms" in e]
    assert timed, attention_fwd["notes"]
    if result["device"]["peak_tflops_bf16"]:
        assert all("fraction_of_peak" in attention_fwd["methods"][m] for m in timed)
    gpu_targets = [t for t in result["targets"] if t["device_kind"] == "gpu"]
    assert all(t["detail"] != "needs a gpu run" for t in gpu_targets)


def test_without_matplotlib_the_measurements_are_written_and_the_plot_is_explained(quick_run, tmp_path,
                                                                                    monkeypatch, capsys):
    from ledit.bench import plot

    result, _ = quick_run
    monkeypatch.setattr(plot, "missing_packages", lambda *names: ["matplotlib"])
    monkeypatch.setattr(cli, "run_device", lambda device, args: dict(result))  # the measuring is not the point
    ledit_run(["bench", "--quick", "--device", "cpu", "--out-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert out.startswith("ledit bench: no plot: matplotlib is not installed (pip install 'ledit[bench]'")
    files = sorted(tmp_path.iterdir())
    assert [f.suffix for f in files] == [".json", ".md"]
    assert json.loads(files[0].read_text())["comparisons"] == result["comparisons"]
    markdown = files[1].read_text()
    assert "(no plot: matplotlib is not installed" in markdown and "![benchmark plot]" not in markdown
    assert "## scan_attention" in markdown


def test_a_plot_that_fails_to_draw_costs_only_the_plot(quick_run, tmp_path, monkeypatch):
    from ledit.bench import results

    def broken(result, path):
        raise RuntimeError("no display")

    monkeypatch.setattr(results, "plot_results", broken)
    paths = results.write_results(dict(quick_run[0]), tmp_path)
    assert sorted(paths) == ["json", "md"] and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in paths.values())
    assert "(no plot: drawing it failed (RuntimeError: no display))" in paths["md"].read_text()
