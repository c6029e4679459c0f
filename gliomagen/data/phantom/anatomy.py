"""The phantom's anatomy: nilearn's MNI152 template under a random per-patient deformation, on a BraTS-like grid."""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage as ndi

from gliomagen.data.geometry import rotation_matrix

BRATS_GRID: tuple[int, int, int] = (182, 218, 182)
#: world (RAS mm) centre of the MNI152 182x218x182 grid; every phantom grid is centred here
GRID_CENTRE = np.array([-0.5, -17.5, 18.5])
BRAINSTEM_CUT_MM = -62.0  # world z below which the phantom has no brain


def grid_affine(shape: tuple[int, int, int], spacing: float) -> np.ndarray:
    """LAS voxel-to-world matrix like BraTS/MNI152 (x flipped), centred on the MNI152 grid centre.

    For 182x218x182 at 1 mm this is exactly the FSL MNI152 1 mm affine (origin 90, -126, -72).
    """
    aff = np.diag([-spacing, spacing, spacing, 1.0])
    half = spacing * (np.asarray(shape, float) - 1) / 2
    aff[:3, 3] = GRID_CENTRE + np.array([half[0], -half[1], -half[2]])
    return aff


@functools.lru_cache(maxsize=1)
def load_template() -> dict[str, np.ndarray]:
    """The MNI152 T1, GM, WM and brain mask bundled with nilearn (1 mm, RAS) and their affine."""
    from nilearn import datasets  # imported here: nilearn's import takes seconds

    t1 = datasets.load_mni152_template(resolution=1)
    maps = {
        "t1": t1,
        "gm": datasets.load_mni152_gm_template(resolution=1),
        "wm": datasets.load_mni152_wm_template(resolution=1),
        "brain": datasets.load_mni152_brain_mask(resolution=1),
    }
    out = {name: np.asarray(img.get_fdata(), np.float32) for name, img in maps.items()}
    out["affine"] = np.asarray(t1.affine, float)
    return out


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], spacing: float, scale_mm: float
) -> np.ndarray:
    """A smooth random field with unit standard deviation and correlation length ~``scale_mm``.

    Random values on a coarse grid (one node per ``scale_mm``) are smoothed and upsampled with a cubic
    B-spline, applied separably (one small matrix per axis): cheap at any resolution, and the same
    field of view gives the same field for the same seed whatever the voxel size.
    """
    extent = np.asarray(shape) * spacing
    coarse_shape = tuple(int(np.ceil(e / scale_mm)) + 3 for e in extent)
    coarse = ndi.gaussian_filter(rng.standard_normal(coarse_shape), 0.7, mode="wrap").astype(np.float32)
    out = coarse
    for axis, n in enumerate(shape):
        weights = _spline_matrix(coarse_shape[axis], n, spacing / scale_mm)
        out = np.moveaxis(np.tensordot(weights, out, axes=([1], [axis])), 0, axis)
    out = out.astype(np.float32)
    field: np.ndarray = (out - out.mean()) / (out.std() + 1e-8)
    return field


@functools.lru_cache(maxsize=64)
def _spline_matrix(n_coarse: int, n_fine: int, step: float) -> np.ndarray:
    """(n_fine, n_coarse) cubic-spline interpolation weights at positions ``1 + i * step``."""
    positions = (1.0 + np.arange(n_fine) * step)[None, :]
    columns = [
        ndi.map_coordinates(np.eye(n_coarse)[k], positions, order=3, mode="nearest") for k in range(n_coarse)
    ]
    return np.stack(columns, axis=1).astype(np.float32)


def patient_anatomy(
    rng: np.random.Generator, shape: tuple[int, int, int], affine: np.ndarray
) -> dict[str, np.ndarray]:
    """Tissue maps of one patient: the template under a random affine and smooth deformation.

    Returns float32 maps ``t1``, ``gm``, ``wm``, ``csf``, ``brain`` on the phantom grid and the world
    coordinates ``world`` (3, X, Y, Z) of its voxels.
    """
    tpl = load_template()
    spacing = float(abs(affine[0, 0]))
    ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    world = np.einsum("ij,j...->i...", affine[:3, :3].astype(np.float32), ijk) + affine[
        :3, 3, None, None, None
    ].astype(np.float32)
    # random global shape: per-axis scale, small rotation, shift
    degrees = rng.uniform(-4, 4, 3)
    scale = rng.uniform(0.93, 1.07, 3)
    rot = rotation_matrix(degrees.tolist()) @ np.diag(1 / scale)
    shift = rng.uniform(-3, 3, 3)
    centred = world - GRID_CENTRE[:, None, None, None].astype(np.float32)
    src = np.einsum("ij,j...->i...", rot.astype(np.float32), centred) + (GRID_CENTRE + shift)[
        :, None, None, None
    ].astype(np.float32)
    for axis in range(3):  # smooth non-linear part, ~4 mm
        src[axis] += 4.0 * smooth_field(rng, shape, spacing, 30.0)
    inv = np.linalg.inv(tpl["affine"]).astype(np.float32)
    vox = np.einsum("ij,j...->i...", inv[:3, :3], src) + inv[:3, 3, None, None, None]
    # sample the brain mask everywhere, the other maps only where there is brain (a quarter of the grid)
    maps = {"brain": ndi.map_coordinates(tpl["brain"], vox, order=1, mode="constant").astype(np.float32)}
    inside = maps["brain"] > 0
    points = vox[:, inside]
    for name in ("t1", "gm", "wm"):
        maps[name] = np.zeros(shape, np.float32)
        maps[name][inside] = ndi.map_coordinates(tpl[name], points, order=1, mode="constant")
    # skull stripping cuts the brainstem near the foramen magnum: keep the head off the bottom face
    keep = world[2] > BRAINSTEM_CUT_MM
    for name in ("t1", "gm", "wm", "brain"):
        maps[name] *= keep
    maps["csf"] = np.clip(maps["brain"] - maps["gm"] - maps["wm"], 0, 1)
    maps["world"] = world
    return maps
