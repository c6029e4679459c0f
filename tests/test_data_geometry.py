"""Isotropic rescale + centre pad/crop with the correct affine (gliomagen.data.geometry)."""

from __future__ import annotations

import numpy as np
import pytest

from gliomagen.data.geometry import plan_geometry, resample_image, resample_mask, voxel_spacing
from gliomagen.data.phantom import grid_affine


def _world(affine: np.ndarray, voxel: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ voxel + affine[:3, 3]


def test_paper_geometry_numbers() -> None:
    geom = plan_geometry((182, 218, 182), grid_affine((182, 218, 182), 1.0), (192, 192, 144))
    assert geom.factor == pytest.approx(144 / 182)
    assert geom.out_spacing == pytest.approx((182 / 144,) * 3)
    # the FSL MNI152 1 mm grid (what BraTS 2024 post-treatment uses), x flipped
    np.testing.assert_allclose(geom.in_affine[:3, 3], [90, -126, -72])
    assert np.sign(geom.out_affine[0, 0]) == -1  # orientation kept (LAS)


@pytest.mark.parametrize(
    ("in_shape", "spacing", "target", "landmark"),
    [
        ((91, 109, 91), 2.0, (32, 40, 32), (30.3, 71.8, 55.1)),
        ((60, 50, 40), 1.5, (24, 24, 16), (12.0, 33.5, 20.7)),
        ((20, 24, 16), 1.0, (40, 40, 32), (7.2, 15.6, 9.4)),  # upsampling
    ],
)
def test_landmark_keeps_world_coordinates(in_shape, spacing, target, landmark) -> None:
    """A bright blob's centroid maps to the same world point (within half an output voxel)."""
    affine = grid_affine(in_shape, spacing)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in in_shape], indexing="ij"))
    dist2 = ((grid - np.asarray(landmark)[:, None, None, None]) ** 2).sum(0) * spacing**2
    blob = np.exp(-dist2 / (2 * (2.5 * spacing) ** 2)).astype(np.float32)  # sigma 2.5 voxels
    geom = plan_geometry(in_shape, affine, target)
    out = resample_image(blob, geom)
    assert out.shape == target
    out_grid = np.stack(np.meshgrid(*[np.arange(n) for n in target], indexing="ij"))
    centroid = (out_grid * out).reshape(3, -1).sum(1) / out.sum()
    centroid_in = (grid * blob).reshape(3, -1).sum(1) / blob.sum()  # = landmark unless the FOV cuts it
    world_in = _world(affine, centroid_in)
    world_out = _world(geom.out_affine, centroid)
    half_voxel = 0.5 * min(voxel_spacing(geom.out_affine))
    assert np.linalg.norm(world_out - world_in) < half_voxel


def test_mask_nearest_matches_hand_computed_positions() -> None:
    """Halving 4 -> 2 voxels samples input voxels 1 and 3 (centres 0.5 and 2.5, rounded half up)."""
    mask = np.broadcast_to(np.arange(4, dtype=np.uint8)[:, None, None], (4, 4, 4)).copy()
    geom = plan_geometry((4, 4, 4), np.eye(4), (2, 2, 2))
    out = resample_mask(mask, geom)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, 0, 0], [1, 3])
    # voxel 0 of the output sits at input position 0.5: world x = 0.5 with a 2 mm voxel
    np.testing.assert_allclose(geom.out_affine[:3, 3], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(voxel_spacing(geom.out_affine), [2, 2, 2])


def test_padding_is_centred_and_background_zero() -> None:
    geom = plan_geometry((10, 20, 10), np.eye(4), (8, 8, 8))  # factor 0.4: 4 x 8 x 4 of content
    out = resample_image(np.ones((10, 20, 10), np.float32), geom)
    content = np.argwhere(out > 0.5)
    assert content.min(0).tolist() == [2, 0, 2] and content.max(0).tolist() == [5, 7, 5]
    assert out[0].max() == 0 and out[-1].max() == 0


def test_rejects_non_3d() -> None:
    with pytest.raises(ValueError, match="3D"):
        plan_geometry((10, 10), np.eye(4), (8, 8, 8))
