"""Overlap and surface distances of two binary masks, the primitives both metric modes use.

:func:`dice_paper` (1.0 when both masks are empty, the paper's rule) and medpy 0.5.2's surface distances
(:func:`medpy_hd95`, :func:`medpy_assd`), repeated with scipy because medpy is not installable beside our pins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


class EmptyMaskError(ValueError):
    """medpy's behaviour: a surface distance needs a non-empty mask on both sides."""


def dice_paper(gt: np.ndarray, pred: np.ndarray) -> float:
    """Dice of two binary masks, 1.0 when both are empty (the paper's rule)."""
    a, b = gt.astype(bool), pred.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def _surface_distances(
    result: np.ndarray, reference: np.ndarray, spacing: Sequence[float] | None = None, connectivity: int = 1
) -> np.ndarray:
    """Distances from the border voxels of ``result`` to the border of ``reference`` (medpy's algorithm).

    medpy (``medpy.metric.binary.__surface_distances``) is not installable beside our pins, so this repeats
    its exact math with scipy: border = mask XOR its binary erosion (cross-shaped structuring element for
    ``connectivity=1``; voxels on the array edge are border), then an exact Euclidean distance transform of
    the reference's non-border voxels, sampled with ``spacing`` (``None`` = voxel units).
    """
    result, reference = np.atleast_1d(result.astype(bool)), np.atleast_1d(reference.astype(bool))
    if not result.any():
        raise EmptyMaskError("the first array does not contain any binary object")
    if not reference.any():
        raise EmptyMaskError("the second array does not contain any binary object")
    footprint = ndimage.generate_binary_structure(result.ndim, connectivity)
    result_border = result ^ ndimage.binary_erosion(result, structure=footprint, iterations=1)
    reference_border = reference ^ ndimage.binary_erosion(reference, structure=footprint, iterations=1)
    dt = ndimage.distance_transform_edt(~reference_border, sampling=spacing)
    return dt[result_border]


def medpy_hd95(result: np.ndarray, reference: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th percentile of the pooled symmetric surface distances (medpy ``hd95``)."""
    d = np.hstack(
        (_surface_distances(result, reference, spacing), _surface_distances(reference, result, spacing))
    )
    return float(np.percentile(d, 95))


def medpy_assd(result: np.ndarray, reference: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Average symmetric surface distance as medpy 0.5.x (the original's version) defines it.

    The surface distances of both directions are pooled into one list and averaged, so the direction with
    more border voxels weighs more. (medpy 0.4 averaged the two one-way means instead; the two agree only
    when both borders have the same number of voxels.) MONAI's symmetric ASSD pools the same way.
    """
    return float(
        np.concatenate(
            (_surface_distances(result, reference, spacing), _surface_distances(reference, result, spacing))
        ).mean()
    )
