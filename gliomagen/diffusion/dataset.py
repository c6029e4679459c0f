"""Prepared cases as training pairs ``(image, encoded mask)`` and a deterministic sample schedule.

The order of training samples, their timesteps and their noise are pure functions of the config seed and
the *global sample index* ``g = (step * grad_accum + micro) * batch_size + j``. That makes resuming exact
without replaying anything, and makes ``n`` DDP processes (each taking a slice of the global batch) see
exactly the samples and noise of one process with the whole batch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import Dataset

from gliomagen.cases import case_files, is_complete, load_case
from gliomagen.config import Config
from gliomagen.diffusion.network import encode_mask

log = logging.getLogger(__name__)

#: cache decoded cases in memory when the whole split is smaller than this
CACHE_BYTES = 2 * 1024**3


def case_dirs(cfg: Config, split: str) -> list[Path]:
    """Usable prepared case folders of ``split`` (via the data stage's ``cases.csv``)."""
    try:
        from gliomagen.data.prepare import usable_cases
    except ImportError:  # data stage not installed: plain folder listing of the prepared layout
        return sorted(d for d in (cfg.paths.prepared / split).glob("*") if is_complete(d))
    return usable_cases(cfg, split)


def check_case(case_dir: Path, cfg: Config) -> str | None:
    """Cheap header check of one prepared case; returns a problem description or ``None``."""
    shape = tuple(cfg.data.target_shape)
    for name, path in case_files(case_dir).items():
        if not path.is_file():
            return f"{path}: missing"
        try:
            got = nib.load(str(path)).shape
        except Exception as exc:  # nibabel raises several types for broken files
            return f"{path}: unreadable NIfTI ({exc})"
        if tuple(got) != shape:
            return f"{path}: {name} shape {tuple(got)} != data.target_shape {shape}"
    return None


def usable_cases(cfg: Config, split: str) -> list[Path]:
    """Case folders of ``split`` that pass :func:`check_case`; problems are logged, not fatal."""
    dirs = case_dirs(cfg, split)
    good = []
    for d in dirs:
        problem = check_case(d, cfg)
        if problem:
            log.warning("skipping %s case %s: %s", split, d.name, problem)
        else:
            good.append(d)
    if not good:
        raise FileNotFoundError(
            f"no usable {split} cases in {cfg.paths.prepared / split}; run `gliomagen prepare` (notebook 01) first"
        )
    return good


class CaseDataset(Dataset):
    """Prepared cases as ``(image (4,X,Y,Z) in [0,1], encoded mask (C,X,Y,Z))`` float32 tensors.

    Args:
        dirs: case folders.
        cfg: run configuration (label map, mask encoding).
    """

    def __init__(self, dirs: list[Path], cfg: Config) -> None:
        self.dirs, self.cfg = dirs, cfg
        voxels = int(np.prod(cfg.data.target_shape))
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = (
            {} if len(dirs) * voxels * 4 * 10 < CACHE_BYTES else None
        )

    def __len__(self) -> int:
        return len(self.dirs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        item = self._load(self.dirs[index])
        if self.cache is not None:
            self.cache[index] = item
        return item

    def _load(self, case_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
        case = load_case(case_dir)
        lo, hi = float(case.image.min()), float(case.image.max())
        if lo < -1e-3 or hi > 1 + 1e-3 or not np.isfinite(case.image).all():
            raise ValueError(
                f"{case_dir}: image values must be finite and in [0, 1], got [{lo:.3g}, {hi:.3g}]"
            )
        try:
            cond = encode_mask(case.mask, self.cfg)
        except ValueError as exc:
            raise ValueError(f"{case_dir / (case_dir.name + '-seg.nii.gz')}: {exc}") from None
        return torch.from_numpy(np.clip(case.image, 0, 1)), cond


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
