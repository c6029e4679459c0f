"""Tables and figures of notebook 06 (segmentation): paper layout beside ours, distances, confusion
matrices, Bland-Altman plots, predicted masks per configuration, HQ score distribution."""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gliomagen.bootstrap import bootstrap_subjects
from gliomagen.cases import load_case
from gliomagen.config import Config
from gliomagen.figures.slices import lesion_slice
from gliomagen.io import load_nifti
from gliomagen.segmentation.export import FILE_ENDING, inverse_label_lut, real_case_dirs
from gliomagen.segmentation.metrics import bland_altman
from gliomagen.segmentation.nnunet import prediction_dir

PAPER_COLUMNS = [
    "Kappa",
    "Acc.",
    "F1 NETC",
    "F1 SNFH",
    "F1 ET",
    "F1 RC",
    "avg Dice",
    "Pearson r",
    "HD95",
    "ASSD",
]
#: colours of the two distance metrics (label colours come from gliomagen.figures.palette)
METRIC_COLOURS = {"HD95": "#4c72b0", "ASSD": "#dd8452"}


def paper_side_by_side(cfg: Config, ours: pd.DataFrame) -> pd.DataFrame:
    """The paper's Fig. 13 layout: for each data mix our row (this profile) above the paper's reported row.

    Our configurations are matched to the paper's mixes by position (profiles list them in the paper's order).
    """
    from gliomagen.reference import paper_segmentation_table

    paper = paper_segmentation_table()
    paper.columns = PAPER_COLUMNS
    rows = []
    for i, conf in enumerate(cfg.segment.configurations):
        mix = paper.index[i] if i < len(paper) else conf.name
        mine = ours[ours["configuration"] == conf.name]
        values = mine.iloc[0][PAPER_COLUMNS] if len(mine) else pd.Series(np.nan, index=PAPER_COLUMNS)
        rows.append({"data mix": mix, "source": f"ours ({cfg.profile}): {conf.name}", **values.to_dict()})
        if i < len(paper):
            rows.append({"data mix": mix, "source": "paper (reported)", **paper.iloc[i].to_dict()})
    return pd.DataFrame(rows).set_index(["data mix", "source"])


def corrected_table(
    corrected: pd.DataFrame,
    regions: tuple[str, ...] = ("ET", "TC", "WT", "NETC", "SNFH", "RC"),
    metrics: tuple[str, ...] = ("dice", "hd95_mm", "lesion_dice_penalised", "lesion_f1"),
) -> pd.DataFrame:
    """Wide table: one row per configuration, columns (metric, region)."""
    if corrected.empty:
        return corrected
    wide = corrected.pivot_table(index="configuration", columns="region", values=list(metrics), sort=False)
    return wide.reindex(columns=[(m, r) for m in metrics for r in regions if (m, r) in wide.columns])


