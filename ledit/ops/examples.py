"""One representative call of each op, to say which backend would run it and why the others would not.

``ledit info`` prints the answer for each device; ``ledit bench`` stores it in every results file. The call is
LEDiT-XL/2's head dim (72) on a small non-square grid, float32, with every optional input of dwconv_modulate given.
"""

from __future__ import annotations

from typing import Optional

import torch

from ledit.ops.dwconv_modulate import DWCONV_MODULATE_BACKENDS
from ledit.ops.scan_attention import SCAN_ATTENTION_BACKENDS

EXAMPLE_GRID = (5, 7)


def example_calls(device: torch.device) -> dict:
    """{op's backend registry: the example call's arguments, as the registry's ``explain`` takes them}."""
    tokens = EXAMPLE_GRID[0] * EXAMPLE_GRID[1]
    q = torch.zeros(1, tokens, 2, 72, device=device)
    x = torch.zeros(1, tokens, 16, device=device)
    weight = torch.zeros(16, 1, 3, 3, device=device)
    modulation = torch.zeros(1, 16, device=device)
    return {
        SCAN_ATTENTION_BACKENDS: (q, q, q, EXAMPLE_GRID, "corner", None),
        DWCONV_MODULATE_BACKENDS: (x, EXAMPLE_GRID, weight, None, modulation, modulation, modulation, x, 1, True),
    }


def explain_example_calls(device: torch.device) -> dict[str, list[tuple[str, Optional[str]]]]:
    """{op name: [(backend, None when it can run the example call on ``device``, else why not)]}, each op's
    backends in its automatic order for the device type, so the first with None is the one that would run."""
    return {op.op_name: op.explain(device.type, *args) for op, args in example_calls(device).items()}
