"""A distributed sampler whose whole state is (seed, epoch, position), so a resumed run reads exactly the batches
the interrupted run would have read. It also decides each item's horizontal flip, keeping that augmentation
deterministic too; items are (index, flip) keys for ImageFolderDataset and LatentShardDataset."""

from __future__ import annotations

import math

import torch


class ResumableDistributedSampler(torch.utils.data.Sampler):
    def __init__(self, num_items: int, num_replicas: int = 1, rank: int = 0, seed: int = 0, flip: bool = True):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside [0, {num_replicas})")
        self.num_items, self.num_replicas, self.rank = num_items, num_replicas, rank
        self.seed, self.flip = seed, flip
        # Like DistributedSampler: pad the permutation so that every rank gets the same number of items.
        self.num_per_rank = math.ceil(num_items / num_replicas)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch `epoch`, skipping this rank's first `start` items (the part a resumed run already did)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return self.num_per_rank - self.start

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_items, generator=g)
        flips = torch.rand(self.num_items, generator=g) < 0.5
        if not self.flip:
            flips.zero_()
        total = self.num_per_rank * self.num_replicas
        order = order.repeat(math.ceil(total / self.num_items))[:total]
        mine = order[self.rank :: self.num_replicas][self.start :]
        return iter([(int(i), bool(flips[i])) for i in mine])
