"""What every run needs before it starts: its device and, under torchrun, its process group.

Shared by training, sampling, latent extraction, evaluation and the benchmarks. Launched by torchrun
(RANK/WORLD_SIZE/LOCAL_RANK set) a process joins the group: nccl on GPUs, gloo on CPU. Launched plainly it runs
as a world of one, without a process group, so every command also works without torchrun.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def default_device(device: str | None = None, local_rank: int = 0) -> torch.device:
    """`device` ("cuda", "cuda:1", "cpu"), or the GPU when one is visible, else the CPU.

    A bare "cuda" becomes cuda:`local_rank`, and a CUDA device is made current (kernels that launch on the
    current device, such as Triton's, then run where the tensors are)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    return dev


def setup_distributed(device: str | None = None) -> DistContext:
    """Join the torchrun process group if launched by torchrun; pick this process's device (cuda:LOCAL_RANK or cpu)."""
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = default_device(device, local_rank)
    if launched and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None)
    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, dev)
    return DistContext(0, 1, 0, dev)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order (a list of one without a process group)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
