"""Prove the CUDA sources compile for sm_80 and sm_90 without a GPU, and gate what each kernel uses.

1. nvcc -c on every csrc/*/*.cu for each arch in LEDIT_CUDA_ARCHS (default "80;90") with the flags a real build uses
   (setup.py's plus torch's COMMON_NVCC_FLAGS, which remove the implicit half/bfloat16 conversions) and
   ``-Xptxas -v``; a syntax check of the torch glue (csrc/*/*_cuda_ops.cpp, empty in CPU builds) with
   LEDIT_WITH_CUDA defined.
2. Per kernel instantiation and arch, registers, spill stores and static shared memory from ptxas, and the SASS
   opcodes from ``cuobjdump -sass`` of the objects, checked against scripts/gpu_budgets.toml: every kernel has a
   budget and stays within it, every SASS rule holds (tensor-core HMMA present, 16-bit operands through LDSM, no
   spills), and every exception to a rule is named, has a reason, and still applies. Adding or replacing a kernel
   means editing that one file; ``--print-budgets`` prints the measured entries to paste. The CPU executor's probe
   kernels (csrc/emulator/probe_kernels.cu) are compiled but not gated: they test the executor and never ship.

The CPU wheel of torch ships the ATen/c10 CUDA headers (all but one generated header, stubbed here), so compiling
works; only linking would need the CUDA libraries, which is what `LEDIT_FORCE_CUDA=1 pip install
--no-build-isolation .` does on a CUDA build of torch. Dynamic shared memory is sized by the launchers per call and
refused with a named error above the device's opt-in limit (scan_attention: the glue's double_buffer; dwconv_modulate:
check_launch_limits); docs/gpu-first-run.md lists the largest blocks.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gpu_budgets import load_budgets  # noqa: E402


@dataclasses.dataclass
class Usage:
    """What ptxas reports for one kernel on one arch."""

    registers: int = 0
    spill_bytes: int = 0  # spill stores
    stack_bytes: int = 0
    static_shared_bytes: int = 0


def find_nvcc() -> str | None:
    from torch.utils import cpp_extension

    nvcc = shutil.which("nvcc") or (cpp_extension.CUDA_HOME and os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc"))
    return nvcc if nvcc and os.path.exists(nvcc) else None


def find_cuobjdump(nvcc: str) -> str | None:
    """The CUDA toolkit's cuobjdump, else the one Triton's NVIDIA backend ships (CUDA 12.8; it reads CUDA 13
    objects for sm_80 and sm_90)."""
    candidates = [os.path.join(os.path.dirname(os.path.realpath(nvcc)), "cuobjdump"), shutil.which("cuobjdump")]
    try:
        import triton

        candidates.append(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump"))
    except ImportError:
        pass
    return next((c for c in candidates if c and os.path.exists(c)), None)


def _include_flags() -> list[str]:
    from torch.utils import cpp_extension

    includes = [os.path.join(ROOT, "csrc"), sysconfig.get_paths()["include"]]
    includes += cpp_extension.include_paths()  # nvcc adds its own CUDA include dir; a CPU torch has no CUDA_HOME
    return [f"-I{p}" for p in includes]


DEFINES = ["-DLEDIT_WITH_CUDA=1", "-D_GLIBCXX_USE_CXX11_ABI=1"]


def nvcc_flags(archs: str) -> list[str]:
    from torch.utils import cpp_extension

    from build_utils import NVCC_FLAGS, cuda_gencode_flags

    flags = cpp_extension.COMMON_NVCC_FLAGS + NVCC_FLAGS + cuda_gencode_flags(archs) + DEFINES + _include_flags()
    return flags + ["-Xcompiler", "-fPIC", "-Xptxas", "-v"]


def compile_cuda(nvcc: str, src: str, obj: str, flags: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([nvcc, "-c", src, "-o", obj] + flags, capture_output=True, text=True)


def ptxas_usage(log: str) -> dict[tuple[str, str], Usage]:
    """{(mangled kernel, 'sm_NN'): Usage} from the output of ``-Xptxas -v``."""
    usage: dict[tuple[str, str], Usage] = {}
    current = None
    for line in log.splitlines():
        if m := re.search(r"Compiling entry function '(\S+)' for '(sm_\d+a?)'", line):
            current = usage.setdefault((m.group(1), m.group(2)), Usage())
        elif current is not None and (m := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores", line)):
            current.stack_bytes, current.spill_bytes = int(m.group(1)), int(m.group(2))
        elif current is not None and (m := re.search(r"Used (\d+) registers", line)):
            current.registers = int(m.group(1))
            if s := re.search(r"(\d+) bytes smem", line):
                current.static_shared_bytes = int(s.group(1))
    return usage


def sass_opcodes(obj: str, cuobjdump: str) -> dict[tuple[str, str], collections.Counter]:
    """{(mangled kernel, 'sm_NN'): opcode counts} from ``cuobjdump -sass``; an opcode is counted by its base name
    (``LD.E.64`` counts as ``LD``, the generic load; ``LDS``, ``LDG``, ``LDSM`` are other opcodes)."""
    text = subprocess.run([cuobjdump, "-sass", obj], capture_output=True, text=True, check=True).stdout
    instruction = re.compile(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P[T\d]+\s+)?([A-Z][A-Z0-9_]*)")  # /*0040*/ @!P0 LDSM...
    opcodes: dict[tuple[str, str], collections.Counter] = {}
    arch, current = None, None
    for line in text.splitlines():
        if m := re.search(r"arch = (sm_\d+a?)", line):
            arch = m.group(1)
        elif m := re.search(r"Function : (\S+)", line):
            current = opcodes.setdefault((m.group(1), arch), collections.Counter())
        elif current is not None and (m := instruction.search(line)):
            current[m.group(1)] += 1
    return opcodes


def short_names(mangled: list[str]) -> dict[str, str]:
    """Mangled name -> 'op::kernel<args>' (the ledit, cuda and anonymous namespaces, return type and parameters
    dropped), e.g. 'scan_attention::forward_kernel<64, __half>'."""
    text = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True, text=True, check=True).stdout
    names = {}
    for raw, demangled in zip(mangled, text.splitlines()):
        name = demangled.replace("(anonymous namespace)::", "").removeprefix("void ")
        name = name[: name.index("(")] if "(" in name else name
        names[raw] = name.replace("ledit::", "").replace("::cuda::", "::")
    return names


def check_budgets(usage: dict, opcodes: dict, budgets: dict) -> list[str]:
    """Every violation of gpu_budgets.toml's [cuda] section by the measured kernels (keys: (short name, arch))."""
    problems = []
    kernels = budgets.get("kernels", {})
    for (name, arch), used in sorted(usage.items()):
        budget = kernels.get(name, {}).get(arch)
        if budget is None:
            problems.append(f"{name} on {arch}: no budget in gpu_budgets.toml [cuda.kernels] "
                            f"(run with --print-budgets for the measured entry)")
            continue
        for field in ("registers", "spill_bytes", "static_shared_bytes"):
            if getattr(used, field) > budget.get(field, 0):
                problems.append(f"{name} on {arch}: {field} {getattr(used, field)} > budget {budget.get(field, 0)}")
    measured = {name for name, _ in usage}
    problems += [f"{name}: budgeted in gpu_budgets.toml but no such kernel was compiled (remove its entry)"
                 for name in sorted(set(kernels) - measured)]
    problems += _check_rules(usage, opcodes, budgets.get("rules", []), budgets.get("exceptions", []))
    return problems


