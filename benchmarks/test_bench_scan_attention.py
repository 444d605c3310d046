"""scan_attention (every registered backend) vs SDPA bool mask / unmasked / is_causal and compiled FlexAttention."""

import pytest

from ledit.bench import attention
from ledit.ops import SCAN_ATTENTION_BACKENDS
from ledit.runtime import default_device

DEVICE = default_device()

CASES = [(case, p) for case in attention.plan(DEVICE, quick=True) for p in case.passes]
METHODS = [*SCAN_ATTENTION_BACKENDS.names, attention.SDPA_BOOL_MASK, attention.SDPA_UNMASKED,
           attention.SDPA_IS_CAUSAL, attention.FLEX]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case,pass_name", CASES,
                         ids=[f"{c.grid[0]}x{c.grid[1]}-D{c.head_dim}-{c.scan}-{p}" for c, p in CASES])
def test_scan_attention(time_call, case, pass_name, method):
    calls, baselines, notes = attention.build_calls(case, DEVICE)
    time_call(calls[pass_name], method, {**case.describe(), "pass": pass_name}, notes, baselines)
