"""What generation works on: one job per mask (validation and augmented), seeds, shards and mask loading."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gliomagen.cases import load_mask, modality_path
from gliomagen.config import Config
from gliomagen.errors import InputError
from gliomagen.hashing import stable_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One volume to generate.

    Args:
        id: output id (real case id for ``val``, ``aug_id`` for ``train``).
        split: ``val`` or ``train`` (the synthetic training set).
        mask_path: the conditioning mask.
        source_id: the real case the mask comes from.
    """

    id: str
    split: str
    mask_path: Path
    source_id: str


def volume_seed(base_seed: int, volume_id: str) -> int:
    """The noise seed of one volume: a 63-bit integer from ``(generate.seed, id)``, equal in every process."""
    return stable_seed(base_seed, volume_id)


def val_jobs(cfg: Config) -> list[Job]:
    """One job per usable validation case (sorted by id)."""
    from gliomagen.data.outputs import usable_cases

    return [Job(d.name, "val", modality_path(d, "seg"), d.name) for d in usable_cases(cfg, "val")]


def synthetic_jobs(cfg: Config) -> list[Job]:
    """Accepted augmented masks, round 1 first then by id, at most ``generate.n_synthetic``."""
    from gliomagen.augment.outputs import read_manifest

    frame = read_manifest(cfg)
    if frame.empty:
        raise FileNotFoundError(
            f"no augmentation manifest in {cfg.paths.augmented}: run `gliomagen augment` first"
        )
    accepted = frame[frame["status"] == "accepted"].copy()
    accepted["round"] = accepted["round"].astype(int)
    accepted = accepted.sort_values(["round", "aug_id"])
    if cfg.generate.n_synthetic is not None:
        if cfg.generate.n_synthetic > len(accepted):
            log.warning(
                "generate.n_synthetic=%d but only %d augmented masks were accepted; generating all of them",
                cfg.generate.n_synthetic,
                len(accepted),
            )
        accepted = accepted.head(cfg.generate.n_synthetic)
    root = cfg.paths.augmented
    ids, sources = accepted["aug_id"].astype(str), accepted["source_id"].astype(str)
    return [Job(a, "train", root / a / f"{a}-seg.nii.gz", s) for a, s in zip(ids, sources, strict=True)]


def all_jobs(cfg: Config, which: str) -> list[Job]:
    """The ordered job list for ``which`` in ``val``, ``synthetic`` or ``all`` (validation first)."""
    if which not in ("val", "synthetic", "all"):
        raise ValueError(f"which must be val, synthetic or all, got {which!r}")
    jobs: list[Job] = []
    if which in ("val", "all"):
        jobs += val_jobs(cfg)
    if which in ("synthetic", "all"):
        jobs += synthetic_jobs(cfg)
    return jobs


def shard_jobs(jobs: Sequence[Job], shard: tuple[int, int]) -> list[Job]:
    """Every n-th job starting at i (round-robin keeps shards balanced across val and synthetic)."""
    i, n = shard
    return list(jobs[i::n])


class ShardError(InputError, ValueError):
    """A malformed ``--shard`` value (the CLI exits with code 2 and the message)."""


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; ``None`` stays ``None``.

    Raises:
        ShardError: not two integers separated by ``/``, or ``i`` outside ``0..n-1``.
    """
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ShardError(f"--shard must look like i/n with integers (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ShardError(f"--shard {text}: shards are numbered from 0, so i must be in 0..n-1 (0 <= i < n)")
    return i, n


def torchrun_shard() -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when launched by ``torchrun`` (or a scheduler that sets them), else ``None``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None


def load_job_mask(job: Job, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """The job's mask and affine, checked (3D, labels of ``data.labels``); errors name the file."""
    if not job.mask_path.is_file():
        raise FileNotFoundError(f"{job.mask_path}: conditioning mask is missing")
    try:
        mask, affine = load_mask(job.mask_path.parent)
    except Exception as exc:  # nibabel/gzip errors do not always name the file
        raise ValueError(f"{job.mask_path}: cannot read the mask ({type(exc).__name__}: {exc})") from exc
    known = {lab.value for lab in cfg.data.labels}
    unknown = sorted(set(np.unique(mask).tolist()) - known)
    if mask.ndim != 3 or unknown:
        problem = (
            f"shape {mask.shape} is not 3D"
            if mask.ndim != 3
            else f"label values {unknown} not in data.labels"
        )
        raise ValueError(f"{job.mask_path}: {problem}")
    return mask, affine


def batches(
    jobs: list[Job], cfg: Config, size: int, errors: list[str]
) -> Iterator[list[tuple[Job, np.ndarray, np.ndarray]]]:
    """Consecutive groups of at most ``size`` loaded masks of one shape (loaded lazily, bad masks reported)."""
    batch: list[tuple[Job, np.ndarray, np.ndarray]] = []
    for job in jobs:
        try:
            mask, affine = load_job_mask(job, cfg)
        except Exception as exc:  # noqa: BLE001 -- a bad mask is reported, the others go on
            errors.append(str(exc))
            log.error("%s", exc)
            continue
        if batch and (len(batch) == size or batch[0][1].shape != mask.shape):
            yield batch
            batch = []
        batch.append((job, mask, affine))
    if batch:
        yield batch
