"""What every run needs before it starts: its device, under torchrun its process group, and the optional packages
its flags call for (checked before any work, not when they are first used hours in).

Shared by training, sampling, latent extraction, evaluation and the benchmarks. Launched by torchrun
(RANK/WORLD_SIZE/LOCAL_RANK set) a process joins the group: nccl on GPUs, gloo on CPU. Launched plainly it runs
as a world of one, without a process group, so every command also works without torchrun.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


class DeviceUnavailableError(RuntimeError):
    """The device a run was asked to use does not exist here."""


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
        _check_cuda_device(dev)
        torch.cuda.set_device(dev)
    return dev


def _check_cuda_device(dev: torch.device) -> None:
    """Say why a CUDA device cannot be used, rather than torch's internal error (on a CPU build of torch,
    ``torch.cuda.set_device`` fails with an AttributeError)."""
    if torch.version.cuda is None:
        raise DeviceUnavailableError(f"--device {dev}: this torch {torch.__version__} is a CPU-only build; install a "
                                     "CUDA build of torch, or pass --device cpu")
    count = torch.cuda.device_count()
    if dev.index >= count:
        visible = f"only cuda:0..cuda:{count - 1} are" if count else "no CUDA GPU is"
        raise DeviceUnavailableError(f"--device {dev}: {visible} visible (CUDA_VISIBLE_DEVICES="
                                     f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); pass another device or "
                                     "--device cpu")


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
    """Leave the process group once every rank is done, and free it while the interpreter is fully alive.

    torch's DTensor keeps the device meshes FSDP2 used in module-level caches (functools caches of sharding
    propagation, transform plans and mesh topology, a dict of redistribute planners), and each mesh keeps its
    process group: ``destroy_process_group`` alone cannot free the group, and its gloo threads live on into
    interpreter shutdown, where the process can abort after its work is done ("terminate called without an
    active exception"). So those caches are emptied and the garbage collected first. Call it once the objects
    holding DTensors (an FSDP model, its optimizer) are gone: ``ledit train`` returns from the function that held
    them first."""
    if not dist.is_initialized():
        return
    dist.barrier()
    _clear_distributed_caches()
    gc.collect()
    dist.destroy_process_group()


def _clear_distributed_caches() -> None:
    """Empty the caches in torch.distributed that can hold device meshes: every functools cache of its modules
    and DTensor's sharding-propagation and redistribute-planner caches. They are torch's private state, so they
    are found rather than named where possible; a torch that moved them only loses this clean-up."""
    for obj in gc.get_objects():
        # type(), not isinstance(): the heap holds weak proxies whose referents are gone, and isinstance asks
        # the proxy for __class__ (ReferenceError) or triggers deprecated module attributes' warnings.
        if type(obj) is functools._lru_cache_wrapper and str(getattr(obj, "__module__", "")).startswith(
                "torch.distributed"):
            obj.cache_clear()
    try:
        from torch.distributed.tensor import _redistribute
        from torch.distributed.tensor.debug import _clear_sharding_prop_cache
    except ImportError:
        return
    _clear_sharding_prop_cache()
    getattr(_redistribute, "_planner_cache", {}).clear()


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


def missing_packages(*packages: str) -> list[str]:
    """The import names among `packages` that are not installed (found without importing them)."""
    return [name for name in packages if importlib.util.find_spec(name) is None]


def require_packages(what: str, *packages: str, install: str | None = None) -> None:
    """Raise ImportError naming `what` needs them when any of `packages` is missing; `install` is the pip line."""
    missing = missing_packages(*packages)
    if missing:
        raise ImportError(f"{what} needs {', '.join(missing)}, which is not installed: "
                          f"pip install {install or ' '.join(missing)}")
