"""The benchmark's building blocks: the interleaved timer, the target checks and the README block generator."""

import json

import pytest
import torch

from ledit.bench.environment import device_info
from ledit.bench.readme import END, START
from ledit.bench.readme import main as readme_main
from ledit.bench.records import comparison
from ledit.bench.results import cpu_threads_label
from ledit.bench.targets import MET, MISSED, NOT_MEASURED, check_targets
from ledit.bench.timing import Effort, Timing, measure

CPU = torch.device("cpu")


def test_measure_times_every_method_and_reports_the_one_that_fails():
    calls = []

    def broken():
        raise RuntimeError("no kernel for this shape\nsecond line")

    timings = measure({"a": lambda: calls.append("a"), "broken": broken, "b": lambda: calls.append("b")},
                      CPU, Effort(repeats=4, min_repeats=1), min_sample_s=0.0)
    assert timings["broken"] == "RuntimeError: no kernel for this shape"
    for name in ("a", "b"):
        assert isinstance(timings[name], Timing) and timings[name].repeats == 4
        assert timings[name].min_ms <= timings[name].q1_ms <= timings[name].median_ms <= timings[name].q3_ms
    # one warmup call each, a calibration call that is already a whole sample (min_sample_s=0), then three
    # interleaved samples of one call
    assert calls.count("a") == calls.count("b") == 5


def test_measure_cuts_repeats_to_its_budget_but_not_below_the_floor():
    timings = measure({"slow": lambda: torch.ones(64, 64) @ torch.ones(64, 64)}, CPU,
                      Effort(repeats=50, min_repeats=3, budget_s=0.0))
    assert timings["slow"].repeats == 3
    with pytest.raises(ValueError, match="repeats"):
        measure({"x": lambda: None}, CPU, Effort(repeats=0))


def _record(suite, case, pass_name, times, baselines):
    timings = {m: (Timing(ms, ms, ms, ms, 3, 1) if isinstance(ms, float) else ms) for m, ms in times.items()}
    return comparison(suite, case, pass_name, timings, baselines, lambda name, ms: {})


def test_comparison_ratios_are_baseline_time_over_method_time():
    record = _record("dwconv_modulate", {}, "fwd", {"cpu": 2.0, "unfused_eager": 8.0, "clone": 1.0,
                                                    "unfused_compiled": "RuntimeError: compile failed"},
                     ["unfused_eager", "unfused_compiled", "clone"])
    assert record["speedups"] == {"unfused_eager": {"cpu": 4.0}, "clone": {"cpu": 0.5}}
    assert record["methods"]["unfused_compiled"] == {"role": "baseline", "error": "RuntimeError: compile failed"}


def test_targets_are_met_missed_or_not_measured_with_the_reason():
    corner = {"grid": [64, 64], "head_dim": 72, "scan": "corner"}
    dw = {"batch": 4, "grid": [32, 32], "channels": 1152, "dtype": "float32"}
    records = [
        _record("scan_attention", corner, "fwd", {"cpu": 100.0, "sdpa_bool_mask": 160.0}, ["sdpa_bool_mask"]),
        _record("dwconv_modulate", dw, "fwd", {"cpu": 5.0, "unfused_eager": 10.0, "unfused_compiled": 9.0},
                ["unfused_eager", "unfused_compiled"]),
    ]
    status = {t["name"]: t for t in check_targets(records, "cpu")}
    assert status["attention-cpu-vs-bool-mask"]["status"] == MET
    assert status["attention-cpu-vs-bool-mask"]["value"] == pytest.approx(1.6)
    assert status["dwconv-cpu-vs-eager"]["status"] == MISSED  # 2x < 3x
    assert status["dwconv-cpu-vs-compile"]["status"] == MET  # 1.8x >= 1.5x
    assert status["forward-cpu-1024"]["status"] == NOT_MEASURED
    assert status["forward-cpu-1024"]["detail"] == "shape not in this run"
    assert status["attention-h100-vs-flex"]["detail"] == "needs a gpu run"


