"""Predicted H100 speed of the scan_attention CUDA kernels, against FlashAttention-2's forward at the same shape,
from the CPU executor's counters and the kernels' SASS. No GPU is involved and nothing here is a measurement: the
model (docs/kernels-attention.md, "Performance model") turns counts into time, and the claim is the ratio.

    python scripts/attention_perf_model.py measure --label mma-sync
        Runs the cuda_emulated kernels (bf16, corner, D = 72, B = H = 1) on the 32 x 32 and 64 x 64 grids and saves
        every launch's counters in benchmarks/results/attention-model-<label>.json (~8 minutes on one core). With
        another commit's tree first on PYTHONPATH (and its ledit._C_emulated built) it measures that tree's kernels.
    python scripts/attention_perf_model.py sass --label mma-sync SOURCE.cu [SOURCE.cu ...]
        nvcc -cubin for sm_90 with the build's flags; per kernel: registers, stack, local-memory instructions, and
        the instruction mix of its main loop (the loop holding the most HMMA), with and without the mask branches;
        saved in the same file.
    python scripts/attention_perf_model.py table [--write]
        Applies the model to every saved build's kernels and to FlashAttention-2's forward; prints the tables, or
        rewrites the block between the markers in docs/kernels-attention.md (tests/scripts/test_attention_perf_model.py
        checks the docs hold this output).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from executor_counters import kernels_commit, replace_block  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "kernels-attention.md"
START, END = "<!-- attention-model:start -->", "<!-- attention-model:end -->"

# H100 SXM5 (perf-anchors.md section 1): the clock behind the 989 TFLOP/s dense bf16 peak, per SM and clock.
SMS, CLOCK = 132, 1.83e9
SMEM_WAVEFRONTS_PER_CLOCK = 1.0  # 32 banks x 4 bytes
ISSUE_PER_CLOCK = 4.0  # one warp instruction per scheduler
SFU_LANES_PER_CLOCK = 16.0  # 3.9 T special-function results/s (FA3 paper) / 132 SMs / 1.83 GHz
HBM_BYTES_PER_SECOND = 3.0e12  # measured device-to-device copy (KINDS.md), not the 3.35 TB/s datasheet
REGISTERS_PER_SM, SMEM_PER_SM, SMEM_RESERVED_PER_BLOCK = 65536, 228 * 1024, 1024
# mma.sync m16n8k16 per SM and clock, calibrated so the model gives FlashAttention-2's published H100 forward at
# head dim 128 (370 TFLOP/s, N = 16k, non-causal, FA3 paper Fig. 5); 1.0 would be the dense wgmma peak.
FA2_HD128_TFLOPS = 370.0
# The shapes the targets name: LEDiT-XL/2 at 512^2 and 1024^2, H = 16, D = 72, bf16, corner, 16k tokens per call.
CASES = [((32, 32), 72), ((64, 64), 72)]
HEADS, TOKENS_PER_CALL = 16, 16384


def record_path(label: str) -> Path:
    return RESULTS_DIR / f"attention-model-{label}.json"


def _update_record(label: str, **fields) -> None:
    """Adds fields to the build's saved record (created with its label on first use)."""
    path = record_path(label)
    record = json.loads(path.read_text()) if path.exists() else {"label": label}
    record.update(fields)
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"attention_perf_model: wrote {path.relative_to(ROOT)}")


def saved_records() -> list[dict]:
    """Every saved build holding both counters and SASS, in the order their kernels were committed."""
    records = [json.loads(p.read_text()) for p in sorted(RESULTS_DIR.glob("attention-model-*.json"))]
    return sorted((r for r in records if "counters" in r and "sass" in r), key=lambda r: r["committed"])


# ---- measure -------------------------------------------------------------------------------------------------