def _check_rules(usage: dict, opcodes: dict, rules: list, exceptions: list) -> list[str]:
    problems, used_exceptions = [], set()
    names = {rule["name"] for rule in rules}
    for index, exception in enumerate(exceptions):
        if exception.get("rule") not in names or not exception.get("reason"):
            problems.append(f"exception #{index} must name one of the rules {sorted(names)} and give a reason")
    for rule in rules:
        for (name, arch), used in sorted(usage.items()):
            if not re.search(rule["kernels"], name):
                continue
            broken = _rule_violations(rule, used, opcodes.get((name, arch), collections.Counter()))
            if not broken:
                continue
            excused = [i for i, e in enumerate(exceptions) if e.get("rule") == rule["name"]
                       and re.search(e["kernels"], name) and re.search(e.get("archs", "."), arch)]
            if excused:
                used_exceptions.update(excused)
            else:
                problems.append(f"{name} on {arch} breaks rule '{rule['name']}' ({rule['why']}): {'; '.join(broken)}")
    for index, exception in enumerate(exceptions):
        if index not in used_exceptions:
            problems.append(f"exception to '{exception.get('rule')}' for /{exception.get('kernels')}/ no longer "
                            f"applies to any kernel: remove it from gpu_budgets.toml")
    return problems


def _rule_violations(rule: dict, used: Usage, opcodes: collections.Counter) -> list[str]:
    broken = [f"no {op} in its SASS" for op in rule.get("require_sass", []) if opcodes[op] == 0]
    broken += [f"{opcodes[op]} {op} instructions in its SASS" for op in rule.get("forbid_sass", []) if opcodes[op]]
    if "max_spill_bytes" in rule and used.spill_bytes > rule["max_spill_bytes"]:
        broken.append(f"{used.spill_bytes} bytes of spill stores")
    return broken


