"""The CUDA resource and SASS gates (scripts/check_cuda_compile.py) fail on what they exist to catch: a kernel over
its budget, a kernel without a budget, a budget for a kernel that is gone, a broken SASS rule, an exception that no
longer applies. A small kernel is compiled with nvcc for sm_80 and sm_90 (no GPU needed)."""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

check = pytest.importorskip("check_cuda_compile")
gpu_budgets = pytest.importorskip("gpu_budgets")

KERNELS = r"""
#include <cuda_fp16.h>
#include <mma.h>
namespace ledit { namespace probe { namespace cuda { namespace {
// Scalar work only: no tensor cores, no LDSM.
__global__ void scale_kernel(float* x, float s) { x[threadIdx.x] *= s; }
// One 16x16x16 WMMA product: HMMA in its SASS.
__global__ void mma_kernel(const __half* a, const __half* b, float* c) {
  nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major> fa;
  nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __half, nvcuda::wmma::col_major> fb;
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> fc;
  nvcuda::wmma::fill_fragment(fc, 0.f);
  nvcuda::wmma::load_matrix_sync(fa, a, 16);
  nvcuda::wmma::load_matrix_sync(fb, b, 16);
  nvcuda::wmma::mma_sync(fc, fa, fb, fc);
  nvcuda::wmma::store_matrix_sync(c, fc, 16, nvcuda::wmma::mem_row_major);
}
}}}}
void launch(float* x, const __half* a, const __half* b, float* c) {
  ledit::probe::cuda::scale_kernel<<<1, 32>>>(x, 2.f);
  ledit::probe::cuda::mma_kernel<<<1, 32>>>(a, b, c);
}
"""


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    nvcc = check.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    cuobjdump = check.find_cuobjdump(nvcc)
    if cuobjdump is None:
        pytest.skip("cuobjdump not found")
    work = tmp_path_factory.mktemp("cuda")
    src, obj = work / "probe.cu", work / "probe.o"
    src.write_text(KERNELS)
    result = check.compile_cuda(nvcc, str(src), str(obj), check.nvcc_flags("80;90"))
    assert result.returncode == 0, result.stderr
    usage, opcodes = check.ptxas_usage(result.stderr), check.sass_opcodes(str(obj), cuobjdump)
    names = check.short_names(sorted({m for m, _ in usage}))
    return ({(names[m], a): u for (m, a), u in usage.items()},
            {(names[m], a): c for (m, a), c in opcodes.items() if m in names})


def _exact_budgets(usage):
    kernels = {}
    for (name, arch), u in usage.items():
        kernels.setdefault(name, {})[arch] = dataclasses.asdict(u)
    return {"kernels": kernels, "rules": [], "exceptions": []}


def test_measures_both_arches_and_reads_the_sass(measured):
    usage, opcodes = measured
    assert set(usage) == {(k, a) for k in ("probe::scale_kernel", "probe::mma_kernel") for a in ("sm_80", "sm_90")}
    assert all(u.registers > 0 for u in usage.values())
    assert opcodes[("probe::mma_kernel", "sm_80")]["HMMA"] > 0
    assert opcodes[("probe::scale_kernel", "sm_90")]["HMMA"] == 0


def test_budgets_at_the_measured_values_pass(measured):
    usage, opcodes = measured
    assert check.check_budgets(usage, opcodes, _exact_budgets(usage)) == []


def test_a_kernel_over_its_register_budget_fails(measured):
    usage, opcodes = measured
    budgets = _exact_budgets(usage)
    budgets["kernels"]["probe::mma_kernel"]["sm_90"]["registers"] -= 1
    problems = check.check_budgets(usage, opcodes, budgets)
    assert len(problems) == 1 and problems[0].startswith("probe::mma_kernel on sm_90: registers")


def test_a_kernel_without_a_budget_and_a_budget_without_a_kernel_fail(measured):
    usage, opcodes = measured
    budgets = _exact_budgets(usage)
    budgets["kernels"]["probe::gone_kernel"] = budgets["kernels"].pop("probe::scale_kernel")
    problems = check.check_budgets(usage, opcodes, budgets)
    assert sum("no budget" in p for p in problems) == 2
    assert any(p.startswith("probe::gone_kernel: budgeted") for p in problems)


def test_a_broken_sass_rule_fails_unless_a_named_exception_excuses_it(measured):
    usage, opcodes = measured
    budgets = _exact_budgets(usage)
    budgets["rules"] = [dict(name="tensor-cores", kernels="^probe::", require_sass=["HMMA"], why="test")]
    problems = check.check_budgets(usage, opcodes, budgets)
    assert sorted(p.split(" breaks")[0] for p in problems) == ["probe::scale_kernel on sm_80",
                                                               "probe::scale_kernel on sm_90"]
    budgets["exceptions"] = [dict(rule="tensor-cores", kernels="scale_kernel", reason="scalar by design")]
    assert check.check_budgets(usage, opcodes, budgets) == []
    # An exception that excuses nothing any more (the kernel was fixed or replaced) fails too.
    budgets["exceptions"].append(dict(rule="tensor-cores", kernels="mma_kernel", reason="stale"))
    problems = check.check_budgets(usage, opcodes, budgets)
    assert len(problems) == 1 and "no longer applies" in problems[0]


def test_the_committed_budget_file_names_real_rules_with_reasons():
    cuda = gpu_budgets.load_budgets()["cuda"]
    rules = {rule["name"] for rule in cuda["rules"]}
    assert {"tensor-cores", "ldsm-for-16-bit-operands", "no-spills"} <= rules
    for exception in cuda.get("exceptions", []):  # none since issue 15's attention kernels
        assert exception["rule"] in rules and exception["reason"].strip()
