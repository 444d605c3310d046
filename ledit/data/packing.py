"""Packed batches for native-resolution training (``ledit train --max-tokens N``): each rank's images of an epoch,
in the resumable sampler's order, packed greedily into sequences of at most N tokens.

Greedy in order (NiT's packing): images join the current sequence while it has room; the first that does not
fit starts the next one. The order stays the sampler's, so packing is deterministic and a resumed run reads
exactly the sequences the interrupted run would have read. Every rank runs the same number of steps per epoch
(the fewest sequences any rank's share makes; each rank packs every rank's share to know it), so DDP and FSDP
steps stay in lockstep; a rank's last, unused sequences are dropped as ``drop_last`` drops a partial batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ledit.data.sampler import ResumableDistributedSampler


def greedy_packs(tokens: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Positions 0..n-1 of items with ``tokens`` each, in order, grouped into packs of at most ``max_tokens``."""
    packs: list[list[int]] = []
    room = 0
    for position, count in enumerate(tokens):
        if count > max_tokens:
            raise ValueError(f"an item of {count} tokens does not fit in max_tokens={max_tokens}")
        if count > room:
            packs.append([])
            room = max_tokens
        packs[-1].append(position)
        room -= count
    return packs


class PackedBatchSampler(torch.utils.data.Sampler):
    """A DataLoader ``batch_sampler`` of this rank's packs: lists of (index, flip) keys, as the items of
    ``ResumableDistributedSampler``. Its whole state is (seed, epoch, start pack)."""

    def __init__(self, item_tokens: Sequence[int], max_tokens: int, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0):
        self.item_tokens = np.asarray(item_tokens, dtype=np.int64)
        largest = int(self.item_tokens.max(initial=0))
        if largest > max_tokens:
            raise ValueError(f"max_tokens={max_tokens} cannot hold the largest image, {largest} tokens")
        self.max_tokens, self.rank = max_tokens, rank
        self.samplers = [ResumableDistributedSampler(len(self.item_tokens), num_replicas, r, seed)
                         for r in range(num_replicas)]
        self.epoch, self.start = 0, 0
        self._cached: tuple[int, list[list[tuple[int, bool]]], int] | None = None

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch ``epoch`` from its pack ``start`` (the part a resumed run already did)."""
        self.epoch, self.start = epoch, start

    def _packs(self, epoch: int) -> tuple[list[list[tuple[int, bool]]], int]:
        """(this rank's packs of ``epoch``, the number of steps every rank runs in it)."""
        if self._cached is None or self._cached[0] != epoch:
            counts, mine = [], []
            for rank, sampler in enumerate(self.samplers):
                sampler.set_epoch(epoch)
                keys = list(sampler)
                packs = greedy_packs(self.item_tokens[[i for i, _ in keys]].tolist(), self.max_tokens)
                counts.append(len(packs))
                if rank == self.rank:
                    mine = [[keys[p] for p in pack] for pack in packs]
            self._cached = (epoch, mine, min(counts))
        return self._cached[1], self._cached[2]

    def steps_in_epoch(self, epoch: int) -> int:
        return self._packs(epoch)[1]

    def __len__(self) -> int:
        return max(0, self.steps_in_epoch(self.epoch) - self.start)

    def __iter__(self):
        packs, steps = self._packs(self.epoch)
        return iter(packs[self.start : steps])


def as_list(batch: list) -> list:
    """A DataLoader collate that keeps items of different sizes apart."""
    return batch
