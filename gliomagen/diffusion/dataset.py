"""Training data: prepared cases as ``(image, encoded mask)`` pairs, a deterministic sample schedule, and the
``DataLoader`` that feeds training.

The order of training samples, their timesteps and their noise are pure functions of the config seed and
the *global sample index* ``g = (step * grad_accum + micro) * batch_size + j``. That makes resuming exact
without replaying anything, makes ``n`` DDP processes (each taking a slice of the global batch) see exactly
the samples and noise of one process with the whole batch, and makes the loader's worker processes
(``runtime.loader_workers``) change nothing but speed: a worker computes sample ``g`` from ``g`` alone.
Cases are read from the prepared-data cache (:mod:`gliomagen.data.cache`: memory-mapped ``.npy``), not by
decoding NIfTI files in the training loop.

Where the timestep and noise are drawn depends on the training device. On a CPU the loader draws them
(:func:`noise_for_sample` with the CPU generator: the numbers training has always used). On a GPU the
loader only reads and collates the arrays and the training process draws each sample's timestep and noise
on the device from the same per-sample seed (:func:`draw_on_device`): a GPU draws the 21 M noise values of
a 192x192x144 sample in microseconds, a CPU loader worker needed about half a second. The GPU's numbers are
other numbers than the CPU's (another generator), but equally a pure function of ``g``.
"""

from __future__ import annotations

import math
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
    "draw_on_device",
    "noise_for_sample",
    "sample_indices",
    "usable_cases",
]

#: one training sample: image (4,X,Y,Z) float32 and mask (X,Y,Z) uint8 (read-only memory maps), its global
#: index ``g``, and its timestep and noise (4,X,Y,Z) where the loader draws them (else ``None``)
Sample = tuple[np.ndarray, np.ndarray, int, int | None, torch.Tensor | None]
#: a collated micro-batch: images, masks (encoded on the training device), global indices (B,), and
#: timesteps (B,) and noises where the loader drew them (else ``None``: :func:`draw_on_device`)
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]


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


def noise_for_sample(
    g: int, shape: tuple[int, ...], timesteps: int, seed: int, device: torch.device | str = "cpu"
) -> tuple[int, torch.Tensor]:
    """Timestep and Gaussian noise of global sample ``g`` (independent of process count and resume).

    Args:
        g: global sample index.
        shape: shape of one sample's noise ``(4, X, Y, Z)``.
        timesteps: the diffusion's ``T`` (timesteps are drawn from ``0 .. T - 1``).
        seed: ``train.seed``.
        device: where the generator and the noise live; each device type has its own (deterministic)
            numbers, the CPU's are the ones training has always used.
    """
    gen = torch.Generator(device).manual_seed((seed + 1) * 1_000_000_007 + g)
    t = int(torch.randint(0, timesteps, (1,), generator=gen, device=device))
    return t, torch.randn(shape, generator=gen, device=device)


def draw_on_device(
    batch: Batch, cfg: Config, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A loader micro-batch on ``device`` as ``(images, masks, timesteps, noises)``.

    Timesteps and noises the loader drew are moved; where it did not (``noise_in_loader=False`` in
    :func:`make_loader`), they are drawn here on ``device`` with :func:`noise_for_sample`, sample by sample
    (so a micro-batch holds the same numbers whatever the batch size, process count or resume point).

    Args:
        batch: one micro-batch of :func:`make_loader`.
        cfg: run configuration (``train.seed``, ``diffusion.timesteps``).
        device: the training device.
    """
    images, masks, indices, ts, noises = batch
    x0 = images.to(device, non_blocking=True)
    mask = masks.to(device, non_blocking=True)
    if ts is not None and noises is not None:
        return x0, mask, ts.to(device, non_blocking=True), noises.to(device, non_blocking=True)
    shape = tuple(x0.shape[1:])
    drawn = [
        noise_for_sample(g, shape, cfg.diffusion.timesteps, cfg.train.seed, device) for g in indices.tolist()
    ]
    t = torch.tensor([t for t, _ in drawn], device=device)
    return x0, mask, t, torch.stack([noise for _, noise in drawn])


def sample_indices(step: int, micro: int, cfg: Config, rank: int, world: int) -> list[int]:
    """Global sample indices handled by ``rank`` in micro-batch ``micro`` of optimiser step ``step``."""
    b = cfg.train.batch_size
    per_rank = b // world
    first = (step * cfg.train.grad_accum + micro) * b + rank * per_rank
    return list(range(first, first + per_rank))


class TrainSamples(Dataset[Sample]):
    """Training sample ``g`` (case, timestep and noise all from ``g``): what a loader worker computes.

    Args:
        cases: the training cases.
        cfg: run configuration.
        with_noise: draw the timestep and noise here (CPU training); else the training process draws them
            on its device (:func:`draw_on_device`).
    """

    def __init__(self, cases: CaseDataset, cfg: Config, with_noise: bool = True) -> None:
        self.cases, self.seed, self.timesteps = cases, cfg.train.seed, cfg.diffusion.timesteps
        self.with_noise = with_noise

    def __len__(self) -> int:  # the schedule is unbounded; the batch sampler says which g are drawn
        return 2**62

    def __getitem__(self, g: int) -> Sample:
        index = case_for_sample(g, len(self.cases), self.seed)
        # the memory maps themselves: collate copies them once, straight into the batch
        image, mask = read_cache(self.cases.cache_root, self.cases.dirs[index], self.cases.prep)
        if not self.with_noise:
            return image, mask, g, None, None
        t, noise = noise_for_sample(g, tuple(image.shape), self.timesteps, self.seed)
        return image, mask, g, t, noise


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
    so a volume is not copied once more on its way to the training process; the memory-mapped arrays are
    copied once, into the batch.
    """
    images, masks, gs, ts, noises = zip(*samples, strict=True)
    drawn = all(n is not None for n in noises)
    return (
        _stack_arrays(images),
        _stack_arrays(masks),
        torch.tensor(gs),
        torch.tensor(ts) if drawn else None,
        _stack([n for n in noises if n is not None]) if drawn else None,
    )


def _new_batch(shape: tuple[int, ...], dtype: torch.dtype, n: int) -> torch.Tensor:
    """An uninitialised ``(n, *shape)`` tensor, in shared memory inside a loader worker."""
    if get_worker_info() is None:
        return torch.empty((n, *shape), dtype=dtype)
    like = torch.empty(0, dtype=dtype)
    storage = like._typed_storage()._new_shared(n * math.prod(shape))  # type: ignore[no-untyped-call]
    return like.new(storage).resize_(n, *shape)


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    first = tensors[0]
    return torch.stack(tensors, out=_new_batch(tuple(first.shape), first.dtype, len(tensors)))


def _stack_arrays(arrays: tuple[np.ndarray, ...]) -> torch.Tensor:
    first = arrays[0]
    out = _new_batch(first.shape, torch.from_numpy(np.empty(0, first.dtype)).dtype, len(arrays))
    np.stack(arrays, out=out.numpy())
    return out


def make_loader(
    cfg: Config,
    cases: CaseDataset,
    start: int,
    stop: int,
    rank: int = 0,
    world: int = 1,
    pin: bool = False,
    noise_in_loader: bool = True,
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
        noise_in_loader: the loader draws timesteps and noise (CPU training); else batches carry only the
            global indices and :func:`draw_on_device` draws them on the training device.
    """
    workers = cfg.runtime.loader_workers
    return DataLoader(
        TrainSamples(cases, cfg, with_noise=noise_in_loader),
        batch_sampler=MicroBatches(cfg, start, stop, rank, world),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin,
        prefetch_factor=2 if workers else None,
    )
