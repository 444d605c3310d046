"""``ledit demo --addons``: which inference add-ons help LEDiT and the best RoPE baseline above the training size.

Trains nothing: it loads the demo's cached models (``ledit demo`` with the same model and training flags makes
them), samples them at 2x and 3x the training size per side (64x64 and 96x96 for the 32x32 demo) with each
add-on alone and then with the best combination, from the same noise as the demo, and scores every set with
the demo's SWD against the same real images. The "best combination" at a size takes, from every group of
add-ons (timestep shift, low-resolution reference, temperature, RoPE scaling), the member that scored best alone,
if it beat no add-on there, and applies them together.

Guidance add-ons (resolution CFG, guidance interval) are not scored: the demo's models are trained without
label dropout, so they have no unconditional prediction to guide with.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace

from tqdm.auto import tqdm

from ledit.demo.figure import save_figure
from ledit.demo.report import REAL_ROW
from ledit.demo.scoring import Scorer, size_name
from ledit.demo.train import TrainingConfig, cached_weights, checkpoint_path
from ledit.demo.variants import VARIANTS
from ledit.files import atomic_path
from ledit.sampling.addons import SamplingAddons

NO_ADDON = "none"
METRICS = ("objects", "swd")  # what Scorer.score returns for a set


@dataclass(frozen=True)
class Trial:
    key: str
    label: str
    group: str  # add-ons of one group exclude each other; the combination takes at most one per group
    addons: SamplingAddons


def _model_options(**options) -> SamplingAddons:
    return SamplingAddons(model_options=options)


COMMON_TRIALS = (
    Trial(NO_ADDON, "no add-on", NO_ADDON, SamplingAddons()),
    Trial("shift", "timestep shift s = sqrt(m)", "shift", SamplingAddons(timestep_shift="auto")),
    # 0.7: the best of 0.3 / 0.5 / 0.7 for LEDiT at 96x96 in a scan (334 / 248 / 118; 94 without); see docs.
    Trial("lowres", "low-res reference, re-noise t/T = 0.7", "lowres", SamplingAddons(lowres_renoise=0.7)),
)
# Lumina-Next's proportional attention is not scored: it equals Jin et al.'s scale exactly (docs/addons.md).
LEDIT_TRIALS = COMMON_TRIALS + (
    Trial("temp-none", "temperature: none (Jin off)", "temperature",
          _model_options(temperature_full="none", temperature_causal="none")),
    Trial("temp-fitv2", "temperature: FiTv2 log", "temperature",
          _model_options(temperature_full="fitv2-log", temperature_causal="fitv2-log")),
    Trial("temp-jin-early", "temperature: Jin for t/T >= 0.5 only", "temperature",
          _model_options(temperature_until=0.5)),
)
# No stem re-dilation trial: the demo's LEDiT has its convs in every block, not one stem conv to re-dilate.
ROPE_TRIALS = COMMON_TRIALS + (
    Trial("dy-ntk", "RoPE: Dy-NTK", "rope", _model_options(rope_dynamic="dy-ntk")),
    Trial("dy-yarn", "RoPE: Dy-YaRN", "rope", _model_options(rope_dynamic="dy-yarn")),
    Trial("lumina-rope", "RoPE: Lumina-Next time-aware", "rope", _model_options(rope_dynamic="lumina")),
    Trial("temp-jin", "temperature: Jin et al.", "temperature", _model_options(temperature_full="jin")),
)
ROPE_BASELINES = ("dit-rope", "dit-rope-yarn")


def combine(trials: list[Trial]) -> SamplingAddons:
    """One SamplingAddons with every field the trials set (they come from different groups)."""
    combined, model_options = SamplingAddons(), {}
    for trial in trials:
        changed = {k: v for k, v in asdict(trial.addons).items() if v != getattr(SamplingAddons(), k)}
        model_options.update(changed.pop("model_options", None) or {})
        combined = replace(combined, **changed)
    return replace(combined, model_options=model_options or None)


def best_combination(trials: tuple[Trial, ...], scores: dict[str, float]) -> list[Trial]:
    """The best-scoring member of each group that beat no add-on (``scores``: trial key -> mean SWD)."""
    chosen = []
    for group in dict.fromkeys(trial.group for trial in trials if trial.group != NO_ADDON):
        best = min((t for t in trials if t.group == group), key=lambda t: scores[t.key])
        if scores[best.key] < scores[NO_ADDON]:
            chosen.append(best)
    return chosen


def load_cached(variant_key: str, model_size: dict, training: TrainingConfig, cache_dir: str):
    """The demo's cached model for ``variant_key``, ready to sample; a clear error when it was never trained."""
    variant = VARIANTS[variant_key]
    trained = variant.build(model_size)  # the cache is keyed by the model as trained
    weights = cached_weights(trained, training, cache_dir)
    if weights is None:
        raise FileNotFoundError(
            f"ledit demo --addons trains nothing, and {checkpoint_path(trained, training, cache_dir)} is missing or "
            f"was trained with other settings. Train the models first with the same model and training flags, "
            f"without --addons: `ledit demo --models ledit,dit-rope --out-dir OUT` (then --out-dir OUT or "
            f"--cache-dir OUT/checkpoints here)"
        )
    model = variant.build(model_size, for_sampling=True)
    model.load_state_dict(weights)
    return model.eval()


