"""BraTS-layout cases on disk: naming, loading and writing a 4-modality volume with its mask.

A case folder ``<root>/<id>/`` holds ``<id>-t1n.nii.gz``, ``<id>-t1c.nii.gz``, ``<id>-t2w.nii.gz``,
``<id>-t2f.nii.gz`` and ``<id>-seg.nii.gz``. Prepared, synthetic and nnU-Net-bound data all use this
layout, so every stage shares one reader and one writer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gliomagen.config import MODALITIES
from gliomagen.data.geometry import voxel_spacing
from gliomagen.io import load_nifti, write_nifti

CASE_ID = re.compile(r"^BraTS-GLI-(?P<patient>\d{5})-(?P<timepoint>\d{3})$")


def parse_case_id(case_id: str) -> tuple[str, str]:
    """``BraTS-GLI-00012-001`` -> (``00012``, ``001``); raises ``ValueError`` on another pattern."""
    m = CASE_ID.match(case_id)
    if not m:
        raise ValueError(f"{case_id!r} is not a BraTS-GLI case id (expected BraTS-GLI-<5 digits>-<3 digits>)")
    return m.group("patient"), m.group("timepoint")


def patient_of(case_id: str) -> str:
    """Patient id of a real case (``BraTS-GLI-00012-001`` -> ``00012``); other ids are their own patient."""
    try:
        return parse_case_id(case_id)[0]
    except ValueError:
        return case_id


def modality_path(case_dir: str | Path, modality: str) -> Path:
    """Path of ``<case_dir>/<id>-<modality>.nii.gz`` (``modality`` may also be ``seg``)."""
    case_dir = Path(case_dir)
    return case_dir / f"{case_dir.name}-{modality}.nii.gz"


def case_files(case_dir: str | Path) -> dict[str, Path]:
    """The five expected files of a case, keyed by modality name and ``seg``."""
    return {m: modality_path(case_dir, m) for m in (*MODALITIES, "seg")}


def raw_modality_path(case_dir: str | Path, modality: str) -> Path:
    """The file of ``modality`` in a *raw* (user-supplied) case folder: ``.nii.gz``, else ``.nii``.

    BraTS releases use ``.nii.gz``, but uncompressed ``.nii`` copies are common; both are accepted for raw
    input (prepared and generated data are always written as ``.nii.gz``). When neither exists the
    ``.nii.gz`` path is returned, so a "file is missing" message names the expected file.
    """
    gz = modality_path(case_dir, modality)
    plain = gz.with_name(gz.name[: -len(".gz")])
    return plain if not gz.is_file() and plain.is_file() else gz


def raw_case_files(case_dir: str | Path) -> dict[str, Path]:
    """Like :func:`case_files`, for a raw case folder (``.nii`` accepted where ``.nii.gz`` is missing)."""
    return {m: raw_modality_path(case_dir, m) for m in (*MODALITIES, "seg")}


def is_complete(case_dir: str | Path, with_seg: bool = True) -> bool:
    files = case_files(case_dir)
    if not with_seg:
        files.pop("seg")
    return all(p.is_file() for p in files.values())


@dataclass
class Case:
    """One case in memory.

    Args:
        case_id: folder name, e.g. ``BraTS-GLI-00012-001``.
        image: float32 array ``(4, X, Y, Z)`` in modality order :data:`gliomagen.config.MODALITIES`.
        mask: uint8 array ``(X, Y, Z)``.
        affine: 4x4 voxel-to-world matrix shared by all five files.
    """

    case_id: str
    image: np.ndarray
    mask: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        return voxel_spacing(self.affine)


def load_mask(case_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The segmentation of a case as uint8 and its affine."""
    img = load_nifti(modality_path(case_dir, "seg"))
    return np.asarray(img.dataobj).astype(np.uint8), np.asarray(img.affine)


def load_case(case_dir: str | Path, with_seg: bool = True) -> Case:
    """Load a prepared or generated case folder (images as float32, mask as uint8)."""
    case_dir = Path(case_dir)
    images, affine = [], None
    for modality in MODALITIES:
        img = load_nifti(modality_path(case_dir, modality))
        images.append(np.asarray(img.dataobj, dtype=np.float32))
        affine = img.affine if affine is None else affine
    mask = load_mask(case_dir)[0] if with_seg else np.zeros(images[0].shape, np.uint8)
    return Case(case_dir.name, np.stack(images), mask, np.asarray(affine))


def write_case(root: str | Path, case: Case, config_hash: str | None = None) -> Path:
    """Write ``case`` as ``<root>/<id>/<id>-{t1n,t1c,t2w,t2f,seg}.nii.gz``, each file atomically.

    The mask is written last, so a folder with a mask is a complete case (see :func:`is_complete`).
    """
    if case.image.shape[0] != len(MODALITIES):
        raise ValueError(
            f"{case.case_id}: expected {len(MODALITIES)} image channels, got {case.image.shape[0]}"
        )
    if case.image.shape[1:] != case.mask.shape:
        raise ValueError(
            f"{case.case_id}: image shape {case.image.shape[1:]} != mask shape {case.mask.shape}"
        )
    case_dir = Path(root) / case.case_id
    for channel, modality in enumerate(MODALITIES):
        write_nifti(
            modality_path(case_dir, modality), case.image[channel], case.affine, config_hash, np.float32
        )
    write_nifti(modality_path(case_dir, "seg"), case.mask, case.affine, config_hash, np.uint8)
    return case_dir
