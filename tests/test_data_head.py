"""Label shift and the head label on known shapes (gliomagen.data.head)."""

from __future__ import annotations

import numpy as np
import pytest

from gliomagen.config import load_config
from gliomagen.data.head import head_steps, largest_component, prepared_mask, relabel

LABELS = load_config("smoke").data.labels


def _ball(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    return ((grid - np.asarray(centre)[:, None, None, None]) ** 2).sum(0) <= radius**2


def test_label_shift_follows_profile() -> None:
    seg = np.array([0, 1, 2, 3, 4], np.int64).reshape(5, 1, 1)
    np.testing.assert_array_equal(relabel(seg, LABELS).ravel(), [0, 2, 3, 4, 5])
    assert relabel(seg, LABELS).dtype == np.uint8


def test_label_shift_rejects_unknown_values() -> None:
    with pytest.raises(ValueError, match=r"unknown label value\(s\) \[7\]"):
        relabel(np.array([0, 7]).reshape(2, 1, 1), LABELS)


def _head_phantom() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A bright ball (r=10) with a dark enclosed 'ventricle' (r=3), a dark narrow notch open to the
    outside, a dark tumour cavity (r=3, labelled RC=4) and a small bright speck far away."""
    shape = (40, 40, 40)
    head = _ball(shape, (20, 20, 20), 10)
    image = head.astype(np.float32)
    image[_ball(shape, (20, 20, 20), 3)] = 0.0  # ventricle: enclosed -> filled
    image[19:21, 20:21, 5:20] = 0.0  # a 2-voxel-wide sulcus open to the surface -> closed
    image[_ball(shape, (26, 20, 20), 2.5)] = 0.0  # cavity
    image[2:4, 2:4, 2:4] = 1.0  # speck -> not the largest component
    seg = np.zeros(shape, np.int64)
    seg[_ball(shape, (26, 20, 20), 2.5)] = 4
    return {m: image for m in ("t1n", "t1c", "t2w", "t2f")}, seg, head


def test_head_label_on_known_shape() -> None:
    images, seg, head = _head_phantom()
    mask = prepared_mask(seg, images, LABELS, source="t2f", closing_radius=2)
    assert set(np.unique(mask)) == {0, 1, 5}  # background, head, RC (4 + 1)
    np.testing.assert_array_equal(mask == 5, seg == 4)  # tumour labels are kept where they were
    # ventricle and sulcus filled, speck dropped; only the sulcus' mouth at the surface stays open,
    # as a closing leaves it (the ball cannot reach into a notch on a convex surface)
    differ = np.argwhere((mask > 0) != head)
    assert len(differ) <= 3 and all(z <= 11 and (x, y) in {(19, 20), (20, 20)} for x, y, z in differ)
    assert (mask[19:21, 20, 12:20] == 1).all()
    assert mask[2:4, 2:4, 2:4].max() == 0


def test_head_steps_are_the_documented_rule() -> None:
    images, _, _ = _head_phantom()
    steps = head_steps(images, "t2f", closing_radius=2)
    assert not steps["otsu"][20, 20, 20]  # the ventricle is below the Otsu threshold
    assert steps["filled"][20, 20, 20]  # ... and filled as a hole
    assert steps["filled"][2, 2, 2] and not steps["largest"][2, 2, 2]


def test_multi_source_uses_every_modality() -> None:
    images, _, _ = _head_phantom()
    images = dict(images)
    extra = np.zeros_like(images["t2w"])
    extra[30:36, 2:8, 2:8] = 5.0  # only t2w sees this big blob: it becomes the largest component
    images["t2w"] = images["t2w"] + extra
    assert not head_steps(images, "t2f", 0)["otsu"][32, 4, 4]
    assert head_steps(images, "multi", 0)["otsu"][32, 4, 4]


def test_largest_component_empty() -> None:
    assert not largest_component(np.zeros((4, 4, 4), bool)).any()