def _bootstrap_ci(
    values: dict[str, np.ndarray],
    statistic: Callable[[list[np.ndarray]], float],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(list of per-case arrays)`` over cases
    (:func:`gliomagen.bootstrap.bootstrap_subjects`; NaN with fewer than two cases)."""
    rows = list(values.values())
    if len(rows) < 2:
        return float("nan"), float("nan")
    boot = bootstrap_subjects(lambda idx: statistic([rows[k] for k in idx]), len(rows), n_boot, seed, level)
    return boot.low, boot.high


def _paper_statistic(rows: list[np.ndarray]) -> float:
    """The paper's summary on per-case ``(class, value)`` rows: per class the mean over non-empty scans,
    then the mean over classes."""
    if not rows:
        return float("nan")
    stacked = np.vstack(rows)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_class = np.nanmean(stacked, axis=0)
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")


def _yerr(value: float, ci: tuple[float, float]) -> list[float]:
    low, high = ci
    if not (np.isfinite(value) and np.isfinite(low) and np.isfinite(high)):
        return [0.0, 0.0]
    return [max(value - low, 0.0), max(high - value, 0.0)]


def plot_distances(
    paper: pd.DataFrame,
    corrected: pd.DataFrame,
    paper_per_case: pd.DataFrame | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Figure:
    """HD95/ASSD per configuration: the paper's definition (voxels, empty pairs dropped) and ours (mm).

    Bars are the summary values; error bars are 95 % percentile-bootstrap intervals over validation scans.
    In the corrected panel a distance with one empty side is the volume's diagonal (the empty-mask
    penalty): the dashed line marks it and the number above each bar says how many values are penalties.

    Args:
        paper: one row per configuration with the paper's ``HD95`` and ``ASSD`` (voxels).
        corrected: per scan and region: ``hd95_mm``, ``assd_mm``, ``status``.
        paper_per_case: per scan and class: ``hd95_vox``, ``assd_vox`` (for the paper panel's intervals).
        n_boot: bootstrap resamples.
        seed: bootstrap seed.
    """
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    names = list(paper["configuration"]) if not paper.empty else []
    x = np.arange(len(names))
    width = 0.38
    for k, metric in enumerate(("HD95", "ASSD")):
        offset = (k - 0.5) * width
        heights, errors = [], []
        for name in names:
            value = float(paper.loc[paper["configuration"] == name, metric].iloc[0])
            ci = (float("nan"), float("nan"))
            if paper_per_case is not None and not paper_per_case.empty:
                part = paper_per_case[paper_per_case["configuration"] == name]
                wide = part.pivot_table(
                    index="case", columns="label", values=f"{metric.lower()}_vox", dropna=False
                )
                ci = _bootstrap_ci(
                    {c: wide.loc[c].to_numpy(float) for c in wide.index}, _paper_statistic, n_boot, seed
                )
            heights.append(value)
            errors.append(_yerr(value, ci))
        axes[0].bar(x + offset, heights, width, yerr=np.array(errors).T, capsize=3, color=METRIC_COLOURS[metric],
                    label=metric, error_kw={"lw": 0.8})  # fmt: skip
    axes[0].set_title("paper definition (voxels; pairs with an empty side dropped)", fontsize=9)
    axes[0].set_ylabel("voxels")
    penalty = float("nan")
    if not corrected.empty:
        flagged = corrected["status"].isin(["gt_empty", "pred_empty"]) if "status" in corrected else None
        if flagged is not None and flagged.any():
            penalty = float(corrected.loc[flagged, "hd95_mm"].max())
        for k, (metric, column) in enumerate((("HD95", "hd95_mm"), ("ASSD", "assd_mm"))):
            offset = (k - 0.5) * width
            for i, name in enumerate(names):
                part = corrected[corrected["configuration"] == name]
                if part.empty:
                    continue
                per_case = {c: g[column].to_numpy(float) for c, g in part.groupby("case")}
                value = float(part[column].mean())
                ci = _bootstrap_ci(per_case, lambda rows: float(np.mean(np.concatenate(rows))), n_boot, seed)
                axes[1].bar(i + offset, value, width, yerr=np.array([_yerr(value, ci)]).T, capsize=3,
                            color=METRIC_COLOURS[metric], label=metric if i == 0 else None, error_kw={"lw": 0.8})  # fmt: skip
                if flagged is not None:
                    n_pen = int(flagged[part.index].sum())
                    top = ci[1] if np.isfinite(ci[1]) else value
                    axes[1].annotate(f"{n_pen}/{len(part)}", (i + offset, top), ha="center", va="bottom",
                                     fontsize=6, color="#b2182b", xytext=(0, 2), textcoords="offset points")  # fmt: skip
        if np.isfinite(penalty):
            axes[1].axhline(penalty, color="#b2182b", ls="--", lw=0.9,
                            label=f"empty-mask penalty ({penalty:.0f} mm, volume diagonal)")  # fmt: skip
    axes[1].set_title(
        "corrected (mm, mean over scans and BraTS regions)\nred numbers: values that are the empty-mask penalty",
        fontsize=9,
    )
    axes[1].set_ylabel("mm")
    for ax in axes:
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.margins(y=0.12)
    fig.tight_layout()
    handles, labels = axes[1].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[0].get_legend_handles_labels()
    # one legend above both panels: it never covers a bar
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(handles), fontsize=8,
               frameon=False, title="error bars: 95 % bootstrap interval over validation scans", title_fontsize=7)  # fmt: skip
    return fig


def plot_confusions(confusion: dict[str, list[list[int]]], classes: list[str]) -> Figure:
    """Row-normalised restricted confusion matrices (rows: tumour ground truth, columns: prediction)."""
    n = max(len(confusion), 1)
    cols = min(n, 3)
    fig, axes = plt.subplots(
        -(-n // cols), cols, figsize=(4.2 * cols, 4.4 * -(-n // cols)), squeeze=False, layout="constrained"
    )
    for ax, (name, cm) in zip(axes.flat, confusion.items(), strict=False):
        m = np.asarray(cm, float)[1:]  # row 0 (background truth) is empty by the paper's restriction
        with np.errstate(invalid="ignore"):
            norm = m / m.sum(axis=1, keepdims=True)
        ax.imshow(np.nan_to_num(norm), vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(norm):
            ax.text(j, i, "-" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(classes)), classes, rotation=45)
        ax.set_yticks(range(len(classes) - 1), classes[1:])
        ax.set(title=name, xlabel="predicted", ylabel="ground truth")
    for ax in list(axes.flat)[len(confusion) :]:
        ax.axis("off")
    return fig


def _decimals(*values: float, significant: int = 3) -> int:
    """Decimals that give the largest of ``values`` ``significant`` digits (one precision for a panel)."""
    finite = [abs(v) for v in values if np.isfinite(v) and v != 0]
    if not finite:
        return 2
    return int(min(max(significant - 1 - np.floor(np.log10(max(finite))), 0), 6))


def _signed(value: float, decimals: int) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:+.{decimals}f}"


def plot_bland_altman(volumes: pd.DataFrame, unit: str = "ml", region: str = "total tumour") -> Figure:
    """Bland-Altman of the total tumour volume (prediction - truth) per configuration, shared axes.

    Args:
        volumes: per configuration and scan: ``gt_<unit>``, ``pred_<unit>``.
        unit: volume unit of the columns.
        region: what the volume measures (named in the title; the union of the tumour labels).
    """
    names = list(dict.fromkeys(volumes["configuration"])) if not volumes.empty else []
    cols = min(max(len(names), 1), 3)
    rows = -(-max(len(names), 1) // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, sharex=True, sharey=True
    )
    for ax, name in zip(axes.flat, names, strict=False):
        v = volumes[volumes["configuration"] == name]
        gt, pr = v[f"gt_{unit}"].to_numpy(float), v[f"pred_{unit}"].to_numpy(float)
        ba = bland_altman(gt, pr)
        ax.scatter((gt + pr) / 2, pr - gt, s=18, color="#4c72b0")
        for y, style in ((ba["bias"], "-"), (ba["loa_low"], "--"), (ba["loa_high"], "--")):
            if np.isfinite(y):
                ax.axhline(y, color="k", ls=style, lw=0.8)
        ax.axhline(0, color="0.7", lw=0.6, zorder=0)
        d = _decimals(ba["bias"], ba["loa_low"], ba["loa_high"])
        ax.set_title(
            f"{name} (n={len(v)})\nbias {_signed(ba['bias'], d)} {unit}, "
            f"limits {_signed(ba['loa_low'], d)} to {_signed(ba['loa_high'], d)}",
            fontsize=8,
        )
    for ax in axes[-1]:
        ax.set_xlabel(f"mean of prediction and truth ({unit})", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"prediction - truth ({unit})", fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    title = (
        f"Bland-Altman of the {region} volume (all tumour labels together) per data mix; "
        "solid: bias, dashed: 95 % limits of agreement"
    )
    fig.suptitle(textwrap.fill(title, width=int(fig.get_figwidth() * 14)), fontsize=9)
    fig.tight_layout()
    return fig


def plot_predictions(
    cfg: Config, case_ids: list[str] | None = None, modality: int = 1, max_cases: int = 3
) -> Figure:
    """Ground truth and each configuration's prediction on the same axial slice (most tumour) per case."""
    val = {d.name: d for d in real_case_dirs(cfg, "val")}
    case_ids = (case_ids or sorted(val))[:max_cases]
    names = [c.name for c in cfg.segment.configurations]
    from gliomagen.figures.palette import add_label_legend, label_cmap

    lut = inverse_label_lut(cfg)
    cmap, top = label_cmap(cfg)
    tumour = [lab.value for lab in cfg.tumour_labels]
    fig, axes = plt.subplots(
        len(case_ids), len(names) + 1, figsize=(2.3 * (len(names) + 1), 2.5 * len(case_ids)), squeeze=False
    )
    for row, case_id in enumerate(case_ids):
        case = load_case(val[case_id])
        z = lesion_slice(case.mask, tumour)
        panels: list[tuple[str, np.ndarray | None]] = [("ground truth", case.mask)]
        for name in names:
            path = prediction_dir(cfg, name) / f"{case_id}{FILE_ENDING}"
            pred = lut[np.asarray(load_nifti(path).dataobj).astype(np.uint8)] if path.is_file() else None
            panels.append((name, pred))
        for ax, (title, mask) in zip(axes[row], panels, strict=True):
            ax.imshow(np.rot90(case.image[modality][:, :, z]), cmap="gray")
            if mask is not None:
                ax.imshow(
                    np.rot90(np.ma.masked_equal(mask[:, :, z], 0)),
                    cmap=cmap,
                    vmin=0,
                    vmax=top,
                    interpolation="nearest",
                    alpha=0.8,
                )
            else:
                ax.text(0.5, 0.5, "no prediction", ha="center", transform=ax.transAxes, color="w")
            ax.set_title(title if row == 0 else "", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(f"{case_id}\nz={z}", fontsize=7)
    fig.tight_layout()
    add_label_legend(fig, cfg)
    return fig


def plot_hq_scores(scores: pd.DataFrame) -> Figure:
    """Distribution of the HQ agreement score, with the kept subset highlighted.

    When the kept and the dropped volumes cannot be told apart by their score (every score ties, or the
    lowest kept equals the highest dropped), the figure says that the subset is arbitrary at that boundary
    rather than presenting it as a selection.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    s = scores["score"].dropna()
    keep = scores["hq"].astype(bool)
    kept = scores.loc[keep, "score"].dropna()
    dropped = scores.loc[~keep, "score"].dropna()
    bins = np.linspace(0, 1, 21).tolist()
    ax.hist(s, bins=bins, color="#bbbbbb", label=f"all synthetic (n={len(s)})")
    ax.hist(kept, bins=bins, color="#1f77b4", label=f"high-quality subset (n={len(kept)})")
    ax.set(xlabel="tumour Dice of real-only nnU-Net vs conditioning mask", ylabel="volumes")
    ties = len(s) > 0 and s.nunique() == 1
    boundary_tie = len(kept) > 0 and len(dropped) > 0 and kept.min() <= dropped.max()
    if ties or boundary_tie:
        what = (
            f"all {len(s)} scores tie at {s.iloc[0]:.3g}"
            if ties
            else f"kept and dropped scores tie at {kept.min():.3g}"
        )
        ax.set_title(
            f"{what}: the score cannot rank these volumes,\nso the subset of {len(kept)} is arbitrary "
            "(taken in list order), not a selection",
            fontsize=8,
            color="#b2182b",
        )
    else:
        ax.set_title(f"kept: score >= {kept.min():.3g}" if len(kept) else "no volume kept", fontsize=8)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig
