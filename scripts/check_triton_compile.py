"""Compile every Triton kernel ledit can launch for real GPUs (sm_80 and sm_90) without a GPU, and gate what it uses.

The configurations come from the launchers themselves: the script calls the triton backends' own launch code
(``ledit/ops/*_triton.py``) on meta tensors inside ``ledit.ops.triton_launch.record_launches()``, so every compile-time
constant, pointer type and launch option (num_warps) is the one a real call would use. Each recorded launch is
specialised with Triton's own binder, as ``kernel[grid](...)`` does on a GPU, and compiled with ``triton.compile`` for
``GPUTarget("cuda", 80 | 90, 32)``. The script fails on a compile error, on shared memory above the target's opt-in
limit (A100 163 KB, H100 227 KB) and on a kernel over its budget in gpu_budgets.toml (registers, spill bytes); it
prints registers, spills and shared memory per kernel and configuration (from the cubin: cuobjdump -res-usage).

What is compiled. A configuration is one set of compile-time constants and launch options; the batch, the head
count and the grid are runtime values (except the attention tile counts, see its kernels' docstring). The full
product of head dims, scans and tile shapes is thousands of compiles, so the script compiles every value of every
axis, and the full product of the axes that set block shapes and resources (kernel, dtype, head-dim class):
- scan_attention forward, dK/dV and dQ: fp32, fp16, bf16 x head dims 8, 24, 64, 72, 128, 256 (every power-of-two
  BLOCK_D class; LEDiT-XL's 72 and 128 at the two ends of theirs) on 8 x 8 tiles with the `neighborhood` scan (the
  most mask code). Then, in bf16 at D = 72, every other scan, every other tile shape the launcher picks (64 x 1 ...
  1 x 64), and the 32-token tiles forced by the GPU tests' hook. The scan and the tile shape select index and mask
  code that is independent of the dtype and the head dim. Packed sequences (PACKED=True: per-image tile shapes
  read at run time, a runtime-bounded key loop): every dtype at D = 72 and 256 (the largest blocks), the 32-token
  tiles at D = 72, with the `neighborhood` scan.
- dwconv_modulate LayerNorm stats, forward and backward: fp32, fp16, bf16 x k = 3, 5, 7 with every optional input on
  (the most code) at C = 1152 (LEDiT-XL); then dilation 2, each optional input off, and C = 72 (not a multiple of
  the 64-channel block), once each. Every one of these also as a packed sequence (its own two kernels).

    python scripts/check_triton_compile.py [--arch 80,90] [--jobs N] [--quiet] [--only REGEX]

About 300 s of CPU time per triton version for 168 configurations x 2 targets (2 jobs on 2 cores: under 3 minutes).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gpu_budgets import load_budgets, shared_memory_limit  # noqa: E402

ATTENTION_HEAD_DIMS = (8, 24, 64, 72, 128, 256)
# (h, w) grids that make the launcher pick each tile shape: 8 x 8 first, then 64 x 1 ... 1 x 64.
ATTENTION_GRIDS = ((33, 17), (70, 1), (33, 2), (17, 4), (5, 16), (2, 33), (1, 70))
# A packed sequence of those grids: its tile shapes are runtime values, so one pack covers every one.
PACKED_TOKENS = sum(h * w for h, w in ATTENTION_GRIDS)
DWCONV_CHANNELS = (1152, 72)


@dataclasses.dataclass(frozen=True)
class Config:
    """One kernel configuration: where the kernel lives, its launch (from the launcher), a readable label."""

    op: str
    kernel_name: str
    label: str
    index: int


@dataclasses.dataclass
class Result:
    op: str
    kernel: str
    label: str
    arch: int
    error: str | None = None
    registers: int = 0
    spill_bytes: int = 0
    shared_bytes: int = 0
    violations: tuple[str, ...] = ()


def _attention_launches(record):
    import torch

    from ledit.ops import SCANS, scan_attention_triton

    def run(dtype, dim, grid, scan, force_block=None, packed=False):
        tokens = PACKED_TOKENS if packed else grid[0] * grid[1]
        q = torch.empty(1, tokens, 2, dim, dtype=dtype, device="meta")
        lse = torch.empty(1, 2, tokens, dtype=torch.float32, device="meta")
        geometry = (torch.empty(len(ATTENTION_GRIDS), 2, dtype=torch.int32, device="meta"),) if packed else grid
        forward, backward = ((scan_attention_triton._packed_forward, scan_attention_triton._packed_backward) if packed
                             else (scan_attention_triton._forward, scan_attention_triton._backward))
        scan_attention_triton.FORCE_BLOCK = force_block
        try:
            with record() as launches:
                forward(q, q, q, *geometry, scan, 0.125)
                backward(q, q, q, q, q, lse, *geometry, scan, 0.125)
        finally:
            scan_attention_triton.FORCE_BLOCK = None
        return launches

    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for dim in ATTENTION_HEAD_DIMS:
            yield from run(dtype, dim, ATTENTION_GRIDS[0], "neighborhood")
    # The scan and the tile shape select code paths independent of each other, of the dtype and of the tile size:
    # each once, in bf16 at D = 72; and the 32-token tiles that FORCE_BLOCK (the GPU tests' hook) gives D = 72.
    for scan in SCANS:
        yield from run(torch.bfloat16, 72, ATTENTION_GRIDS[0], scan)
    for grid in ATTENTION_GRIDS[1:]:
        yield from run(torch.bfloat16, 72, grid, "corner")
    yield from run(torch.bfloat16, 72, ATTENTION_GRIDS[0], "corner", scan_attention_triton.SMALL_BLOCK)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for dim in (72, ATTENTION_HEAD_DIMS[-1]):
            yield from run(dtype, dim, None, "neighborhood", packed=True)
    yield from run(torch.bfloat16, 72, None, "neighborhood", scan_attention_triton.SMALL_BLOCK, packed=True)


def _dwconv_launches(record):
    import torch

    from ledit.ops import dwconv_modulate_triton
    from ledit.ops.dwconv_modulate import DWCONV_DILATIONS, DWCONV_KERNEL_SIZES

    def run(dtype, channels, k, dilation, norm=True, bias=True, gate=True, residual=True):
        h, w = 5, 7
        x = torch.empty(1, h * w, channels, dtype=dtype, device="meta")
        vec = torch.empty(1, channels, dtype=dtype, device="meta")
        weight = torch.empty(channels, 1, k, k, dtype=dtype, device="meta")
        stats = torch.empty(1, h * w, dtype=torch.float32, device="meta")
        grids = torch.empty(len(ATTENTION_GRIDS), 2, dtype=torch.int32, device="meta")  # packed: runtime data
        optional = (vec[0] if bias else None, vec, vec, vec if gate else None, x if residual else None)
        with record() as launches:
            for triton_forward, geometry in ((dwconv_modulate_triton._forward, (h, w)),
                                             (dwconv_modulate_triton._packed_forward, (grids,))):
                triton_forward(x, *geometry, weight, *optional, dilation, norm)
            dwconv_modulate_triton._backward(x, x, h, w, weight, vec, vec, vec if gate else None, stats, stats,
                                             dilation, norm)
            dwconv_modulate_triton._packed_backward(x, x, grids, weight, vec, vec, vec if gate else None, stats,
                                                    stats, dilation, norm)
        return launches

    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for k in DWCONV_KERNEL_SIZES:
            yield from run(dtype, DWCONV_CHANNELS[0], k, 1)
    # The dilation, the optional inputs and the channel count select code paths independent of the dtype.
    for dilation in DWCONV_DILATIONS[1:]:
        yield from run(torch.bfloat16, DWCONV_CHANNELS[0], max(DWCONV_KERNEL_SIZES), dilation)
    for option in ("norm", "bias", "gate", "residual"):
        yield from run(torch.bfloat16, DWCONV_CHANNELS[0], 3, 1, **{option: False})
    yield from run(torch.float32, DWCONV_CHANNELS[1], 3, 1)


def launch_space() -> list:
    """(op, Launch) for every distinct configuration, in a fixed order."""
    from ledit.ops.triton_launch import record_launches

    space, seen = [], set()
    for op, launches in (("scan_attention", _attention_launches), ("dwconv_modulate", _dwconv_launches)):
        for launch in launches(record_launches):
            key = (launch.kernel.fn.__name__, _signature_key(launch.args), tuple(sorted(launch.meta.items())))
            if key not in seen:
                seen.add(key)
                space.append((op, launch))
    return space


def _signature_key(args) -> tuple:
    import torch

    return tuple(str(a.dtype) if isinstance(a, torch.Tensor) else type(a).__name__ for a in args)


def describe(launch) -> str:
    """The configuration as a short label: tensor dtype, then the compile-time constants and launch options."""
    import torch

    dtype = next(a.dtype for a in launch.args if isinstance(a, torch.Tensor))
    meta = " ".join(f"{k}={v}" for k, v in launch.meta.items())
    return f"{str(dtype).replace('torch.', '')} {meta}"


def compile_launch(launch, arch: int):
    """triton.compile for sm_<arch> of exactly what ``kernel[grid](*args, **meta)`` would compile on such a GPU."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.kernel
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*launch.args, **launch.meta)
    options, signature, constexprs, attrs = fn._pack_args(backend, launch.meta, bound_args, specialization, options)
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)


def cuobjdump_path() -> str:
    import triton

    bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    path = bundled if os.path.exists(bundled) else shutil.which("cuobjdump")
    if path is None:
        raise SystemExit("check_triton_compile: cuobjdump not found (Triton's NVIDIA backend ships one)")
    return path


def resource_usage(cubin: bytes, cuobjdump: str) -> tuple[int, int]:
    """(registers, stack bytes per thread) of the one function in a cubin. A Triton kernel has no local arrays, so
    its stack is register spills."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    match = re.search(r"REG:(\d+) STACK:(\d+)", text)
    if match is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no REG/STACK line:\n{text}")
    return int(match.group(1)), int(match.group(2))


_SPACE: list = []


def _init_worker() -> None:
    _SPACE.extend(launch_space())


def check_one(config: Config, arch: int, budgets: list) -> Result:
    op, launch = _SPACE[config.index]
    return check_launch(op, config.kernel_name, config.label, launch, arch, budgets)


def check_launch(op: str, kernel_name: str, label: str, launch, arch: int, budgets: list) -> Result:
    """Compile one launch for sm_<arch> and check it against the target's limits and its budget."""
    result = Result(op, kernel_name, label, arch)
    try:
        kernel = compile_launch(launch, arch)
    except Exception as error:  # noqa: BLE001 - any compiler failure is the finding
        result.error = f"{type(error).__name__}: {error}"
        return result
    result.registers, result.spill_bytes = resource_usage(kernel.asm["cubin"], cuobjdump_path())
    result.shared_bytes = kernel.metadata.shared
    result.violations = tuple(check_budget(result, budgets))
    return result


def check_budget(result: Result, budgets: list) -> list[str]:
    """Every way a compiled kernel breaks the target's shared-memory limit or its budget: the first [[triton]] entry
    of gpu_budgets.toml whose `kernel` is the kernel's 'op.name' and whose `match` finds its label."""
    found = []
    limit = shared_memory_limit(result.arch)
    if result.shared_bytes > limit:
        found.append(f"shared memory {result.shared_bytes} B > sm_{result.arch}'s opt-in limit {limit} B")
    name = f"{result.op}.{result.kernel}"
    budget = next((b for b in budgets if b["kernel"] == name and re.search(b["match"], result.label)), None)
    if budget is None:
        found.append(f"no budget for {name} [{result.label}] in gpu_budgets.toml [[triton]]")
        return found
    for field, value in (("registers", result.registers), ("spill_bytes", result.spill_bytes)):
        if value > budget[field]:
            found.append(f"{field} {value} > budget {budget[field]}")
    return found


def run(configs: list[Config], archs: list[int], budgets: list, jobs: int, print_fn=print) -> list[Result]:
    tasks = [(config, arch) for config in configs for arch in archs]
    with concurrent.futures.ProcessPoolExecutor(jobs, initializer=_init_worker) as pool:
        futures = [pool.submit(check_one, config, arch, budgets) for config, arch in tasks]
        results = []
        for future in futures:
            result = future.result()
            results.append(result)
            print_fn(format_result(result))
    return results


def format_result(r: Result) -> str:
    head = f"sm_{r.arch} {r.op}.{r.kernel} [{r.label}]"
    if r.error is not None:
        return f"FAILED {head}: compile error\n{r.error}"
    usage = f"{r.registers} regs, {r.spill_bytes} B spilled, {r.shared_bytes / 1024:.1f} KB smem"
    if r.violations:
        return f"FAILED {head}: {usage}: " + "; ".join(r.violations)
    return f"ok     {head}: {usage}"


def summary(results: list[Result]) -> str:
    """Per kernel and target: configurations, the most registers, spills and shared memory any of them uses."""
    rows = {}
    for r in results:
        if r.error is None:
            row = rows.setdefault((r.op, r.kernel, r.arch), [0, 0, 0, 0])
            row[0] += 1
            row[1], row[2], row[3] = max(row[1], r.registers), max(row[2], r.spill_bytes), max(row[3], r.shared_bytes)
    lines = ["| kernel | target | configs | max registers | max spill B | max smem KB |", "|---|---|---|---|---|---|"]
    for (op, kernel, arch), (n, regs, spill, smem) in sorted(rows.items()):
        lines.append(f"| {op}.{kernel} | sm_{arch} | {n} | {regs} | {spill} | {smem / 1024:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="80,90", help="compute capabilities to compile for (default 80,90)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MAX_JOBS", os.cpu_count() or 1)))
    parser.add_argument("--quiet", action="store_true", help="print failures and the summary only")
    parser.add_argument("--only", default="", help="compile only configurations whose 'op.kernel [label]' matches "
                        "this regular expression")
    args = parser.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)  # compile for GPUs: @triton.jit must not build interpreted functions
    import triton

    archs = [int(a) for a in args.arch.split(",")]
    budgets = load_budgets()["triton"]
    space = launch_space()
    configs = [Config(op, launch.kernel.fn.__name__, describe(launch), i) for i, (op, launch) in enumerate(space)]
    configs = [c for c in configs if re.search(args.only, f"{c.op}.{c.kernel_name} [{c.label}]")]
    print(f"check_triton_compile: triton {triton.__version__}, {len(configs)} configurations x sm_"
          + ", sm_".join(map(str, archs)))
    results = run(configs, archs, budgets, args.jobs,
                  print_fn=(lambda line: line.startswith("FAILED") and print(line)) if args.quiet else print)
    print(summary(results))
    failed = [r for r in results if r.error is not None or r.violations]
    print(f"check_triton_compile: {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
