"""The ``ledit`` console command. Each sub-command lives in its own module, imported only when it runs,
so ``ledit info`` stays fast and a missing optional dependency only affects the sub-command that needs it.

``main`` is the command: an error is one line, ``ledit <command>: error: <what and how to fix it>``, with exit
status 2 for a bad command line (``ledit.arguments.UsageError``, or argparse's own checks) and 1 for a failure
while running; ``--debug`` or ``LEDIT_DEBUG=1`` shows the traceback instead. ``run`` does the same work and lets
the exception through, for Python callers and tests.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ledit.arguments import UsageError

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
DEBUG_ENV = "LEDIT_DEBUG"
# Exit statuses: a command line that cannot run, a failure while running, Ctrl-C (128 + SIGINT, as shells report).
USAGE_STATUS, FAILURE_STATUS, INTERRUPTED_STATUS = 2, 1, 130


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors raise UsageError (one line, the flag named) instead of printing the usage and
    exiting, so ``run`` callers get an exception and ``main`` prints the one-line form."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _usage() -> str:
    rows = "\n".join(f"  {name:<16} {summary}" for name, (_, summary) in SUBCOMMANDS.items())
    return (f"usage: ledit <command> [options]\n\ncommands:\n{rows}\n\n`ledit <command> --help` for its options; "
            f"--debug (or {DEBUG_ENV}=1) shows the traceback of an error.")


def _parse(argv: list[str]):
    """(sub-command module, parsed args) for argv = [command, options...]."""
    name = argv[0]
    if name not in SUBCOMMANDS:
        raise UsageError(f"unknown command {name!r}; commands: {', '.join(SUBCOMMANDS)} (see `ledit --help`)")
    module_name, summary = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    parser = ArgumentParser(prog=f"ledit {name}", description=summary)
    module.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help=f"show the traceback of an error (or set {DEBUG_ENV}=1)")
    args = parser.parse_args(argv[1:])
    del args.debug  # read from argv by main; not a setting of the run (training stores its args in checkpoints)
    return module, args


def run(argv: list[str]) -> None:
    """Run one sub-command, ``argv = [command, options...]``; errors propagate (UsageError for the command line)."""
    module, args = _parse(list(argv))
    module.main(args)


def _one_line(error: BaseException) -> str:
    """The error as one line. ledit's own errors and ValueError/OSError/ImportError carry a sentence written for the
    user; any other error is led by its type (a KeyError's message is only the key) and points to --debug. A
    multi-line message keeps its first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught ") and "Original Traceback" in str(error):
        # Re-raised from a DataLoader worker: the first line names the worker, the last one is the error.
        return f"{lines[-1]} ({lines[0].removeprefix('Caught ').rstrip('.')})"
    message = (lines[0] + (" [...]" if len(lines) > 1 else "")) if lines else ""
    explained = isinstance(error, (ValueError, OSError, ImportError)) or type(error).__module__.startswith("ledit.")
    if explained and message:
        return message
    return f"{type(error).__name__}: {message} (--debug or {DEBUG_ENV}=1 shows the traceback)"


def main(argv: list[str] | None = None) -> None:
    """The ``ledit`` command: exits 0 on success, 2 on a bad command line, 1 on a failure, 130 on Ctrl-C."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if argv[:1] == ["--debug"]:  # `ledit --debug <command> ...` as well as `ledit <command> ... --debug`
        argv = argv[1:]
    if argv[:1] in (["-h"], ["--help"]):
        print(_usage())
        return
    if not argv:
        print(_usage(), file=sys.stderr)
        sys.exit(USAGE_STATUS)
    prog = f"ledit {argv[0]}" if argv[0] in SUBCOMMANDS else "ledit"
    try:
        run(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(INTERRUPTED_STATUS)
    except Exception as error:  # noqa: BLE001 - every error leaves the command as one line
        if debug:
            raise
        print(f"{prog}: error: {_one_line(error)}", file=sys.stderr)
        sys.exit(USAGE_STATUS if isinstance(error, UsageError) else FAILURE_STATUS)


if __name__ == "__main__":
    main()
