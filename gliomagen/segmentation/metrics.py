"""Segmentation metrics: the paper's definitions (kept exactly, to compare with its table) and corrected ones.

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
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage, stats
from scipy.optimize import linear_sum_assignment

from gliomagen.config import Config

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


class EmptyMaskError(ValueError):
    """medpy's behaviour: a surface distance needs a non-empty mask on both sides."""


# ------------------------------------------------------------------------------------------- labels
def tumour_values(cfg: Config) -> list[int]:
    """Prepared values of the tumour labels, in label-map order."""
    return [lab.value for lab in cfg.tumour_labels]


def region_values(cfg: Config) -> dict[str, list[int]]:
    """BraTS region name -> prepared label values (looked up by label name, never hard-coded)."""
    by_name = {lab.name: lab.value for lab in cfg.data.labels}
    missing = sorted({n for names in BRATS_REGIONS.values() for n in names} - set(by_name))
    if missing:
        raise KeyError(f"label map lacks {missing} needed for the BraTS regions; labels: {sorted(by_name)}")
    return {region: [by_name[n] for n in names] for region, names in BRATS_REGIONS.items()}


def head_to_background(pred: np.ndarray, cfg: Config) -> np.ndarray:
    """The paper's post-processing: every non-tumour foreground label (the head) becomes background."""
    out = pred.copy()
    out[~np.isin(pred, tumour_values(cfg))] = 0
    return out


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm from a 4x4 affine (column norms)."""
    return tuple(float(s) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


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


def dice_paper(gt: np.ndarray, pred: np.ndarray) -> float:
    """Dice of two binary masks, 1.0 when both are empty (the paper's rule)."""
    a, b = gt.astype(bool), pred.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def _surface_distances(
    result: np.ndarray, reference: np.ndarray, spacing: Sequence[float] | None = None, connectivity: int = 1
) -> np.ndarray:
    """Distances from the border voxels of ``result`` to the border of ``reference`` (medpy's algorithm).

    medpy (``medpy.metric.binary.__surface_distances``) is not installable beside our pins, so this repeats
    its exact math with scipy: border = mask XOR its binary erosion (cross-shaped structuring element for
    ``connectivity=1``; voxels on the array edge are border), then an exact Euclidean distance transform of
    the reference's non-border voxels, sampled with ``spacing`` (``None`` = voxel units).
    """
    result, reference = np.atleast_1d(result.astype(bool)), np.atleast_1d(reference.astype(bool))
    if not result.any():
        raise EmptyMaskError("the first array does not contain any binary object")
    if not reference.any():
        raise EmptyMaskError("the second array does not contain any binary object")
    footprint = ndimage.generate_binary_structure(result.ndim, connectivity)
    result_border = result ^ ndimage.binary_erosion(result, structure=footprint, iterations=1)
    reference_border = reference ^ ndimage.binary_erosion(reference, structure=footprint, iterations=1)
    dt = ndimage.distance_transform_edt(~reference_border, sampling=spacing)
    return dt[result_border]


def medpy_hd95(result: np.ndarray, reference: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """95th percentile of the pooled symmetric surface distances (medpy ``hd95``)."""
    d = np.hstack(
        (_surface_distances(result, reference, spacing), _surface_distances(reference, result, spacing))
    )
    return float(np.percentile(d, 95))


def medpy_assd(result: np.ndarray, reference: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """Average symmetric surface distance as medpy 0.5.x (the original's version) defines it.

    The surface distances of both directions are pooled into one list and averaged, so the direction with
    more border voxels weighs more. (medpy 0.4 averaged the two one-way means instead; the two agree only
    when both borders have the same number of voxels.) MONAI's symmetric ASSD pools the same way.
    """
    return float(
        np.concatenate(
            (_surface_distances(result, reference, spacing), _surface_distances(reference, result, spacing))
        ).mean()
    )


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
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.pearsonr(x, y)[0])


# --------------------------------------------------------------------------------------------- corrected
def worst_distance(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The volume's diagonal in mm: the penalty for a distance with one empty side."""
    return float(np.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing, strict=True))))


def binary_pair_metrics(gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float]) -> dict[str, object]:
    """Dice, HD95 (mm) and ASSD (mm) of two binary masks with explicit empty-case handling.

    HD95/ASSD come from MONAI (``compute_hausdorff_distance(percentile=95)``, symmetric
    ``compute_average_surface_distance``) with the voxel spacing.
    """
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

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
