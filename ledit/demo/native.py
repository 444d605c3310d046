"""``ledit demo --native-resolution``: does training on mixed sizes help a model draw far above them?

The models of ``--models`` (LEDiT and the 2D-RoPE DiT by default) are trained on procedural images of mixed sizes
and aspect ratios (every height and width in ``--native-sides``, 24-40 px by default), packed into one sequence
per step with the fixed-size run's token budget, the same steps, optimiser and seed, and a loss averaged per
image (``ledit.demo.packed_batches``). They are compared with the fixed-size LEDiT of the same recipe (the plain
demo's checkpoint, loaded from the shared cache when it was trained before) at ``--sizes``: 32x32, inside every
training set, then 1.5x, 2x and 3x per side and 1x2. Same samples, noise, real images and scores as the demo;
writes native.json, native.md and native.png in the output directory.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace

from ledit.demo.config import DemoConfig
from ledit.demo.report import conclusion, markdown_tables
from ledit.demo.run import print_trained, score_now, scored_results, trained_and_sampled, weight_groups
from ledit.demo.scoring import Scorer, size_name
from ledit.demo.variants import VARIANTS, parse_variants
from ledit.files import atomic_path

FIXED = "-fixed"
NATIVE = "-native"


@dataclass(frozen=True)
class Entry:
    """One row of the comparison: a demo variant (``VARIANTS``) trained on fixed-size or on mixed-size batches."""

    variant: str
    native: bool
    sides: str  # what the row was trained on, for its label

    @property
    def key(self) -> str:
        return self.variant + (NATIVE if self.native else FIXED)

    @property
    def label(self) -> str:
        return f"{VARIANTS[self.variant].label}, {'native' if self.native else 'fixed'} {self.sides}"


def entries(config: DemoConfig) -> list[Entry]:
    """The rows: the models of ``--models`` trained natively, LEDiT's first (the one the conclusion is about),
    then the fixed-size LEDiT, then the others in their order."""
    native = [Entry(variant.key, True, f"{config.native_sides} px") for variant in parse_variants(config.models)]
    native.sort(key=lambda entry: entry.variant != "ledit")  # stable: the others keep their order
    return native[:1] + [Entry("ledit", False, size_name((config.train_size, config.train_size)))] + native[1:]


def training_tasks(config: DemoConfig, rows: list[Entry]) -> list[tuple[DemoConfig, tuple[str, ...]]]:
    """(config, variant keys) per trained model: the native ones under ``config``, the fixed-size LEDiT under
    the plain demo's config, so its cache key, and checkpoint, are the plain demo's."""
    tasks = []
    for native in (True, False):
        variants = [VARIANTS[row.variant] for row in rows if row.native == native]
        tasks += [(replace(config, native_resolution=native), keys) for keys in weight_groups(variants)]
    return tasks


def run_native(config: DemoConfig, command: str) -> dict:
    """Train (or load), sample and score every row; write native.png, native.json and native.md; return the
    results."""
    started, cpu = time.perf_counter(), time.process_time()
    rows = entries(config)
    by_variant = {(row.variant, row.native): row for row in rows}
    training_log, images, model_configs, scorer = {}, {}, {}, Scorer(config)
    for (task_config, keys), result in trained_and_sampled(training_tasks(config, rows), config.jobs):
        trained = by_variant[keys[0], task_config.native_resolution]
        training_log[trained.key] = result["log"]
        for key in keys:
            row = by_variant[key, task_config.native_resolution]
            images[row.key], model_configs[row.key] = result["images"][key], result["model_configs"][key]
        print_trained(trained.label, result["log"])
        score_now(scorer, {by_variant[key, task_config.native_resolution].key: result["images"][key] for key in keys})
    results = scored_results(config, command, scorer, rows, images, model_configs, training_log, "native.png",
                             (started, cpu))
    results["conclusion"] = conclusion(results, focus=rows[0].key)
    write_native_results(config.out_dir, results)
    return results


def write_native_results(out_dir: str, results: dict) -> None:
    """native.json (everything) and native.md (the command, the setting, the tables, the conclusion, the
    timings)."""
    config, timings = results["config"], results["timings_s"]
    cached = [key for key, entry in results["training"].items() if entry["cached"]]
    markdown = "\n".join([
        "# ledit demo --native-resolution results",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Native rows: trained on packed batches of images of every height and width in {config['native_sides']} "
        f"px (multiples of {config['patch_size']}), {config['batch_size']} x "
        f"({config['train_size']}/{config['patch_size']})^2 tokens per step, per-image loss; fixed row: "
        f"{config['batch_size']} images of {results['train_size']} per step. Same {config['train_steps']} steps, "
        f"optimiser, seed {config['seed']} and model size. {config['num_samples']} samples per model and size with "
        f"the same noise; SWD against {config['real_images']} fresh procedural images per size. "
        f"\"(train)\" marks {results['train_size']}, inside every model's training sizes.",
        "",
        markdown_tables(results),
        "",
        results["conclusion"],
        "",
        f"Time: {timings['total']:.0f} s in all ({timings['training_and_sampling']:.0f} s training and sampling, "
        f"{config['jobs']} models at a time, {timings['scoring']:.0f} s scoring, each model's samples as they came "
        f"in; {timings['cpu']:.0f} CPU seconds) "
        f"on {results['machine']}; loaded from the checkpoint cache: {', '.join(cached) or 'none'}.",
        "",
    ])
    with atomic_path(os.path.join(out_dir, "native.json")) as temporary:
        temporary.write_text(json.dumps(results, indent=1) + "\n")
    with atomic_path(os.path.join(out_dir, "native.md")) as temporary:
        temporary.write_text(markdown)
