"""Array orientation that a checkpoint's weights expect, and the round trip to and from it.

A network trained here sees masks as the prepared files store them (``input_orientation = None``). The
original reoriented every mask with nibabel's ``as_closest_canonical`` before training and sampling, so its
weights expect arrays whose voxel axes run (as closely as the affine allows) towards Right, Anterior,
Superior (``input_orientation = "RAS"``). Generation from such weights reorients each mask to that
orientation, samples, and turns the images back into the mask's own voxel order: the written volumes keep the
mask's affine and shape, whatever orientation the weights needed.

Reorienting is a permutation and flips of the voxel axes (no resampling), so it is exact and invertible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

ORIENTATIONS = ("RAS",)


def _transform(affine: np.ndarray, target: str) -> np.ndarray:
    transform: np.ndarray = ornt_transform(
        io_orientation(np.asarray(affine, float)), axcodes2ornt(tuple(target))
    )
    return transform


def to_orientation(volume: np.ndarray, affine: np.ndarray, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Reorient the last three axes of ``volume`` to ``target`` axis codes (like ``as_closest_canonical``).

    Args:
        volume: ``(X, Y, Z)`` or ``(C, X, Y, Z)`` array in the voxel order of ``affine``.
        affine: its 4x4 voxel-to-world matrix.
        target: axis codes, e.g. ``"RAS"``.

    Returns:
        the reoriented array (contiguous) and its affine (the same world position for every voxel).
    """
    spatial = volume.shape[-3:]
    t = _transform(affine, target)
    if volume.ndim == 3:
        out = apply_orientation(volume, t)
    else:
        out = np.stack([apply_orientation(c, t) for c in volume])
    new_affine = np.asarray(affine, float) @ inv_ornt_aff(t, spatial)
    return np.ascontiguousarray(out), new_affine


def from_orientation(volume: np.ndarray, affine: np.ndarray, target: str) -> np.ndarray:
    """Undo :func:`to_orientation`: back to the voxel order of ``affine`` (the original array's affine).

    Args:
        volume: ``(X', Y', Z')`` or ``(C, X', Y', Z')`` array in ``target`` orientation.
        affine: the affine of the array *before* :func:`to_orientation`.
        target: the axis codes ``volume`` is in.
    """
    back = ornt_transform(axcodes2ornt(tuple(target)), io_orientation(np.asarray(affine, float)))
    if volume.ndim == 3:
        return np.ascontiguousarray(apply_orientation(volume, back))
    return np.ascontiguousarray(np.stack([apply_orientation(c, back) for c in volume]))


def check_orientation(value: str | None) -> str | None:
    """Validate a checkpoint's ``input_orientation`` (``None`` or one of :data:`ORIENTATIONS`)."""
    if value is not None and value not in ORIENTATIONS:
        raise ValueError(f"unknown input orientation {value!r}; known: {', '.join(ORIENTATIONS)} or none")
    return value


def sample_oriented(
    sample_batch: Callable[[Any, np.ndarray, Sequence[int]], tuple[np.ndarray, float]],
    setup: Any,
    masks: np.ndarray,
    affines: Sequence[np.ndarray],
    seeds: Sequence[int],
) -> tuple[np.ndarray, float]:
    """``sample_batch(setup, masks, seeds)`` with the masks in the orientation the weights expect.

    Args:
        sample_batch: :func:`gliomagen.generation.sampling.sample_batch` (or a function with its signature).
        setup: the sampling setup; its ``input_orientation`` (``None``: as stored) decides.
        masks: ``(B, X, Y, Z)`` masks in their files' voxel order.
        affines: one affine per mask.
        seeds: one noise seed per mask.

    Returns:
        images ``(B, 4, X, Y, Z)`` in the masks' own voxel order, and the clamped fraction.
    """
    target = check_orientation(getattr(setup, "input_orientation", None))
    if target is None:
        return sample_batch(setup, masks, seeds)
    moved = [to_orientation(m, a, target)[0] for m, a in zip(masks, affines, strict=True)]
    if len({m.shape for m in moved}) > 1:  # masks of one shape but different axis orders: one at a time
        parts = [sample_batch(setup, m[None], [s]) for m, s in zip(moved, seeds, strict=True)]
        images = [p[0][0] for p in parts]
        outside = float(np.mean([p[1] for p in parts]))
    else:
        batch, outside = sample_batch(setup, np.stack(moved), seeds)
        images = list(batch)
    back = [from_orientation(img, a, target) for img, a in zip(images, affines, strict=True)]
    return np.stack(back), outside


def canonical_image(img: nib.spatialimages.SpatialImage) -> nib.spatialimages.SpatialImage:
    """nibabel's ``as_closest_canonical`` (the original's reorientation), for tests and documentation."""
    canonical: nib.spatialimages.SpatialImage = nib.as_closest_canonical(img)
    return canonical
