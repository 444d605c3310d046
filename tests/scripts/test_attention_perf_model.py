"""scripts/attention_perf_model.py: the model's tables in docs/kernels-attention.md are the script's output from the
saved measurements, the model reproduces its own calibration, and the SASS loop analysis finds the main loop and
its mask branches."""

from __future__ import annotations

import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import attention_perf_model as model  # noqa: E402


def test_the_docs_tables_are_the_scripts_output():
    records = model.saved_records()
    assert [r["label"] for r in records] == ["wmma", "mma-sync"], "the old and the new kernels' saved measurements"
    text = model.DOC.read_text()
    assert model.replace_block(text, model.render(records), model.DOC, model.START, model.END) == text, (
        "docs/kernels-attention.md's model tables are stale or edited by hand: run "
        "python scripts/attention_perf_model.py table --write")


def test_the_calibration_gives_fa2s_published_hd128_forward():
    rate = model.calibrated_mma_rate(fp_per_score=3.0)
    fa2 = model.fa2_forward(128, 16384, 1, 16, fp_per_score=3.0)
    seconds, bound = model.model_time(model.terms_from(fa2["per_sm"], rate), fa2["blocks"],
                                      model.blocks_per_sm(fa2["registers"], fa2["smem"]))
    assert bound == "tensor"
    assert 4 * 16384 * 16384 * 128 * 16 / seconds / 1e12 == pytest.approx(model.FA2_HD128_TFLOPS)


def test_blocks_per_sm_and_the_last_waves_waste():
    # 211 registers round to 216 per thread (256 per warp): 27648 per block, 2 blocks in 65536; 44 KB fits 5.
    assert model.blocks_per_sm(211, 44 * 1024) == 2
    assert model.blocks_per_sm(48, 76288) == 3  # shared memory limits: 3 x 75.5 KB (+1 KB reserved) in 228 KB
    assert model.blocks_per_sm(32, 1024) == 16  # at most 64 warps per SM
    # One block more than a full wave of 2 per SM takes two waves: the largest term times 2 / (265 / 264).
    seconds, bound = model.model_time({"tensor": 1.0, "shared": 2.0}, model.SMS * 2 + 1, 2)
    assert bound == "shared" and seconds == pytest.approx(2.0 * 2 / ((model.SMS * 2 + 1) / (model.SMS * 2)))


def test_tile_pairs_counts_visible_and_partial_pairs():
    import torch

    from ledit.ops.masks import scan_mask

    # 4 x 4 grid, 4-token tiles of 2 x 2: corner (row-major causal-like 2D scan) hides pairs above the diagonal.
    visited, partial = model.tile_pairs((4, 4), 4, 4)
    mask = scan_mask((4, 4), "corner")
    tiles = [torch.tensor([r * 4 + c for r in (r0, r0 + 1) for c in (c0, c0 + 1)]) for r0 in (0, 2) for c0 in (0, 2)]
    blocks = [mask[q][:, k] for q in tiles for k in tiles]
    assert visited == sum(int(b.any()) for b in blocks)
    assert partial == sum(int(b.any() and not b.all()) for b in blocks)
    assert 0 < partial < visited < 16


def _sass(address, op, args="", line=None):
    return (address, op, args, line)


def test_the_loop_mix_finds_the_main_loop_and_its_mask_branch():
    mask_line = ("scan_mask.h", 10)
    instructions = [
        _sass(0x00, "MOV"),
        _sass(0x10, "HMMA.16816.F32.BF16"),  # a loop with one HMMA (not the main loop)
        _sass(0x20, "BRA", "0x10"),
        _sass(0x30, "LDSM.16.M88.4"),  # main loop: 0x30 .. 0xa0
        _sass(0x40, "HMMA.16816.F32.BF16"),
        _sass(0x50, "HMMA.16816.F32.BF16"),
        _sass(0x60, "BRA", "0x90"),  # skips the mask work on unmasked tile pairs
        _sass(0x70, "IMAD", "", mask_line),
        _sass(0x80, "FSEL", "", mask_line),
        _sass(0x90, "MUFU.EX2"),
        _sass(0xa0, "BRA", "0x30"),
    ]
    mix = model._loop_mix(instructions, set())
    assert mix == {"LDSM": 1, "HMMA": 2, "MUFU": 1, "other": 2, "masked other": 1, "masked FP": 1}


@pytest.mark.parametrize("record", model.saved_records(), ids=lambda r: r["label"])
def test_every_measured_kernel_has_its_sass_and_tiles(record):
    for launch in record["counters"]:
        facts = model._facts(record["sass"], launch["kernel"])
        assert facts.get("loop", {}).get("HMMA"), f"{record['label']}: no SASS main loop for {launch['kernel']}"
        assert launch["kernel"] in model.TILES_AT_72
        runs = launch["counters"]["mma"] / facts["loop"]["HMMA"]
        assert runs > 0 and math.isfinite(runs)
