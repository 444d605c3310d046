"""Devices and process groups: a plainly launched process is a world of one, so every command runs without
torchrun (tests/training and tests/sampling run the torchrun side with two processes)."""

import pytest
import torch

from ledit.runtime import all_gather_objects, broadcast_object, default_device, setup_distributed


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
