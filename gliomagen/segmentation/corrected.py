"""Corrected segmentation metrics (one row per scan and BraTS region): mm distances, explicit empty cases,
BraTS 2024 lesion-wise metrics.


Corrected, :func:`corrected_case_metrics` (one row per scan and BraTS region):
- regions of BraTS 2024 post-treatment glioma (:data:`BRATS_REGIONS`);
- Dice, and HD95/ASSD in **mm** with the voxel spacing (MONAI's surface-distance metrics); empty cases are
  explicit: both empty -> Dice 1, distances 0; one empty -> Dice 0, distances = the volume's diagonal in mm
  (the worst value this volume allows; the BraTS parser substitutes a fixed 373 mm, the diagonal of its
  1 mm SRI atlas, for an infinite *global* HD95), with a ``status`` column;
- lesion-wise metrics exactly as the ``brats-evaluation`` package computes them (:func:`lesion_metrics`;
  no matched lesion gives an infinite lesion-wise HD95 there, not 373 mm).

``docs/metrics.md`` tabulates every definition and empty-mask convention of the three modes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from gliomagen.config import Config
from gliomagen.segmentation.overlap import dice_paper, medpy_hd95

#: BraTS 2024 Adult Glioma Post-Treatment regions (de Verdier et al., 2024, arXiv:2405.18368, §2.3 and the
#: challenge's ``brats-evaluation`` GLI config: tc = labels {NETC, ET}, wt = {NETC, SNFH, ET}; RC is scored on
#: its own and is in neither TC nor WT).
BRATS_REGIONS: dict[str, tuple[str, ...]] = {
    "ET": ("ET",),
    "TC": ("ET", "NETC"),
    "WT": ("ET", "NETC", "SNFH"),
    "NETC": ("NETC",),
    "SNFH": ("SNFH",),
    "RC": ("RC",),
}
#: brats-evaluation matches lesions with Dice above this threshold (any overlap).
MATCH_THRESHOLD = 1e-6


def region_values(cfg: Config) -> dict[str, list[int]]:
    """BraTS region name -> prepared label values (looked up by label name, never hard-coded)."""
    by_name = {lab.name: lab.value for lab in cfg.data.labels}
    missing = sorted({n for names in BRATS_REGIONS.values() for n in names} - set(by_name))
    if missing:
        raise KeyError(f"label map lacks {missing} needed for the BraTS regions; labels: {sorted(by_name)}")
    return {region: [by_name[n] for n in names] for region, names in BRATS_REGIONS.items()}


def worst_distance(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The volume's diagonal in mm: the penalty for a distance with one empty side."""
    return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def binary_pair_metrics(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> dict[str, object]:
    """Dice, HD95 (mm) and ASSD (mm) of two binary masks with explicit empty-case handling.

    HD95/ASSD come from MONAI (``compute_hausdorff_distance(percentile=95)``, symmetric
    ``compute_average_surface_distance``) with the voxel spacing.
    """
    from monai.metrics.hausdorff_distance import compute_hausdorff_distance
    from monai.metrics.surface_distance import compute_average_surface_distance

    g, p = gt.astype(bool), pred.astype(bool)
    ng, np_ = int(g.sum()), int(p.sum())
    if ng == 0 and np_ == 0:
        return {
            "dice": 1.0,
            "hd95_mm": 0.0,
            "assd_mm": 0.0,
            "status": "both_empty",
            "gt_voxels": 0,
            "pred_voxels": 0,
        }
    if ng == 0 or np_ == 0:
        worst = worst_distance(g.shape, spacing)
        return {
            "dice": 0.0,
            "hd95_mm": worst,
            "assd_mm": worst,
            "status": "gt_empty" if ng == 0 else "pred_empty",
            "gt_voxels": ng,
            "pred_voxels": np_,
        }
    yp = torch.from_numpy(p[None, None].astype(np.float32))
    yg = torch.from_numpy(g[None, None].astype(np.float32))
    sp = [float(s) for s in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = float(
            compute_hausdorff_distance(yp, yg, include_background=True, percentile=95, spacing=sp)[0, 0]
        )
        asd = float(
            compute_average_surface_distance(yp, yg, include_background=True, symmetric=True, spacing=sp)[
                0, 0
            ]
        )
    return {
        "dice": dice_paper(g, p),
        "hd95_mm": hd,
        "assd_mm": asd,
        "status": "ok",
        "gt_voxels": ng,
        "pred_voxels": np_,
    }


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components with full (26-) connectivity, as cc3d's default in brats-evaluation."""
    labels, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))
    return labels, int(n)


