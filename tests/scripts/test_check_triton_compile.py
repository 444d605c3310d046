"""The offline Triton compile check (scripts/check_triton_compile.py) fails on what it exists to catch: a kernel that
does not compile for a GPU, a block above the target's shared memory, a kernel over its budget. Compiling needs
Triton's NVIDIA backend (its bundled ptxas), no GPU; it runs in a subprocess because the test session imports
the kernels for Triton's interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(ROOT, "scripts")
sys.path.insert(0, SCRIPTS)

check = pytest.importorskip("check_triton_compile")
gpu_budgets = pytest.importorskip("gpu_budgets")


def _nvidia_backend_available() -> bool:
    try:
        from triton.backends.nvidia import compiler  # noqa: F401
    except ImportError:
        return False
    return True


needs_nvidia_backend = pytest.mark.skipif(not _nvidia_backend_available(), reason="Triton's NVIDIA backend is missing")

# Kernels written to break the check, compiled through its own path (check_launch) in a clean process.
DRIVER = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, {scripts!r})
    import torch, triton, triton.language as tl
    import check_triton_compile as check
    from ledit.ops.triton_launch import Launch

    SCALE = 2.0  # a plain Python global: the GPU compiler refuses to read it inside @jit code

    @triton.jit
    def reads_a_plain_global(x_ptr):
        tl.store(x_ptr, tl.load(x_ptr) * SCALE)

    @triton.jit
    def needs_too_much_shared_memory(a_ptr, b_ptr, c_ptr, K, BM: tl.constexpr, BK: tl.constexpr):
        # A matmul whose loads are pipelined num_stages deep: each stage stages two 128 x 128 fp16 tiles (64 KB).
        rows, inner = tl.arange(0, BM), tl.arange(0, BK)
        acc = tl.zeros([BM, BM], tl.float32)
        for k in range(0, K, BK):
            a = tl.load(a_ptr + rows[:, None] * K + (k + inner)[None, :])
            b = tl.load(b_ptr + (k + inner)[:, None] * BM + rows[None, :])
            acc += tl.dot(a, b)
        tl.store(c_ptr + rows[:, None] * BM + rows[None, :], acc)

    x = torch.empty(1024, dtype=torch.float16, device="meta")
    launches = {{
        "plain_global": Launch(reads_a_plain_global, (1,), (x,), {{}}),
        "shared_memory": Launch(needs_too_much_shared_memory, (1,), (x, x, x, 4096),
                                dict(BM=128, BK=128, num_warps=8, num_stages=4)),
    }}
    budgets = []  # no budget for these: a violation of its own, beside the one each test looks for
    out = {{}}
    for name, launch in launches.items():
        for arch in (80, 90):
            r = check.check_launch("test", launch.kernel.fn.__name__, name, launch, arch, budgets)
            out[f"{{name}}/{{arch}}"] = dict(error=r.error, violations=list(r.violations), shared=r.shared_bytes)
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def broken_kernel_results(tmp_path_factory):
    driver = tmp_path_factory.mktemp("triton") / "broken_kernels.py"  # @triton.jit needs its source in a file
    driver.write_text(DRIVER.format(scripts=SCRIPTS))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@needs_nvidia_backend
@pytest.mark.parametrize("arch", [80, 90])
def test_a_kernel_that_does_not_compile_fails(broken_kernel_results, arch):
    result = broken_kernel_results[f"plain_global/{arch}"]
    assert result["error"] is not None and "global variable" in result["error"]
    assert check.format_result(check.Result("test", "k", "plain_global", arch, error=result["error"])).startswith(
        "FAILED")


@needs_nvidia_backend
@pytest.mark.parametrize("arch", [80, 90])
def test_a_block_above_the_targets_shared_memory_fails(broken_kernel_results, arch):
    """Four pipeline stages of two 128 x 128 fp16 tiles: 256 KB, above both targets' opt-in limit."""
    result = broken_kernel_results[f"shared_memory/{arch}"]
    assert result["error"] is None
    assert result["shared"] > gpu_budgets.shared_memory_limit(arch)
    assert any("opt-in limit" in v for v in result["violations"]), result


def test_a_kernel_over_its_budget_fails():
    budgets = [dict(kernel="scan_attention.forward_kernel", match="^bfloat16", registers=128, spill_bytes=0),
               dict(kernel="scan_attention.forward_kernel", match=".", registers=255, spill_bytes=64)]
    over = check.Result("scan_attention", "forward_kernel", "bfloat16 D=72", 90, registers=168, spill_bytes=16)
    assert check.check_budget(over, budgets) == ["registers 168 > budget 128", "spill_bytes 16 > budget 0"]
    # The first matching entry applies: an fp32 configuration gets the second one.
    within = check.Result("scan_attention", "forward_kernel", "float32 D=72", 90, registers=168, spill_bytes=16)
    assert check.check_budget(within, budgets) == []
    unbudgeted = check.Result("dwconv_modulate", "forward_kernel", "float32", 80)
    assert "no budget" in check.check_budget(unbudgeted, budgets)[0]


def test_every_triton_kernel_and_configuration_class_has_a_budget():
    """The committed budget file covers every kernel the launchers can launch."""
    budgets = gpu_budgets.load_budgets()["triton"]
    for op, launch in check.launch_space():
        result = check.Result(op, launch.kernel.fn.__name__, check.describe(launch), 80)
        assert not [v for v in check.check_budget(result, budgets) if "no budget" in v], result
