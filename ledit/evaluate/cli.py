"""``ledit fid``: FID, sFID, IS, precision/recall (ADM's definitions, Inception from torch-fidelity with local
weights) and the weight-free SWD, between a sample set and a reference; or build a reference at any size.

    ledit fid samples.npz VIRTUAL_imagenet256_labeled.npz --inception-weights weights-inception-2015-12-05-6726825d.pth
    ledit fid samples.npz --ref-stats imagenet512_stats.npz --inception-weights ...       # FID/sFID from statistics
    ledit fid --build-ref-stats imagenet/train --height 768 --width 768 --ref-stats VIRTUAL_imagenet768.npz \\
        --inception-weights ...                                                          # the paper's 768 reference
    ledit fid samples.npz reference_images/ --metrics swd                                # no weights needed
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ledit.data.npz import ImageSet
from ledit.evaluate.evaluator import INCEPTION_METRICS, METRICS, Reference, build_reference, evaluate
from ledit.evaluate.inception import load_inception
from ledit.files import write_json_atomic
from ledit.runtime import default_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser.add_argument
    p("samples", nargs="?", help="sample set: ADM .npz (arr_0) or image folder")
    p("reference", nargs="?", help="ADM reference batch .npz, statistics .npz, images .npz or image folder")
    p("--ref-stats", default=None, help="reference statistics .npz (input; the output of --build-ref-stats)")
    p("--inception-weights", default=None, help="local torch-fidelity Inception weights (.pth); never downloaded")
    p("--metrics", default=",".join(METRICS), help=f"comma-separated subset of {','.join(METRICS)}")
    p("--batch-size", type=int, default=100)
    p("--num-samples", type=int, default=None, help="use the first N samples (default: all)")
    p("--swd-images", type=int, default=10_000, help="images per side for SWD")
    p("--output", default=None, help="also write the results as JSON here")
    p("--build-ref-stats", metavar="IMAGE_FOLDER", default=None,
          help="build an ADM reference batch (statistics + --ref-images crops) from this folder into --ref-stats")
    p("--image-size", type=int, default=256, help="reference crop size (square)")
    p("--height", type=int, default=None, help="reference crop height (overrides --image-size)")
    p("--width", type=int, default=None, help="reference crop width (overrides --image-size)")
    p("--ref-images", type=int, default=10_000, help="crops stored in the reference for precision/recall/SWD")
    p("--max-images", type=int, default=None, help="images used for the reference statistics (default: all)")
    p("--device", default=None, help="cuda | cpu (default: cuda if available)")


def _metrics(text: str) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = sorted(set(chosen) - set(METRICS))
    if unknown or not chosen:
        raise ValueError(f"--metrics {text!r}: unknown {unknown}; choose from {','.join(METRICS)}")
    return chosen


def format_results(results: dict) -> str:
    names = {"fid": "FID", "sfid": "sFID", "is": "IS", "precision": "Precision", "recall": "Recall", "swd": "SWD x1e3"}
    lines = [f"{label:<10} {results[key]:.4f}" for key, label in names.items() if key in results]
    lines += [f"  swd {level}: {value:.4f}" for level, value in results.get("swd_levels", {}).items()]
    return "\n".join(lines + [f"note: {note}" for note in results.get("notes", [])])


def main(args: argparse.Namespace) -> None:
    device = default_device(args.device)
    if args.build_ref_stats:
        if not args.ref_stats:
            raise ValueError("--build-ref-stats needs --ref-stats OUT.npz for the result")
        if not Path(args.build_ref_stats).is_dir():
            raise FileNotFoundError(f"--build-ref-stats {args.build_ref_stats!r} is not an image folder")
        height, width = args.height or args.image_size, args.width or args.image_size
        out = build_reference(args.build_ref_stats, args.ref_stats, load_inception(args.inception_weights, device),
                              height, width, args.ref_images, args.max_images, args.batch_size, device)
        print(f"wrote the {height}x{width} reference batch {out}")
        return
    metrics = _metrics(args.metrics)
    if args.samples is None or (args.reference is None) == (args.ref_stats is None):
        raise ValueError("pass a sample set and exactly one reference: `ledit fid SAMPLES REFERENCE` or "
                         "`ledit fid SAMPLES --ref-stats STATS.npz`")
    extractor = load_inception(args.inception_weights, device) if INCEPTION_METRICS & set(metrics) else None
    results = evaluate(ImageSet(args.samples, args.num_samples), Reference(args.reference or args.ref_stats), extractor,
                       metrics, args.batch_size, device, args.swd_images)
    print(format_results(results))
    if args.output:
        write_json_atomic(args.output, results)
