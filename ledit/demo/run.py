"""``ledit demo``: train a tiny LEDiT and its DiT baselines on procedural 32x32 images, sample them at 32x32,
48x48, 64x64 and 32x64, score every model against fresh real images with SWD, and write a figure and a table.

Pixel space, CPU, no downloads. Every model has the same size and training budget; the RoPE model is trained
once and sampled both plainly and with YaRN. Trained weights are cached under the output directory, keyed by
everything that changes them, so a re-run with other sampling settings only re-samples.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from ledit.demo.addons import default_sizes, run_addons
from ledit.demo.dataset import SHAPE_CLASSES
from ledit.demo.figure import save_figure
from ledit.demo.report import REAL_ROW, conclusion, markdown_table, write_results
from ledit.demo.scoring import parse_size, real_images, sample_images, sample_labels, score, size_name
from ledit.demo.train import TrainingConfig, initialised_model, trained_weights
from ledit.demo.variants import VARIANTS, parse_variants
from ledit.sampling.addons import SamplingAddons, add_addon_arguments, addons_from_args, check_model_options

SWD_MIN_RESOLUTION = 16  # the coarsest Laplacian-pyramid level SWD compares
# The two presets; any flag given on the command line overrides its preset value.
PRESETS = {
    "full": {
        "hidden_size": 64,
        "depth": 4,
        "num_heads": 4,
        "patch_size": 4,
        "train_steps": 1200,
        "batch_size": 32,
        "lr": 2e-3,
        "warmup_steps": 100,
        "ema_decay": 0.999,
        "num_samples": 48,
        "sampling_steps": 25,
        "real_images": 256,
        "swd_descriptors": 128,
        "swd_projections": 256,
    },
    "quick": {
        "hidden_size": 64,
        "depth": 4,
        "num_heads": 4,
        "patch_size": 4,
        "train_steps": 400,
        "batch_size": 32,
        "lr": 2e-3,
        "warmup_steps": 50,
        "ema_decay": 0.995,
        "num_samples": 24,
        "sampling_steps": 15,
        "real_images": 96,
        "swd_descriptors": 64,
        "swd_projections": 128,
    },
}
DEFAULT_MODELS = ",".join(VARIANTS)
DEFAULT_SIZES = "32x32,48x48,64x64,32x64"


@dataclass(frozen=True)
class DemoConfig:
    out_dir: str
    cache_dir: str
    models: str
    train_size: int
    sizes: tuple
    seed: int
    hidden_size: int
    depth: int
    num_heads: int
    patch_size: int
    train_steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    ema_decay: float
    num_samples: int
    sampling_steps: int
    real_images: int
    swd_descriptors: int
    swd_projections: int
    figure_samples: int
    sample_batch_size: int
    threads: int
    prediction: str
    addons: SamplingAddons = field(default_factory=SamplingAddons)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", default="ledit-demo", help="where the figure, table and checkpoints go")
    parser.add_argument("--cache-dir", default=None, help="trained-checkpoint cache (default: OUT_DIR/checkpoints)")
    parser.add_argument("--quick", action="store_true", help="smaller models and budgets: a few minutes on a CPU")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated, from: {DEFAULT_MODELS}")
    parser.add_argument("--train-size", type=int, default=32, help="square training resolution in pixels")
    parser.add_argument(
        "--sizes",
        default=None,
        help=f"comma-separated HEIGHTxWIDTH sampling sizes (default {DEFAULT_SIZES}; with --addons 2x and 3x "
        "the training size, 64x64,96x96 for 32)",
    )
    parser.add_argument(
        "--addons",
        action="store_true",
        help="train nothing; score each inference add-on and the best combination on the cached LEDiT and RoPE "
        "models at --sizes (writes addons.md/.json/.png; see docs/addons.md)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: these tiny models gain little from more, and on a busy "
        "machine more threads than free cores make every step several times slower)",
    )

    def preset_flag(group, name: str, kind, text: str = "") -> None:
        key = name[2:].replace("-", "_")
        defaults = f"default {PRESETS['full'][key]}, with --quick {PRESETS['quick'][key]}"
        group.add_argument(name, type=kind, help=f"{text} ({defaults})" if text else defaults)

    group = parser.add_argument_group("model (the same for every model)")
    preset_flag(group, "--hidden-size", int)
    preset_flag(group, "--depth", int)
    preset_flag(group, "--num-heads", int)
    preset_flag(group, "--patch-size", int)
    group = parser.add_argument_group("training")
    preset_flag(group, "--train-steps", int)
    preset_flag(group, "--batch-size", int)
    preset_flag(group, "--lr", float)
    preset_flag(group, "--warmup-steps", int)
    preset_flag(group, "--ema-decay", float)
    group.add_argument(
        "--prediction",
        choices=("x0", "eps"),
        default="x0",
        help="what the model predicts: the clean image (default; smooth images after a short "
        "training) or the noise (DiT's choice, needs far longer training)",
    )
    group = parser.add_argument_group("sampling and scoring")
    preset_flag(group, "--num-samples", int, "samples per model and size")
    preset_flag(group, "--sampling-steps", int, "DDIM steps")
    preset_flag(group, "--real-images", int, "fresh real images per size to score against")
    preset_flag(group, "--swd-descriptors", int, "7x7 patches per image and pyramid level")
    preset_flag(group, "--swd-projections", int, "random directions of the sliced distance")
    group.add_argument("--figure-samples", type=int, default=3, help="samples per model and size in the figure")
    group.add_argument("--sample-batch-size", type=int, default=64)
    add_addon_arguments(parser)


def resolve_config(args: argparse.Namespace) -> DemoConfig:
    """Fill unset flags from the preset and check every value, naming the flag at fault."""
    preset = PRESETS["quick" if args.quick else "full"]
    values = {
        name: getattr(args, name) if getattr(args, name) is not None else default for name, default in preset.items()
    }
    parse_variants(args.models)
    size_list = args.sizes or (",".join(default_sizes(args.train_size)) if args.addons else DEFAULT_SIZES)
    sizes = tuple(size_name(parse_size(text)) for text in size_list.split(",") if text.strip())
    if not sizes:
        raise ValueError("--sizes is empty; give at least one HEIGHTxWIDTH")
    settings = dict(
        values,
        train_size=args.train_size,
        figure_samples=args.figure_samples,
        sample_batch_size=args.sample_batch_size,
        threads=args.threads,
    )
    for name, value in settings.items():
        if name not in ("lr", "ema_decay", "warmup_steps") and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not values["lr"] > 0 or not 0 <= values["ema_decay"] < 1 or values["warmup_steps"] < 0:
        raise ValueError("--lr must be > 0, --ema-decay in [0, 1) and --warmup-steps >= 0")
    patch = values["patch_size"]
    for size in sizes + (size_name((args.train_size, args.train_size)),):
        height, width = parse_size(size)
        if height % patch or width % patch:
            raise ValueError(f"size {size} is not divisible by --patch-size {patch}")
        if min(height, width) < SWD_MIN_RESOLUTION:
            raise ValueError(f"size {size} is below {SWD_MIN_RESOLUTION} pixels, the smallest size SWD scores")
    if (values["hidden_size"] // values["num_heads"]) % 8 or values["hidden_size"] % values["num_heads"]:
        raise ValueError("--hidden-size / --num-heads must be a whole multiple of 8 (the attention head dim)")
    if args.figure_samples > values["num_samples"]:
        raise ValueError(f"--figure-samples {args.figure_samples} exceeds --num-samples {values['num_samples']}")
    addons = addons_from_args(args)
    if addons.cfg_scale_per_doubling or addons.guidance_interval is not None:
        raise ValueError("--cfg-scale-per-doubling and --guidance-interval need classifier-free guidance; the demo's "
                         "models are trained without label dropout and have no unconditional prediction")
    if args.addons and addons != SamplingAddons():
        raise ValueError("--addons scores its own set of add-ons (see docs/addons.md); drop the add-on flags, or "
                         "drop --addons to sample every model with them")
    cache_dir = args.cache_dir or os.path.join(args.out_dir, "checkpoints")
    return DemoConfig(
        out_dir=args.out_dir,
        cache_dir=cache_dir,
        models=args.models,
        train_size=args.train_size,
        sizes=sizes,
        seed=args.seed,
        figure_samples=args.figure_samples,
        sample_batch_size=args.sample_batch_size,
        threads=args.threads,
        prediction=args.prediction,
        addons=addons,
        **values,
    )


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    return f"{cpu}, {threads} torch thread{'' if threads == 1 else 's'}, torch {torch.__version__}"


def train_all(variants, model_size: dict, training: TrainingConfig, cache_dir: str):
    """Train (or load from the cache) each distinct model once; variants that differ only at sampling time
    share weights. Returns ({weights_key: EMA state dict}, {weights_key: log entry})."""
    weights, log = {}, {}
    for variant in variants:
        if variant.weights_key in weights:
            continue
        model = initialised_model(functools.partial(variant.build, model_size), training.seed)
        began = time.perf_counter()
        state, path, cached = trained_weights(model, training, cache_dir, f"training {variant.label}")
        seconds = time.perf_counter() - began
        weights[variant.weights_key] = state
        log[variant.weights_key] = {
            "checkpoint": path,
            "cached": cached,
            "seconds": round(seconds, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        print(f"{variant.label}: {'loaded cached' if cached else f'trained in {seconds:.0f} s,'} {path}")
    return weights, log


def sample_and_score(config: DemoConfig, variants, weights: dict, model_size: dict, predict_xstart: bool):
    """Rows of the table: held-out real images first, then every variant sampled at every size from the same
    noise; each set scored against fresh real images. Returns (rows, sampling seconds, scoring seconds)."""
    sizes = [parse_size(size) for size in config.sizes]
    labels = sample_labels(config.num_samples, len(SHAPE_CLASSES))
    swd_options = {
        "descriptors_per_image": config.swd_descriptors,
        "num_projections": config.swd_projections,
        "min_resolution": SWD_MIN_RESOLUTION,
    }
    references = {size_name(size): real_images(config.real_images, size, config.seed) for size in sizes}
    held_out = {size_name(size): real_images(config.num_samples, size, config.seed, "held-out") for size in sizes}
    rows = [{"key": REAL_ROW, "label": "real images (held out)", "images": held_out, "swd": {}}]
    models = {}
    for variant in variants:
        models[variant.key] = variant.build(model_size, for_sampling=True)
        models[variant.key].load_state_dict(weights[variant.weights_key])
        rows.append(
            {
                "key": variant.key,
                "label": variant.label,
                "images": {},
                "swd": {},
                "model_config": models[variant.key].config,
            }
        )
    sampling_seconds = scoring_seconds = 0.0
    for row, size in tqdm([(row, size) for row in rows for size in sizes], desc="sampling and scoring", unit="set"):
        name = size_name(size)
        if row["key"] != REAL_ROW:
            began = time.perf_counter()
            row["images"][name] = sample_images(
                models[row["key"]],
                labels,
                size,
                config.sampling_steps,
                config.seed,
                config.sample_batch_size,
                predict_xstart,
                config.addons,
            )
            sampling_seconds += time.perf_counter() - began
        began = time.perf_counter()
        row["swd"][name] = score(row["images"][name], references[name], swd_options, config.seed)
        scoring_seconds += time.perf_counter() - began
    return rows, sampling_seconds, scoring_seconds


def model_and_training(config: DemoConfig) -> tuple[dict, TrainingConfig]:
    """The models' constructor arguments (the same for every model) and the training config."""
    model_size = {
        "input_size": config.train_size,
        "patch_size": config.patch_size,
        "in_channels": 3,
        "hidden_size": config.hidden_size,
        "depth": config.depth,
        "num_heads": config.num_heads,
        "class_dropout_prob": 0.0,
        "num_classes": len(SHAPE_CLASSES),
        "learn_sigma": False,
    }
    training = TrainingConfig(
        image_size=config.train_size,
        steps=config.train_steps,
        batch_size=config.batch_size,
        lr=config.lr,
        warmup_steps=config.warmup_steps,
        ema_decay=config.ema_decay,
        seed=config.seed,
        predict_xstart=config.prediction == "x0",
    )
    return model_size, training


