"""The phantom's four contrasts from tissue maps and lesion labels (bias field, Rician noise, skull-stripped)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from gliomagen.config import MODALITIES
from gliomagen.data.phantom.anatomy import smooth_field
from gliomagen.data.phantom.lesion import ET, NETC, RC, SNFH

#: relative intensities: normal tissue (CSF, GM, WM) and lesion labels (NETC, SNFH, ET, RC) per modality
TISSUE = {
    "t1n": (0.25, 0.55, 0.80),
    "t1c": (0.25, 0.57, 0.80),
    "t2w": (1.00, 0.58, 0.42),
    "t2f": (0.10, 0.62, 0.48),
}
LESION = {
    "t1n": {NETC: 0.40, SNFH: 0.62, ET: 0.55, RC: 0.20},
    "t1c": {NETC: 0.42, SNFH: 0.64, ET: 1.05, RC: 0.20},
    "t2w": {NETC: 0.80, SNFH: 0.78, ET: 0.62, RC: 0.98},
    "t2f": {NETC: 0.70, SNFH: 0.95, ET: 0.72, RC: 0.16},
}


def render(
    anatomy: dict[str, np.ndarray], labels: np.ndarray, rng: np.random.Generator, spacing: float
) -> dict[str, np.ndarray]:
    """Four modalities (integer-valued float arrays) from tissue maps and the lesion labels.

    Everything is computed inside the brain's bounding box (about half the grid); outside is 0, as in
    skull-stripped BraTS volumes.
    """
    idx = np.argwhere(anatomy["brain"] > 0)
    box = tuple(slice(max(0, lo - 2), hi + 3) for lo, hi in zip(idx.min(0), idx.max(0), strict=True))
    a = {k: anatomy[k][box] for k in ("brain", "csf", "gm", "wm", "t1")}
    brain_soft = ndi.gaussian_filter(a["brain"], 0.5 / spacing)
    outside = a["brain"] <= 0.5
    soft = _soft_labels(labels[box], 0.7 / spacing)
    keep = 1 - np.clip(sum(soft.values()), 0, 1)
    # real T1 texture (template minus its tissue model) adds anatomical detail to every contrast
    t1_model = TISSUE["t1n"][0] * a["csf"] + TISSUE["t1n"][1] * a["gm"] + TISSUE["t1n"][2] * a["wm"]
    texture = np.clip(a["t1"] * 0.9 - t1_model, -0.15, 0.15)
    images = {}
    for modality in MODALITIES:
        csf, gm, wm = TISSUE[modality]
        img = csf * a["csf"] + gm * a["gm"] + wm * a["wm"]
        img += (1.0 if modality in ("t1n", "t1c") else -0.6) * texture
        img *= keep
        for k, value in LESION[modality].items():
            img += value * soft[k]
        img *= np.exp(0.1 * smooth_field(rng, img.shape, spacing, 60.0))  # bias field
        sigma = rng.uniform(0.015, 0.03)
        real = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(img.shape, dtype=np.float32)
        img = np.sqrt(real * real + imag * imag) * brain_soft  # Rician magnitude noise
        img[outside] = 0  # skull-stripped, like BraTS
        full = np.zeros(labels.shape, np.float32)
        full[box] = np.round(img * rng.uniform(600, 3000))
        images[modality] = full
    return images


def _soft_labels(labels: np.ndarray, sigma: float) -> dict[int, np.ndarray]:
    """Partial-volume (Gaussian-blurred) one-hot maps of the lesion labels, computed near the lesion only."""
    soft = {k: np.zeros(labels.shape, np.float32) for k in (NETC, SNFH, ET, RC)}
    if not labels.any():
        return soft
    idx = np.argwhere(labels > 0)
    pad = int(np.ceil(4 * sigma)) + 1
    box = tuple(slice(max(0, lo - pad), hi + pad + 1) for lo, hi in zip(idx.min(0), idx.max(0), strict=True))
    for k in soft:
        soft[k][box] = ndi.gaussian_filter((labels[box] == k).astype(np.float32), sigma)
    return soft
