"""Isotropic rescale and centre pad/crop to a target grid, with the correct affine.

The paper rescales every volume by ``f = min(target / source)`` (the same factor on every axis, in voxel
units) and then pads or crops it, centred, to the target shape; it kept the old affine, so voxel size and
origin were wrong. Here the output grid is defined first, as one affine map from output to input voxels

    input_voxel = c_in + (output_voxel - c_out) / f,    c = (shape - 1) / 2,

so the output grid's centre coincides exactly with the input grid's centre, its voxels are ``1/f`` times
larger, and the padding/cropping is implied by the target shape. The output affine is
``A_out = A_in @ M`` (``M`` the map above), so every anatomical point keeps its world coordinates.
Sampling is done by :func:`scipy.ndimage.affine_transform`: images linear after a Gaussian anti-aliasing
filter (scikit-image's ``rescale(anti_aliasing=True)`` rule, sigma = (1/f - 1) / 2 voxels), masks nearest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class Geometry:
    """The resampling from one input grid to the target grid.

    Args:
        in_shape: input volume shape.
        out_shape: target shape.
        in_affine: input voxel-to-world matrix (4x4).
        factor: the isotropic scale ``f`` (output voxels per input voxel).
    """

    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    in_affine: np.ndarray
    factor: float

    @property
    def out_to_in(self) -> np.ndarray:
        """4x4 map from output voxel indices to input voxel indices."""
        c_in = (np.asarray(self.in_shape, float) - 1) / 2
        c_out = (np.asarray(self.out_shape, float) - 1) / 2
        m = np.eye(4)
        m[:3, :3] /= self.factor
        m[:3, 3] = c_in - c_out / self.factor
        return m

    @property
    def out_affine(self) -> np.ndarray:
        """Voxel-to-world matrix of the output grid (same world coordinates for the same anatomy)."""
        return np.asarray(self.in_affine, float) @ self.out_to_in

    @property
    def out_spacing(self) -> tuple[float, float, float]:
        return voxel_spacing(self.out_affine)


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel sizes (mm) of a voxel-to-world matrix (the project's one copy of this rule)."""
    sizes = nib.affines.voxel_sizes(np.asarray(affine, float))
    return (float(sizes[0]), float(sizes[1]), float(sizes[2]))


#: world-axis names and the orientation codes (either direction) that identify them
WORLD_AXES = {"left-right": ("L", "R"), "anterior-posterior": ("A", "P"), "inferior-superior": ("I", "S")}


def world_axis(affine: np.ndarray, direction: str) -> int:
    """The voxel axis that runs along a world direction according to ``affine``.

    Args:
        affine: 4x4 voxel-to-world matrix.
        direction: ``left-right``, ``anterior-posterior`` or ``inferior-superior``.

    Raises:
        ValueError: for an unknown direction or an affine without that axis.
    """
    if direction not in WORLD_AXES:
        raise ValueError(f"direction must be one of {sorted(WORLD_AXES)}, got {direction!r}")
    codes = nib.orientations.aff2axcodes(np.asarray(affine, float))
    for axis, code in enumerate(codes):
        if code in WORLD_AXES[direction]:
            return axis
    raise ValueError(f"affine has no {direction} axis (orientation codes {codes})")


def rotation_matrix(degrees: Sequence[float]) -> np.ndarray:
    """World-space rotation ``Rz @ Ry @ Rx`` for angles (degrees) about the world x, y, z axes.

    Extrinsic x-y-z Euler angles in scipy's convention, which compose to exactly this product.
    """
    return Rotation.from_euler("xyz", np.asarray(degrees, float), degrees=True).as_matrix()


def plan_geometry(
    in_shape: tuple[int, ...], in_affine: np.ndarray, target_shape: tuple[int, int, int]
) -> Geometry:
    """The paper's rule: isotropic factor ``min(target / source)``, then centred pad/crop.

    Args:
        in_shape: shape of the input volume (3D).
        in_affine: its voxel-to-world matrix.
        target_shape: output shape.
    """
    if len(in_shape) != 3 or min(in_shape) < 1:
        raise ValueError(f"expected a 3D shape, got {tuple(in_shape)}")
    factor = float(min(t / s for t, s in zip(target_shape, in_shape, strict=True)))
    return Geometry(
        tuple(int(s) for s in in_shape),  # type: ignore[arg-type]
        tuple(int(t) for t in target_shape),  # type: ignore[arg-type]
        np.asarray(in_affine, float),
        factor,
    )


def resample_image(volume: np.ndarray, geom: Geometry) -> np.ndarray:
    """Linear resampling with anti-aliasing onto the target grid (zeros outside the input field of view)."""
    data = np.asarray(volume, np.float32)
    if geom.factor < 1:
        # scikit-image's anti-aliasing sigma for a downscale by 1/f (skimage.transform.rescale)
        data = ndi.gaussian_filter(data, sigma=(1 / geom.factor - 1) / 2, mode="nearest")
    m = geom.out_to_in
    out = ndi.affine_transform(
        data, m[:3, :3], offset=m[:3, 3], output_shape=geom.out_shape, order=1, mode="constant", cval=0.0
    )
    return out.astype(np.float32, copy=False)


def resample_mask(mask: np.ndarray, geom: Geometry) -> np.ndarray:
    """Nearest-neighbour resampling of a label map onto the target grid (background outside)."""
    m = geom.out_to_in
    out = ndi.affine_transform(
        np.asarray(mask, np.uint8),
        m[:3, :3],
        offset=m[:3, 3],
        output_shape=geom.out_shape,
        order=0,
        mode="constant",
        cval=0,
    )
    return out.astype(np.uint8, copy=False)


def sampled_input_indices(geom: Geometry) -> list[np.ndarray]:
    """Per axis, the input indices that nearest-neighbour resampling reads (to reason about lost labels)."""
    m = geom.out_to_in
    result = []
    for axis in range(3):
        pos = m[axis, axis] * np.arange(geom.out_shape[axis]) + m[axis, 3]
        idx = np.floor(pos + 0.5).astype(int)  # scipy's order-0 rounding
        result.append(np.unique(idx[(idx >= 0) & (idx < geom.in_shape[axis])]))
    return result