def test_a_target_whose_backend_failed_says_why():
    corner = {"grid": [64, 64], "head_dim": 72, "scan": "corner"}
    records = [_record("scan_attention", corner, "fwd", {"cpu": "RuntimeError: boom", "sdpa_bool_mask": 1.0},
                       ["sdpa_bool_mask"])]
    target = next(t for t in check_targets(records, "cpu") if t["name"] == "attention-cpu-vs-bool-mask")
    assert target["status"] == NOT_MEASURED and "cpu failed: RuntimeError: boom" in target["detail"]


def test_cpu_results_name_the_vector_isa_the_kernels_ran_with():
    # The same CPU model comes with or without AVX-512 in a VM, and the CPU kernels block differently on each.
    device = device_info(torch.device("cpu"))
    assert device["vector_isa"] == torch.backends.cpu.get_cpu_capability()
    assert cpu_threads_label(device).startswith(f"{device['vector_isa']}, {device['cores']} cores, ")
    older = {key: value for key, value in device.items() if key != "vector_isa"}
    assert cpu_threads_label(older).startswith(f"{device['cores']} cores, ")


def _results_file(folder, kind, mode, date, records):
    device = {"kind": kind, "name": f"Test {kind}", "cores": 2, "torch_threads": 1}
    result = {"mode": mode, "date": date, "device": device,
              "versions": {"torch": "2.13.0"}, "comparisons": records, "targets": check_targets(records, kind)}
    path = folder / f"{kind}-{date}-{mode}.json"
    path.write_text(json.dumps(result))
    return path


def test_readme_block_comes_from_the_newest_full_results_and_says_gpu_is_pending(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    corner = {"grid": [32, 32], "head_dim": 72, "scan": "corner"}
    old = _record("scan_attention", corner, "fwd", {"cpu": 4.0, "sdpa_bool_mask": 6.0}, ["sdpa_bool_mask"])
    new = _record("scan_attention", corner, "fwd", {"cpu": 2.0, "sdpa_bool_mask": 6.0}, ["sdpa_bool_mask"])
    _results_file(results, "cpu", "full", "2026-01-01T00:00:00", [old])
    _results_file(results, "cpu", "full", "2026-02-01T00:00:00", [new])
    _results_file(results, "cpu", "quick", "2026-03-01T00:00:00", [old])  # newer, but only a quick run
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nintro\n\n{START}\nstale table\n{END}\n\n## after\n")

    assert readme_main(["--readme", str(readme), "--results-dir", str(results)]) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\nintro\n\n") and text.endswith(f"{END}\n\n## after\n")
    assert "stale table" not in text
    assert "`cpu` 2 ms | 3.00× vs SDPA bool mask" in text
    assert "GPU: numbers pending" in text
    assert "results/cpu-2026-02-01T00:00:00-full.md" in text


def test_readme_without_markers_is_an_error_and_left_alone(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# title\nno markers here\n")
    assert readme_main(["--readme", str(readme), "--results-dir", str(tmp_path)]) == 2
    assert readme.read_text() == "# title\nno markers here\n"
    assert START in capsys.readouterr().err


@pytest.mark.parametrize("quick", [True, False])
def test_the_gpu_plan_times_both_flexattention_baselines_on_every_mask(quick):
    """`ledit bench --device cuda` compares with `flex_attention` and the `flex` backend, forward and forward +
    backward, wherever there is a mask (for `full`, SDPA unmasked is the baseline), bf16, 16k tokens per call."""
    from ledit.bench.attention import plan
    from ledit.ops import SCANS

    cases = plan(torch.device("cuda"), quick)
    assert {case.scan for case in cases} == set(SCANS)
    assert all(case.flex == (case.scan != "full") and case.passes == ("fwd", "fwd+bwd") for case in cases)
    assert all(case.dtype == torch.bfloat16 and case.batch * case.tokens == 16384 for case in cases)
