"""Where one end-to-end forward spends its time, by kind of work, from ``torch.profiler`` self times.

Self (exclusive) CPU time per operator is summed into buckets, so nested operators are never counted twice.
The buckets separate the two fused kernels from everything around them that the model still runs unfused:
adaLN modulation and gates (elementwise), LayerNorm, GELU/SiLU, the linears, patchify/unpatchify copies.
"""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from ledit.bench.end_to_end import SAMPLING_STEP, ModelCase, _batch, _build, forced_backend

# (bucket, substrings that mark our kernels and SDPA's, exact ATen names), first match wins.
BUCKETS = (
    ("scan_attention", ("scan_attention", "scaled_dot_product", "flash_attention", "efficient_attention",
                        "flex_attention"), {"aten::_softmax", "aten::softmax", "aten::masked_fill"}),
    ("dwconv_modulate", ("dwconv",), set()),
    ("linear (matmul)", (), {"aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear"}),
    ("patchify conv", (), {"aten::conv2d", "aten::convolution", "aten::_convolution", "aten::mkldnn_convolution",
                           "aten::_convolution_depthwise2d", "aten::thnn_conv2d"}),
    ("layer_norm", (), {"aten::layer_norm", "aten::native_layer_norm"}),
    ("gelu / silu", (), {"aten::gelu", "aten::silu", "aten::tanh"}),
    ("elementwise (adaLN modulate, gates, residual)",
     (), {"aten::mul", "aten::add", "aten::sub", "aten::div", "aten::addcmul", "aten::add_", "aten::mul_",
          "aten::neg", "aten::exp", "aten::cos", "aten::sin", "aten::rsqrt", "aten::pow", "aten::where"}),
    ("copies / reshapes (patch, unpatch, heads)",
     (), {"aten::copy_", "aten::contiguous", "aten::clone", "aten::permute", "aten::transpose", "aten::reshape",
          "aten::view", "aten::cat", "aten::unbind", "aten::chunk", "aten::split", "aten::einsum", "aten::unfold",
          "aten::as_strided", "aten::empty", "aten::empty_like", "aten::zeros", "aten::to", "aten::_to_copy",
          "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice", "aten::t", "aten::expand",
          "aten::flatten", "aten::_unsafe_view", "aten::narrow", "aten::stack"}),
)
OTHER = "other"


def bucket_of(op_name: str) -> str:
    name = op_name.lower()
    for bucket, substrings, exact in BUCKETS:
        if name in exact or any(key in name for key in substrings):
            return bucket
    return OTHER


def profile_forward(case: ModelCase, device: torch.device, backend=None) -> dict:
    """Profile one forward (after a warmup forward) of ``case.model``; returns per-bucket ms and shares."""
    if case.task != SAMPLING_STEP:
        raise ValueError(f"profile_forward profiles a sampling step, got task={case.task!r}")
    model = _build(case.model, case, device)
    batch = _batch(case, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with forced_backend(backend), torch.no_grad():
        model(*batch)
        with profile(activities=activities) as prof:
            model(*batch)
    time_attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    totals: dict[str, float] = {}
    top_ops = []
    for event in prof.key_averages():
        us = getattr(event, time_attr, 0.0)
        if us <= 0:
            continue
        bucket = bucket_of(event.key)
        totals[bucket] = totals.get(bucket, 0.0) + us
        top_ops.append((us, event.key, bucket))
    total_us = sum(totals.values()) or 1.0
    buckets = {name: {"ms": round(us / 1e3, 3), "share": round(us / total_us, 4)}
               for name, us in sorted(totals.items(), key=lambda item: -item[1])}
    top = [{"op": key, "bucket": bucket, "ms": round(us / 1e3, 3)}
           for us, key, bucket in sorted(top_ops, reverse=True)[:15]]
    return {"case": case.describe(), "backend": backend or "automatic", "total_ms": round(total_us / 1e3, 3),
            "buckets": buckets, "top_ops": top}