def lesion_metrics(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Lesion-wise metrics of one binary region, as the official ``brats-evaluation`` package (0.0.10, its
    bundled GLI configuration, which runs ``panoptica``) computes them.

    The package could not be installed beside our pins (it pins pandas<3 and numpy<2.3), so its rules are
    implemented here and tested against values it computed (``tests/data/metric_references.json``):
    lesions are 26-connected components of reference and prediction, paired one-to-one by maximum bipartite
    matching on Dice, a pair counting only above Dice 1e-6; matched pairs are TP, unmatched predictions FP,
    unmatched references FN. ``lesion_dice`` / ``lesion_hd95_mm`` are the means over matched pairs
    (panoptica's ``sq_dsc`` / ``sq_hd95``, HD95 with the voxel spacing). With no matched pair they follow the
    package's edge-case table: Dice 0 and HD95 **infinite** (the package's ``seg`` parser keeps the
    infinity for lesion-wise values; its 373 mm substitute is applied only to the *global* HD95 and to
    missing subjects), and NaN for everything when neither side has a lesion. Precision TP / (TP + FP) and
    recall TP / (TP + FN) are NaN when their denominator is 0; ``lesion_f1`` is panoptica's recognition
    quality TP / (TP + (FP + FN) / 2). ``lesion_dice_penalised`` = sum of matched Dice / (TP + FP + FN)
    additionally charges every missed or spurious lesion (the BraTS 2023 ranking rule; not a package output).
    """
    ref_l, n_ref = _components(gt.astype(bool))
    pred_l, n_pred = _components(pred.astype(bool))
    out = {"n_ref": n_ref, "n_pred": n_pred}
    if n_ref == 0 and n_pred == 0:
        nan = float("nan")
        return {
            **out,
            "tp": 0,
            "fp": 0,
            "fn": 0,
            "lesion_precision": nan,
            "lesion_recall": nan,
            "lesion_f1": nan,
            "lesion_dice": nan,
            "lesion_hd95_mm": nan,
            "lesion_dice_penalised": nan,
        }
    pairs = _match_lesions(ref_l, n_ref, pred_l, n_pred)
    tp, fp, fn = len(pairs), n_pred - len(pairs), n_ref - len(pairs)
    dices = [d for _, _, d in pairs]
    hds = [medpy_hd95(pred_l == j, ref_l == i, spacing) for i, j, _ in pairs]
    return {
        **out,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "lesion_precision": tp / n_pred if n_pred else float("nan"),
        "lesion_recall": tp / n_ref if n_ref else float("nan"),
        "lesion_f1": tp / (tp + 0.5 * (fp + fn)),
        "lesion_dice": float(np.mean(dices)) if tp else 0.0,
        "lesion_hd95_mm": float(np.mean(hds)) if tp else float("inf"),
        "lesion_dice_penalised": float(np.sum(dices)) / (tp + fp + fn),
    }


def _match_lesions(
    ref_l: np.ndarray, n_ref: int, pred_l: np.ndarray, n_pred: int
) -> list[tuple[int, int, float]]:
    """One-to-one matching maximising total Dice; returns (ref label, pred label, Dice) for matched pairs."""
    if n_ref == 0 or n_pred == 0:
        return []
    size_r = np.bincount(ref_l.ravel(), minlength=n_ref + 1)
    size_p = np.bincount(pred_l.ravel(), minlength=n_pred + 1)
    both = (ref_l > 0) & (pred_l > 0)
    inter = np.bincount(ref_l[both] * (n_pred + 1) + pred_l[both], minlength=(n_ref + 1) * (n_pred + 1))
    inter = inter.reshape(n_ref + 1, n_pred + 1)[1:, 1:]
    dice = 2 * inter / (size_r[1:, None] + size_p[None, 1:])
    cost = np.where(dice > MATCH_THRESHOLD, 1.0 - dice, 1.0 + 1e-6)
    rows, cols = linear_sum_assignment(cost)
    return [
        (int(r) + 1, int(c) + 1, float(dice[r, c]))
        for r, c in zip(rows, cols, strict=True)
        if cost[r, c] < 1.0
    ]


def corrected_case_metrics(
    gt: np.ndarray, pred: np.ndarray, cfg: Config, spacing: Sequence[float]
) -> list[dict[str, object]]:
    """One row per BraTS region: Dice, HD95/ASSD in mm with status, and the lesion-wise metrics."""
    rows = []
    for region, values in region_values(cfg).items():
        g, p = np.isin(gt, values), np.isin(pred, values)
        rows.append({"region": region, **binary_pair_metrics(g, p, spacing), **lesion_metrics(g, p, spacing)})
    return rows
