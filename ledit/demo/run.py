"""``ledit demo``: train a tiny LEDiT and its DiT baselines on procedural 32x32 images, sample them at 32x32,
48x48, 64x64 and 32x64, score every model against fresh real images with SWD, and write a figure and a table.

Pixel space, CPU, no downloads. Every model has the same size and training budget; the RoPE model is trained
once and sampled both plainly and with YaRN. Trained weights are cached under the output directory, keyed by
everything that changes them, so a re-run with other sampling settings only re-samples.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict

import torch
from tqdm.auto import tqdm

from ledit.arguments import UsageError
from ledit.bench.environment import cpu_model
from ledit.demo.addons import run_addons
from ledit.demo.config import DemoConfig, add_arguments, flag_values, resolve_config
from ledit.demo.dataset import CHANNELS, SHAPE_CLASSES
from ledit.demo.figure import save_figure
from ledit.demo.packed_batches import parse_side_range
from ledit.demo.report import REAL_ROW, conclusion, markdown_tables, write_results
from ledit.demo.scoring import Scorer, sample_set, size_name
from ledit.demo.train import TrainingConfig, initialised_model, trained_weights
from ledit.demo.variants import VARIANTS, parse_variants
from ledit.sampling.addons import check_model_options

__all__ = ["add_arguments", "main"]  # the CLI's contract; add_arguments lives with the settings it generates

def machine_description() -> str:
    threads = torch.get_num_threads()
    return f"{cpu_model()}, {threads} torch thread{'' if threads == 1 else 's'}, torch {torch.__version__}"


def weight_groups(variants) -> list[tuple[str, ...]]:
    """Variant keys grouped by trained model, in order: variants that differ only at sampling time share one
    training (the RoPE model is sampled plainly and with YaRN)."""
    groups: dict[str, list[str]] = {}
    for variant in variants:
        groups.setdefault(variant.weights_key, []).append(variant.key)
    return [tuple(keys) for keys in groups.values()]


def train_and_sample(config: DemoConfig, keys: tuple[str, ...]) -> dict:
    """Train (or load from the cache) the model of ``keys`` and sample each of those variants at every size. Runs
    in a worker process of its own when models are trained in parallel (``--jobs``), hence the plain arguments.
    Returns {"log": what happened, "images": {key: {size: uint8 images}}, "model_configs": {key: config}}."""
    torch.set_num_threads(config.threads)
    cpu, began = time.process_time(), time.perf_counter()
    model_size, training = model_and_training(config)
    variants = [VARIANTS[key] for key in keys]
    model = initialised_model(functools.partial(variants[0].build, model_size), training.seed)
    state, path, cached = trained_weights(model, training, config.cache_dir, f"training {variants[0].label}")
    trained = time.perf_counter()
    images, model_configs = {}, {}
    for variant in variants:
        sampler = variant.build(model_size, for_sampling=True)
        sampler.load_state_dict(state)
        images[variant.key] = {size: sample_set(sampler, size, config, config.addons) for size in config.sizes}
        model_configs[variant.key] = sampler.config
    log = {
        "checkpoint": path,
        "cached": cached,
        "training_s": round(trained - began, 1),
        "sampling_s": round(time.perf_counter() - trained, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "process": os.getpid(),  # where it ran: its CPU seconds count once, in its own process
    }
    return {"log": log, "images": images, "model_configs": model_configs}


def print_trained(label: str, entry: dict) -> None:
    """One line per trained model: cached or trained in how long, sampled in how long, and its checkpoint."""
    trained = "loaded cached" if entry["cached"] else f"trained in {entry['training_s']:.0f} s"
    print(f"{label}: {trained}, sampled in {entry['sampling_s']:.0f} s; {entry['checkpoint']}")


def trained_and_sampled(tasks: list[tuple[DemoConfig, tuple[str, ...]]], jobs: int):
    """Yields ((config, keys), ``train_and_sample(config, keys)``) for every task, ``jobs`` at a time (one process
    each when more than one), in the order they finish."""
    jobs = min(jobs, len(tasks))
    if jobs == 1:
        for task in tasks:
            yield task, train_and_sample(*task)
        return
    # spawn: a fresh interpreter per worker, so no torch thread pool or lock is inherited half-way.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(train_and_sample, *task): task for task in tasks}
        for future in as_completed(futures):
            yield futures[future], future.result()


def train_and_sample_all(config: DemoConfig, variants) -> tuple[dict, dict, dict]:
    """Every model trained and sampled, ``config.jobs`` at a time (one process each when more than one).
    Returns ({weights_key: log entry}, {variant key: {size: images}}, {variant key: sampling model config})."""
    log, images, model_configs = {}, {}, {}

    def collect(keys, result):
        entry = result["log"]
        log[VARIANTS[keys[0]].weights_key] = entry
        images.update(result["images"])
        model_configs.update(result["model_configs"])
        print_trained(VARIANTS[keys[0]].label, entry)

    for (_, keys), result in trained_and_sampled([(config, keys) for keys in weight_groups(variants)], config.jobs):
        collect(keys, result)
    return log, images, model_configs


def score_all(config: DemoConfig, variants, images: dict, model_configs: dict):
    """Rows of the tables: held-out real images first, then every variant; every set at every size scored by
    the detector and by SWD against fresh real images. Returns (rows, scorer, the detector check)."""
    scorer = Scorer(config)
    held_out = scorer.held_out()
    rows = [{"key": REAL_ROW, "label": "real images (held out)", "images": held_out}]
    rows += [{"key": variant.key, "label": variant.label, "images": images[variant.key],
              "model_config": model_configs[variant.key]} for variant in variants]
    for row, size in tqdm([(row, size) for row in rows for size in config.sizes], desc="scoring", unit="set"):
        for metric, value in scorer.score(row["images"][size], size).items():
            row.setdefault(metric, {})[size] = value
    return rows, scorer, scorer.detector_check(held_out)


def model_and_training(config: DemoConfig) -> tuple[dict, TrainingConfig]:
    """The models' constructor arguments (the same for every model) and the training config."""
    model_size = {
        "input_size": config.train_size,
        "patch_size": config.patch_size,
        "in_channels": CHANNELS,
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
        prediction=config.prediction,
        timesteps=config.timesteps,
        lr_schedule=config.lr_schedule,
        native_sides=parse_side_range(config.native_sides) if config.native_resolution else None,
    )
    return model_size, training


