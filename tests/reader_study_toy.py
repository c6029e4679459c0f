"""Tiny real/synthetic case pairs for the reader-study tests (written with gliomagen.cases.write_case).

Each case is a 24x28x20 volume at 2 mm in LAS orientation (x flipped, to exercise the reorientation),
with an ellipsoid head (label 1) and a small lesion (labels 2-4) in the upper slices, so that both lesion
slices and tumour-free slices far from the lesion exist. The "synthetic" counterpart shares the mask and the
affine and differs in texture, as the generator's output would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prepared_run import write_prepared_run

from gliomagen.cases import Case, write_case

SHAPE = (24, 28, 20)
SPACING = 2.0
AFFINE = np.diag([-SPACING, SPACING, SPACING, 1.0])  # LAS+: voxel x runs towards the patient's left
TUMOUR_VALUES = (2, 3, 4, 5)


def toy_mask(index: int) -> np.ndarray:
    """Head ellipsoid with a lesion centred at z = 14 (slices 12..16), position varying with ``index``."""
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    head = ((x - 11.5) / 10) ** 2 + ((y - 13.5) / 12) ** 2 + ((z - 9.5) / 11) ** 2 <= 1
    mask = head.astype(np.uint8)
    cx, cy = 8 + index % 3 * 3, 10 + index % 2 * 4
    lesion = ((x - cx) ** 2 + (y - cy) ** 2 <= 9) & (np.abs(z - 14) <= 2)
    core = ((x - cx) ** 2 + (y - cy) ** 2 <= 2) & (np.abs(z - 14) <= 1)
    mask[lesion] = 3
    mask[core] = 2 + index % 3  # NETC, SNFH or ET
    return mask


def toy_image(mask: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Four modalities in [0, 1]: contrast per label plus noise of the given strength."""
    contrasts = np.array(
        [
            [0, 0.4, 0.2, 0.6, 0.9, 0.1],
            [0, 0.5, 0.3, 0.5, 1.0, 0.1],
            [0, 0.3, 0.7, 0.8, 0.6, 0.9],
            [0, 0.35, 0.6, 0.9, 0.7, 0.2],
        ]
    )
    image = contrasts[:, mask] + noise * rng.standard_normal((4, *mask.shape))
    return np.clip(image, 0, 1).astype(np.float32)


def write_toy_pairs(root: Path, n_cases: int = 4, seed: int = 0) -> tuple[list[Path], Path]:
    """Write ``root/real/<id>/`` and ``root/synthetic/<id>/``; return the real folders and synthetic root."""
    rng = np.random.default_rng(seed)
    real_dirs = []
    for i in range(n_cases):
        case_id = f"BraTS-GLI-{i + 1:05d}-000"
        mask = toy_mask(i)
        real_dirs.append(write_case(root / "real", Case(case_id, toy_image(mask, rng, 0.03), mask, AFFINE)))
        write_case(root / "synthetic", Case(case_id, toy_image(mask, rng, 0.08), mask, AFFINE))
    return real_dirs, root / "synthetic"


def write_run_layout(run_dir: Path, n_cases: int = 4, seed: int = 0) -> None:
    """A run folder with ``prepared/val`` (+ ``cases.csv``) and ``synthetic/val``, as stages 01-04 leave it."""
    rng = np.random.default_rng(seed)
    real = []
    for i in range(n_cases):
        case_id = f"BraTS-GLI-{i + 1:05d}-000"
        mask = toy_mask(i)
        real.append(("val", Case(case_id, toy_image(mask, rng, 0.03), mask, AFFINE)))
        write_case(run_dir / "synthetic" / "val", Case(case_id, toy_image(mask, rng, 0.08), mask, AFFINE))
    write_prepared_run(run_dir, real)
