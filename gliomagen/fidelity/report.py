"""Tables and figures of the fidelity evaluation for notebook 05 (and notebook 07).

Every table names the profile and the extractor of each number and keeps the paper's reported values in
their own, labelled columns (``gliomagen.reference.PAPER_FIDELITY``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gliomagen.cases import load_case
from gliomagen.config import MODALITIES, Config
from gliomagen.fidelity.metrics import axial_axis, axial_slices
from gliomagen.reference import PAPER_FIDELITY

ROWS: tuple[str, ...] = (*MODALITIES, "mean")
#: table column -> (metric name in fidelity.json, key in PAPER_FIDELITY, digits)
COLUMNS: dict[str, tuple[str, str, int]] = {
    "MS-SSIM ↑": ("MS-SSIM 2D", "ms_ssim", 4),
    "FID ↓": ("FID", "fid", 4),
    "KID ↓": ("KID", "kid", 4),
}


def _fmt(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    magnitude = abs(float(value))
    if magnitude != 0 and (magnitude >= 1e5 or magnitude < 10 ** -(digits - 1)):
        return f"{float(value):.{digits - 1}e}"
    return f"{float(value):.{digits}f}"


def _cell(row: pd.Series | None, digits: int, style: str, key: str = "value") -> str:
    """One table cell of ``row``'s ``key`` (``value`` or ``ratio``) in ``style``: ``value`` (number only),
    ``pm`` (number ± spread) or ``ci`` (number [interval])."""
    if row is None:
        return "–"
    if row["status"] != "ok":
        return str(row["status"])
    value = row.get(key)
    if style == "value":
        return _fmt(value, digits)
    low_key, high_key = ("ci_low", "ci_high") if key == "value" else (f"{key}_ci_low", f"{key}_ci_high")
    low = row.get(low_key)
    if style == "pm" or low is None or pd.isna(low):
        spread = row.get("spread") if key == "value" else None
        shown = "" if spread is None or pd.isna(spread) else f" ± {_fmt(spread, digits)}"
        return f"{_fmt(value, digits)}{shown}"
    return f"{_fmt(value, digits)} [{_fmt(low, digits)}, {_fmt(row.get(high_key), digits)}]"


def _lookup(
    frame: pd.DataFrame, modality: str, metric: str, variant: str, extractor: str
) -> pd.Series | None:
    hit = frame[
        frame["modality"].eq(modality)
        & frame["metric"].eq(metric)
        & frame["variant"].eq(variant)
        & (frame["extractor"].eq(extractor) | frame["extractor"].eq(""))
    ]
    return None if hit.empty else hit.iloc[0]


def fidelity_table(results: dict[str, Any], extractor: str) -> pd.DataFrame:
    """The paper's Fig. 11 layout with the paper's numbers beside ours, for one FID/KID extractor.

    Column groups: ``paper (reported)``; ``<profile>: paper definition`` (mean ± the original's spread, as
    the original computed it: ``np.std`` over slices for MS-SSIM, of the paired per-slice feature distances
    for FID, over the 10 disjoint subsets for KID); ``<profile>: corrected`` (estimate [95% CI from
    resampling subjects], empty slices excluded); ``<profile>: real-vs-real`` (the same corrected metric
    between two halves of the real validation subjects: the floor a generator is measured against) and
    ``<profile>: synthetic / real-vs-real`` (ratio of the matched synthetic value to that floor, with its
    interval). The *mean* row is mean ± SD over modalities (the ratio row: mean of the ratios).
    """
    frame = pd.DataFrame(results["results"])
    profile = results.get("settings", {}).get("profile", "?")
    header = {
        "paper": "paper (reported, inception-torchvision)",
        "ours_paper": f"{profile}: paper definition ({extractor})",
        "ours_corrected": f"{profile}: corrected ({extractor})",
        "floor": f"{profile}: real-vs-real ({extractor})",
        "ratio": f"{profile}: synthetic / real-vs-real ({extractor})",
    }
    groups = (
        ("ours_paper", "paper", "pm", "value"),
        ("ours_corrected", "corrected", "ci", "value"),
        ("floor", "real-vs-real", "ci", "value"),
        ("ratio", "real-vs-real", "ci", "ratio"),
    )
    table: dict[tuple[str, str], list[str]] = {}
    for column, (metric, key, digits) in COLUMNS.items():
        table[(header["paper"], column)] = [
            f"{PAPER_FIDELITY[m][key][0]} ± {PAPER_FIDELITY[m][key][1]}" for m in ROWS
        ]
        for group, variant, style, field in groups:
            table[(header[group], column)] = [
                _cell(
                    _lookup(frame, m, metric, variant, extractor),
                    digits if field == "value" else 3,
                    style if m != "mean" else ("pm" if field == "value" else "value"),
                    field,
                )
                for m in ROWS
            ]
    out = pd.DataFrame(table, index=list(ROWS))
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    out.index.name = "modality"
    return out


ADDITIONAL: dict[str, tuple[str, str, int]] = {
    "MS-SSIM 3D ↑": ("MS-SSIM 3D", "", 4),
    "SSIM 3D ↑": ("SSIM 3D", "", 4),
    "PSNR 3D (dB) ↑": ("PSNR 3D (dB)", "", 2),
    "FRD v1 ↓ (log d²)": ("FRD", "frd-score v1 (pyradiomics)", 3),
}
#: row label of each source in :func:`additional_table` -> (variant, field of the row)
ADDITIONAL_SOURCES: dict[str, tuple[str, str]] = {
    "synthetic vs real": ("corrected", "value"),
    "real-vs-real": ("real-vs-real", "value"),
    "synthetic / real-vs-real": ("real-vs-real", "ratio"),
}


def additional_table(results: dict[str, Any]) -> pd.DataFrame:
    """Metrics the paper did not report: 3D MS-SSIM, SSIM, PSNR (subject CI) and FRD, per modality, each
    beside its real-vs-real floor and the ratio synthetic / real-vs-real (same subjects; for FRD the ratio
    of the squared distances, as FRD itself is a log). Rows: (modality, source)."""
    frame = pd.DataFrame(results["results"])
    index, data = [], {column: [] for column in ADDITIONAL}
    for m in ROWS:
        for source, (variant, field) in ADDITIONAL_SOURCES.items():
            index.append((m, source))
            for column, (metric, extractor, digits) in ADDITIONAL.items():
                # FRD has no interval (one distance per modality); ratios get 3 decimals
                style = "value" if metric == "FRD" or m == "mean" and field == "ratio" else "ci"
                if m == "mean" and field == "value":
                    style = "pm"
                row = _lookup(frame, m, metric, variant, extractor)
                data[column].append(_cell(row, digits if field == "value" else 3, style, field))
    out = pd.DataFrame(data, index=pd.MultiIndex.from_tuples(index, names=["modality", "source"]))
    return out


def extractor_summary(results: dict[str, Any]) -> pd.DataFrame:
    """Which extractor produced numbers, and why the others did not."""
    rows = []
    for name, state in results.get("extractors", {}).items():
        rows.append(
            {
                "extractor": name,
                "status": state["status"],
                "about": state.get("description", state.get("message", "")),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- figures
def plot_per_subject(per_subject: pd.DataFrame, title: str = "") -> plt.Figure:
    """Per-subject distributions per modality: 2D MS-SSIM (non-empty slices), 3D MS-SSIM, PSNR."""
    panels = (
        ("ms_ssim_2d_nonempty_mean", "2D MS-SSIM (non-empty slices)"),
        ("ms_ssim_3d", "3D MS-SSIM"),
        ("psnr_db", "PSNR (dB)"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), constrained_layout=True)
    rng = np.random.default_rng(0)
    for ax, (column, label) in zip(axes, panels, strict=True):
        data = [
            per_subject.loc[per_subject["modality"].eq(m), column].to_numpy(dtype=float) for m in MODALITIES
        ]
        data = [d[np.isfinite(d)] for d in data]
        ax.boxplot(data, showfliers=False, widths=0.5)
        ax.set_xticks(range(1, len(MODALITIES) + 1), MODALITIES)
        for i, values in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=14, alpha=0.8, zorder=3)
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("per subject")
    if title:
        fig.suptitle(title)
    return fig


def plot_slice_profile(per_slice: pd.DataFrame, title: str = "") -> plt.Figure:
    """2D MS-SSIM along the axial axis (mean over subjects); empty slices marked — they score ~1."""
    fig, axes = plt.subplots(1, len(MODALITIES), figsize=(14, 3), sharey=True, constrained_layout=True)
    for ax, modality in zip(axes, MODALITIES, strict=True):
        sub = per_slice[per_slice["modality"].eq(modality)]
        curve = sub.groupby("slice")["ms_ssim"].agg(["mean", "min", "max"])
        empty = sub.groupby("slice")["empty"].all()
        ax.fill_between(curve.index, curve["min"], curve["max"], alpha=0.25, label="range over subjects")
        ax.plot(curve.index, curve["mean"], lw=1.5, label="mean")
        ax.scatter(
            curve.index[empty.to_numpy()],
            curve["mean"][empty.to_numpy()],
            c="red",
            s=10,
            zorder=3,
            label="empty in every subject",
        )
        ax.set_title(modality)
        ax.set_xlabel("axial slice")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("2D MS-SSIM")
    axes[0].legend(fontsize=7, loc="center")
    if title:
        fig.suptitle(title)
    return fig


def plot_intervals(results: dict[str, Any], metric: str = "FID") -> plt.Figure:
    """Corrected ``metric`` per modality and extractor with its subject-bootstrap interval."""
    frame = pd.DataFrame(results["results"])
    sub = frame[frame["metric"].eq(metric) & frame["variant"].eq("corrected") & frame["status"].eq("ok")]
    sub = sub[sub["modality"].isin(MODALITIES)]
    fig, ax = plt.subplots(figsize=(6, 3.2), constrained_layout=True)
    extractors = list(dict.fromkeys(sub["extractor"]))
    for k, name in enumerate(extractors):
        rows = sub[sub["extractor"].eq(name)].set_index("modality").reindex(list(MODALITIES))
        x = np.arange(len(MODALITIES)) + (k - (len(extractors) - 1) / 2) * 0.15
        value = rows["value"].astype(float).to_numpy()
        low = value - rows["ci_low"].astype(float).to_numpy()
        high = rows["ci_high"].astype(float).to_numpy() - value
        ax.errorbar(x, value, yerr=[low, high], fmt="o", capsize=4, label=name)
    ax.set_xticks(range(len(MODALITIES)), MODALITIES)
    ax.set_ylabel(f"{metric} (corrected)")
    ax.set_title(f"{metric} with {int(results['settings']['confidence'] * 100)}% subject-bootstrap intervals")
    ax.grid(axis="y", alpha=0.3)
    if extractors:
        ax.legend(fontsize=8)
    return fig


def _display(slice2d: np.ndarray) -> np.ndarray:
    return np.rot90(slice2d)  # voxel axes (x, y) shown with y up, as radiological viewers orient RAS data


def plot_slice_pairs(cfg: Config, case_ids: list[str], title: str = "") -> plt.Figure:
    """Real and generated axial slices through the largest tumour cross-section, per case and modality."""
    real_root, fake_root = cfg.paths.prepared / "val", cfg.paths.synthetic / "val"
    fig, axes = plt.subplots(
        len(case_ids),
        2 * len(MODALITIES),
        figsize=(2 * 2 * len(MODALITIES) * 0.9, 2.1 * len(case_ids)),
        squeeze=False,
        constrained_layout=True,
    )
    tumour = [lab.value for lab in cfg.tumour_labels]
    for r, case_id in enumerate(case_ids):
        real = load_case(Path(real_root) / case_id)
        fake = load_case(Path(fake_root) / case_id, with_seg=False)
        axis = axial_axis(real.affine)
        lesion = axial_slices(np.isin(real.mask, tumour).astype(np.uint8), axis).reshape(
            real.mask.shape[axis], -1
        )
        k = int(lesion.sum(1).argmax()) if lesion.any() else real.mask.shape[axis] // 2
        for c, modality in enumerate(MODALITIES):
            for j, (case, kind) in enumerate(((real, "real"), (fake, "generated"))):
                ax = axes[r, 2 * c + j]
                ax.imshow(_display(axial_slices(case.image[c], axis)[k]), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{modality} {kind}", fontsize=9)
            if c == 0:
                axes[r, 0].set_ylabel(f"{case_id}\nslice {k}", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