def measure(label: str) -> None:
    import torch

    import ledit
    from ledit.ops import scan_attention
    from ledit.ops.extension import load_emulated_extension

    emulator, why_not = load_emulated_extension()
    if emulator is None:
        sys.exit(f"attention_perf_model: {why_not}")
    launches = []
    for grid, dim in CASES:
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, grid[0] * grid[1], 1, dim, generator=gen).bfloat16().requires_grad_()
                   for _ in range(3))
        emulator.clear_launches()
        out = scan_attention(q, k, v, grid, "corner", backend="cuda_emulated")
        out.backward(torch.ones_like(out))
        for launch in emulator.launches():
            launches.append({"token_grid": list(grid), "dim": dim, **launch})
            print(grid, launch["kernel"], launch["counters"]["mma"], flush=True)
    tree = Path(ledit.__file__).resolve().parent.parent
    commit, committed = kernels_commit(tree), _commit_time(tree)
    _update_record(label, commit=commit, committed=committed, scan="corner", dtype="bfloat16",
                   counters=launches)


def _commit_time(tree: Path) -> str:
    """When the tree's HEAD was committed (orders the builds), or now outside a git checkout."""
    out = subprocess.run(["git", "show", "-s", "--format=%cI", "HEAD"], cwd=tree, capture_output=True, text=True)
    return out.stdout.strip() or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ---- sass ----------------------------------------------------------------------------------------------------

def _tool(name: str) -> str:
    """nvcc's bin directory, else the copy Triton ships (cuobjdump and nvdisasm)."""
    found = shutil.which(name)
    if found:
        return found
    import triton

    bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if os.path.exists(bundled):
        return bundled
    sys.exit(f"attention_perf_model: {name} not found (CUDA toolkit or triton)")


def _kernel_name(mangled: str) -> str:
    m = re.search(r"(forward_kernel|backward_kv_kernel|backward_q_kernel|backward_dkdv_kernel|backward_dq_kernel)"
                  r"I(?:6__half|13__nv_bfloat16|Li\d+E)*?(Li(\d+)E)?", mangled)
    if not m:
        return mangled
    dtype = "half" if "6__half" in mangled else "bfloat16"
    sizes = re.findall(r"Li(\d+)E", mangled)
    return f"{m.group(1)}<{dtype}, {', '.join(sizes)}>"


