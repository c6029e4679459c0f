"""Tables and figures of notebook 06 (segmentation): paper layout beside ours, distances, confusion
matrices, Bland-Altman plots, predicted masks per configuration, HQ score distribution."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap

from gliomagen.cases import load_case
from gliomagen.config import Config
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
LABEL_COLOURS = {"head": "#3b3b3b", "NETC": "#e41a1c", "SNFH": "#4daf4a", "ET": "#ffd92f", "RC": "#377eb8"}


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


def plot_distances(paper: pd.DataFrame, corrected: pd.DataFrame) -> plt.Figure:
    """HD95/ASSD per configuration: the paper's definition (voxels, empty pairs dropped) and ours (mm)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    names = list(paper["configuration"]) if not paper.empty else []
    x = np.arange(len(names))
    if names:
        axes[0].bar(x - 0.2, paper["HD95"], 0.4, label="HD95")
        axes[0].bar(x + 0.2, paper["ASSD"], 0.4, label="ASSD")
    axes[0].set(title="paper definition (voxels, empty pairs dropped)", ylabel="voxels")
    if not corrected.empty:
        mm = corrected.groupby("configuration", sort=False)[["hd95_mm", "assd_mm"]].mean().reindex(names)
        axes[1].bar(x - 0.2, mm["hd95_mm"], 0.4, label="HD95")
        axes[1].bar(x + 0.2, mm["assd_mm"], 0.4, label="ASSD")
    axes[1].set(title="corrected (mm, mean over BraTS regions, empty = worst)", ylabel="mm")
    for ax in axes:
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.legend()
    fig.tight_layout()
    return fig


def plot_confusions(confusion: dict[str, list[list[int]]], classes: list[str]) -> plt.Figure:
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


def plot_bland_altman(volumes: pd.DataFrame, unit: str = "ml") -> plt.Figure:
    """Bland-Altman of total tumour volume (prediction - truth) per configuration."""
    names = list(dict.fromkeys(volumes["configuration"])) if not volumes.empty else []
    cols = min(max(len(names), 1), 3)
    rows = -(-max(len(names), 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        v = volumes[volumes["configuration"] == name]
        gt, pr = v[f"gt_{unit}"].to_numpy(float), v[f"pred_{unit}"].to_numpy(float)
        ba = bland_altman(gt, pr)
        ax.scatter((gt + pr) / 2, pr - gt, s=18)
        for y, style in ((ba["bias"], "-"), (ba["loa_low"], "--"), (ba["loa_high"], "--")):
            if np.isfinite(y):
                ax.axhline(y, color="k", ls=style, lw=0.8)
        ax.set(
            title=f"{name}: bias {ba['bias']:.2f} {unit}",
            xlabel=f"mean volume ({unit})",
            ylabel=f"prediction - truth ({unit})",
        )
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _overlay_cmap(cfg: Config) -> tuple[ListedColormap, int]:
    top = max(lab.value for lab in cfg.data.labels)
    colours = ["none"] * (top + 1)
    for lab in cfg.data.labels:
        if lab.value:
            colours[lab.value] = LABEL_COLOURS.get(lab.name, "#ff00ff")
    return ListedColormap(colours), top


def plot_predictions(
    cfg: Config, case_ids: list[str] | None = None, modality: int = 1, max_cases: int = 3
) -> plt.Figure:
    """Ground truth and each configuration's prediction on the same axial slice (most tumour) per case."""
    val = {d.name: d for d in real_case_dirs(cfg, "val")}
    case_ids = (case_ids or sorted(val))[:max_cases]
    names = [c.name for c in cfg.segment.configurations]
    lut = inverse_label_lut(cfg)
    cmap, top = _overlay_cmap(cfg)
    tumour = [lab.value for lab in cfg.tumour_labels]
    fig, axes = plt.subplots(
        len(case_ids), len(names) + 1, figsize=(2.3 * (len(names) + 1), 2.5 * len(case_ids)), squeeze=False
    )
    for row, case_id in enumerate(case_ids):
        case = load_case(val[case_id])
        z = int(np.argmax(np.isin(case.mask, tumour).sum(axis=(0, 1))))
        panels = [("ground truth", case.mask)]
        for name in names:
            path = prediction_dir(cfg, name) / f"{case_id}{FILE_ENDING}"
            pred = lut[np.asarray(nib.load(str(path)).dataobj).astype(np.uint8)] if path.is_file() else None
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
                    alpha=0.75,
                )
            else:
                ax.text(0.5, 0.5, "no prediction", ha="center", transform=ax.transAxes, color="w")
            ax.set_title(title if row == 0 else "", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(f"{case_id}\nz={z}", fontsize=7)
    fig.tight_layout()
    return fig


def plot_hq_scores(scores: pd.DataFrame) -> plt.Figure:
    """Distribution of the HQ agreement score, with the kept subset highlighted."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    s = scores["score"].dropna()
    bins = np.linspace(0, 1, 21)
    ax.hist(s, bins=bins, color="#bbbbbb", label=f"all synthetic (n={len(s)})")
    kept = scores.loc[scores["hq"].astype(bool), "score"].dropna()
    ax.hist(kept, bins=bins, color="#1f77b4", label=f"high-quality subset (n={len(kept)})")
    ax.set(xlabel="tumour Dice of real-only nnU-Net vs conditioning mask", ylabel="volumes")
    ax.legend()
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: Path, dpi: int = 150) -> Path:
    """Save a figure (folder created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
