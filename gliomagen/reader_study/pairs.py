"""The reader study's inputs: real validation cases paired with their synthetic counterparts, checked, and the
axial slices through the lesion and away from it that each pair offers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from gliomagen.cases import case_files, is_complete, modality_path
from gliomagen.config import MODALITIES, Config, ReaderStudyConfig
from gliomagen.data.geometry import voxel_spacing
from gliomagen.data.outputs import usable_cases


@dataclass(frozen=True)
class CasePair:
    """A validation case with its real and synthetic folders."""

    case_id: str
    real: Path
    synthetic: Path


@dataclass
class EligibleCase:
    """A usable pair with its candidate axial slices (indices in RAS orientation) per location."""

    pair: CasePair
    candidates: dict[str, list[int]]


def load_image(path: Path) -> Any:
    """A NIfTI image (header now, data on access); nibabel's ``load`` is typed for every image format."""
    return nib.load(str(path))


def find_pairs(
    real_dirs: Iterable[Path], synthetic_root: Path
) -> tuple[list[CasePair], list[dict[str, str]]]:
    """Match real case folders with ``<synthetic_root>/<id>/``; report the unmatched ones.

    Args:
        real_dirs: real validation case folders (``<id>/<id>-*.nii.gz``).
        synthetic_root: folder holding the synthetic counterparts under the same ids.

    Returns:
        The pairs sorted by id, and ``{"case_id", "reason"}`` rows for cases that cannot be used.
    """
    pairs, skipped = [], []
    for real in sorted(Path(d) for d in real_dirs):
        synth = Path(synthetic_root) / real.name
        if not is_complete(real):
            missing = [p.name for p in case_files(real).values() if not p.is_file()]
            skipped.append({"case_id": real.name, "reason": f"real case {real} lacks {', '.join(missing)}"})
        elif not is_complete(synth, with_seg=False):
            skipped.append({"case_id": real.name, "reason": f"no complete synthetic volume in {synth}"})
        else:
            pairs.append(CasePair(real.name, real, synth))
    return pairs, skipped


def real_validation_dirs(cfg: Config) -> list[Path]:
    """The usable real validation folders of a run (the data stage's list)."""
    return list(usable_cases(cfg, "val"))


def to_ras(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient a 3D array to RAS+ so that axis 2 is axial and the display rule is one for all inputs."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(("R", "A", "S"))
    )
    ras = nib.orientations.apply_orientation(volume, transform)
    return np.ascontiguousarray(ras), affine @ nib.orientations.inv_ornt_aff(transform, volume.shape)


def slice_candidates(
    mask: np.ndarray, spacing_z: float, tumour_values: Sequence[int], rs: ReaderStudyConfig
) -> dict[str, list[int]]:
    """Axial slice indices (axis 2 of a RAS mask) through the lesion and away from it.

    Args:
        mask: label map in RAS orientation; 0 is background, anything else is inside the head.
        spacing_z: slice thickness in mm.
        tumour_values: mask values that count as lesion.
        rs: the reader-study settings (thresholds).

    Returns:
        ``{"lesion": [...], "away": [...]}``; a list is empty when no slice qualifies.
    """
    tumour_area = np.isin(mask, list(tumour_values)).sum(axis=(0, 1))
    head_area = (mask != 0).sum(axis=(0, 1))
    out: dict[str, list[int]] = {"lesion": [], "away": []}
    if tumour_area.max() > 0:
        out["lesion"] = np.flatnonzero(tumour_area >= rs.lesion_min_fraction * tumour_area.max()).tolist()
    if head_area.max() == 0:
        return out
    z = np.arange(mask.shape[2])
    tumour_z = np.flatnonzero(tumour_area)
    margin = math.ceil(rs.away_margin_mm / spacing_z - 1e-9) if spacing_z > 0 else 0
    if tumour_z.size:
        distance = np.abs(z[:, None] - tumour_z[None, :]).min(axis=1)
    else:
        distance = np.full(z.shape, np.iinfo(np.int64).max)
    ok = (
        (distance >= max(margin, 1)) & (head_area >= rs.head_min_fraction * head_area.max()) & (head_area > 0)
    )
    out["away"] = np.flatnonzero(ok).tolist()
    return out


def check_pair(pair: CasePair, tumour_values: Sequence[int], rs: ReaderStudyConfig) -> EligibleCase:
    """Check a pair's geometry (headers only) and find its candidate slices from the real mask.

    Raises:
        ValueError: naming the file and the problem (shape or affine mismatch, unreadable file).
    """
    seg_path = modality_path(pair.real, "seg")
    try:
        seg_img = load_image(seg_path)
        mask = np.asarray(seg_img.dataobj)
    except Exception as exc:  # noqa: BLE001 -- any reader failure becomes a named, per-case error
        raise ValueError(f"{seg_path}: cannot read the mask ({exc})") from None
    if mask.ndim != 3:
        raise ValueError(f"{seg_path}: expected a 3D mask, got shape {mask.shape}")
    for folder in (pair.real, pair.synthetic):
        for modality in MODALITIES:
            path = modality_path(folder, modality)
            try:
                header = load_image(path)
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"{path}: cannot read the volume ({exc})") from None
            if header.shape != mask.shape:
                raise ValueError(f"{path}: shape {header.shape} differs from the mask's {mask.shape}")
            if not np.allclose(header.affine, seg_img.affine, atol=1e-3):
                raise ValueError(f"{path}: affine differs from the real mask's {seg_path.name}")
    synth_seg = modality_path(pair.synthetic, "seg")
    if synth_seg.is_file() and not np.array_equal(np.asarray(load_image(synth_seg).dataobj), mask):
        # the synthetic volume must come from this very mask, or the pair compares different anatomy
        raise ValueError(f"{synth_seg}: the conditioning mask differs from the real mask {seg_path.name}")
    ras_mask, ras_affine = to_ras(mask.astype(np.int32), seg_img.affine)
    return EligibleCase(pair, slice_candidates(ras_mask, voxel_spacing(ras_affine)[2], tumour_values, rs))
