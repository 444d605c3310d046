"""The demo's settings, each written once: ``DemoConfig``'s defaults are the full run (``FULL``), ``QUICK`` is
what ``--quick`` changes, and the command-line flags are generated from the fields (name, type, help, group,
valid range), so a new setting is one line here."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields, replace

from ledit.demo.objective import PREDICTIONS
from ledit.demo.packed_batches import parse_side_range, side_choices, token_budget
from ledit.demo.scoring import SWD_MIN_RESOLUTION, parse_size, size_name
from ledit.demo.train import LR_SCHEDULES, TIMESTEP_SAMPLINGS
from ledit.demo.variants import VARIANTS, parse_variants
from ledit.sampling.addons import SamplingAddons, add_addon_arguments, addons_from_args

MODEL, TRAINING, SAMPLING = "model (the same for every model)", "training", "sampling and scoring"
AT_LEAST_ONE = (lambda value: value >= 1, ">= 1")


def _setting(default, help: str = "", group: str | None = None, valid=None, choices=None):
    """A field that is also a flag. ``help`` may place the default with ``{default}``, else it is appended;
    ``valid`` = (predicate, description) is checked after the flags are resolved."""
    return field(default=default, metadata={"help": help, "group": group, "valid": valid, "choices": choices})


@dataclass(frozen=True)
class DemoConfig:
    out_dir: str = _setting("ledit-demo", "where the figure, table and checkpoints go")
    cache_dir: str | None = _setting(None, "trained-checkpoint cache (default: OUT_DIR/checkpoints)")
    models: str = _setting(",".join(VARIANTS), f"comma-separated, from: {','.join(VARIANTS)}")
    train_size: int = _setting(32, "square training resolution in pixels", valid=AT_LEAST_ONE)
    sizes: tuple = _setting(
        ("32x32", "48x48", "64x64", "32x64"),
        "comma-separated HEIGHTxWIDTH sampling sizes (default {default}; with --addons 2x and 3x the training "
        "size, 64x64,96x96 for 32)",
    )
    seed: int = _setting(0)
    hidden_size: int = _setting(64, group=MODEL, valid=AT_LEAST_ONE)
    depth: int = _setting(4, group=MODEL, valid=AT_LEAST_ONE)
    num_heads: int = _setting(4, group=MODEL, valid=AT_LEAST_ONE)
    patch_size: int = _setting(4, group=MODEL, valid=AT_LEAST_ONE)
    train_steps: int = _setting(3000, group=TRAINING, valid=AT_LEAST_ONE)
    batch_size: int = _setting(32, group=TRAINING, valid=AT_LEAST_ONE)
    lr: float = _setting(3e-3, group=TRAINING, valid=(lambda value: value > 0, "> 0"))
    warmup_steps: int = _setting(100, group=TRAINING, valid=(lambda value: value >= 0, ">= 0"))
    ema_decay: float = _setting(0.995, group=TRAINING, valid=(lambda value: 0 <= value < 1, "in [0, 1)"))
    timesteps: str = _setting(
        "logit-normal",
        "noise levels trained on: uniform (DiT's), or logit-normal (more of the steps at mid noise, where shapes are "
        "decided); default {default}",
        TRAINING,
        choices=TIMESTEP_SAMPLINGS,
    )
    lr_schedule: str = _setting(
        "cosine", "after the warm-up: constant, or cosine (decays to 0 at the last step); default {default}",
        TRAINING, choices=LR_SCHEDULES,
    )
    num_samples: int = _setting(48, "samples per model and size", SAMPLING, AT_LEAST_ONE)
    sampler: str = _setting(
        "ddpm",
        "ddpm: ancestral sampling (sharper objects from a briefly trained model), or ddim: deterministic; "
        "default {default}",
        SAMPLING,
        choices=("ddpm", "ddim"),
    )
    sampling_steps: int = _setting(50, "sampling steps", SAMPLING, AT_LEAST_ONE)
    real_images: int = _setting(256, "fresh real images per size to score against", SAMPLING, AT_LEAST_ONE)
    swd_descriptors: int = _setting(128, "7x7 patches per image and pyramid level", SAMPLING, AT_LEAST_ONE)
    swd_projections: int = _setting(256, "random directions of the sliced distance", SAMPLING, AT_LEAST_ONE)
    figure_samples: int = _setting(3, "samples per model and size in the figure", SAMPLING, AT_LEAST_ONE)
    sample_batch_size: int = _setting(64, group=SAMPLING, valid=AT_LEAST_ONE)
    jobs: int = _setting(
        3,
        "models trained and sampled at the same time, each in a process of its own with --threads threads "
        "(default {default}: the three trained models at once, so two cores are never left with one model to "
        "finish alone; the results do not depend on it)",
        valid=AT_LEAST_ONE,
    )
    threads: int = _setting(
        1,
        "torch CPU threads (default {default}: these tiny models gain little from more, and on a busy machine "
        "more threads than free cores make every step several times slower)",
        valid=AT_LEAST_ONE,
    )
    native_sides: str = _setting(
        "24-40",
        "with --native-resolution: MIN-MAX image side in pixels, multiples of --patch-size; every height and "
        "width in it drawn uniformly (default {default})",
        TRAINING,
    )
    prediction: str = _setting(
        "v",
        "what the model predicts: v, the velocity (sharp objects after a short training), x0, the clean image "
        "(blurred through the tiny model), or eps, the noise (DiT's choice, needs far longer training); "
        "default {default}",
        TRAINING,
        choices=PREDICTIONS,
    )
    # Set by the inference add-on flags of ledit.sampling.addons, not by a flag of its own.
    addons: SamplingAddons = field(default_factory=SamplingAddons)
    # Set by --native-resolution: train --models on packed batches of mixed sizes (ledit.demo.native).
    native_resolution: bool = False


# --native-resolution's defaults for the flags not given: the models trained natively (beside the fixed-size LEDiT)
# and the sizes compared, 1.5x, 2x and 3x per side and 1x2 of the 32x32 in both training sets.
NATIVE_MODELS = "ledit,dit-rope"
NATIVE_SIZES = ("32x32", "48x48", "64x64", "96x96", "32x64")


FULL = DemoConfig()
# 700 steps and 20 sampling steps: the most that fits --quick's 3 minutes on 2 cores (docs/demo.md, "Time, and the
# budgets"); no model draws whole shapes yet, but above the training size every density and SWD column has the full
# run's best model.
QUICK = replace(
    FULL,
    train_steps=700,
    warmup_steps=50,
    ema_decay=0.99,
    num_samples=24,
    sampling_steps=20,
    real_images=96,
    swd_descriptors=64,
    swd_projections=128,
)


def _flag_fields():
    return [item for item in fields(DemoConfig) if "group" in item.metadata]


def _flag(item) -> str:
    return "--" + item.name.replace("_", "-")


def _text(value) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


def _help(item) -> str:
    full, quick = getattr(FULL, item.name), getattr(QUICK, item.name)
    if full is None:  # the help text says what happens by default
        return item.metadata["help"]
    default = _text(full) + (f", with --quick {_text(quick)}" if quick != full else "")
    text = item.metadata["help"]
    if "{default}" in text:
        return text.format(default=default)
    return f"{text} (default {default})" if text else f"default {default}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``ledit demo``'s flags: the two modes, one flag per DemoConfig field, and the inference add-ons.
    Every field flag defaults to None, meaning "the preset's value"."""
    parser.add_argument("--quick", action="store_true", help="smaller budgets: a few minutes on a CPU")
    parser.add_argument(
        "--addons",
        action="store_true",
        help="train nothing; score each inference add-on and the best combination on the cached LEDiT and RoPE "
        "models at --sizes (writes addons.md/.json/.png; see docs/addons.md)",
    )
    parser.add_argument(
        "--native-resolution",
        action="store_true",
        help="train --models (default ledit,dit-rope) on packed batches of mixed sizes and aspect ratios "
        "(--native-sides) with the fixed-size run's token budget, and compare them with the fixed-size LEDiT at "
        "--sizes (default 32x32,48x48,64x64,96x96,32x64); writes native.md/.json/.png (see docs/demo.md)",
    )
    groups = {None: parser}
    for item in _flag_fields():
        group = item.metadata["group"]
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        default = getattr(FULL, item.name)
        kind = type(default) if isinstance(default, (int, float)) else str
        groups[group].add_argument(_flag(item), type=kind, choices=item.metadata["choices"], help=_help(item))
    add_addon_arguments(parser)


