"""Devices and process groups: a plainly launched process is a world of one, so every command runs without
torchrun (tests/training and tests/sampling run the torchrun side with two processes)."""

import os
import weakref

import pytest
import torch

from ledit.runtime import (
    all_gather_objects,
    broadcast_object,
    cleanup_distributed,
    default_device,
    setup_distributed,
)


@pytest.fixture
def plain_launch(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def test_default_device_takes_the_named_one_else_the_visible_gpu_else_the_cpu():
    assert default_device("cpu") == torch.device("cpu")
    assert default_device() == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))


@pytest.mark.gpu
def test_bare_cuda_becomes_this_process_gpu_and_the_current_device():
    last = torch.cuda.device_count() - 1
    assert default_device("cuda", local_rank=last) == torch.device("cuda", last)
    assert torch.cuda.current_device() == last
    torch.cuda.set_device(0)


def test_a_plain_launch_is_a_world_of_one(plain_launch):
    ctx = setup_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.device, ctx.is_main) == (0, 1, 0, torch.device("cpu"), True)
    assert not torch.distributed.is_initialized()
    assert all_gather_objects({"step": 3}) == [{"step": 3}]
    assert broadcast_object("only rank") == "only rank"


def _gloo_threads() -> list[str]:
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(open(f"/proc/self/task/{task}/comm").read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return [name for name in names if "gloo" in name]


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="lists threads through Linux's /proc")
def test_leaving_the_group_after_fsdp_stops_its_threads(tmp_path, plain_launch):
    """FSDP2 leaves its device mesh (and so the process group) in DTensor's module-level caches; without clearing
    them the group's gloo threads outlived destroy_process_group into interpreter shutdown, where a torchrun rank
    sometimes aborted after its work ("terminate called without an active exception")."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
    from torch.distributed.fsdp import fully_shard

    assert not _gloo_threads()
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)

    def one_fsdp_step():  # as ledit train does: shard, step, full state dict; all of it freed on return
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
        for layer in model:
            fully_shard(layer)
        fully_shard(model)
        opt = torch.optim.AdamW(model.parameters())
        model(torch.randn(4, 8)).sum().backward()
        opt.step()
        get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    class Gone:
        pass

    gone = Gone()
    dead_proxy = weakref.proxy(gone)  # such proxies are on the heap in a long process (pytest's, ledit's)
    del gone
    one_fsdp_step()
    assert _gloo_threads()
    cleanup_distributed()
    assert type(dead_proxy) is weakref.ProxyType
    assert not torch.distributed.is_initialized()
    assert not _gloo_threads()
