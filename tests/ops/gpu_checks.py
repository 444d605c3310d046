"""What the GPU tests of both ops share."""

from __future__ import annotations

import torch


def assert_no_host_sync(step) -> None:
    """Run ``step`` (a packed call's forward and backward) once to warm up, then again under torch's sync debug
    mode set to "error": any host synchronisation in it raises (issue 17 forbids the per-call .item() NiT makes)."""
    step()  # the first call may initialise lazily
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