def parse_sizes(text: str) -> tuple[str, ...]:
    """``"32x64, 48"`` -> ("32x64", "48x48")."""
    sizes = tuple(size_name(parse_size(part)) for part in text.split(",") if part.strip())
    if not sizes:
        raise ValueError("--sizes is empty; give at least one HEIGHTxWIDTH")
    return sizes


def default_addon_sizes(train_size: int) -> tuple[str, ...]:
    """``--addons``' sizes: 2x and 3x the training size per side (4x and 9x the tokens)."""
    return tuple(size_name((k * train_size, k * train_size)) for k in (2, 3))


def resolve_config(args: argparse.Namespace) -> DemoConfig:
    """The preset (``--quick`` or not) with every flag given on the command line applied; each value checked,
    naming the flag at fault."""
    given = {item.name: getattr(args, item.name) for item in _flag_fields() if getattr(args, item.name) is not None}
    native = args.native_resolution
    if native and args.addons:
        raise ValueError("--native-resolution and --addons are two runs: --addons scores add-ons on the fixed-size "
                         "models; drop one of them")
    if "native_sides" in given and not native:
        raise ValueError("--native-sides applies to --native-resolution: add it, or drop --native-sides")
    config = replace(QUICK if args.quick else FULL, **given, addons=addons_from_args(args), native_resolution=native)
    if native and "models" not in given:
        config = replace(config, models=NATIVE_MODELS)
    if "sizes" in given:
        config = replace(config, sizes=parse_sizes(given["sizes"]))
    elif args.addons:
        config = replace(config, sizes=default_addon_sizes(config.train_size))
    elif native:
        config = replace(config, sizes=NATIVE_SIZES)
    config = replace(config, cache_dir=config.cache_dir or os.path.join(config.out_dir, "checkpoints"))
    check_config(config, addons_mode=args.addons)
    return config


