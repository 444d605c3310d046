"""Whole models: a LEDiT training step and a sampling step (one denoiser forward) at 256², 512², 1024².

Each LEDiT timing is compared, in the same interleaved loop, with the same model forced to the ``reference``
backends (``LEDIT_BACKEND=reference`` around the call), with DiT of the same size (SDPA attention, sin-cos PE),
and, unless ``compile`` is off, with both under ``torch.compile``. The latent is image/8 (SD VAE), so
LEDiT-XL/2 at 1024² runs a 64x64 token grid.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch

from ledit.bench.records import comparison
from ledit.bench.timing import Effort, measure
from ledit.models import NUM_TRAIN_TIMESTEPS, build_model
from ledit.ops import BACKEND_ENV

SUITE = "end_to_end"
TRAIN_STEP, SAMPLING_STEP = "train_step", "sampling_step"
LEDIT, LEDIT_COMPILED, LEDIT_REFERENCE = "ledit", "ledit_compiled", "ledit_reference"
DIT_SDPA, DIT_COMPILED = "dit_sdpa", "dit_compiled"
LATENT_CHANNELS, VAE_DOWNSAMPLE, NUM_CLASSES = 4, 8, 1000


@dataclass(frozen=True)
class ModelCase:
    task: str
    model: str  # a LEDiT_models name; the DiT baseline is the same size
    image_size: int
    batch: int
    dtype: torch.dtype
    compile: bool

    @property
    def dit_model(self) -> str:
        return self.model.replace("LEDiT", "DiT", 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // VAE_DOWNSAMPLE

    def describe(self) -> dict:
        patch = int(self.model.rsplit("/", 1)[1])
        grid = self.latent_size // patch
        return {"task": self.task, "model": self.model, "baseline_model": self.dit_model,
                "image_size": self.image_size, "token_grid": [grid, grid], "batch": self.batch,
                "dtype": str(self.dtype).removeprefix("torch."), "compile": self.compile}


def plan(device: torch.device, quick: bool) -> list[ModelCase]:
    """GPU: LEDiT-XL/2 training at 256² (batch 32, bf16 autocast) and sampling (batch 8 = 4 images with CFG, bf16).

    CPU: LEDiT-S/2, a training step at 256² (batch 2) and a forward at 256², 512² and 1024² (a 64x64 token grid,
    where attention dominates: issue 6's CPU target). torch.compile is timed on the 256² forward only: compiling
    the training step took ~5 minutes of the 2-core machine, more than the whole run may. ``--quick`` keeps the
    same comparisons at 128² (training) and 256² (forward), without torch.compile.
    """
    if device.type == "cuda":
        sizes = (256, 1024) if quick else (256, 512, 1024)
        return [ModelCase(TRAIN_STEP, "LEDiT-XL/2", 256, 32, torch.bfloat16, True)] + [
            ModelCase(SAMPLING_STEP, "LEDiT-XL/2", s, 8, torch.bfloat16, True) for s in sizes]
    fp32 = torch.float32
    if quick:
        return [ModelCase(TRAIN_STEP, "LEDiT-S/2", 128, 2, fp32, False),
                ModelCase(SAMPLING_STEP, "LEDiT-S/2", 256, 1, fp32, False)]
    return [ModelCase(TRAIN_STEP, "LEDiT-S/2", 256, 2, fp32, False)] + [
        ModelCase(SAMPLING_STEP, "LEDiT-S/2", s, 1, fp32, s == 256) for s in (256, 512, 1024)]


@contextlib.contextmanager
def forced_backend(name: str | None):
    """Set (or, for None, clear) LEDIT_BACKEND for the duration of one call; restores the caller's value."""
    saved = os.environ.pop(BACKEND_ENV, None)
    if name is not None:
        os.environ[BACKEND_ENV] = name
    try:
        yield
    finally:
        os.environ.pop(BACKEND_ENV, None)
        if saved is not None:
            os.environ[BACKEND_ENV] = saved


def _call(fn, backend: str | None):
    with forced_backend(backend):
        return fn()


def _build(name: str, case: ModelCase, device: torch.device):
    torch.manual_seed(0)
    model = build_model(name, input_size=case.latent_size, num_classes=NUM_CLASSES).to(device)
    if case.task == SAMPLING_STEP:
        model = model.to(case.dtype).eval()
    return model


def _batch(case: ModelCase, device: torch.device):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(case.batch, LATENT_CHANNELS, case.latent_size, case.latent_size, generator=generator)
    t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (case.batch,), generator=generator)
    y = torch.randint(0, NUM_CLASSES, (case.batch,), generator=generator)
    x = x.to(device, case.dtype if case.task == SAMPLING_STEP else torch.float32)
    return x, t.to(device), y.to(device)


def _sampling_step(model, batch):
    with torch.no_grad():
        return model(*batch)


def _train_step(model, optimizer, batch, target, dtype):
    optimizer.zero_grad(set_to_none=True)
    use_autocast = dtype != torch.float32
    with torch.autocast(batch[0].device.type, dtype=dtype, enabled=use_autocast):
        out = model(*batch)
    loss = (out.float() - target).pow(2).mean()
    loss.backward()
    optimizer.step()


def build_calls(case: ModelCase, device: torch.device) -> tuple[dict, list[str]]:
    """({method: zero-argument call}, baseline names) for one case."""
    ledit_model = _build(case.model, case, device)
    dit_model = _build(case.dit_model, case, device)
    batch = _batch(case, device)
    models = {LEDIT: (ledit_model, None), LEDIT_REFERENCE: (ledit_model, "reference"), DIT_SDPA: (dit_model, None)}
    baselines = [LEDIT_REFERENCE, DIT_SDPA]
    if case.compile:
        torch._dynamo.reset()
        models[LEDIT_COMPILED] = (torch.compile(ledit_model), None)
        models[DIT_COMPILED] = (torch.compile(dit_model), None)
        baselines.append(DIT_COMPILED)
    if case.task == SAMPLING_STEP:
        calls = {name: functools.partial(_call, functools.partial(_sampling_step, model, batch), backend)
                 for name, (model, backend) in models.items()}
        return calls, baselines
    out_channels = ledit_model(*batch).shape[1]
    target = torch.randn(case.batch, out_channels, case.latent_size, case.latent_size, device=device)
    optimizers = {id(m): torch.optim.AdamW(m.parameters(), lr=1e-4) for m in (ledit_model, dit_model)}
    calls = {}
    for name, (model, backend) in models.items():
        owner = dit_model if name.startswith("dit") else ledit_model
        step = functools.partial(_train_step, model, optimizers[id(owner)], batch, target, case.dtype)
        calls[name] = functools.partial(_call, step, backend)
    return calls, baselines


def run_case(case: ModelCase, device: torch.device, effort: Effort, device_info: dict) -> list[dict]:
    calls, baselines = build_calls(case, device)
    timings = measure(calls, device, effort)
    def metrics(name: str, ms: float) -> dict:
        return {"samples_per_s": round(case.batch / (ms * 1e-3), 3)}

    return [comparison(SUITE, case.describe(), case.task, timings, baselines, metrics)]
