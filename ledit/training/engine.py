"""The distributed pieces of training: wrapping (DDP or FSDP2), the EMA update, full state dicts for checkpoints,
per-rank RNG.

Checkpoints always hold full, unsharded, CPU state dicts (torch.distributed.checkpoint.state_dict), so a file
written by an FSDP run on 64 GPUs loads into ``ledit sample`` on a laptop, and the reverse.
"""

from __future__ import annotations

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from ledit.runtime import DistContext, all_gather_objects

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def wrap_model(model: torch.nn.Module, ema: torch.nn.Module, ctx: DistContext, fsdp: bool):
    """(module to call in training, model whose parameters the optimizer and EMA see, ema).

    DDP keeps a full EMA replica on every rank, as DiT does. FSDP2 shards each transformer block and the root of
    both the model and the EMA the same way, so the EMA update pairs up local shards."""
    if fsdp:
        if ctx.world_size == 1:
            raise ValueError("--fsdp needs torchrun with several processes (one process has nothing to shard over)")
        for module in (model, ema):
            for block in getattr(module, "blocks", []):
                fully_shard(block)
            fully_shard(module)
        return model, model, ema
    if ctx.world_size > 1:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids), model, ema
    return model, model, ema


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float = 0.9999) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter (works on FSDP-sharded DTensors too)."""
    for ema_param, param in zip(ema.parameters(), model.parameters(), strict=True):
        ema_param.lerp_(param.detach(), 1.0 - decay)


def full_training_state(model, ema, opt) -> tuple[dict, dict, dict]:
    """Full CPU state dicts of model, EMA and optimizer (optimizer keyed by parameter name). Collective."""
    model_sd, opt_sd = get_state_dict(model, opt, options=_FULL)
    return model_sd, get_model_state_dict(ema, options=_FULL), opt_sd


def load_training_state(model, ema, opt, state: dict) -> None:
    """Inverse of full_training_state: every rank reads the full dicts and keeps its part."""
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["opt"], options=_FULL)
    set_model_state_dict(ema, state["ema"], options=_FULL)


def rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def gather_rng_states(device: torch.device) -> list[dict]:
    """Every rank's RNG state (timesteps, noise, label dropout, dilation draws), in rank order. Collective."""
    return all_gather_objects(rng_state(device))


def restore_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
