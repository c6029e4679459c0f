"""Automatic quality control of a prepared case (replaces the original's by-eye exclusion of 67 scans).

Flags (``data.qc.exclude`` says which of them exclude a case from the split):

* ``empty_mask`` -- the segmentation has no tumour label at all;
* ``label_lost`` -- a tumour label present in the raw segmentation vanished when resampled to the target;
* ``head_touches_border`` -- the head (or lesion) reaches a face of the prepared volume (cut-off anatomy);
* ``head_holes`` -- background enclosed by the head within axial slices: what the original authors saw
  "by eye". In 3D the head rule fills every closed hole, so the holes that remain are channels that open
  to the outside (a skull-stripping failure, a cavity at the surface) yet look enclosed on a slice.
* ``intensity_outlier`` -- an image holds voxels far outside its own intensity distribution (a corrupt
  voxel such as 1e30): :func:`find_outliers`. Reported, not excluded by default, because normalisation
  clips them (``data.intensity.outlier_fence``); the message says whether they were clipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from gliomagen.config import LabelSpec, QCConfig

QC_FLAGS = ("head_holes", "head_touches_border", "label_lost", "empty_mask", "intensity_outlier")
#: the robust range used by the outlier fence: these percentiles of the non-zero voxels
FENCE_PERCENTILES = (1.0, 99.0)
#: when the outlier fence is off, outliers are still detected (and flagged) with this fence
DETECT_FENCE = 10.0


@dataclass(frozen=True)
class Outliers:
    """Voxels of one image outside ``[low, high]`` (the fence), and the inlier range they are clipped to.

    Args:
        count: number of outlier voxels.
        low: lower fence; high: upper fence.
        inlier_min: smallest value inside the fence; inlier_max: largest.
        extreme: the outlier value furthest from the fence.
    """

    count: int
    low: float
    high: float
    inlier_min: float
    inlier_max: float
    extreme: float


def find_outliers(data: np.ndarray, fence: float) -> Outliers | None:
    """Voxels more than ``fence`` robust ranges beyond the 1st/99th percentiles of the non-zero voxels.

    The robust range is ``p99 - p1`` of the non-zero voxels (the skull-stripped background is 0). Clean
    phantom scans reach at most 0.39 ranges above p99 (measured on 12 phantom images), so a fence of 10 only
    catches values that cannot be tissue. Returns ``None`` when there is no outlier (or no spread to judge).

    Args:
        data: one image (any real dtype; computed in float64, so float32 extremes do not overflow).
        fence: the distance beyond the percentiles, in robust ranges.
    """
    values = np.asarray(data, dtype=np.float64)
    nonzero = values[values != 0]
    if nonzero.size < 2:
        return None
    p_lo, p_hi = np.percentile(nonzero, FENCE_PERCENTILES)
    spread = p_hi - p_lo
    if not spread > 0:
        return None
    low, high = p_lo - fence * spread, p_hi + fence * spread
    out = (values < low) | (values > high)
    count = int(np.count_nonzero(out))
    if not count:
        return None
    inliers = values[~out]
    extreme = values[out][np.argmax(np.abs(values[out] - (low + high) / 2))]
    return Outliers(
        count, float(low), float(high), float(inliers.min()), float(inliers.max()), float(extreme)
    )


def outlier_message(file: str, found: Outliers, clipped: bool, fence: float | None) -> str:
    """The QC message of ``intensity_outlier`` for one file."""
    what = (
        f"clipped to the inlier range [{found.inlier_min:.4g}, {found.inlier_max:.4g}] before normalisation"
        if clipped
        else "NOT clipped (data.intensity.outlier_fence is off): min-max normalisation squeezes the rest of "
        "the image towards one value"
    )
    limit = f"data.intensity.outlier_fence={fence:g}" if fence else f"detection fence {DETECT_FENCE:g}"
    return (
        f"intensity_outlier: {file}: {found.count} voxel(s) outside [{found.low:.4g}, {found.high:.4g}] "
        f"(most extreme {found.extreme:.4g}; {limit} robust ranges beyond p1/p99), {what}"
    )


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