def check_addons_apply(config: DemoConfig) -> None:
    """Refuse model-side add-on flags that a chosen model does not take, before any training."""
    model_size, _ = model_and_training(config)
    for variant in parse_variants(config.models):
        check_model_options(variant.build(model_size, for_sampling=True), config.addons)


def cell_caption(row: dict, size: str) -> str:
    """The scores printed under a figure cell."""
    objects = row["objects"][size]
    return (f"shape {objects['shape_precision']:.2f} · density {objects['density']:.1f} · "
            f"SWD {row['swd'][size]['mean']:.0f}")


def scored_results(config: DemoConfig, command: str, entries, images: dict, model_configs: dict,
                   training_log: dict, figure_name: str, clocks: tuple[float, float]) -> dict:
    """Score every entry's images (``score_all``), draw the figure (``figure_name`` in the output directory) and
    return the results dict, all but its conclusion. ``clocks``: (perf_counter, process_time) at the start."""
    started, cpu = clocks
    training_seconds = time.perf_counter() - started
    rows, scorer, detector_check = score_all(config, entries, images, model_configs)
    train_size = size_name((config.train_size, config.train_size))
    figure_path = os.path.join(config.out_dir, figure_name)
    save_figure(
        figure_path,
        [(row["label"], {size: images[: config.figure_samples] for size, images in row["images"].items()})
         for row in rows],
        {size: f"{size} (train)" if size == train_size else size for size in config.sizes},
        captions=[{size: cell_caption(row, size) for size in config.sizes} for row in rows],
    )
    return {
        "command": command,
        "config": asdict(config),
        "machine": machine_description(),
        "train_size": train_size,
        "sizes": list(config.sizes),
        "rows": [{key: value for key, value in row.items() if key != "images"} for row in rows],
        "reference_objects": scorer.reference_objects,
        "detector_check": detector_check,
        "training": training_log,
        "timings_s": {
            "training_and_sampling": round(training_seconds, 1),
            "scoring": round(scorer.scoring_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
            # CPU seconds of this process and of every model trained and sampled in a worker process.
            "cpu": round(time.process_time() - cpu + sum(entry["cpu_s"] for entry in training_log.values()
                                                         if entry["process"] != os.getpid()), 1),
        },
        "figure": figure_path,
    }


def run_demo(config: DemoConfig, command: str) -> dict:
    """Train (or load), sample, score; write the figure and the tables; return the results dict."""
    clocks = time.perf_counter(), time.process_time()
    variants = parse_variants(config.models)
    training_log, images, model_configs = train_and_sample_all(config, variants)
    results = scored_results(config, command, variants, images, model_configs, training_log, "demo.png", clocks)
    results["conclusion"] = conclusion(results)
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
    if config.native_resolution:
        from ledit.demo.native import run_native  # native.py builds on this module's steps

        print(f"ledit demo --native-resolution: {config.models} trained on sides {config.native_sides} px and "
              f"LEDiT on {config.train_size}x{config.train_size}, {config.train_steps} steps each; sampling at "
              f"{', '.join(config.sizes)}; output in {config.out_dir}/")
        results = run_native(config, command)
        print_summary(config, results, markdown_tables(results), "native")
        return
    print(
        f"ledit demo: models {config.models} at {config.train_size}x{config.train_size}, "
        f"{config.train_steps} steps each; sampling at {', '.join(config.sizes)}; output in {config.out_dir}/"
    )
    results = run_demo(config, command)
    print_summary(config, results, markdown_tables(results), "results")
