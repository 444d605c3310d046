"""What a results file must say about where its numbers came from: device, versions, peaks."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path

import torch

import ledit
from ledit.ops.extension import load_extension

# Dense fp16/bf16 tensor-core peak (TFLOP/s) and HBM bandwidth (GB/s) by GPU name, from the vendors' spec
# sheets. Checked in order: "H100 PCIe" must match before plain "H100".
GPU_PEAKS = (
    ("H100 PCIe", 756.0, 2000.0),
    ("H100", 989.4, 3350.0),
    ("H200", 989.4, 4800.0),
    ("A100", 312.0, 2039.0),
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        peak = gpu_peak(props.name)
        return {
            "kind": "gpu",
            "name": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "peak_tflops_bf16": peak[0] if peak else None,
            "peak_gbps": peak[1] if peak else None,
        }
    return {
        "kind": "cpu",
        "name": cpu_model(),
        "cores": os.cpu_count(),
        # The widest vector ISA torch (and so ledit's CPU kernels, which pick their register blocking from it)
        # runs on: AVX512, AVX2, ... The same CPU name can come with or without AVX-512 in a VM.
        "vector_isa": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
    }


def gpu_peak(name: str) -> tuple[float, float] | None:
    for key, tflops, gbps in GPU_PEAKS:
        if key in name:
            return tflops, gbps
    return None


def device_slug(info: dict) -> str:
    """File-name form of the device: 'cpu-amd-epyc', 'nvidia-h100-80gb-hbm3'."""
    name = info["name"] if info["kind"] == "gpu" else f"cpu {info['name']}"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(ledit.__file__).parent,
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def versions() -> dict:
    ext, reason = load_extension()
    return {
        "ledit": ledit.__version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": _package_version("triton"),
        "python": platform.python_version(),
        "ledit_C": "built" if ext is not None else reason,
    }
