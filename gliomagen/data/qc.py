"""Automatic quality control of a prepared case (replaces the original's by-eye exclusion of 67 scans).

Flags (``data.qc.exclude`` says which of them exclude a case from the split):

* ``empty_mask`` -- the segmentation has no tumour label at all;
* ``label_lost`` -- a tumour label present in the raw segmentation vanished when resampled to the target;
* ``head_touches_border`` -- the head (or lesion) reaches a face of the prepared volume (cut-off anatomy);
* ``head_holes`` -- background enclosed by the head within axial slices: what the original authors saw
  "by eye". In 3D the head rule fills every closed hole, so the holes that remain are channels that open
  to the outside (a skull-stripping failure, a cavity at the surface) yet look enclosed on a slice.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from gliomagen.config import LabelSpec, QCConfig

QC_FLAGS = ("head_holes", "head_touches_border", "label_lost", "empty_mask")


def label_counts(mask: np.ndarray, labels: list[LabelSpec]) -> dict[str, int]:
    """Voxel count per label name (prepared values)."""
    counts = np.bincount(mask.ravel(), minlength=256)
    return {lab.name: int(counts[lab.value]) for lab in labels}


def axial_holes(mask: np.ndarray) -> np.ndarray:
    """Background voxels enclosed by non-background within their axial (third-axis) slice."""
    fg = mask > 0
    filled = np.zeros_like(fg)
    for z in range(fg.shape[2]):
        if fg[:, :, z].any():
            filled[:, :, z] = ndi.binary_fill_holes(fg[:, :, z])
    return filled & ~fg


def largest_hole_voxels(mask: np.ndarray) -> int:
    """Size of the largest 3D-connected region of :func:`axial_holes` (a channel counts as one hole)."""
    lab, n = ndi.label(axial_holes(mask))
    return int(np.bincount(lab.ravel())[1:].max()) if n else 0


def border_voxels(mask: np.ndarray) -> dict[str, int]:
    """Non-background voxels on each face of the volume (only faces that have any)."""
    fg = mask > 0
    faces = {
        "x-": fg[0], "x+": fg[-1], "y-": fg[:, 0], "y+": fg[:, -1], "z-": fg[:, :, 0], "z+": fg[:, :, -1],
    }  # fmt: skip
    return {name: int(face.sum()) for name, face in faces.items() if face.any()}


def qc_flags(
    native_counts: dict[str, int],
    mask: np.ndarray,
    labels: list[LabelSpec],
    qc: QCConfig,
    seg_file: str,
    voxel_ml: float,
    head_file: str = "the head source image",
) -> list[tuple[str, str]]:
    """The QC flags of one prepared mask, each as ``(flag, message)``.

    Args:
        native_counts: voxel count per label name in the raw grid (before resampling).
        mask: the prepared (resampled) label map.
        labels: the profile's label map.
        qc: thresholds (``data.qc``).
        seg_file: the raw segmentation's file name (named in the messages).
        voxel_ml: volume of one prepared voxel in ml (holes are measured in ml).
        head_file: the file(s) the head label was computed from (named in the head messages).
    """
    flags: list[tuple[str, str]] = []
    tumour = [lab for lab in labels if lab.tumour and lab.value != 0]
    prepared = label_counts(mask, labels)
    if sum(native_counts.get(lab.name, 0) for lab in tumour) == 0:
        names = ", ".join(lab.name for lab in tumour)
        flags.append(("empty_mask", f"empty_mask: {seg_file} has no tumour label ({names} all 0 voxels)"))
    lost = [lab.name for lab in tumour if native_counts.get(lab.name, 0) > 0 and prepared[lab.name] == 0]
    if lost:
        detail = ", ".join(f"{n} ({native_counts[n]} raw voxels)" for n in lost)
        flags.append(
            ("label_lost", f"label_lost: {detail} in {seg_file} vanished when resampled to {mask.shape}")
        )
    faces = border_voxels(mask)
    if sum(faces.values()) > qc.max_border_voxels:
        where = ", ".join(f"{face}: {n}" for face, n in faces.items())
        flags.append(
            (
                "head_touches_border",
                f"head_touches_border: the head from {head_file} reaches the volume faces ({where} voxels)",
            )
        )
    hole_ml = largest_hole_voxels(mask) * voxel_ml
    if hole_ml > qc.max_hole_ml:
        flags.append(
            ("head_holes", f"head_holes: {hole_ml:.1f} ml of background enclosed by the head from {head_file} in axial slices "
             f"(largest connected hole; limit data.qc.max_hole_ml={qc.max_hole_ml:g})")
        )  # fmt: skip
    return flags
