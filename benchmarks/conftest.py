"""pytest-benchmark wrappers around the ``ledit bench`` suites: ``pytest benchmarks/`` (add ``--benchmark-json``).

Each test times one method of one case of a suite's ``--quick`` plan on the GPU when one is visible, else on the
CPU; methods that do not apply to a case (a backend that cannot run, FlexAttention for ``full``) are skipped with
the reason. ``ledit bench`` is the tool that interleaves methods and writes the results files; these wrappers
are for pytest-benchmark's statistics, history and ``--benchmark-compare``.
"""

import pytest
import torch

from ledit.runtime import default_device

DEVICE = default_device()


@pytest.fixture
def time_call(benchmark):
    """time_call(calls, method, info, reasons, baselines): benchmark ``calls[method]``.

    Skips, with the reason, when the case has no such method or when a baseline cannot run on this platform
    (FlexAttention has no CPU backward); a ledit backend that raises fails the test.
    """

    def run(calls: dict, method: str, info: dict, reasons=(), baselines=()):
        if method not in calls:
            why = next((r for r in reasons if r.startswith(f"{method} ")), f"{method} does not apply to this case")
            pytest.skip(why)
        call = calls[method]
        benchmark.extra_info.update(info, device=str(DEVICE))

        def synchronized():
            call()
            if DEVICE.type == "cuda":
                torch.cuda.synchronize()

        try:
            synchronized()  # warmup: compilation and first-call allocation stay out of the statistics
        except Exception as error:
            if method not in baselines:
                raise
            pytest.skip(f"baseline {method} cannot run here: {type(error).__name__}: {error}")
        benchmark(synchronized)

    return run
