"""The head label (prepared value ``head``), computed once per scan by one documented rule.

Rule (docs/method.md, "Data"; the original recomputed it for every modality and the last one written, FLAIR,
won -- here it is computed once, from ``data.head.source``):

1. Otsu threshold of the raw source image (``t2f`` = the paper's effective choice; ``multi`` = the union
   of the Otsu foregrounds of all four modalities, which also keeps CSF that FLAIR suppresses);
2. binary closing with a ball of radius ``data.head.closing_radius`` voxels;
3. 3D hole filling;
4. the largest connected component;
5. background voxels inside it become ``head``; the union with the tumour labels is hole-filled once more;
6. tumour labels are kept where they are (they always win over ``head``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import ball

from gliomagen.config import MODALITIES, LabelSpec


def otsu_foreground(image: np.ndarray) -> np.ndarray:
    """Voxels above the Otsu threshold of the whole volume (background included, as in the paper)."""
    if float(image.max()) == float(image.min()):
        return np.zeros(image.shape, bool)
    return image > threshold_otsu(image)


def head_steps(images: dict[str, np.ndarray], source: str, closing_radius: int) -> dict[str, np.ndarray]:
    """Every intermediate mask of steps 1-4 (for the figure); ``largest`` is the head before step 5.

    Args:
        images: raw volumes by modality name.
        source: ``t2f``, ``t1n``, ``t1c``, ``t2w`` or ``multi``.
        closing_radius: radius of the closing ball in voxels (0 disables the closing).
    """
    names = MODALITIES if source == "multi" else (source,)
    fg = np.zeros(next(iter(images.values())).shape, bool)
    for name in names:
        fg |= otsu_foreground(images[name])
    steps = {"otsu": fg}
    closed = _closing(fg, closing_radius)
    steps["closed"] = closed
    filled = ndi.binary_fill_holes(closed)
    steps["filled"] = filled
    steps["largest"] = largest_component(filled)
    return steps


def _closing(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary closing on the mask's bounding box, padded so the border does not erode (and fast)."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    padded = np.pad(mask[box], radius + 1)
    closed = ndi.binary_closing(padded, structure=ball(radius))[
        tuple(slice(radius + 1, -(radius + 1)) for _ in range(3))
    ]
    out = mask.copy()
    out[box] |= closed
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component (empty in, empty out)."""
    lab, n = ndi.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return lab > 0
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def relabel(seg: np.ndarray, labels: list[LabelSpec]) -> np.ndarray:
    """Map raw segmentation values (``source``) to prepared values (``value``); derived labels stay 0.

    Raises:
        ValueError: a value in ``seg`` has no label with that ``source``.
    """
    lut = np.zeros(256, np.uint8)
    known = np.zeros(256, bool)
    for lab in labels:
        if lab.source is not None:
            lut[lab.source] = lab.value
            known[lab.source] = True
    values = np.unique(seg)
    unknown = [int(v) for v in values if not (0 <= v < 256 and known[int(v)])]
    if unknown:
        raise ValueError(
            f"unknown label value(s) {unknown}; known source values: {np.flatnonzero(known).tolist()}"
        )
    return lut[seg.astype(np.int64)]


def prepared_mask(
    seg: np.ndarray,
    images: dict[str, np.ndarray],
    labels: list[LabelSpec],
    source: str,
    closing_radius: int,
) -> np.ndarray:
    """The prepared label map: shifted tumour labels plus the derived ``head`` label (steps 1-6).

    Args:
        seg: raw segmentation (source values).
        images: raw images by modality.
        labels: the profile's label map (``data.labels``).
        source: head source (see :func:`head_steps`).
        closing_radius: closing ball radius in voxels.
    """
    out = relabel(seg, labels)
    derived = [lab for lab in labels if lab.source is None]
    if not derived:
        return out
    if len(derived) > 1:
        raise ValueError(f"only one derived label (the head) is supported, got {[d.name for d in derived]}")
    tumour = out > 0
    head = head_steps(images, source, closing_radius)["largest"]
    head = ndi.binary_fill_holes(head | tumour)
    out[head & ~tumour] = derived[0].value
    return out
