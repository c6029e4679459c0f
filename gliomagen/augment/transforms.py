"""The geometry of mask augmentation: flip, scale/rotate/deform about the centre, move the lesion.

Pure functions of arrays and affines (no files, no config). World directions are read from the affine
(:func:`gliomagen.data.geometry.world_axis`), never assumed to be array indices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from gliomagen.data.geometry import rotation_matrix, voxel_spacing, world_axis


def flip_lr(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Mirror ``mask`` left-right about the volume centre; the affine stays the same.

    With the affine kept, a voxel at world x = c + d (c = the world x of the volume centre) moves to
    c - d: the lesion changes hemisphere.
    """
    return np.ascontiguousarray(np.flip(mask, axis=world_axis(affine, "left-right")))


def elastic_field(
    shape: Sequence[int], affine: np.ndarray, sigma_mm: float, magnitude_mm: float, seed: int
) -> np.ndarray:
    """A smooth random displacement field in voxel units, shape ``(3, *shape)``.

    Gaussian-smoothed white noise (the classic elastic deformation), scaled so that each world
    component has standard deviation ``magnitude_mm``; converted to voxel units through the affine.
    """
    rng = np.random.default_rng(seed)
    linear = np.asarray(affine)[:3, :3]
    sigma_vox = sigma_mm / np.asarray(voxel_spacing(affine))
    world = np.empty((3, *shape), dtype=np.float32)
    for c in range(3):
        smooth = ndimage.gaussian_filter(rng.standard_normal(tuple(shape)).astype(np.float32), sigma_vox)
        world[c] = smooth * (magnitude_mm / max(float(smooth.std()), 1e-12))
    field: np.ndarray = np.einsum("ij,j...->i...", np.linalg.inv(linear), world).astype(np.float32)
    return field


def resample_about_centre(
    mask: np.ndarray,
    affine: np.ndarray,
    scale: float,
    rotation_deg: Sequence[float] | np.ndarray = (0.0, 0.0, 0.0),
    displacement: np.ndarray | None = None,
) -> np.ndarray:
    """Scale (and rotate, deform) a label map about the volume centre, nearest neighbour, one resampling.

    The forward map is ``x -> s R x`` in world coordinates about the centre; in voxel coordinates it is
    ``F = A^-1 (s R) A`` (``A`` the affine's linear part), so anisotropic voxels are handled. Each output
    voxel ``o`` reads input ``F^-1 (o - c) + c (+ displacement(o))``. ``scale > 1`` enlarges the lesion.

    Args:
        mask: integer label map.
        affine: 4x4 voxel-to-world matrix.
        scale: isotropic scale factor.
        rotation_deg: rotation angles about the world x, y, z axes.
        displacement: optional ``(3, *mask.shape)`` field in voxel units (see :func:`elastic_field`).
    """
    linear = np.asarray(affine, dtype=float)[:3, :3]
    forward = np.linalg.inv(linear) @ (scale * rotation_matrix(list(rotation_deg))) @ linear
    inverse = np.linalg.inv(forward)
    centre = (np.asarray(mask.shape, dtype=float) - 1) / 2
    offset = centre - inverse @ centre
    out: np.ndarray
    if displacement is None:
        out = ndimage.affine_transform(mask, inverse, offset=offset, order=0, mode="constant", cval=0)
        return out
    grid = np.indices(mask.shape, dtype=np.float32)
    coords = np.einsum("ij,j...->i...", inverse.astype(np.float32), grid) + offset[:, None, None, None]
    coords += displacement
    out = ndimage.map_coordinates(mask, coords, order=0, mode="constant", cval=0).astype(mask.dtype)
    return out


def touches_border(mask: np.ndarray) -> bool:
    """Whether any non-background voxel lies on a face of the volume (the head is not inside)."""
    return any(mask.take(0, axis=axis).any() or mask.take(-1, axis=axis).any() for axis in range(mask.ndim))


def move_lesion(
    mask: np.ndarray,
    affine: np.ndarray,
    tumour_values: Sequence[int],
    head_value: int,
    max_mm: float,
    rng: np.random.Generator,
    tries: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Translate the lesion to another place inside the head.

    The anatomical constraint: every moved lesion voxel must land on a voxel that was inside the head in
    the source (non-background), so the lesion never leaves the head; the vacated place becomes head.
    Random shifts up to ``max_mm`` per world axis are tried; if none fits, the mask is returned unmoved.

    Returns:
        the new mask and the applied world shift in mm (zeros if not moved).
    """
    lesion = np.isin(mask, list(tumour_values))
    if not lesion.any() or max_mm <= 0:
        return mask, np.zeros(3)
    inside = mask != 0
    linear = np.asarray(affine, dtype=float)[:3, :3]
    for _ in range(tries):
        shift_mm = rng.uniform(-max_mm, max_mm, size=3)
        shift_vox = np.rint(np.linalg.solve(linear, shift_mm)).astype(int)
        if not shift_vox.any():
            continue
        moved = ndimage.shift(np.where(lesion, mask, 0), shift_vox, order=0, mode="constant", cval=0)
        moved_lesion = moved != 0
        if moved_lesion.sum() != lesion.sum() or not inside[moved_lesion].all():
            continue
        out = np.where(lesion, np.uint8(head_value), mask).astype(mask.dtype)
        out[moved_lesion] = moved[moved_lesion]
        return out, linear @ shift_vox
    return mask, np.zeros(3)
