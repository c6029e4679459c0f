"""The paper's segmentation metrics, kept exactly (to compare with its table).

Paper (docs/metrics.md, docs/flaws.md), :func:`paper_case_metrics` and :func:`paper_summary`:
- a predicted head label becomes background (:func:`head_to_background`);
- confusion matrix, Cohen's kappa, accuracy and per-class F1 are **pooled over the voxels where the ground
  truth is a tumour label** (false positives outside the tumour never count) -- :func:`restricted_confusion`;
- Dice per scan and tumour class, 1.0 when both masks are empty, averaged over scans and classes;
- HD95 and ASSD per scan and class as medpy 0.5.2 computes them, **without voxel spacing** (voxels); ASSD
  pools the surface distances of both directions (:func:`medpy_assd`); a pair with an empty mask raises in
  medpy and was silently dropped; the table value is the mean over classes of the per-class mean over the
  scans that have a value (:func:`class_then_mean`);
- Pearson r of the total tumour volume per scan; Bland-Altman of the same volumes.
The corrected metrics are in :mod:`gliomagen.segmentation.corrected`, the shared overlap and surface-distance
primitives in :mod:`gliomagen.segmentation.overlap`; both are re-exported here under their import path
before the split. ``docs/metrics.md`` tabulates every definition and empty-mask convention of the three modes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from gliomagen.config import Config
from gliomagen.segmentation.corrected import (
    BRATS_REGIONS,
    MATCH_THRESHOLD,
    binary_pair_metrics,
    corrected_case_metrics,
    lesion_metrics,
    region_values,
    worst_distance,
)
from gliomagen.segmentation.overlap import (
    EmptyMaskError,
    _surface_distances,
    dice_paper,
    medpy_assd,
    medpy_hd95,
)

__all__ = [
    "BRATS_REGIONS",
    "EmptyMaskError",
    "MATCH_THRESHOLD",
    "PaperSummary",
    "_surface_distances",
    "accuracy",
    "binary_pair_metrics",
    "bland_altman",
    "class_then_mean",
    "corrected_case_metrics",
    "dice_paper",
    "f1_per_class",
    "head_to_background",
    "kappa",
    "lesion_metrics",
    "medpy_assd",
    "medpy_hd95",
    "paper_case_metrics",
    "paper_summary",
    "pearson_r",
    "region_values",
    "restricted_confusion",
    "total_tumour_volume",
    "tumour_values",
    "worst_distance",
]


# ------------------------------------------------------------------------------------------- labels
def tumour_values(cfg: Config) -> list[int]:
    """Prepared values of the tumour labels, in label-map order."""
    return [lab.value for lab in cfg.tumour_labels]


def head_to_background(pred: np.ndarray, cfg: Config) -> np.ndarray:
    """The paper's post-processing: every non-tumour foreground label (the head) becomes background."""
    out = pred.copy()
    out[~np.isin(pred, tumour_values(cfg))] = 0
    return out


