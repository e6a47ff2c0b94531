"""In-memory batch loading: one tensor index per batch, no per-sample collate."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _EpochSetter:
    def __init__(self, loader: InMemoryLoader) -> None:
        self.loader = loader

    def set_epoch(self, epoch: int) -> None:
        self.loader.epoch = int(epoch)


class InMemoryLoader:
    """Iterates over (x[idx], y[idx], idx) batches of tensors held in memory.

    Shuffles with its own generator (seeded, advanced each epoch), shards by DDP rank itself
    (every rank sees an equal-length, disjoint slice of the permutation), and yields the sample
    indices too, so per-sample weighting (curriculum) can key on them.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0) -> None:
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed, self.epoch = int(seed), 0
        # Lightning calls `dataloader.sampler.set_epoch(epoch)` at every epoch start, so the
        # shuffle order depends on the epoch number alone (exact on resume), not on how many
        # times this object was iterated.
        self.sampler = _EpochSetter(self)
        self.batch_sampler = None

    def _indices(self) -> Tensor:
        n = self.x.shape[0]
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            idx = torch.randperm(n, generator=g)
        else:
            idx = torch.arange(n)
        rank, world = _rank_and_world()
        if world > 1:
            per_rank = -(-n // world)  # pad by wrapping so every rank has the same count
            idx = torch.cat([idx, idx[: per_rank * world - n]])[rank::world]
        return idx

    def __len__(self) -> int:
        rank, world = _rank_and_world()
        n = -(-self.x.shape[0] // world)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        idx = self._indices()
        self.epoch += 1  # for plain iteration outside Lightning; set_epoch overrides it
        n = idx.shape[0]
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            b = idx[start:start + self.batch_size]
            yield self.x[b], self.y[b], b
