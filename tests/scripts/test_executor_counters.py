"""scripts/executor_counters.py: the counters table in docs/cuda-executor.md is the script's output from the saved
measurements, its ratios are the counters' ratios, and a measurement records every launch of each pass."""

from __future__ import annotations

import functools
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import executor_counters as counters  # noqa: E402

from ledit.ops.extension import load_emulated_extension  # noqa: E402


def test_the_docs_table_is_the_scripts_output():
    records = counters.saved_records()
    assert records, "no benchmarks/results/executor-counters-*.json"
    text = counters.DOC.read_text()
    assert counters.replace_block(text, counters.render(records)) == text, (
        "docs/cuda-executor.md's counters table is stale or edited by hand: run python scripts/executor_counters.py")


def _counters(**values):
    zero = {f"{kind}_{n}": 0 for kind, _ in counters.SHARED_KINDS for n in ("instructions", "wavefronts",
                                                                           "ideal_wavefronts")}
    zero.update({f"global_{kind}_{n}": 0 for kind in ("load", "store")
                 for n in ("instructions", "bytes", "sectors", "unique_sectors")})
    zero.update(global_atomics=0, mma=0, block_barriers=0, blocks=1, threads=128)
    return zero | values


def _cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def test_rows_are_the_counters_ratios():
    c = _counters(mma=10, ldmatrix_instructions=20, ldmatrix_wavefronts=60, ldmatrix_ideal_wavefronts=40,
                  shared_store_instructions=5, shared_store_wavefronts=20, shared_store_ideal_wavefronts=20,
                  global_load_bytes=3000, global_load_sectors=100, global_load_unique_sectors=40,
                  global_store_bytes=200, global_store_sectors=25, global_store_unique_sectors=25,
                  block_barriers=6, blocks=2, threads=256)
    record = {"label": "k", "commit": "abc", "date": "2026-01-01", "cases": [{"title": "t", "passes": [
        {"pass": "fwd", "useful_flops": 20480, "compulsory_bytes": 2000,
         "launches": [{"kernel": "a<1>", "shared_bytes": 2048, "counters": c}]}]}]}
    table = counters.render([record])
    pass_row, launch_row = table.splitlines()[4:6]
    # 10 mma = 40960 FLOPs for 20480 useful; 80 wavefronts per 10 mma; 125 sectors = 4000 bytes, 2x compulsory,
    # 65 distinct = 2080 bytes.
    assert _cells(pass_row)[3:13] == ["10", "2.00", "st 5 · ldsm 20", "st 1.00 · ldsm 1.50", "8.00",
                                      "4.0 / 2.1", "2.00 / 1.04", "0.1016", "0.80", "3.0"]
    assert _cells(launch_row)[1:5] == ["fwd: `a<1>`", "2 × 128, 2.0", "10", "—"]


def test_a_new_build_lists_under_the_old_one():
    def record(label, date):
        case = {"title": "t", "passes": [{"pass": "fwd", "useful_flops": 0, "compulsory_bytes": 0, "launches": []}]}
        return {"label": label, "commit": "c", "date": date, "cases": [case]}

    rows = counters.render([record("wmma", "2026-01-01"), record("fa2", "2026-02-01")]).splitlines()
    assert [_cells(row)[0] for row in rows if row.startswith(("| wmma", "| fa2"))] == [
        "wmma (c, 2026-01-01)", "fa2 (c, 2026-02-01)"]


def test_a_doc_without_the_block_is_refused():
    with pytest.raises(SystemExit, match="executor-counters:start"):
        counters.replace_block("# no table here\n", "| x |\n")


@pytest.mark.skipif(load_emulated_extension()[0] is None, reason="ledit._C_emulated is not built")
def test_a_measurement_records_every_launch_of_each_pass():
    case = functools.partial(counters.attention_case, dtype=torch.float16, grid=(2, 3), dim=16)
    (measured,) = counters.measure("small", cases=[case])["cases"]
    fwd, bwd = measured["passes"]
    # forward; backward: dK/dV with dQ by atomics (a second launch computes dQ under deterministic algorithms)
    assert [len(fwd["launches"]), len(bwd["launches"])] == [1, 1]
    # q, k, v in, out and lse out (fp16 (1, 6, 1, 16) and fp32 (1, 1, 6)); corner on 2 x 3 hides 3 of the 36 pairs.
    assert fwd["compulsory_bytes"] == 4 * 6 * 16 * 2 + 6 * 4 and fwd["useful_flops"] == 4 * 16 * 33
    assert all(launch["counters"]["mma"] > 0 for launch in fwd["launches"] + bwd["launches"])
