"""Where one end-to-end forward spends its time, by kind of work, from ``torch.profiler`` self times.

Self (exclusive) time per operator is summed into buckets, so nested operators are never counted twice; an
operator running inside one of the fused kernels (its zero-fills, its input copies) counts as that kernel.
The buckets separate the two fused kernels from everything around them that the model still runs unfused:
adaLN modulation and gates (elementwise), LayerNorm, GELU/SiLU, the linears, patchify/unpatchify copies.
"""

from __future__ import annotations

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from ledit.bench.end_to_end import SAMPLING_STEP, ModelCase, _batch, _build, forced_backend

# (bucket, substrings that mark our kernels and SDPA's, exact ATen names), first match wins.
BUCKETS = (
    ("scan_attention", ("scan_attention", "scaled_dot_product", "flash_attention", "efficient_attention",
                        "flex_attention"), {"aten::_softmax", "aten::softmax", "aten::masked_fill"}),
    ("dwconv_modulate", ("dwconv",), set()),
    ("linear (matmul)", (), {"aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear"}),
    ("patchify conv", (), {"aten::conv2d", "aten::convolution", "aten::_convolution", "aten::mkldnn_convolution",
                           "aten::_convolution_depthwise2d", "aten::thnn_conv2d",
                           "aten::_slow_conv2d_forward"}),
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
KERNEL_BUCKETS = ("scan_attention", "dwconv_modulate")
GENERIC_BUCKETS = ("copies / reshapes (patch, unpatch, heads)", OTHER)


def bucket_of(op_name: str) -> str:
    name = op_name.lower()
    for bucket, substrings, exact in BUCKETS:
        if name in exact or any(key in name for key in substrings):
            return bucket
    return OTHER


def owning_bucket(event) -> str:
    """The bucket an event's time belongs to: a fused kernel's when it runs inside one (the kernel's own
    zero-fills and input copies are its cost), else that of the nearest enclosing operator doing real work
    (``addmm``'s bias copy is the linear's), else its own."""
    chain = []
    while event is not None:
        chain.append(bucket_of(event.name))
        event = event.cpu_parent
    return next((b for b in chain if b in KERNEL_BUCKETS), None) or next(
        (b for b in chain if b not in GENERIC_BUCKETS), chain[0])


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
    per_op: dict[tuple[str, str, str], float] = {}
    for event in prof.events():
        us = getattr(event, time_attr, 0.0)
        if event.device_type != DeviceType.CPU or us <= 0:
            continue  # device-side kernel rows: their time is already in the op that launched them
        bucket = owning_bucket(event)
        totals[bucket] = totals.get(bucket, 0.0) + us
        key = (event.name, event.cpu_parent.name if event.cpu_parent is not None else "", bucket)
        per_op[key] = per_op.get(key, 0.0) + us
    top_ops = sorted(((us, *key) for key, us in per_op.items()), reverse=True)
    total_us = sum(totals.values()) or 1.0
    buckets = {name: {"ms": round(us / 1e3, 3), "share": round(us / total_us, 4)}
               for name, us in sorted(totals.items(), key=lambda item: -item[1])}
    top = [{"op": name, "called_from": parent, "bucket": bucket, "ms": round(us / 1e3, 3)}
           for us, name, parent, bucket in top_ops[:15]]
    return {"case": case.describe(), "backend": backend or "automatic", "total_ms": round(total_us / 1e3, 3),
            "buckets": buckets, "top_ops": top}
