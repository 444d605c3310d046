"""`ledit demo --addons` on models far too small to mean anything: the study's structure, that it trains
nothing, and its flags."""

import json

import pytest

from ledit.arguments import UsageError
from ledit.demo import addons, config, run
from ledit.demo.addons import LEDIT_TRIALS, NO_ADDON, ROPE_TRIALS, Trial, best_combination, combine
from ledit.sampling.addons import SamplingAddons

TINY = ["--threads", "1", "--train-size", "16", "--train-steps", "2", "--batch-size", "4", "--hidden-size", "16",
        "--num-heads", "2", "--depth", "2", "--num-samples", "2", "--sampling-steps", "2", "--real-images", "2",
        "--swd-descriptors", "4", "--swd-projections", "4", "--figure-samples", "1"]


def test_combine_and_best_combination():
    trials = LEDIT_TRIALS
    scores = {trial.key: 100.0 for trial in trials}
    scores.update({"shift": 90.0, "temp-fitv2": 95.0, "temp-none": 92.0, "lowres": 101.0})
    chosen = best_combination(trials, scores)
    assert [trial.key for trial in chosen] == ["shift", "temp-none"]  # one per group, only if it helped
    assert combine(chosen) == SamplingAddons(timestep_shift="auto",
                                             model_options={"temperature_full": "none", "temperature_causal": "none"})
    assert best_combination(trials, {trial.key: 100.0 for trial in trials}) == []
    both = [Trial("a", "", "x", SamplingAddons(model_options={"stem_dilation": 2})),
            Trial("b", "", "y", SamplingAddons(model_options={"temperature_until": 0.5}, lowres_renoise=0.7))]
    assert combine(both) == SamplingAddons(lowres_renoise=0.7,
                                           model_options={"stem_dilation": 2, "temperature_until": 0.5})


def test_addons_mode_trains_nothing_and_says_how_to_make_the_models(tmp_path, demo_args):
    with pytest.raises(UsageError, match=r"trains nothing.*ledit demo --models ledit,dit-rope"):
        run.main(demo_args(*TINY, "--addons", "--out-dir", str(tmp_path)))
    assert not list(tmp_path.rglob("*.pt"))


def test_addons_mode_on_cached_tiny_models(tmp_path, capsys, demo_args):
    out = tmp_path / "demo"
    settings = config.resolve_config(demo_args(*TINY, "--out-dir", str(out), "--models", "ledit,dit-rope"))
    for keys in run.weight_groups(run.parse_variants(settings.models)):
        run.train(settings, keys)  # the normal path makes the cache

    run.main(demo_args(*TINY, "--addons", "--out-dir", str(out)))
    printed = capsys.readouterr().out
    assert str(out / "addons.png") in printed
    results = json.loads((out / "addons.json").read_text())
    assert results["sizes"] == ["32x32", "48x48"]  # 2x and 3x the training size by default
    rope = results["rope_baseline"]
    assert rope in ("DiT 2D RoPE", "DiT 2D RoPE + YaRN")
    rows = results["rows"]
    assert rows[0]["trial"] == "real"
    by_model = {}
    for row in rows[1:]:
        by_model.setdefault(row["model"], []).append(row["trial"])
    sizes = results["sizes"]
    combos = [f"best@{size}" for size in sizes]
    assert by_model["LEDiT"] == [trial.key for trial in LEDIT_TRIALS] + combos
    assert by_model[rope] == [trial.key for trial in ROPE_TRIALS] + combos
    assert len(by_model) == 3  # and the weaker RoPE form's plain row
    for row in rows:
        expected = [row["trial"][len("best@"):]] if row["trial"].startswith("best@") else sizes
        assert list(row["swd"]) == expected
    markdown = (out / "addons.md").read_text()
    assert results["table"] in markdown and results["conclusion"] in markdown
    assert f"LEDiT at {sizes[0]}: no add-on" in results["conclusion"]
    assert (out / "addons.png").stat().st_size > 0
    assert not list((out / "checkpoints").glob("*.tmp*"))


def test_addon_flags_in_the_demo(demo_args):
    with pytest.raises(ValueError, match="--addons scores its own set"):
        config.resolve_config(demo_args(*TINY, "--addons", "--timestep-shift", "auto"))
    with pytest.raises(ValueError, match="need classifier-free guidance"):
        config.resolve_config(demo_args(*TINY, "--guidance-interval", "0.1,0.5"))
    settings = config.resolve_config(demo_args(*TINY, "--timestep-shift", "auto", "--temperature-full", "lumina"))
    assert settings.addons == SamplingAddons(timestep_shift="auto", model_options={"temperature_full": "lumina"})
    assert settings.sizes == config.FULL.sizes
    assert config.resolve_config(demo_args(*TINY, "--addons")).sizes == ("32x32", "48x48")
    assert config.default_addon_sizes(32) == ("64x64", "96x96")
    assert NO_ADDON == LEDIT_TRIALS[0].key == ROPE_TRIALS[0].key


def test_reading_names_what_helped_what_did_not_and_a_combination_that_loses():
    def row(trial, value, **extra):
        return {"model": "M", "trial": trial, "label": trial, "swd": {"64x64": {"mean": value}},
                "objects": {"64x64": {"shape_precision": value / 200}}, **extra}

    rows = [row(NO_ADDON, 100.0), row("shift", 99.0), row("lowres", 80.0), row("stem-dilation", 120.0),
            row("best@64x64", 85.0, combination=["shift", "lowres"])]
    text = addons.conclusion(rows, ["64x64"])
    assert text.startswith("M at 64x64: no add-on 100.0; helped: lowres 80.0 (-20.0%), shift 99.0 (-1.0%); "
                           "did not help: stem-dilation 120.0 (+20.0%); the helpful ones combined (shift + lowres): "
                           "85.0, worse than lowres alone.")
    table = addons.markdown_table(rows, ["64x64"])
    assert "| M | lowres | **80.0 (-20.0%) · 0.40** |" in table and "| M | none | 100.0 · 0.50 |" in table