def check_addons_apply(config: DemoConfig) -> None:
    """Refuse model-side add-on flags that a chosen model does not take, before any training."""
    model_size, _ = model_and_training(config)
    for variant in parse_variants(config.models):
        check_model_options(variant.build(model_size, for_sampling=True), config.addons)


def run_demo(config: DemoConfig, command: str) -> dict:
    """Train (or load), sample, score; write the figure and the tables; return the results dict."""
    started = time.perf_counter()
    variants = parse_variants(config.models)
    train_size = size_name((config.train_size, config.train_size))
    model_size, training = model_and_training(config)
    weights, training_log = train_all(variants, model_size, training, config.cache_dir)
    training_seconds = time.perf_counter() - started
    rows, sampling_seconds, scoring_seconds = sample_and_score(
        config, variants, weights, model_size, training.predict_xstart
    )

    figure_path = os.path.join(config.out_dir, "demo.png")
    column_titles = {name: f"{name} (train)" if name == train_size else name for name in config.sizes}
    save_figure(
        figure_path,
        [
            (row["label"], {name: images[: config.figure_samples] for name, images in row["images"].items()})
            for row in rows
        ],
        column_titles,
    )
    table_rows = [{key: value for key, value in row.items() if key != "images"} for row in rows]
    results = {
        "command": command,
        "config": asdict(config),
        "machine": machine_description(),
        "train_size": train_size,
        "sizes": list(config.sizes),
        "rows": table_rows,
        "training": training_log,
        "timings_s": {
            "training": round(training_seconds, 1),
            "sampling": round(sampling_seconds, 1),
            "scoring": round(scoring_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "figure": figure_path,
    }
    results["conclusion"] = conclusion(table_rows, results["sizes"], train_size)
    write_results(os.path.join(config.out_dir, "results.json"), os.path.join(config.out_dir, "results.md"), results)
    return results


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed when run as ``ledit demo ...``; otherwise (called from Python) one that repeats
    every setting explicitly."""
    if sys.argv[1:2] == ["demo"]:
        return shlex.join(["ledit", *sys.argv[1:]])
    flags = []
    for name, value in vars(args).items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return shlex.join(["ledit", "demo", *flags])


def main_addons(config: DemoConfig, command: str) -> None:
    print(f"ledit demo --addons: inference add-ons on the cached models (from {config.cache_dir}) at "
          f"{', '.join(config.sizes)}; output in {config.out_dir}/")
    model_size, training = model_and_training(config)
    try:
        results = run_addons(config, model_size, training, command, machine_description())
    except FileNotFoundError as error:
        sys.exit(f"ledit demo: {error}")
    print()
    print(results["table"])
    print()
    print(results["conclusion"])
    print()
    print(f"figure:  {os.path.abspath(results['figure'])}")
    print(f"table:   {os.path.abspath(os.path.join(config.out_dir, 'addons.md'))} (and addons.json)")
    print(f"time:    {results['timings_s']['total']:.0f} s on {results['machine']}")


def main(args: argparse.Namespace) -> None:
    try:
        config = resolve_config(args)
        check_addons_apply(config)
    except ValueError as error:
        sys.exit(f"ledit demo: {error}")
    torch.set_num_threads(config.threads)
    command = _command_line(args)
    if args.addons:
        main_addons(config, command)
        return
    print(
        f"ledit demo: models {config.models} at {config.train_size}x{config.train_size}, "
        f"{config.train_steps} steps each; sampling at {', '.join(config.sizes)}; output in {config.out_dir}/"
    )
    results = run_demo(config, command)
    print()
    print(markdown_table(results["rows"], results["sizes"], results["train_size"]))
    print()
    print(results["conclusion"])
    print()
    print(f"figure:  {os.path.abspath(results['figure'])}")
    print(f"table:   {os.path.abspath(os.path.join(config.out_dir, 'results.md'))} (and results.json)")
    print(f"time:    {results['timings_s']['total']:.0f} s on {results['machine']}")
