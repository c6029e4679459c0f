"""Which slice a figure shows: the project's one rule, so every figure of a case shows the same slice."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def lesion_slice(mask: np.ndarray, tumour_values: Iterable[int], axis: int = -1) -> int:
    """Index along ``axis`` of the slice with the most tumour voxels; the middle slice without tumour.

    Args:
        mask: integer label volume.
        tumour_values: label values that count as tumour (``[lab.value for lab in cfg.tumour_labels]``).
        axis: the axis the slices are taken across (the last, axial, axis of RAS-ordered arrays).
    """
    axis = axis % mask.ndim
    tumour = np.isin(mask, list(tumour_values))
    counts = tumour.sum(axis=tuple(a for a in range(mask.ndim) if a != axis))
    return int(counts.argmax()) if counts.any() else mask.shape[axis] // 2
