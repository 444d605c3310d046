"""The demo's settings: one dataclass, two presets, flags generated from the fields."""

from dataclasses import fields, replace

import pytest

from ledit.demo import config
from ledit.demo.config import FULL, QUICK, DemoConfig


def test_no_flags_give_the_presets(demo_args, tmp_path):
    out = str(tmp_path / "out")
    full = config.resolve_config(demo_args("--out-dir", out))
    assert full == replace(FULL, out_dir=out, cache_dir=f"{out}/checkpoints")
    quick = config.resolve_config(demo_args("--quick", "--out-dir", out))
    assert quick == replace(QUICK, out_dir=out, cache_dir=f"{out}/checkpoints")
    assert quick.train_steps < full.train_steps and quick.num_samples < full.num_samples


def test_every_setting_is_a_flag_and_a_given_flag_beats_the_preset(demo_args):
    parser_fields = vars(demo_args())
    # addons and native_resolution are set by flags of their own (the add-on flags, --native-resolution).
    settings = [item.name for item in fields(DemoConfig) if item.name not in ("addons", "native_resolution")]
    assert all(name in parser_fields and parser_fields[name] is None for name in settings)
    resolved = config.resolve_config(demo_args("--quick", "--train-steps", "7", "--lr", "0.01", "--sizes", "48, 32x64"))
    assert (resolved.train_steps, resolved.lr, resolved.sizes) == (7, 0.01, ("48x48", "32x64"))
    assert resolved.num_samples == QUICK.num_samples


def test_help_shows_both_presets_where_they_differ(capsys, demo_args):
    with pytest.raises(SystemExit):
        demo_args("--help")
    text = " ".join(capsys.readouterr().out.split())
    assert f"default {FULL.train_steps}, with --quick {QUICK.train_steps}" in text
    assert f"--depth DEPTH default {FULL.depth} " in text  # the same in both presets: one value
    assert "default 32x32,48x48,64x64,32x64; with --addons" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr", "0"], "--lr must be > 0, got 0.0"),
        (["--ema-decay", "1"], r"--ema-decay must be in \[0, 1\), got 1.0"),
        (["--warmup-steps", "-1"], "--warmup-steps must be >= 0, got -1"),
        (["--sizes", " , "], "--sizes is empty"),
    ],
)
def test_out_of_range_values_name_the_flag(argv, message, demo_args):
    with pytest.raises(ValueError, match=message):
        config.resolve_config(demo_args(*argv))