def study(config, model_size: dict, training: TrainingConfig):
    """Score every trial of LEDiT and of the best RoPE baseline at every size, then each best combination.
    Returns (rows, figure rows, the RoPE baseline chosen, timings)."""
    scorer = Scorer(config)
    models = {key: load_cached(key, model_size, training, config.cache_dir) for key in ("ledit", *ROPE_BASELINES)}
    held_out = scorer.held_out
    real = {"model": REAL_ROW, "trial": REAL_ROW, "label": "real images (held out)"}
    for size, images in held_out.items():
        for metric, value in scorer.score(images, size).items():
            real.setdefault(metric, {})[size] = value
    rows = [real]
    figure = [(real["label"], {size: images[: config.figure_samples] for size, images in held_out.items()})]

    def sample_and_score(model_key, size, addons):
        images = scorer.sample(models[model_key], size, addons)
        return images, scorer.score(images, size)

    def run_trials(model_key, trials, known=None):
        results = dict(known or {})
        todo = [(t, s) for t in trials for s in config.sizes if t.key not in results]
        for trial, size in tqdm(todo, desc=f"add-ons on {model_key}", unit="set"):
            results.setdefault(trial.key, {})[size] = sample_and_score(model_key, size, trial.addons)
        return results

    def scores(by_size):
        """{size: (images, scores)} -> {"objects": {size: ...}, "swd": {size: ...}}"""
        return {metric: {size: result[metric] for size, (_, result) in by_size.items()} for metric in METRICS}

    def add_row(model_key, trial, results):
        rows.append({"model": VARIANTS[model_key].label, "trial": trial.key, "label": trial.label,
                     "addons": asdict(trial.addons), **scores(results[trial.key])})

    # The stronger RoPE form at the largest size carries the RoPE add-ons.
    plain = {key: run_trials(key, COMMON_TRIALS[:1]) for key in ROPE_BASELINES}
    largest = config.sizes[-1]
    rope_key = min(ROPE_BASELINES, key=lambda key: plain[key][NO_ADDON][largest][1]["swd"]["mean"])

    for model_key, trials in (("ledit", LEDIT_TRIALS), (rope_key, ROPE_TRIALS)):
        label = VARIANTS[model_key].label
        results = run_trials(model_key, trials, plain.get(model_key))
        for trial in trials:
            add_row(model_key, trial, results)
        combination_images = {}
        for size in config.sizes:
            chosen = best_combination(trials, {key: r[size][1]["swd"]["mean"] for key, r in results.items()})
            if len(chosen) < 2:  # nothing to combine: the best single add-on (or none) is the combination
                best = chosen[0].key if chosen else NO_ADDON
                combination_images[size] = results[best][size][0]
                rows.append({"model": label, "trial": f"best@{size}", "label": f"combined at {size}: {best} (alone)",
                             "combination": [best], **scores({size: results[best][size]})})
                continue
            addons = combine(chosen)
            combined = sample_and_score(model_key, size, addons)
            combination_images[size] = combined[0]
            rows.append({"model": label, "trial": f"best@{size}",
                         "label": f"combined at {size}: " + " + ".join(trial.key for trial in chosen),
                         "combination": [trial.key for trial in chosen], "addons": asdict(addons),
                         **scores({size: combined})})
        n = config.figure_samples
        figure.append((f"{label}: no add-on", {size: results[NO_ADDON][size][0][:n] for size in config.sizes}))
        figure.append((f"{label}: add-ons that helped, combined",
                       {size: images[:n] for size, images in combination_images.items()}))
    other = next(key for key in ROPE_BASELINES if key != rope_key)
    rows.append({"model": VARIANTS[other].label, "trial": NO_ADDON, "label": "no add-on (the weaker RoPE form)",
                 **scores(plain[other][NO_ADDON])})
    timings = {"sampling": round(scorer.sampling_seconds, 1), "scoring": round(scorer.scoring_seconds, 1)}
    return rows, figure, rope_key, timings


