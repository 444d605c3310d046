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
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
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


def train(config: DemoConfig, keys: tuple[str, ...]) -> dict:
    """Train (or load from the cache) the model that the variants ``keys`` share. Runs in a worker process of its
    own when models are trained in parallel (``--jobs``), hence the plain arguments. Returns {"state": its EMA
    weights, "log": what happened}."""
    torch.set_num_threads(config.threads)
    cpu, began = time.process_time(), time.perf_counter()
    model_size, training = model_and_training(config)
    variant = VARIANTS[keys[0]]
    model = initialised_model(functools.partial(variant.build, model_size), training.seed)
    state, path, cached = trained_weights(model, training, config.cache_dir, f"training {variant.label}")
    log = {
        "checkpoint": path,
        "cached": cached,
        "training_s": round(time.perf_counter() - began, 1),
        "cpu_s": round(time.process_time() - cpu, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "process": os.getpid(),  # where it ran: its CPU seconds count once, in its own process
    }
    return {"state": state, "log": log}


def sample(config: DemoConfig, key: str, state: dict) -> dict:
    """Sample the variant ``key`` with the trained weights ``state`` at every size (in a worker process, like
    ``train``). Returns {"images": {size: uint8 images}, "model_config", "sampling_s", "cpu_s"}."""
    torch.set_num_threads(config.threads)
    cpu, began = time.process_time(), time.perf_counter()
    model_size, _ = model_and_training(config)
    sampler = VARIANTS[key].build(model_size, for_sampling=True)
    sampler.load_state_dict(state)
    images = {size: sample_set(sampler, size, config, config.addons) for size in config.sizes}
    return {"images": images, "model_config": sampler.config, "sampling_s": time.perf_counter() - began,
            "cpu_s": time.process_time() - cpu}


def print_trained(label: str, entry: dict) -> None:
    """One line per trained model: cached or trained in how long, sampled in how long, and its checkpoint."""
    trained = "loaded cached" if entry["cached"] else f"trained in {entry['training_s']:.0f} s"
    print(f"{label}: {trained}, sampled in {entry['sampling_s']:.0f} s; {entry['checkpoint']}")


class _Group:
    """One trained model's results as its variants' samples come in; ``result()`` once all have."""

    def __init__(self, keys: tuple[str, ...], trained: dict):
        self.keys, self.log = keys, dict(trained["log"], sampling_s=0.0)
        self.images, self.model_configs = {}, {}

    def add(self, key: str, sampled: dict) -> None:
        self.images[key], self.model_configs[key] = sampled["images"], sampled["model_config"]
        self.log["sampling_s"] = round(self.log["sampling_s"] + sampled["sampling_s"], 1)
        self.log["cpu_s"] = round(self.log["cpu_s"] + sampled["cpu_s"], 1)

    def done(self) -> bool:
        return len(self.images) == len(self.keys)

    def result(self) -> dict:
        return {"log": self.log, "images": self.images, "model_configs": self.model_configs}


def trained_and_sampled(tasks: list[tuple[DemoConfig, tuple[str, ...]]], jobs: int):
    """Yields ((config, keys), {"log", "images": {key: {size: images}}, "model_configs": {key: config}}) for every
    task: its model trained (``train``) and each of its variants sampled (``sample``), in the order they finish.

    With ``jobs`` > 1, ``jobs`` worker processes run the trainings and then each variant's sampling as a task of
    its own, started as soon as its model is trained: the variants that share a model (RoPE and RoPE + YaRN)
    sample side by side, and no core idles while the last model samples its variants one after another.
    A variant's samples do not depend on the process that draws them, so the results do not depend on ``jobs``.
    """
    if min(jobs, len(tasks)) == 1:
        for config, keys in tasks:
            trained = train(config, keys)
            group = _Group(keys, trained)
            for key in keys:
                group.add(key, sample(config, key, trained["state"]))
            yield (config, keys), group.result()
        return
    # spawn: a fresh interpreter per worker, so no torch thread pool or lock is inherited half-way.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        # future -> (task index, the variant it samples, or None for a training)
        pending = {pool.submit(train, *task): (index, None) for index, task in enumerate(tasks)}
        groups = {}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                index, key = pending.pop(future)
                config, keys = tasks[index]
                if key is None:  # trained: sample each of its variants, side by side
                    trained = future.result()
                    groups[index] = _Group(keys, trained)
                    for variant in keys:
                        pending[pool.submit(sample, config, variant, trained["state"])] = (index, variant)
                    continue
                groups[index].add(key, future.result())
                if groups[index].done():
                    yield tasks[index], groups.pop(index).result()


def score_now(scorer: Scorer, sets: dict) -> None:
    """Score the held-out real images and each row of ``sets`` ({row key: {size: images}}) as soon as its samples
    are in: the other models are still training or sampling, and scoring everything once they are done would
    leave a core idle while the main process scores alone."""
    scorer.score_sets(REAL_ROW, scorer.held_out)
    for key, images in sets.items():
        scorer.score_sets(key, images)


def train_and_sample_all(config: DemoConfig, variants, scorer: Scorer) -> tuple[dict, dict, dict]:
    """Every model trained and sampled, ``config.jobs`` at a time (one process each when more than one), and each
    variant's samples scored by ``scorer`` as they come in. Returns ({weights_key: log entry}, {variant key:
    {size: images}}, {variant key: sampling model config})."""
    log, images, model_configs = {}, {}, {}
    for (_, keys), result in trained_and_sampled([(config, keys) for keys in weight_groups(variants)], config.jobs):
        log[VARIANTS[keys[0]].weights_key] = result["log"]
        images.update(result["images"])
        model_configs.update(result["model_configs"])
        print_trained(VARIANTS[keys[0]].label, result["log"])
        score_now(scorer, result["images"])
    return log, images, model_configs


def score_all(scorer: Scorer, variants, images: dict, model_configs: dict):
    """Rows of the tables: held-out real images first, then every variant; every set at every size scored by
    the detector and by SWD against fresh real images (by ``scorer``, which keeps the rows it scored already).
    Returns (rows, the detector check)."""
    rows = [{"key": REAL_ROW, "label": "real images (held out)", "images": scorer.held_out}]
    rows += [{"key": variant.key, "label": variant.label, "images": images[variant.key],
              "model_config": model_configs[variant.key]} for variant in variants]
    for row in tqdm(rows, desc="scoring", unit="row"):
        for size, scores in scorer.score_sets(row["key"], row["images"]).items():
            for metric, value in scores.items():
                row.setdefault(metric, {})[size] = value
    return rows, scorer.detector_check(scorer.held_out)


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


def scored_results(config: DemoConfig, command: str, scorer: Scorer, entries, images: dict, model_configs: dict,
                   training_log: dict, figure_name: str, clocks: tuple[float, float]) -> dict:
    """Score every entry's images (``score_all``), draw the figure (``figure_name`` in the output directory) and
    return the results dict, all but its conclusion. ``clocks``: (perf_counter, process_time) at the start."""
    started, cpu = clocks
    training_seconds = time.perf_counter() - started
    rows, detector_check = score_all(scorer, entries, images, model_configs)
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
    variants, scorer = parse_variants(config.models), Scorer(config)
    training_log, images, model_configs = train_and_sample_all(config, variants, scorer)
    results = scored_results(config, command, scorer, variants, images, model_configs, training_log, "demo.png",
                             clocks)
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
