"""Figures of notebook 01: dataset overview, label volumes, the head label, modalities with the mask."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gliomagen.cases import load_case
from gliomagen.config import MODALITIES, Config
from gliomagen.data.head import head_steps, relabel
from gliomagen.data.validate import RawCase, load_raw_case
from gliomagen.figures.palette import add_label_legend, label_cmap
from gliomagen.figures.slices import lesion_slice


def overview(table: pd.DataFrame) -> pd.DataFrame:
    """Scans and patients per split and QC outcome (one row per split, plus a total)."""
    scans = pd.crosstab(table["split"], table["qc_status"], margins=True, margins_name="total")
    patients = table.groupby("split")["patient"].nunique()
    patients["total"] = table["patient"].nunique()
    scans.columns = [f"scans {c}" for c in scans.columns]
    scans["patients"] = patients
    return scans


def label_volumes(table: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Long table of tumour label volumes (ml, prepared grid) of the usable scans."""
    usable = table[table["split"].isin(["train", "val"])]
    rows = []
    for lab in cfg.tumour_labels:
        for _, r in usable.iterrows():
            rows.append({"id": r["id"], "split": r["split"], "label": lab.name,
                         "ml": r[f"voxels_{lab.name}"] * r["voxel_ml"]})  # fmt: skip
    return pd.DataFrame(rows)


def plot_label_volumes(volumes: pd.DataFrame) -> Figure:
    """Strip + box plot of label volumes per label, coloured by split."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7, 3.5))
    sns.boxplot(data=volumes, x="label", y="ml", color="0.9", showfliers=False, ax=ax)
    sns.stripplot(data=volumes, x="label", y="ml", hue="split", dodge=False, size=5, ax=ax)
    ax.set_ylabel("volume (ml)")
    ax.set_xlabel("")
    ax.set_title("Tumour label volumes per scan (prepared grid)")
    fig.tight_layout()
    return fig


def _show(ax: Axes, image: np.ndarray, title: str) -> None:
    # rows of the displayed array = second voxel axis (anterior up), as radiologists view axial slices
    ax.imshow(np.rot90(image), cmap="gray", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def plot_head_label(cfg: Config, case_dir: str | Path) -> Figure:
    """The head-label rule on one raw scan: source image, Otsu, closing + filling, original vs new mask."""
    case_dir = Path(case_dir)
    patient, timepoint = case_dir.name.split("-")[-2:]
    scan = load_raw_case(RawCase(case_dir.name, case_dir, patient, timepoint), cfg.data.labels)
    steps = head_steps(scan.images, cfg.data.head.source, cfg.data.head.closing_radius)
    original = relabel(scan.seg, cfg.data.labels)
    from gliomagen.data.head import prepared_mask

    final = prepared_mask(
        scan.seg, scan.images, cfg.data.labels, cfg.data.head.source, cfg.data.head.closing_radius
    )
    z = lesion_slice(final, [lab.value for lab in cfg.tumour_labels], axis=2)
    source = "t2f" if cfg.data.head.source == "multi" else cfg.data.head.source
    cmap, top = label_cmap(cfg)
    fig, axes = plt.subplots(1, 5, figsize=(13, 3.2))
    _show(axes[0], scan.images[source][:, :, z], f"{source} (raw)")
    _show(axes[1], steps["otsu"][:, :, z], f"Otsu ({cfg.data.head.source})")
    _show(axes[2], steps["largest"][:, :, z], f"closing r={cfg.data.head.closing_radius}, fill, largest")
    for ax, mask, title in (
        (axes[3], original, "before: BraTS labels"),
        (axes[4], final, "after: + head label"),
    ):
        _show(ax, scan.images[source][:, :, z], title)
        ax.imshow(np.rot90(mask[:, :, z]), cmap=cmap, vmin=0, vmax=top, interpolation="nearest")
    fig.suptitle(f"Head label of {case_dir.name} (axial slice {z})", fontsize=10)
    fig.tight_layout()
    add_label_legend(fig, cfg)
    return fig


def plot_cases(cfg: Config, case_dirs: list[Path]) -> Figure:
    """The four prepared modalities and the mask overlay, one row per case (slice with most lesion)."""
    cmap, top = label_cmap(cfg)
    tumour = [lab.value for lab in cfg.tumour_labels]
    fig, axes = plt.subplots(len(case_dirs), 5, figsize=(11, 2.6 * len(case_dirs)), squeeze=False)
    for row, case_dir in zip(axes, case_dirs, strict=True):
        case = load_case(case_dir)
        z = lesion_slice(case.mask, tumour, axis=2)
        for ax, channel, name in zip(row, case.image, MODALITIES, strict=False):
            _show(ax, channel[:, :, z], f"{case.case_id[-9:]} {name}")
        _show(row[4], case.image[3][:, :, z], "t2f + mask")
        row[4].imshow(np.rot90(case.mask[:, :, z]), cmap=cmap, vmin=0, vmax=top, interpolation="nearest")
    fig.tight_layout()
    add_label_legend(fig, cfg)
    return fig