def markdown_table(rows: list[dict], sizes: list[str]) -> str:
    """One row per (model, add-on); per size the mean SWD x1e3, its change against no add-on of that model, and
    the shape precision; the best SWD of each model in each column in bold."""
    lines = ["| model | add-on | " + " | ".join(sizes) + " |", "|---|---|" + "---:|" * len(sizes)]
    baseline, best = {}, {}
    for row in rows:
        for size, swd in row["swd"].items():
            if row["trial"] == NO_ADDON:
                baseline[row["model"], size] = swd["mean"]
            if row["model"] != REAL_ROW:
                best[row["model"], size] = min(best.get((row["model"], size), float("inf")), swd["mean"])
    for row in rows:
        cells = []
        for size in sizes:
            if size not in row["swd"]:
                cells.append("")
                continue
            value = row["swd"][size]["mean"]
            text = f"{value:.1f}"
            reference = baseline.get((row["model"], size))
            if reference is not None and row["trial"] != NO_ADDON:
                text += f" ({100 * (value / reference - 1):+.1f}%)"
            text += f" · {row['objects'][size]['shape_precision']:.2f}"
            cells.append(f"**{text}**" if row["model"] != REAL_ROW and value == best[row["model"], size] else text)
        model = "" if row["model"] == REAL_ROW else row["model"]
        lines.append(f"| {model} | {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _reading(model: str, mine: list[dict], singles: list[dict], reference: float, size: str) -> str:
    def mean(row):
        return row["swd"][size]["mean"]

    def change(row):
        return f"{row['trial']} {mean(row):.1f} ({100 * (mean(row) / reference - 1):+.1f}%)"

    helped = sorted((row for row in singles if mean(row) < reference), key=mean)
    hurt = [row for row in singles if mean(row) >= reference]
    combo = next(row for row in mine if row["trial"] == f"best@{size}")
    text = f"{model} at {size}: no add-on {reference:.1f}; "
    text += ("helped: " + ", ".join(change(row) for row in helped)) if helped else "no add-on helped"
    if hurt:
        text += "; did not help: " + ", ".join(change(row) for row in hurt)
    text += f"; the helpful ones combined ({' + '.join(combo['combination'])}): {mean(combo):.1f}"
    if helped and mean(combo) > mean(helped[0]):
        text += f", worse than {helped[0]['trial']} alone"
    return text + "."


def conclusion(rows: list[dict], sizes: list[str]) -> str:
    """Plain sentences: per model and size, which add-ons helped (lower SWD than no add-on), which hurt, and
    what the best combination scored, with the numbers."""
    sentences = []
    for model in dict.fromkeys(row["model"] for row in rows if row["model"] != REAL_ROW):
        mine = [row for row in rows if row["model"] == model]
        base = next((row for row in mine if row["trial"] == NO_ADDON), None)
        singles = [row for row in mine if row["trial"] not in (NO_ADDON,) and "combination" not in row]
        if base is None or not singles:
            continue
        for size in sizes:
            sentences.append(_reading(model, mine, singles, base["swd"][size]["mean"], size))
    sentences.append("SWD x1e3, lower is better; compare within a column only (each size has its own pyramid "
                     "levels and real-image floor).")
    return "\n".join(sentences)


def write_addon_results(out_dir: str, results: dict) -> None:
    """addons.json (everything) and addons.md (the command, the table, the reading, the timings)."""
    config, timings = results["config"], results["timings_s"]
    markdown = "\n".join([
        "# ledit demo --addons results",
        "",
        f"Command: `{results['command']}`",
        "",
        (f"Mean sliced Wasserstein distance x1e3 between {config['num_samples']} samples and "
         f"{config['real_images']} fresh procedural images per size (lower is better; in brackets the change "
         f"against the same model without add-ons; each model's best per column in bold), then the shape "
         f"precision (the fraction of whole objects drawn right; real images about 1). Models trained at "
         f"{results['train_size']}, {config['sampling_steps']} {config['sampler'].upper()} steps, the demo's noise "
         f"and references. "
         f"RoPE baseline with add-ons: {results['rope_baseline']} (the better RoPE form at the largest size)."),
        "",
        results["table"],
        "",
        results["conclusion"],
        "",
        (f"Time: {timings['total']:.0f} s ({timings['sampling']:.0f} s sampling, {timings['scoring']:.0f} s scoring) "
        f"on {results['machine']}."),
        "",
    ])
    with atomic_path(os.path.join(out_dir, "addons.json")) as temporary:
        temporary.write_text(json.dumps(results, indent=1) + "\n")
    with atomic_path(os.path.join(out_dir, "addons.md")) as temporary:
        temporary.write_text(markdown)


def run_addons(config, model_size: dict, training: TrainingConfig, command: str, machine: str) -> dict:
    """The study, its figure (addons.png) and its table (addons.md, addons.json) under ``config.out_dir``."""
    started = time.perf_counter()
    rows, figure, rope_key, timings = study(config, model_size, training)
    figure_path = os.path.join(config.out_dir, "addons.png")
    save_figure(figure_path, figure, {size: size for size in config.sizes})
    timings["total"] = round(time.perf_counter() - started, 1)
    results = {
        "command": command,
        "config": asdict(config),
        "machine": machine,
        "train_size": size_name((config.train_size, config.train_size)),
        "sizes": list(config.sizes),
        "rope_baseline": VARIANTS[rope_key].label,
        "rows": rows,
        "table": markdown_table(rows, list(config.sizes)),
        "conclusion": conclusion(rows, list(config.sizes)),
        "timings_s": timings,
        "figure": figure_path,
    }
    write_addon_results(config.out_dir, results)
    return results