def _instructions(cubin: str) -> dict[str, list[tuple[int, str, str, tuple]]]:
    """kernel -> [(address, opcode, operands, (file, line))] with branch labels resolved to addresses."""
    text = subprocess.run([_tool("nvdisasm"), "--print-line-info", "-c", cubin], capture_output=True, text=True,
                          check=True).stdout
    kernels, labels, pending, kernel, line = collections.defaultdict(list), {}, [], None, None
    for raw in text.splitlines():
        if m := re.match(r"\s*\.text\.(\S+):", raw):
            kernel = m.group(1)
        elif m := re.match(r"^\s*(\.L_x_\d+):", raw):
            pending.append(m.group(1))
        elif m := re.search(r'//## File "([^"]+)", line (\d+)', raw):
            line = (os.path.basename(m.group(1)), int(m.group(2)))
        elif (m := re.search(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);", raw)) and kernel:
            address = int(m.group(1), 16)
            labels.update({label: address for label in pending})
            pending = []
            kernels[kernel].append((address, m.group(2), m.group(3), line))
    return {k: [(a, op, re.sub(r"(\.L_x_\d+)", lambda x: f"0x{labels.get(x.group(1), 0):x}", args), ln)
                for a, op, args, ln in ins] for k, ins in kernels.items()}


def _branch_target(op: str, args: str) -> int | None:
    m = re.search(r"0x([0-9a-f]+)", args) if op.startswith("BRA") else None
    return int(m.group(1), 16) if m else None


MASK_FILES = {"scan_mask.h"}
MASK_FUNCTIONS = ("grid_point(", "next_point(", "with_scan(", "visibility_bits(", "apply_mask(", "row_in_tile(")
HEAVY = ("HMMA", "LDSM", "LDGSTS", "BAR", "MUFU")


def _mask_lines(source_dir: str) -> set[tuple[str, int]]:
    """(file, line) of the per-element mask helpers in the kernels' cuda_tile_math.h."""
    path = os.path.join(source_dir, "cuda_tile_math.h")
    if not os.path.exists(path):
        return set()
    lines, out = open(path).read().split("\n"), set()
    for i, text in enumerate(lines):
        if "LEDIT_TILE_INLINE" in text and any(f in text or f in lines[i + 1] for f in MASK_FUNCTIONS):
            j = i
            while lines[j] != "}":
                j += 1
            out.update(("cuda_tile_math.h", n + 1) for n in range(i, j + 1))
    return out


def _loop_mix(instructions, mask_lines) -> dict:
    """The main loop (the backward branch whose body holds the most HMMA), its instructions by class, and those in
    forward branches that skip only mask work (taken on every tile pair that needs no per-element mask)."""
    loops = [(t, a) for a, op, args, _ in instructions if (t := _branch_target(op, args)) is not None and t < a]
    if not loops:
        return {}

    def body(lo, hi):
        return [i for i in instructions if lo <= i[0] <= hi]

    lo, hi = max(loops, key=lambda r: (sum(i[1].startswith("HMMA") for i in body(*r)), -(r[1] - r[0])))
    loop = body(lo, hi)
    masked = set()
    for a, op, args, _ in loop:
        t = _branch_target(op, args)
        if t is None or not a < t <= hi:
            continue
        region = [i for i in loop if a < i[0] < t]
        in_mask = sum(1 for i in region if i[3] and (i[3][0] in MASK_FILES or i[3] in mask_lines))
        if region and not any(i[1].startswith(HEAVY) for i in region) and in_mask >= 0.5 * len(region):
            masked.update(i[0] for i in region)
    mix = collections.Counter()
    for a, op, _, _ in loop:
        base = op.split(".")[0]
        kind = base if base in HEAVY + ("SHFL",) else "FP" if base[0] == "F" else "other"
        mix[("masked " if a in masked else "") + kind] += 1
    return dict(mix)


def sass(label: str, sources: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from torch.utils import cpp_extension

    from build_utils import NVCC_FLAGS

    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source in sources:
            cubin = os.path.join(tmp, os.path.basename(source) + ".cubin")
            source_dir = os.path.dirname(os.path.abspath(source))
            subprocess.run(["nvcc", "-cubin", source, "-o", cubin, "-arch=sm_90", f"-I{os.path.dirname(source_dir)}"]
                           + cpp_extension.COMMON_NVCC_FLAGS + NVCC_FLAGS, check=True)
            usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", cubin], capture_output=True,
                                   text=True, check=True).stdout
            resources = {f: (int(r), int(s)) for f, r, s in
                         re.findall(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+)", usage)}
            mask_lines = _mask_lines(source_dir)
            for mangled, instructions in _instructions(cubin).items():
                registers, stack = resources.get(mangled, (None, None))
                result[_kernel_name(mangled)] = {
                    "registers": registers, "stack_bytes": stack,
                    "local_memory_instructions": sum(op.startswith(("LDL", "STL")) for _, op, _, _ in instructions),
                    "instructions": len(instructions),
                    "loop": _loop_mix(instructions, mask_lines),
                }
    _update_record(label, sass=result)


# ---- model ---------------------------------------------------------------------------------------------------

def blocks_per_sm(registers: int, smem: int, threads: int = 128) -> int:
    per_warp = math.ceil(registers * 32 / 256) * 256
    by_registers = REGISTERS_PER_SM // (per_warp * threads // 32)
    by_smem = SMEM_PER_SM // (smem + SMEM_RESERVED_PER_BLOCK)
    return max(0, min(by_registers, by_smem, 64 * 32 // threads))


def model_time(terms: dict[str, float], blocks: int, per_block_blocks: int) -> tuple[float, str]:
    """Seconds for work spread over every SM: the largest term (perfect overlap), times the last wave's waste."""
    slots = SMS * per_block_blocks
    waves = blocks / slots
    bound = max(terms, key=terms.get)
    return terms[bound] * math.ceil(waves) / waves, bound


def terms_from(per_sm: dict[str, float], mma_rate: float) -> dict[str, float]:
    return {
        "tensor": per_sm["mma"] / mma_rate / CLOCK,
        "shared": per_sm["wavefronts"] / SMEM_WAVEFRONTS_PER_CLOCK / CLOCK,
        "issue": per_sm["instructions"] / ISSUE_PER_CLOCK / CLOCK,
        "sfu": per_sm["mufu"] * 32 / SFU_LANES_PER_CLOCK / CLOCK,
        "hbm": per_sm["hbm_bytes"] * SMS / HBM_BYTES_PER_SECOND,
    }


# FA2's integer work per tile pair, which its SASS would show and ours cannot: each 16-byte cp.async with two
# address instructions, and 30 for the loop, barriers and pointer updates. Lean guesses, so they favour FA2.
FA2_INT_PER_CHUNK, FA2_CONTROL_PER_TILE = 2, 30


def fa2_forward(dim: int, tokens: int, batch: int, heads: int, fp_per_score: float) -> dict:
    """FlashAttention-2's H100 forward (flash_fwd_launch_template.h: 128 x 128 tiles at head dim <= 64, 128 x 64
    above, 4 warps, Q read from shared memory for every key tile, swizzled so conflict-free), full attention over
    its padded head dim, with our SASS's floating-point instructions per score element."""
    hd = 64 if dim <= 64 else 96 if dim <= 96 else 128
    bm, bn = 128, 128 if hd <= 64 else 64
    pairs = math.ceil(tokens / bm) * math.ceil(tokens / bn) * batch * heads
    mma = pairs * 2 * bm * bn * hd // 2048
    ldmatrix = pairs * (2 * hd + bn * hd // 8)  # wavefronts: Q once per warp, K and V by all 4 warps
    copies = pairs * 2 * bn * hd // 8  # 16-byte cp.async of K and V
    mufu = pairs * bm * bn // 32
    fp = pairs * (fp_per_score * bm * bn + bm * hd) // 32  # per score, plus one rescale per output element
    instructions = (mma + ldmatrix / 4 + mufu + fp + copies / 32 * (1 + FA2_INT_PER_CHUNK)
                    + pairs * 4 * FA2_CONTROL_PER_TILE)
    hbm = 4 * tokens * dim * 2 * batch * heads
    per_sm = {"mma": mma, "wavefronts": ldmatrix + copies / 8, "instructions": instructions, "mufu": mufu,
              "hbm_bytes": hbm}
    return {"hd": hd, "tile": f"{bm} x {bn}", "blocks": math.ceil(tokens / bm) * batch * heads, "registers": 255,
            "smem": (bm + 2 * bn) * hd * 2, "per_sm": {k: v / SMS for k, v in per_sm.items()}}


def calibrated_mma_rate(fp_per_score: float) -> float:
    """The mma rate at which the model gives FA2's published hd128 forward (tensor-bound there)."""
    fa2 = fa2_forward(128, 16384, 1, 16, fp_per_score)
    flops = 4 * 16384 * 16384 * 128 * 16
    seconds = flops / (FA2_HD128_TFLOPS * 1e12)
    blocks = blocks_per_sm(fa2["registers"], fa2["smem"])
    waves = fa2["blocks"] / (SMS * blocks)
    return fa2["per_sm"]["mma"] / (seconds / (math.ceil(waves) / waves)) / CLOCK


def tile_pairs(grid, query_tokens: int, key_tokens: int) -> tuple[int, int]:
    """(tile pairs with a visible (query, key) pair, those of them that need the per-element mask) for `corner`,
    over the tiles make_tile_grid cuts; padding keys (an edge key tile) need the mask too."""
    import torch

    from ledit.ops.masks import scan_mask
    from ledit.ops.scan_attention_flex import tile_shape

    h, w = grid
    mask = scan_mask(grid, "corner")

    def tiles(capacity):
        th, tw = tile_shape(h, w, capacity)
        return [torch.tensor([r * w + c for r in range(r0, min(r0 + th, h)) for c in range(c0, min(c0 + tw, w))])
                for r0 in range(0, h, th) for c0 in range(0, w, tw)]

    key_tiles = tiles(key_tokens)
    visited = partial = 0
    for query_tile in tiles(query_tokens):
        rows = mask[query_tile]
        any_visible, all_visible = rows.any(0), rows.all(0)  # per key, over the tile's queries
        for key_tile in key_tiles:
            if any_visible[key_tile].any():
                visited += 1
                partial += int(not all_visible[key_tile].all() or len(key_tile) < key_tokens)
    return visited, partial


def _kernel_key(kernel: str) -> tuple:
    """A kernel's name and its set of template arguments, whatever their order or namespace spelling."""
    name, _, args = kernel.replace(" ", "").partition("<")
    return name, tuple(sorted(a.split("::")[-1] for a in args.rstrip(">").split(",")))


def _facts(sass_facts: dict, kernel: str) -> dict:
    return next((f for k, f in sass_facts.items() if _kernel_key(k) == _kernel_key(kernel)), {})


# (queries, keys) per tile pair of each kernel the D = 72 cases launch, for the share of pairs that run the mask:
# cuda_kernel_shapes.h at padded D = 80, and the WMMA kernel's 64-token tiles.
TILES_AT_72 = {"forward_kernel<bfloat16, 80>": (128, 32), "backward_kv_kernel<bfloat16, 80>": (32, 64),
               "backward_q_kernel<bfloat16, 80>": (64, 64), "forward_kernel<64, bfloat16>": (64, 64),
               "backward_dkdv_kernel<64, bfloat16>": (64, 64), "backward_dq_kernel<64, bfloat16>": (64, 64)}


def ours(record: dict, grid, dim, mma_rate: float) -> list[dict]:
    """The model for each kernel of one measured call, scaled from B = H = 1 to the case's batch and heads."""
    tokens = grid[0] * grid[1]
    scale = TOKENS_PER_CALL // tokens * HEADS
    rows = []
    for launch in record["counters"]:
        if tuple(launch["token_grid"]) != tuple(grid) or launch["dim"] != dim:
            continue
        c, name = launch["counters"], launch["kernel"]
        facts = _facts(record["sass"], name)
        loop = facts["loop"]
        wavefronts = sum(c[f"{kind}_wavefronts"] for kind in ("ldmatrix", "shared_load", "shared_store",
                                                               "cp_async_shared"))
        # Warp-level runs of the main loop: every run issues the loop's HMMA once (the executor counts each mma).
        runs = c["mma"] / loop["HMMA"]
        visited, partial = tile_pairs(grid, *TILES_AT_72[name])
        unmasked = sum(v for k, v in loop.items() if not k.startswith("masked"))
        masked = sum(v for k, v in loop.items() if k.startswith("masked")) / 5  # one scan's branch of the five
        per_sm = {"mma": c["mma"], "wavefronts": wavefronts,
                  "instructions": runs * (unmasked + masked * partial / visited),
                  "mufu": runs * loop.get("MUFU", 0),
                  # HBM: each of q, k, v, out (and dq, dk, dv, dout) once; K, V re-read per query tile hit L2.
                  "hbm_bytes": (4 if "forward" in name else 8) * tokens * dim * 2}
        per_sm = {k: v * scale / SMS for k, v in per_sm.items()}
        blocks = blocks_per_sm(facts["registers"], launch["shared_bytes"])
        terms = terms_from(per_sm, mma_rate)
        seconds, bound = model_time(terms, launch["grid"][0] * scale, blocks)
        rows.append({"kernel": name, "seconds": seconds, "bound": bound, "blocks_per_sm": blocks, "terms": terms,
                     "partial_share": partial / visited, "facts": facts,
                     "ldmatrix_vs_ideal": c["ldmatrix_wavefronts"] / c["ldmatrix_ideal_wavefronts"]
                     if c["ldmatrix_ideal_wavefronts"] else None})
    return rows


def fp_per_score_from(sass_facts: dict, dim: int) -> float:
    """Floating-point instructions per score element in our forward loop at head dim `dim` (softmax, packing; the
    exponentials are MUFU, counted apart), after taking out the rescale of O (one per output element)."""
    shapes = {64: (128, 64), 80: (128, 32), 128: (128, 32), 256: (64, 32)}
    padded = 64 if dim <= 64 else 80 if dim <= 80 else 128 if dim <= 128 else 256
    bm, bn = shapes[padded]
    loop = _facts(sass_facts, f"forward_kernel<bfloat16, {padded}>")["loop"]
    scores, outputs = bm * bn // 128, bm * padded // 128  # per thread
    return (loop.get("FP", 0) - outputs) / scores


def model(records: list[dict]) -> tuple[float, list[dict]]:
    """(calibrated mma rate, one line per case and build, then FA2's line): the model applied to every kernel.
    The last record is the kernels under test; its SASS supplies FA2's floating-point work per score."""
    from ledit.ops import visible_pairs

    current = records[-1]
    lines = []
    for grid, dim in CASES:
        fp_per_score = fp_per_score_from(current["sass"], dim)
        rate = calibrated_mma_rate(fp_per_score)
        tokens = grid[0] * grid[1]
        batch = TOKENS_PER_CALL // tokens
        case = f"{grid[0]}x{grid[1]} (N={tokens}) D={dim}"
        useful = 4 * batch * HEADS * dim * visible_pairs(grid, "corner")
        fa2 = fa2_forward(dim, tokens, batch, HEADS, fp_per_score)
        fa2_blocks = blocks_per_sm(fa2["registers"], fa2["smem"])
        fa2_terms = terms_from(fa2["per_sm"], rate)
        fa2_seconds, fa2_bound = model_time(fa2_terms, fa2["blocks"], fa2_blocks)
        fa2_rate = 4 * batch * HEADS * dim * tokens * tokens / fa2_seconds  # FA2 has no 2D mask: full attention
        for record in records:
            rows = ours(record, grid, dim, rate)
            forward = next(r for r in rows if "forward" in r["kernel"])
            backward = sum(r["seconds"] for r in rows if "backward" in r["kernel"])
            lines.append({"case": case, "build": f"{record['label']} ({record['commit']})",
                          "forward_us": forward["seconds"] * 1e6, "bound": forward["bound"],
                          "useful_tflops": useful / forward["seconds"] / 1e12,
                          "vs_fa2": useful / forward["seconds"] / fa2_rate,
                          "backward_over_forward": backward / forward["seconds"],
                          "blocks_per_sm": forward["blocks_per_sm"], "rows": rows})
        lines.append({"case": case, "build": f"FA2 hd{fa2['hd']}, full attention", "forward_us": fa2_seconds * 1e6,
                      "bound": fa2_bound, "useful_tflops": fa2_rate / 1e12, "vs_fa2": 1.0,
                      "backward_over_forward": None, "blocks_per_sm": fa2_blocks,
                      "rows": [{"kernel": f"forward, {fa2['tile']} tiles", "bound": fa2_bound, "terms": fa2_terms,
                                "partial_share": 0.0, "facts": {}}]})
    return rate, lines


def render(records: list[dict]) -> str:
    rate, lines = model(records)
    current = f"{records[-1]['label']} ({records[-1]['commit']})"
    out = [f"Calibrated mma.sync rate: {rate:.3f} m16n8k16 per SM and clock (FA2's hd128 forward = "
           f"{FA2_HD128_TFLOPS:.0f} TFLOP/s). Every figure is a model prediction, not a measurement.", "",
           "| shape (bf16, corner, H = 16, 16k tokens per call) | build | forward (µs) | bound by | useful TFLOP/s "
           "| × FA2 per useful FLOP | backward ÷ forward | forward blocks per SM |",
           "|---|---|---|---|---|---|---|---|"]
    for r in lines:
        backward = f"{r['backward_over_forward']:.2f}" if r["backward_over_forward"] else "—"
        out.append(f"| {r['case']} | {r['build']} | {r['forward_us']:.0f} | {r['bound']} | {r['useful_tflops']:.0f} "
                   f"| {r['vs_fa2']:.2f} | {backward} | {r['blocks_per_sm']} |")
    out += ["", "Issue 15's targets for the kernels under test, " + current + ", as the model and the counters "
            "predict them:", "", "| shape | × FA2 per useful FLOP (≥ 0.8) | `ldmatrix` wavefronts ÷ ideal, worst "
            "kernel (≤ 1.1) | spills: stack bytes, local-memory instructions (0) | forward blocks per SM (≥ 2) |",
            "|---|---|---|---|---|"]
    for r in (line for line in lines if line["build"] == current):
        worst = max(row["ldmatrix_vs_ideal"] or 0 for row in r["rows"])
        stack = max(row["facts"]["stack_bytes"] for row in r["rows"])
        local = sum(row["facts"]["local_memory_instructions"] for row in r["rows"])
        out.append(f"| {r['case']} | {r['vs_fa2']:.2f} | {worst:.2f} | {stack}, {local} | {r['blocks_per_sm']} |")
    out += ["", "The terms behind each kernel's time (µs; the largest is the prediction) and, for ours, the share of "
            "visited tile pairs that run the per-element mask:", "",
            "| shape | build: kernel | tensor | shared | issue | SFU | HBM | partial pairs |",
            "|---|---|---|---|---|---|---|---|"]
    for r in lines:
        for row in r["rows"]:
            t = {k: f"{v * 1e6:.0f}" for k, v in row["terms"].items()}
            out.append(f"| {r['case']} | {r['build']}: `{row['kernel']}` | {t['tensor']} | {t['shared']} | "
                       f"{t['issue']} | {t['sfu']} | {t['hbm']} | {row['partial_share']:.0%} |")
    out += ["", "SASS facts (sm_90, bf16, the instantiations D = 72 runs): registers and stack per thread, "
            "local-memory instructions, and per warp and run of the main loop (the loop holding the most HMMA) the "
            "instructions on the path without the per-element mask, and how many are HMMA, LDSM and MUFU:", "",
            "| build: kernel | registers | stack bytes | local-memory instructions | loop instructions | HMMA | LDSM "
            "| MUFU |", "|---|---|---|---|---|---|---|---|"]
    seen = set()
    for r in lines:
        for row in r["rows"]:
            facts, key = row["facts"], (r["build"], row["kernel"])
            if not facts or key in seen:
                continue
            seen.add(key)
            loop = facts["loop"]
            unmasked = sum(v for k, v in loop.items() if not k.startswith("masked"))
            out.append(f"| {r['build']}: `{row['kernel']}` | {facts['registers']} | {facts['stack_bytes']} | "
                       f"{facts['local_memory_instructions']} | {unmasked} | {loop.get('HMMA', 0)} | "
                       f"{loop.get('LDSM', 0)} | {loop.get('MUFU', 0)} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("measure", "sass"):
        p = sub.add_parser(command)
        p.add_argument("--label", required=True, help="the build's name in benchmarks/results/attention-model-*.json")
    sub.choices["sass"].add_argument("sources", nargs="+", help="the kernels' .cu files")
    sub.add_parser("table").add_argument("--write", action="store_true",
                                         help=f"rewrite the block in {DOC.relative_to(ROOT)} instead of printing")
    args = parser.parse_args(argv)
    if args.command == "measure":
        measure(args.label)
    elif args.command == "sass":
        sass(args.label, args.sources)
    else:
        records = saved_records()
        if not records:
            sys.exit("attention_perf_model: no benchmarks/results/attention-model-*.json with counters and SASS; "
                     "run measure and sass first")
        table = render(records)
        if args.write:
            DOC.write_text(replace_block(DOC.read_text(), table, DOC, START, END))
            print(f"attention_perf_model: rewrote the model's tables in {DOC.relative_to(ROOT)}")
        else:
            print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
