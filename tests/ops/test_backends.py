import pytest
import torch

from ledit.ops import BACKEND_ENV, BackendUnavailableError, scan_attention
from ledit.ops.backends import OpBackends


def _registry():
    ops = OpBackends("toy", {"cpu": ("fast", "reference")})
    ops.register("reference", lambda x: ("reference", x), lambda x: None)
    ops.register("fast", lambda x: ("fast", x), lambda x: None if x > 0 else "fast needs x > 0")
    ops.register("manual", lambda x: ("manual", x), lambda x: None)
    return ops


def test_automatic_order_and_fallback_with_reason():
    ops = _registry()
    assert ops.choose(None, "cpu", 1).name == "fast"
    assert ops.choose(None, "cpu", -1).name == "reference"
    explained = dict(ops.explain("cpu", -1))
    assert explained["fast"] == "fast needs x > 0"
    assert explained["reference"] is None
    assert "not tried automatically" in explained["manual"]


def test_requested_backend_is_strict(monkeypatch):
    ops = _registry()
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert ops.choose("manual", "cpu", 1).name == "manual"
    with pytest.raises(BackendUnavailableError, match="fast needs x > 0"):
        ops.choose("fast", "cpu", -1)
    with pytest.raises(ValueError, match="unknown backend='nope'.*reference"):
        ops.choose("nope", "cpu", 1)


def test_env_var_forces_backend(monkeypatch):
    ops = _registry()
    monkeypatch.setenv(BACKEND_ENV, "reference")
    assert ops.choose(None, "cpu", 1).name == "reference"
    # An explicit argument wins over the environment.
    assert ops.choose("manual", "cpu", 1).name == "manual"


def test_no_backend_lists_every_reason():
    ops = OpBackends("toy", {"cpu": ("only",)})
    ops.register("only", lambda: None, lambda: "never runs")
    with pytest.raises(BackendUnavailableError, match="only: never runs"):
        ops.choose(None, "cpu")


def test_scan_attention_rejects_unknown_backend():
    q = torch.randn(1, 4, 1, 8)
    with pytest.raises(ValueError, match="unknown backend='bogus'"):
        scan_attention(q, q, q, (2, 2), backend="bogus")
