"""The fidelity stage's inputs: each usable validation case and the volume generated from its mask."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gliomagen.cases import case_files, is_complete, load_case
from gliomagen.config import MODALITIES, Config
from gliomagen.data.outputs import usable_cases
from gliomagen.fidelity.metrics import axial_axis


@dataclass(frozen=True)
class Pair:
    """A real validation case and the volume generated from its mask."""

    case_id: str
    real_dir: Path
    fake_dir: Path


def find_pairs(cfg: Config) -> tuple[list[Pair], list[dict[str, str]]]:
    """Validation cases with a complete generated counterpart, and the ones skipped (with the reason).

    Raises:
        FileNotFoundError: no usable validation case (``gliomagen prepare`` has not run), or none with a
            generated volume (``gliomagen generate --which val`` has not run).
    """
    real_dirs = usable_cases(cfg, "val")
    if not real_dirs:
        raise FileNotFoundError(
            f"no prepared validation cases in {cfg.paths.prepared / 'val'}: run `gliomagen prepare` first"
        )
    pairs, skipped = [], []
    for real in real_dirs:
        fake = cfg.paths.synthetic / "val" / real.name
        if is_complete(fake, with_seg=False):
            pairs.append(Pair(real.name, real, fake))
        else:
            skipped.append({"id": real.name, "reason": f"no complete generated volume in {fake}"})
    if not pairs:
        raise FileNotFoundError(
            f"none of the {len(real_dirs)} validation cases has a generated volume in "
            f"{cfg.paths.synthetic / 'val'}: run `gliomagen generate --which val` first"
        )
    return pairs, skipped


def fingerprint(paths: list[Path], extra: str = "") -> str:
    """Changes whenever one of ``paths`` changes (path, size, modification time) or ``extra`` does."""
    h = hashlib.sha256(extra.encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def pair_files(pair: Pair) -> list[Path]:
    """The real and the generated image files of a pair (no mask)."""
    real, fake = case_files(pair.real_dir), case_files(pair.fake_dir)
    return [real[m] for m in MODALITIES] + [fake[m] for m in MODALITIES]


def inputs_fingerprint(pairs: list[Pair]) -> str:
    """Changes whenever a real or generated image file of any pair changes."""
    return fingerprint([f for pair in pairs for f in pair_files(pair)])


def load_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray, int]:
    """Real and generated images ``(4, X, Y, Z)`` clipped to [0, 1], and the axial voxel axis.

    Raises:
        ValueError: naming the file and the problem (shape, affine, non-finite values).
    """
    real = load_case(pair.real_dir, with_seg=False)
    fake = load_case(pair.fake_dir, with_seg=False)
    if real.image.shape != fake.image.shape:
        raise ValueError(
            f"{pair.fake_dir}: generated shape {fake.image.shape[1:]} differs from the real {real.image.shape[1:]}"
        )
    if not np.allclose(real.affine, fake.affine, atol=1e-3):
        raise ValueError(f"{pair.fake_dir}: affine differs from the real case's (not the mask's geometry)")
    for case, where in ((real, pair.real_dir), (fake, pair.fake_dir)):
        if not np.isfinite(case.image).all():
            raise ValueError(f"{where}: image holds NaN or infinite values")
    # values outside [0, 1] (generated data) are clipped: every metric assumes data range 1
    return np.clip(real.image, 0, 1), np.clip(fake.image, 0, 1), axial_axis(real.affine)
