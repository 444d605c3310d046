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

from ledit import arguments
from ledit.arguments import UsageError
from ledit.data.images import add_image_check_arguments
from ledit.data.npz import ImageSet
from ledit.evaluate.evaluator import INCEPTION_METRICS, METRICS, Reference, build_reference, evaluate
from ledit.evaluate.inception import load_inception
from ledit.files import write_json_atomic
from ledit.runtime import default_device, require_packages

# --build-ref-stats's defaults: ADM's 256 px reference batches hold 10K images.
IMAGE_SIZE, REF_IMAGES = 256, 10_000
BUILD_ONLY = ("image_size", "height", "width", "ref_images", "max_images")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser.add_argument
    p("samples", nargs="?", help="sample set: ADM .npz (arr_0) or image folder")
    p("reference", nargs="?", help="ADM reference batch .npz, statistics .npz, images .npz or image folder")
    p("--ref-stats", default=None, type=arguments.file_with_suffix(".npz"),
      help="reference statistics .npz (input; the output of --build-ref-stats)")
    p("--inception-weights", default=None, help="local torch-fidelity Inception weights (.pth); never downloaded")
    p("--metrics", type=arguments.comma_list(METRICS), default=METRICS,
      help=f"comma-separated subset of {','.join(METRICS)}")
    p("--batch-size", type=arguments.positive_int, default=100)
    p("--num-samples", type=arguments.positive_int, default=None,
      help="use the first N samples (default: all; more than the set holds is an error)")
    p("--swd-images", type=arguments.positive_int, default=10_000, help="at most this many images per side for SWD")
    p("--output", default=None, type=arguments.file_with_suffix(".json"), help="also write the results as JSON here")
    p("--build-ref-stats", metavar="IMAGE_FOLDER", default=None,
          help="build an ADM reference batch (statistics + --ref-images crops) from this folder into --ref-stats")
    group = parser.add_argument_group("with --build-ref-stats only")
    q = group.add_argument
    q("--image-size", type=arguments.positive_int, default=None, help="reference crop size (square; default 256)")
    q("--height", type=arguments.positive_int, default=None, help="reference crop height (overrides --image-size)")
    q("--width", type=arguments.positive_int, default=None, help="reference crop width (overrides --image-size)")
    q("--ref-images", type=arguments.positive_int, default=None,
      help=f"at most this many crops stored in the reference for precision/recall/SWD (default {REF_IMAGES})")
    q("--max-images", type=arguments.positive_int, default=None,
      help="images used for the reference statistics (default: all)")
    add_image_check_arguments(parser)
    p("--device", type=arguments.device, default=None, help="cuda | cuda:N | cpu (default: cuda if available)")


def format_results(results: dict) -> str:
    names = {"fid": "FID", "sfid": "sFID", "is": "IS", "precision": "Precision", "recall": "Recall", "swd": "SWD x1e3"}
    lines = [f"{label:<10} {results[key]:.4f}" for key, label in names.items() if key in results]
    lines += [f"  swd {level}: {value:.4f}" for level, value in results.get("swd_levels", {}).items()]
    return "\n".join(lines + [f"note: {note}" for note in results.get("notes", [])])


def check_arguments(args: argparse.Namespace) -> None:
    """The checks that need several flags, before any work (and before the Inception weights are loaded)."""
    building = [f"--{name.replace('_', '-')}" for name in BUILD_ONLY if getattr(args, name) is not None]
    if building and not args.build_ref_stats:
        raise UsageError(f"{', '.join(building)} {'applies' if len(building) == 1 else 'apply'} only with "
                         "--build-ref-stats (the reference it builds); drop it to evaluate")
    if args.build_ref_stats:
        if not args.ref_stats:
            raise UsageError("--build-ref-stats needs --ref-stats OUT.npz for the result")
        if args.samples or args.reference:
            raise UsageError("--build-ref-stats builds a reference and evaluates nothing: drop the sample sets")
        if not Path(args.build_ref_stats).is_dir():
            raise FileNotFoundError(f"--build-ref-stats {args.build_ref_stats!r} is not an image folder")
        return
    if args.samples is None or (args.reference is None) == (args.ref_stats is None):
        raise UsageError("pass a sample set and exactly one reference: `ledit fid SAMPLES REFERENCE` or "
                         "`ledit fid SAMPLES --ref-stats STATS.npz`")


def main(args: argparse.Namespace) -> None:
    check_arguments(args)
    device = default_device(args.device)
    images = {"check": args.check_images, "skip_bad": args.skip_bad_images}
    if args.build_ref_stats:
        size = args.image_size or IMAGE_SIZE
        height, width = args.height or size, args.width or size
        out = build_reference(args.build_ref_stats, args.ref_stats, load_inception(args.inception_weights, device),
                              height, width, args.ref_images or REF_IMAGES, args.max_images, args.batch_size, device,
                              **images)
        print(f"wrote the {height}x{width} reference batch {out}")
        return
    samples = ImageSet(args.samples, args.num_samples, **images)
    if args.num_samples is not None and len(samples) < args.num_samples:
        raise UsageError(f"--num-samples {args.num_samples}: {args.samples} holds only {len(samples)} images")
    reference = Reference(args.reference or args.ref_stats, **images)
    if {"fid", "sfid"} & set(args.metrics):  # needed only after the features are extracted: check it now
        require_packages("--metrics fid/sfid", "scipy", install="'ledit[eval]'")
    extractor = load_inception(args.inception_weights, device) if INCEPTION_METRICS & set(args.metrics) else None
    results = evaluate(samples, reference, extractor, args.metrics, args.batch_size, device, args.swd_images)
    print(format_results(results))
    if args.output:
        write_json_atomic(args.output, results)
