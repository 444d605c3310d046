"""dwconv_modulate (every registered backend) vs the unfused sequence, eager and compiled, and torch.clone(x)."""

import pytest

from ledit.bench import dwconv
from ledit.ops import DWCONV_MODULATE_BACKENDS
from ledit.runtime import default_device

DEVICE = default_device()

CASES = [(case, p) for case in dwconv.plan(DEVICE, quick=True) for p in (dwconv.FWD, dwconv.FWD_BWD)]
METHODS = [*DWCONV_MODULATE_BACKENDS.names, dwconv.UNFUSED_EAGER, dwconv.UNFUSED_COMPILED, dwconv.CLONE]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case,pass_name", CASES,
                         ids=[f"B{c.batch}-{c.grid[0]}x{c.grid[1]}-C{c.channels}-{p}" for c, p in CASES])
def test_dwconv_modulate(time_call, case, pass_name, method):
    calls, baselines, notes = dwconv.build_calls(case, DEVICE)
    time_call(calls[pass_name], method, {**case.describe(), "pass": pass_name}, notes, baselines[pass_name])
