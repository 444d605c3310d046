"""Packed sequences of mixed-size images (both ops) vs an equal-token batch of one size and vs padding."""

import pytest

from ledit.bench import packed_ops
from ledit.runtime import default_device

DEVICE = default_device()

CASES = [(case, p) for case in packed_ops.plan(DEVICE, quick=True) for p in (packed_ops.FWD, packed_ops.FWD_BWD)]
METHODS = ["packed", packed_ops.UNIFORM, packed_ops.PADDED, packed_ops.PADDED_SDPA_MASK]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case,pass_name", CASES, ids=[f"{c.op}-{c.tokens}tokens-{p}" for c, p in CASES])
def test_packed_ops(time_call, case, pass_name, method):
    calls, baselines, notes = packed_ops.build_calls(case, DEVICE)
    time_call(calls[pass_name], method, {**case.describe(), "pass": pass_name}, notes, baselines)
