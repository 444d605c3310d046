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
from dataclasses import asdict

import torch
from tqdm.auto import tqdm

from ledit.arguments import UsageError
from ledit.demo.addons import run_addons
from ledit.demo.config import DemoConfig, add_arguments, flag_values, resolve_config
from ledit.demo.dataset import SHAPE_CLASSES
from ledit.demo.figure import save_figure
from ledit.demo.report import REAL_ROW, conclusion, markdown_table, write_results
from ledit.demo.scoring import (
    parse_size,
    real_images,
    sample_images,
    sample_labels,
    score,
    size_name,
    swd_options,
)
from ledit.demo.train import TrainingConfig, initialised_model, trained_weights
from ledit.demo.variants import parse_variants
from ledit.sampling.addons import check_model_options

__all__ = ["add_arguments", "main"]  # the CLI's contract; add_arguments lives with the settings it generates

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
    options = swd_options(config.swd_descriptors, config.swd_projections)
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
        row["swd"][name] = score(row["images"][name], references[name], options, config.seed)
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


def command_line(args: argparse.Namespace, config: DemoConfig) -> str:
    """The command as typed when run as ``ledit demo ...``; otherwise (called from Python) one that repeats
    every setting explicitly."""
    if sys.argv[1:2] == ["demo"]:
        return shlex.join(["ledit", *sys.argv[1:]])
    flags = []
    for name, value in {**vars(args), **flag_values(config)}.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return shlex.join(["ledit", "demo", *flags])


def print_summary(config: DemoConfig, results: dict, table: str, stem: str) -> None:
    """The end of every run: the table, the conclusion drawn from it, and where the files went."""
    print()
    print(table)
    print()
    print(results["conclusion"])
    print()
    print(f"figure:  {os.path.abspath(results['figure'])}")
    print(f"table:   {os.path.abspath(os.path.join(config.out_dir, stem + '.md'))} (and {stem}.json)")
    print(f"time:    {results['timings_s']['total']:.0f} s on {results['machine']}")


def main(args: argparse.Namespace) -> None:
    try:
        config = resolve_config(args)
        check_addons_apply(config)
    except ValueError as error:  # every check of the flags: ledit reports it in one line, exit status 2
        raise UsageError(str(error)) from error
    torch.set_num_threads(config.threads)
    command = command_line(args, config)
    if args.addons:
        print(f"ledit demo --addons: inference add-ons on the cached models (from {config.cache_dir}) at "
              f"{', '.join(config.sizes)}; output in {config.out_dir}/")
        model_size, training = model_and_training(config)
        try:
            results = run_addons(config, model_size, training, command, machine_description())
        except FileNotFoundError as error:  # the models to study were never trained with these settings
            raise UsageError(str(error)) from error
        print_summary(config, results, results["table"], "addons")
        return
    print(
        f"ledit demo: models {config.models} at {config.train_size}x{config.train_size}, "
        f"{config.train_steps} steps each; sampling at {', '.join(config.sizes)}; output in {config.out_dir}/"
    )
    results = run_demo(config, command)
    print_summary(config, results, markdown_table(results["rows"], results["sizes"], results["train_size"]), "results")
