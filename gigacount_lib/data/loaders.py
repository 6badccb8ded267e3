"""Seeded, resumable training batches: a sampler that can start mid-epoch and per-sample augmentation seeds.

Reproducibility does not depend on the number of workers or on where a run was interrupted:

* :class:`EpochSampler` draws epoch ``e``'s order from ``(seed, e)`` alone, can skip the first
  samples of an epoch (resume), and shards the order across distributed ranks;
* :class:`SeededAugment` runs the transform of sample ``i`` in epoch ``e`` under a torch RNG seeded
  from ``(seed, e, i)`` (in a forked RNG, so the caller's RNG is untouched).

The DataLoader gets its own ``torch.Generator``, so creating an iterator never draws from the
global RNG (which the model's stochastic depth uses).
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .transforms import collate_crowd

__all__ = ["sample_seed", "EpochSampler", "SeededAugment", "seed_worker", "training_loader"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of epoch ``epoch`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed % 2**32, epoch, index]).generate_state(2, np.uint32)
               .astype(np.uint64).dot([1, 2**32]) % (2**63 - 1))


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` pairs in an order fixed by ``(seed, epoch)``.

    Args:
        indices: the dataset indices to draw from (e.g. the training part of a held-out split).
        batch_size: images per batch (and per rank); the order is cut to whole batches per rank.
        seed: run seed.
        rank, world_size: this process's share of the order (``order[rank::world_size]``).

    :meth:`set_epoch` chooses the epoch and :meth:`skip` how many of this rank's samples to leave
    out at its start (``step_in_epoch * batch_size`` when resuming).
    """

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.indices = list(indices)
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.epoch, self.start = 0, 0
        if self.batches_per_epoch() < 1:
            raise ValueError(f"{len(self.indices)} training images give no batch of {batch_size} images "
                             f"on each of {world_size} process(es); lower data.batch_size")

    def batches_per_epoch(self) -> int:
        return len(self.indices) // (self.batch_size * self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = int(epoch), 0

    def skip(self, samples: int) -> None:
        self.start = int(samples)

    def order(self) -> list[int]:
        rng = np.random.default_rng([self.seed % 2**32, self.epoch])
        perm = [self.indices[i] for i in rng.permutation(len(self.indices))]
        n = self.batches_per_epoch() * self.batch_size
        return perm[self.rank::self.world_size][:n]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.order()[self.start:]:
            yield self.epoch, index

    def __len__(self) -> int:
        return self.batches_per_epoch() * self.batch_size - self.start


class SeededAugment(Dataset):
    """``dataset[(epoch, i)]``: sample ``i`` of ``dataset`` through ``transform`` under its own seed."""

    def __init__(self, dataset: Dataset, transform: Callable, seed: int = 0) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        image, points, meta = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self.transform(image, points, meta)


def seed_worker(worker_id: int) -> None:
    """Seed Python and NumPy in a DataLoader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def training_loader(dataset: Dataset, transform: Callable, sampler: EpochSampler, *, num_workers: int = 0,
                    pin_memory: bool = False, seed: int = 0) -> DataLoader:
    """A DataLoader of :class:`~gigacount_lib.data.transforms.CrowdBatch` over ``sampler``'s order."""
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(worker_init_fn=seed_worker, persistent_workers=False)
    return DataLoader(SeededAugment(dataset, transform, seed), batch_size=sampler.batch_size, sampler=sampler,
                      num_workers=num_workers, collate_fn=collate_crowd, pin_memory=pin_memory, drop_last=True,
                      generator=torch.Generator().manual_seed(seed), **kwargs)
