"""The ``ledit`` console command. Each sub-command lives in its own module, imported only when it runs,
so ``ledit info`` stays fast and a missing optional dependency only affects the sub-command that needs it."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with add_arguments(parser) and main(args), one-line summary)
SUBCOMMANDS = {
    "demo": ("ledit.demo.run", "train tiny LEDiT and baselines on procedural images and compare them at 1x-2x size"),
    "sample": ("ledit.sampling.sample", "sample a PNG grid at any --height/--width"),
    "sample-ddp": ("ledit.sampling.sample_ddp", "sample many images over torchrun ranks into an ADM .npz"),
    "train": ("ledit.training.train", "train DiT/LEDiT (torchrun, DDP/FSDP) from latent shards or images"),
    "extract-latents": ("ledit.data.extract_latents", "encode an ImageFolder into VAE latent shards"),
    "convert-dit": ("ledit.training.convert_dit", "convert a facebookresearch/DiT checkpoint to ledit"),
    "diffusers": ("ledit.diffusers.cli", "ledit checkpoint <-> diffusers folder (export a pipeline, import DiT-XL-2)"),
    "fid": ("ledit.evaluate.cli", "FID/sFID/IS/precision/recall and SWD between sample sets"),
    "bench": ("ledit.bench.cli", "benchmark the kernels and models against SDPA/FlexAttention"),
    "info": ("ledit.info", "what is built and which backend each op would use, and why"),
}


def _usage() -> str:
    rows = "\n".join(f"  {name:<16} {summary}" for name, (_, summary) in SUBCOMMANDS.items())
    return f"usage: ledit <command> [options]\n\ncommands:\n{rows}\n\n`ledit <command> --help` for its options."


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    name = argv[0]
    if name not in SUBCOMMANDS:
        sys.exit(f"ledit: unknown command {name!r}\n\n{_usage()}")
    module_name, summary = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"ledit {name}", description=summary)
    module.add_arguments(parser)
    module.main(parser.parse_args(argv[1:]))


if __name__ == "__main__":
    main()
