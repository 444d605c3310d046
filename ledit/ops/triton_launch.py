"""The one place where ledit's Triton launchers start a kernel: on the GPU that holds the tensors, and visible to
tools.

Triton launches on the *current* CUDA device, so a call with tensors on ``cuda:1`` while ``cuda:0`` is current would
run on the wrong GPU; ``launch`` makes the tensors' device current first (as flash-attention's Triton code does).

``record_launches()`` makes every launcher record what it would launch instead of running it.
``scripts/check_triton_compile.py`` runs the launchers inside it on every configuration they can choose and
compiles each recorded launch for real GPU targets, without a GPU: one source of truth for what gets compiled.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch


@dataclass(frozen=True)
class Launch:
    """A kernel launch as a launcher would make it: ``kernel[grid](*args, **meta)``."""

    kernel: Any
    grid: tuple
    args: tuple
    meta: dict


_recorded: Optional[list[Launch]] = None


def launch(kernel, grid: tuple, *args, **meta) -> None:
    """``kernel[grid](*args, **meta)`` through ``torch.library.wrap_triton`` (so ``torch.compile`` traces it), on
    the device of the first tensor argument; recorded instead of run inside ``record_launches()``."""
    if _recorded is not None:
        _recorded.append(Launch(kernel, tuple(grid), args, dict(meta)))
        return
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    guard = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with guard:
        torch.library.wrap_triton(kernel)[grid](*args, **meta)


@contextlib.contextmanager
def record_launches() -> Iterator[list[Launch]]:
    """Within the block, launchers append their launches to the yielded list and run nothing."""
    global _recorded
    outer, _recorded = _recorded, []
    try:
        yield _recorded
    finally:
        _recorded = outer
