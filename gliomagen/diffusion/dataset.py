"""Training data: prepared cases as ``(image, encoded mask)`` pairs, a deterministic sample schedule, and the
``DataLoader`` that feeds training.

The order of training samples, their timesteps and their noise are pure functions of the config seed and
the *global sample index* ``g = (step * grad_accum + micro) * batch_size + j``. That makes resuming exact
without replaying anything, makes ``n`` DDP processes (each taking a slice of the global batch) see exactly
the samples and noise of one process with the whole batch, and makes the loader's worker processes
(``runtime.loader_workers``) change nothing but speed: a worker computes sample ``g`` from ``g`` alone.
Cases are read from the prepared-data cache (:mod:`gliomagen.data.cache`: memory-mapped ``.npy``), not by
decoding NIfTI files in the training loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from gliomagen.config import Config
from gliomagen.data.cache import BadCaseError, read_cache
from gliomagen.data.outputs import PrepareOutputs
from gliomagen.data.prepare import prep_key, usable_cases
from gliomagen.diffusion.network import encode_mask

__all__ = [
    "CaseDataset",
    "TrainSamples",
    "case_for_sample",
    "noise_for_sample",
    "sample_indices",
    "usable_cases",
]

#: one training sample: image (4,X,Y,Z), mask (X,Y,Z) uint8, timestep, noise (4,X,Y,Z)
Sample = tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]
#: a collated micro-batch: images, masks (encoded on the training device), timesteps (B,), noises
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class CaseDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Prepared cases as ``(image (4,X,Y,Z) in [0,1], encoded mask (C,X,Y,Z))`` float32 tensors.

    Args:
        dirs: case folders (``prepared/<split>/<id>``).
        cfg: run configuration (label map, mask encoding; the cache key from the ``data`` section).
    """

    def __init__(self, dirs: list[Path], cfg: Config) -> None:
        self.dirs, self.cfg = dirs, cfg
        self.cache_root = PrepareOutputs(cfg.paths).cache
        self.prep = prep_key(cfg.data)

    def __len__(self) -> int:
        return len(self.dirs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.arrays(index)
        return image, self.encode(mask, index)

    def arrays(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The case's image (float32) and mask (uint8, not yet encoded) as tensors."""
        image, mask = read_cache(self.cache_root, self.dirs[index], self.prep)
        return torch.from_numpy(np.array(image)), torch.from_numpy(np.array(mask))

    def encode(self, mask: torch.Tensor, index: int | None = None) -> torch.Tensor:
        """:func:`encode_mask`, naming the case's mask file when a value is not in the label map."""
        try:
            return encode_mask(mask, self.cfg)
        except ValueError as exc:
            where = "" if index is None else f"{self.dirs[index] / (self.dirs[index].name + '-seg.nii.gz')}: "
            raise BadCaseError(f"{where}{exc}") from None


def case_for_sample(g: int, n_cases: int, seed: int) -> int:
    """Case index of global sample ``g``: a fresh seeded permutation of the cases every epoch."""
    epoch, pos = divmod(g, n_cases)
    perm = torch.randperm(n_cases, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return int(perm[pos])


def noise_for_sample(g: int, shape: tuple[int, ...], timesteps: int, seed: int) -> tuple[int, torch.Tensor]:
    """Timestep and Gaussian noise of global sample ``g`` (independent of process count and resume)."""
    gen = torch.Generator().manual_seed((seed + 1) * 1_000_000_007 + g)
    t = int(torch.randint(0, timesteps, (1,), generator=gen))
    return t, torch.randn(shape, generator=gen)


def sample_indices(step: int, micro: int, cfg: Config, rank: int, world: int) -> list[int]:
    """Global sample indices handled by ``rank`` in micro-batch ``micro`` of optimiser step ``step``."""
    b = cfg.train.batch_size
    per_rank = b // world
    first = (step * cfg.train.grad_accum + micro) * b + rank * per_rank
    return list(range(first, first + per_rank))


class TrainSamples(Dataset[Sample]):
    """Training sample ``g`` (case, timestep and noise all from ``g``): what a loader worker computes."""

    def __init__(self, cases: CaseDataset, cfg: Config) -> None:
        self.cases, self.seed, self.timesteps = cases, cfg.train.seed, cfg.diffusion.timesteps

    def __len__(self) -> int:  # the schedule is unbounded; the batch sampler says which g are drawn
        return 2**62

    def __getitem__(self, g: int) -> Sample:
        image, mask = self.cases.arrays(case_for_sample(g, len(self.cases), self.seed))
        t, noise = noise_for_sample(g, tuple(image.shape), self.timesteps, self.seed)
        return image, mask, t, noise


class MicroBatches(Sampler[list[int]]):
    """The global sample indices of this process's micro-batches, optimiser steps ``start .. stop - 1``."""

    def __init__(self, cfg: Config, start: int, stop: int, rank: int = 0, world: int = 1) -> None:
        self.cfg, self.start, self.stop, self.rank, self.world = cfg, start, stop, rank, world

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.cfg.train.grad_accum

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            for micro in range(self.cfg.train.grad_accum):
                yield sample_indices(step, micro, self.cfg, self.rank, self.world)


def collate(samples: list[Sample]) -> Batch:
    """Stack samples into a micro-batch (what the training loop did before the loader: bit-identical).

    In a worker process the stacks are written straight into shared memory (as ``default_collate`` does),
    so a volume is not copied once more on its way to the training process.
    """
    images, masks, ts, noises = zip(*samples, strict=True)
    return _stack(images), _stack(masks), torch.tensor(ts), _stack(noises)


def _stack(tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
    if get_worker_info() is None:
        return torch.stack(tensors)
    first = tensors[0]
    storage = first.untyped_storage()._new_shared(  # type: ignore[no-untyped-call]
        len(tensors) * first.numel() * first.element_size()
    )
    out = first.new(storage).resize_(len(tensors), *first.shape)
    return torch.stack(tensors, out=out)


def make_loader(
    cfg: Config, cases: CaseDataset, start: int, stop: int, rank: int = 0, world: int = 1, pin: bool = False
) -> DataLoader[Any]:
    """Micro-batches for optimiser steps ``start .. stop - 1`` in order, read by ``runtime.loader_workers``
    processes (0: in this process) with two micro-batches prefetched per worker.

    Args:
        cfg: run configuration.
        cases: the training cases.
        start: first optimiser step (a resumed run's step).
        stop: the step after the last.
        rank: this DDP process.
        world: DDP processes.
        pin: pin host memory (CUDA training).
    """
    workers = cfg.runtime.loader_workers
    return DataLoader(
        TrainSamples(cases, cfg),
        batch_sampler=MicroBatches(cfg, start, stop, rank, world),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin,
        prefetch_factor=2 if workers else None,
    )