def budget_entries(usage: dict) -> str:
    """The [cuda.kernels] entries of the measured kernels, as TOML to paste into gpu_budgets.toml."""
    by_kernel = collections.defaultdict(dict)
    for (name, arch), u in sorted(usage.items()):
        by_kernel[name][arch] = u
    lines = []
    for name, archs in by_kernel.items():
        lines.append(f'[cuda.kernels."{name}"]')
        for arch, u in archs.items():
            lines.append(f"{arch} = {{ registers = {u.registers}, spill_bytes = {u.spill_bytes}, "
                         f"static_shared_bytes = {u.static_shared_bytes} }}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print-budgets", action="store_true", help="print the measured [cuda.kernels] entries")
    args = parser.parse_args(argv)
    nvcc = find_nvcc()
    if nvcc is None:
        print("check_cuda_compile: nvcc not found (set CUDA_HOME or put nvcc on PATH)", file=sys.stderr)
        return 1
    cuobjdump = find_cuobjdump(nvcc)
    if cuobjdump is None:
        print("check_cuda_compile: cuobjdump not found (CUDA toolkit, or `pip install triton`, which ships one)",
              file=sys.stderr)
        return 1
    sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "*", "*.cu")))
    if not sources:
        print("check_cuda_compile: no .cu sources under csrc/", file=sys.stderr)
        return 1
    archs = os.environ.get("LEDIT_CUDA_ARCHS", "80;90")
    flags = nvcc_flags(archs)
    glue_sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "*", "*_cuda_ops.cpp")))
    jobs = int(os.environ.get("MAX_JOBS", os.cpu_count() or 1))
    usage, opcodes, failed = {}, {}, 0
    with tempfile.TemporaryDirectory() as out_dir, concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        # nvcc hands a .cpp to the host compiler with CUDA's include dir; -fsyntax-only skips code generation.
        glue_flags = ["-std=c++17", "-w", "-Xcompiler", "-fsyntax-only"] + DEFINES + _include_flags()
        glue_flags.append(f"-I{_stub_cuda_cmake_macros(out_dir)}")  # last: a CUDA torch's own header wins

        def compile_one(src: str):
            obj = os.path.join(out_dir, os.path.basename(src) + ".o")
            return src, obj, compile_cuda(nvcc, src, obj, glue_flags if src.endswith(".cpp") else flags)

        for src, obj, result in pool.map(compile_one, sources + glue_sources):
            rel = os.path.relpath(src, ROOT)
            if result.returncode != 0:
                failed += 1
                print(f"FAILED {rel}\n{result.stdout}{result.stderr}", file=sys.stderr)
                continue
            print(f"ok     {rel}" + ("" if src.endswith(".cpp") else f" (arches {archs})"))
            # The executor's probe kernels (csrc/emulator/) compile here to prove nvcc takes them, but they are
            # tests of the executor, never shipped: no budgets.
            if src.endswith(".cu") and not rel.startswith(os.path.join("csrc", "emulator")):
                usage.update(ptxas_usage(result.stderr))
                opcodes.update(sass_opcodes(obj, cuobjdump))
    if failed:
        return 1
    names = short_names(sorted({mangled for mangled, _ in usage}))
    usage = {(names[m], arch): u for (m, arch), u in usage.items()}
    opcodes = {(names[m], arch): c for (m, arch), c in opcodes.items() if m in names}
    if args.print_budgets:
        print(budget_entries(usage))
    print(resource_table(usage, opcodes))
    problems = check_budgets(usage, opcodes, load_budgets()["cuda"])
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    print(f"check_cuda_compile: {len(usage)} kernel instantiations x arch, {len(problems)} budget or SASS problems")
    return 1 if problems else 0


def resource_table(usage: dict, opcodes: dict) -> str:
    lines = ["| kernel | arch | registers | spill stores B | static smem B | HMMA | LDSM | generic LD |",
             "|---|---|---|---|---|---|---|---|"]
    for (name, arch), u in sorted(usage.items()):
        ops = opcodes.get((name, arch), collections.Counter())
        lines.append(f"| `{name}` | {arch} | {u.registers} | {u.spill_bytes} | {u.static_shared_bytes} | "
                     f"{ops['HMMA']} | {ops['LDSM']} | {ops['LD']} |")
    return "\n".join(lines)


def _stub_cuda_cmake_macros(out_dir: str) -> str:
    """An include dir with c10/cuda/impl/cuda_cmake_macros.h, which only CUDA builds of torch generate."""
    stub = os.path.join(out_dir, "stub", "c10", "cuda", "impl")
    os.makedirs(stub)
    with open(os.path.join(stub, "cuda_cmake_macros.h"), "w") as f:
        f.write("#pragma once\n")
    return os.path.join(out_dir, "stub")


if __name__ == "__main__":
    sys.exit(main())