def check_config(config: DemoConfig, addons_mode: bool = False) -> None:
    """ValueError naming the flag, for any setting out of range or settings that do not fit together."""
    parse_variants(config.models)
    for item in _flag_fields():
        value = getattr(config, item.name)
        if item.metadata["valid"] is not None:
            predicate, description = item.metadata["valid"]
            if not predicate(value):
                raise ValueError(f"{_flag(item)} must be {description}, got {value}")
    patch = config.patch_size
    for size in config.sizes + (size_name((config.train_size, config.train_size)),):
        height, width = parse_size(size)
        if height % patch or width % patch:
            raise ValueError(f"size {size} is not divisible by --patch-size {patch}")
        if min(height, width) < SWD_MIN_RESOLUTION:
            raise ValueError(f"size {size} is below {SWD_MIN_RESOLUTION} pixels, the smallest size SWD scores")
    if config.hidden_size % config.num_heads or (config.hidden_size // config.num_heads) % 8:
        raise ValueError("--hidden-size / --num-heads must be a whole multiple of 8 (the attention head dim)")
    if config.figure_samples > config.num_samples:
        raise ValueError(f"--figure-samples {config.figure_samples} exceeds --num-samples {config.num_samples}")
    if config.native_resolution:  # multiples of the patch size whose largest image fits the token budget
        side_choices(parse_side_range(config.native_sides), patch,
                     token_budget(config.batch_size, config.train_size, patch))
    if config.addons.cfg_scale_per_doubling or config.addons.guidance_interval is not None:
        raise ValueError("--cfg-scale-per-doubling and --guidance-interval need classifier-free guidance; the demo's "
                         "models are trained without label dropout and have no unconditional prediction")
    if addons_mode and config.addons != SamplingAddons():
        raise ValueError("--addons scores its own set of add-ons (see docs/addons.md); drop the add-on flags, or "
                         "drop --addons to sample every model with them")


def flag_values(config: DemoConfig) -> dict[str, str]:
    """{flag name as in argparse's Namespace: value as typed} for every field flag: a command line that repeats
    every setting of ``config``."""
    return {item.name: _text(getattr(config, item.name)) for item in _flag_fields()
            if item.name != "native_sides" or config.native_resolution}
