"""``python -m ledit.info`` / ``ledit info``: what is built, which backend each op would use on each device, and why."""

from __future__ import annotations

import argparse
import os
import platform

import torch

import ledit
from ledit.ops.backends import BACKEND_ENV
from ledit.ops.examples import EXAMPLE_GRID, explain_example_calls
from ledit.ops.extension import extension_unavailable_reason, load_extension, triton_unavailable_reason


def report() -> str:
    ext, ext_reason = load_extension()
    lines = [
        f"ledit {ledit.__version__}  torch {torch.__version__}  python {platform.python_version()}",
        f"torch CUDA: {torch.version.cuda or 'none (CPU build)'}; GPU visible: {torch.cuda.is_available()}",
        f"ledit._C: {'built' if ext else 'missing: ' + ext_reason}",
    ]
    if ext is not None:
        lines.append(f"ledit._C CUDA kernels: {'yes' if ext.cuda_compiled() else 'no'}")
    lines.append(f"triton: {triton_unavailable_reason('cuda') or 'available'}")
    lines.append(f"{BACKEND_ENV}={os.environ.get(BACKEND_ENV, '') or '(unset: automatic)'}")
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        for op_name, choices in explain_example_calls(device).items():
            grid = "x".join(map(str, EXAMPLE_GRID))
            lines.append(f"\n{op_name} on {device.type} (example call: grid {grid}, float32):")
            chosen = None
            width = max(len(name) for name, _ in choices)
            for name, reason in choices:
                if reason is None and chosen is None:
                    chosen = name
                mark = "->" if name == chosen else "  "
                lines.append(f"  {mark} {name:<{width}} {'ok' if reason is None else reason}")
    if not torch.cuda.is_available():
        cuda_kernels = extension_unavailable_reason("cuda") or "yes"
        lines.append(f"\non cuda: no GPU visible; compiled CUDA kernels: {cuda_kernels}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__


def main(args: argparse.Namespace | None = None) -> None:
    print(report())


if __name__ == "__main__":
    main()
