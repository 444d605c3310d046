"""LEDiT training and sampling steps vs the same model on the reference backends and DiT with SDPA."""

import pytest

from ledit.bench import end_to_end
from ledit.runtime import default_device

DEVICE = default_device()

CASES = end_to_end.plan(DEVICE, quick=True)
METHODS = [end_to_end.LEDIT, end_to_end.LEDIT_REFERENCE, end_to_end.DIT_SDPA, end_to_end.LEDIT_COMPILED,
           end_to_end.DIT_COMPILED]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES, ids=[f"{c.task}-{c.model}-{c.image_size}" for c in CASES])
def test_end_to_end(time_call, case, method):
    calls, baselines = end_to_end.build_calls(case, DEVICE)
    time_call(calls, method, case.describe(), baselines=baselines)
