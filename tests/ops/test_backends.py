import types

import pytest
import torch

import ledit.ops
from ledit.ops import BACKEND_ENV, BackendUnavailableError, extension, scan_attention
from ledit.ops.backends import OpBackends
from ledit.ops.examples import example_calls, explain_example_calls


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


@pytest.mark.parametrize("capability, refused", [((7, 5), True), ((8, 0), False), ((9, 0), False)])
def test_cuda_backends_refuse_pre_ampere_gpus(monkeypatch, capability, refused):
    """A T4/V100 must fall back to Triton with a reason, not crash with 'no kernel image' (sm_80+ builds)."""
    if not hasattr(torch.ops.ledit, "scan_attention_fwd"):
        pytest.skip("ledit._C is not built")
    monkeypatch.setattr(extension, "extension_unavailable_reason", lambda device_type: None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    on_gpu = types.SimpleNamespace(device=torch.device("cuda", 0))
    reason = extension.compiled_op_unavailable_reason("scan_attention", "cuda", on_gpu, "q")
    if refused:
        assert "compute capability >= 8.0" in reason and "7.5" in reason
    else:
        assert reason is None


def test_example_calls_name_every_backend_of_every_op_and_run():
    """The call `ledit info` and `ledit bench` explain is a valid call of the public op, on every backend listed."""
    calls = example_calls(torch.device("cpu"))
    explained = explain_example_calls(torch.device("cpu"))
    assert set(explained) == {op.op_name for op in calls} == {"scan_attention", "dwconv_modulate"}
    for op, args in calls.items():
        assert sorted(name for name, _ in explained[op.op_name]) == sorted(op.names)
        assert dict(explained[op.op_name])["reference"] is None
        out = getattr(ledit.ops, op.op_name)(*args)
        assert out.shape == args[0].shape and out.device.type == "cpu"


def test_info_lines_up_every_backend_reason():
    from ledit.info import report

    rows = [line for line in report().splitlines() if line.startswith(("  -> ", "     "))]
    names = {line[5:].split(" ", 1)[0] for line in rows}
    assert "cuda_emulated" in names  # the longest name, which once pushed its reason out of the column
    reason_columns = {len(line) - len(line[5:].split(" ", 1)[1].lstrip()) for line in rows}
    assert len(reason_columns) == 1