# ------------------------------------------------------------------------------------ paper definitions
def restricted_confusion(gt: np.ndarray, pred: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Confusion matrix over the voxels whose ground truth is one of ``classes[1:]`` (the tumour labels).

    Args:
        gt: ground-truth label map.
        pred: predicted label map (head already set to background).
        classes: ``[0, *tumour values]``; rows are ground truth, columns prediction, in this order. A
            predicted value not in ``classes`` counts as background (column 0).

    Returns:
        ``(K, K)`` int64 counts; row 0 is zero by construction.
    """
    classes = list(classes)
    lut = np.zeros(256, dtype=np.int64)
    for i, c in enumerate(classes):
        lut[c] = i
    inside = np.isin(gt, classes[1:])
    g = lut[gt[inside].astype(np.int64)]
    p = lut[np.clip(pred[inside].astype(np.int64), 0, 255)]
    k = len(classes)
    return np.bincount(g * k + p, minlength=k * k).reshape(k, k)


def kappa(cm: np.ndarray) -> float:
    """Cohen's kappa of a confusion matrix (rows truth, columns prediction)."""
    n = cm.sum()
    if n == 0:
        return float("nan")
    po = np.trace(cm) / n
    pe = float((cm.sum(axis=1) * cm.sum(axis=0)).sum()) / n**2
    return float((po - pe) / (1 - pe)) if pe < 1 else float("nan")


def accuracy(cm: np.ndarray) -> float:
    n = cm.sum()
    return float(np.trace(cm) / n) if n else float("nan")


def f1_per_class(cm: np.ndarray) -> np.ndarray:
    """F1 = 2 TP / (2 TP + FP + FN) per class from a pooled confusion matrix (NaN where undefined)."""
    tp = np.diag(cm).astype(float)
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def total_tumour_volume(mask: np.ndarray, cfg: Config) -> int:
    """Number of tumour voxels (the paper's volume for Pearson r and Bland-Altman)."""
    return int(np.isin(mask, tumour_values(cfg)).sum())


def paper_case_metrics(
    gt: np.ndarray, pred: np.ndarray, cfg: Config
) -> tuple[list[dict[str, object]], np.ndarray]:
    """The paper's per-scan values for one case.

    Args:
        gt: ground truth (prepared label values).
        pred: prediction (prepared label values; the head is set to background here).
        cfg: run configuration (label map).

    Returns:
        one row per tumour class (``label, dice, hd95_vox, assd_vox``; distances NaN where medpy would
        raise, i.e. the pair the paper dropped) and the scan's restricted confusion matrix.
    """
    pred = head_to_background(pred, cfg)
    rows: list[dict[str, object]] = []
    for lab in cfg.tumour_labels:
        g, p = gt == lab.value, pred == lab.value
        try:
            hd, asd = medpy_hd95(p, g), medpy_assd(p, g)
        except EmptyMaskError:
            hd = asd = float("nan")
        rows.append({"label": lab.name, "dice": dice_paper(g, p), "hd95_vox": hd, "assd_vox": asd})
    return rows, restricted_confusion(gt, pred, [0, *tumour_values(cfg)])


def bland_altman(reference: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Bias and 95 % limits of agreement of ``measured - reference`` (Bland & Altman 1986)."""
    ref, mea = np.asarray(reference, float), np.asarray(measured, float)
    diff = mea - ref
    bias = float(diff.mean()) if diff.size else float("nan")
    sd = float(diff.std(ddof=1)) if diff.size > 1 else float("nan")
    return {"bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation (NaN for fewer than two scans or a constant series)."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.pearsonr(a, b)[0])


# ------------------------------------------------------------------------------------------- summaries
@dataclass
class PaperSummary:
    """The paper's table row for one configuration."""

    kappa: float
    accuracy: float
    f1: dict[str, float]
    avg_dice: float
    pearson_r: float
    hd95: float
    assd: float
    n_hd_pairs: int
    n_dropped_pairs: int
    bland_altman: dict[str, float]
    hd95_per_class: dict[str, float] = field(default_factory=dict)
    assd_per_class: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, float]:
        return {
            "Kappa": self.kappa,
            "Acc.": self.accuracy,
            **{f"F1 {k}": v for k, v in self.f1.items()},
            "avg Dice": self.avg_dice,
            "Pearson r": self.pearson_r,
            "HD95": self.hd95,
            "ASSD": self.assd,
        }


def class_then_mean(
    per_class: list[dict[str, object]], key: str, names: Sequence[str]
) -> tuple[float, dict[str, float]]:
    """The original's distance summary: per class the mean over the scans where it has a value, then the
    mean of the class means.

    A class often absent after treatment (NETC) has few scans with a distance; averaging all (scan, class)
    pairs at once would let the frequent classes outvote it, so each class counts once.

    Args:
        per_class: rows with ``label`` and ``key`` (NaN where medpy raised, i.e. an empty side).
        key: ``hd95_vox`` or ``assd_vox``.
        names: tumour class names, in table order.

    Returns:
        (mean of the class means over the classes with any value, {class: its mean or NaN}).
    """
    means = {}
    for name in names:
        values = np.array([r[key] for r in per_class if r["label"] == name], float)
        values = values[np.isfinite(values)]
        means[name] = float(values.mean()) if values.size else float("nan")
    finite = [v for v in means.values() if np.isfinite(v)]
    return (float(np.mean(finite)) if finite else float("nan")), means


def paper_summary(
    per_class: list[dict[str, object]],
    confusion: np.ndarray,
    volumes_gt: Sequence[float],
    volumes_pred: Sequence[float],
    cfg: Config,
) -> PaperSummary:
    """Aggregate as the paper did: pooled confusion, mean Dice over scans x classes, and for HD95/ASSD the
    mean over classes of the per-class mean over the scans where the distance exists
    (:func:`class_then_mean`; the dropped pairs are counted in ``n_dropped_pairs``)."""
    f1 = f1_per_class(confusion)
    names = [lab.name for lab in cfg.tumour_labels]
    dice = np.array([r["dice"] for r in per_class], float)
    hd = np.array([r["hd95_vox"] for r in per_class], float)
    ok = ~np.isnan(hd)
    hd95, hd95_classes = class_then_mean(per_class, "hd95_vox", names)
    assd, assd_classes = class_then_mean(per_class, "assd_vox", names)
    return PaperSummary(
        kappa=kappa(confusion),
        accuracy=accuracy(confusion),
        f1={n: float(f1[i + 1]) for i, n in enumerate(names)},
        avg_dice=float(dice.mean()) if dice.size else float("nan"),
        pearson_r=pearson_r(volumes_gt, volumes_pred),
        hd95=hd95,
        assd=assd,
        n_hd_pairs=int(ok.sum()),
        n_dropped_pairs=int((~ok).sum()),
        bland_altman=bland_altman(volumes_gt, volumes_pred),
        hd95_per_class=hd95_classes,
        assd_per_class=assd_classes,
    )
