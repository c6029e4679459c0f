"""Tiny BraTS-layout run folders for the segmentation tests (prepared real cases + synthetic volumes).

Label values come from the profile (``cfg.data.labels``); images are label-dependent intensities plus noise,
so a tiny nnU-Net can learn something in a few iterations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from prepared_run import write_prepared_run

from gliomagen.cases import Case, write_case
from gliomagen.config import Config


def toy_mask(cfg: Config, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A head ellipsoid with a lesion: SNFH around a core of NETC with an ET rim, and a resection cavity."""
    v = {lab.name: lab.value for lab in cfg.data.labels}
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij"))
    centre = np.array(shape, float)[:, None, None, None] / 2
    radii = np.array(shape, float)[:, None, None, None] * 0.42
    mask = np.zeros(shape, np.uint8)
    mask[(((grid - centre) / radii) ** 2).sum(0) <= 1] = v["head"]
    c = centre[:, 0, 0, 0] + rng.uniform(-3, 3, 3)
    c[0] += shape[0] * 0.12
    d = np.sqrt(((grid - c[:, None, None, None]) ** 2).sum(0))
    r = rng.uniform(4.5, 6.5)
    mask[d <= r + 2.5] = v["SNFH"]
    mask[d <= r] = v["ET"]
    mask[d <= r - 1.8] = v["NETC"]
    rc = c.copy()
    rc[0] -= shape[0] * 0.3
    mask[np.sqrt(((grid - rc[:, None, None, None]) ** 2).sum(0)) <= rng.uniform(2.5, 3.5)] = v["RC"]
    return mask


def toy_image(cfg: Config, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Four channels in [0, 1] whose intensity depends on the label (different contrast per modality)."""
    out = np.zeros((4, *mask.shape), np.float32)
    for m in range(4):
        for lab in cfg.data.labels:
            out[m][mask == lab.value] = ((lab.value * (m + 3)) % 7 + 1) / 8 if lab.value else 0.0
        out[m] += rng.normal(0, 0.05, mask.shape).astype(np.float32)
    return np.clip(out, 0, 1)


def make_toy_run(
    cfg: Config,
    n_train_patients: int = 4,
    timepoints: int = 2,
    n_val_patients: int = 2,
    n_synthetic: int = 4,
    shape: tuple[int, int, int] = (16, 16, 16),
    seed: int = 0,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> dict[str, list[str]]:
    """Write prepared train/val cases, ``cases.csv`` and synthetic training volumes into ``cfg``'s run folder.

    Returns:
        ids per group: ``train``, ``val``, ``synthetic``.
    """
    rng = np.random.default_rng(seed)
    affine = np.diag([*spacing, 1.0])
    cases, ids = [], {"train": [], "val": [], "synthetic": []}
    patient = 0
    for split, n_pat in (("train", n_train_patients), ("val", n_val_patients)):
        for _ in range(n_pat):
            patient += 1
            for t in range(timepoints if split == "train" else 1):
                cid = f"BraTS-GLI-{patient:05d}-{t:03d}"
                mask = toy_mask(cfg, shape, rng)
                cases.append((split, Case(cid, toy_image(cfg, mask, rng), mask, affine)))
                ids[split].append(cid)
    write_prepared_run(cfg.paths, cases)
    syn_rows = []
    for k in range(n_synthetic):
        source = ids["train"][k % len(ids["train"])]
        aug_id = f"{source}-a{1 + k // len(ids['train'])}"
        mask = toy_mask(cfg, shape, rng)
        write_case(cfg.paths.synthetic / "train", Case(aug_id, toy_image(cfg, mask, rng), mask, affine))
        syn_rows.append({"id": aug_id, "split": "train", "source_id": source})
        ids["synthetic"].append(aug_id)
    pd.DataFrame(syn_rows).to_csv(cfg.paths.synthetic / "manifest.csv", index=False)
    return ids
