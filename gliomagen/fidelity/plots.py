"""Figures of the fidelity stage for notebook 05 (and notebook 07): each function returns a figure.

The slice shown for a case is the one with the largest tumour cross-section
(:func:`gliomagen.figures.slices.lesion_slice`), across the axial voxel axis of the volume's affine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gliomagen.cases import load_case
from gliomagen.config import MODALITIES, Config
from gliomagen.fidelity.metrics import axial_axis, axial_slices
from gliomagen.fidelity.outputs import FidelityResults, as_results, read_conditioning
from gliomagen.fidelity.pairs import find_pairs
from gliomagen.figures.slices import lesion_slice


def plot_per_subject(per_subject: pd.DataFrame, title: str = "") -> Figure:
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


def plot_slice_profile(per_slice: pd.DataFrame, title: str = "") -> Figure:
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


def plot_intervals(results: FidelityResults | Mapping[str, Any], metric: str = "FID") -> Figure:
    """Corrected ``metric`` per modality and extractor with its subject-bootstrap interval."""
    results = as_results(results)
    frame = results.frame()
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
    ax.set_title(f"{metric} with {int(results.settings['confidence'] * 100)}% subject-bootstrap intervals")
    ax.grid(axis="y", alpha=0.3)
    if extractors:
        ax.legend(fontsize=8)
    return fig


def _display(slice2d: np.ndarray) -> np.ndarray:
    return np.rot90(slice2d)  # voxel axes (x, y) shown with y up, as radiological viewers orient RAS data


def plot_slice_pairs(cfg: Config, case_ids: list[str], title: str = "") -> Figure:
    """Real and generated axial slices through the largest tumour cross-section, per case and modality."""
    pairs = {pair.case_id: pair for pair in find_pairs(cfg)[0]}
    fig, axes = plt.subplots(
        len(case_ids),
        2 * len(MODALITIES),
        figsize=(2 * 2 * len(MODALITIES) * 0.9, 2.1 * len(case_ids)),
        squeeze=False,
        constrained_layout=True,
    )
    tumour = [lab.value for lab in cfg.tumour_labels]
    for r, case_id in enumerate(case_ids):
        real = load_case(pairs[case_id].real_dir)
        fake = load_case(pairs[case_id].fake_dir, with_seg=False)
        axis = axial_axis(real.affine)
        k = lesion_slice(real.mask, tumour, axis)
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


def plot_mask_following(cfg: Config, table: pd.DataFrame | None = None, n: int | None = None) -> Figure:
    """Real (upper) and generated (lower) axial slices through the largest lesion cross-section of each
    validation case, all four modalities, with the conditioning mask's tumour outline drawn on every panel:
    the lesion of a mask-following volume fills the outline. Panel titles give the case's lesion contrast
    (and, on the synthetic row, Pearson r in the head).

    Args:
        cfg: run configuration.
        table: :func:`gliomagen.fidelity.conditioning.evaluate_conditioning`'s table (read from the run
            when omitted).
        n: at most this many cases (default: all).
    """
    if table is None:
        table = read_conditioning(cfg.paths, cfg.profile)
    pairs, _ = find_pairs(cfg)
    pairs = pairs[:n] if n else pairs
    tumour_values = [lab.value for lab in cfg.tumour_labels]
    fig, axes = plt.subplots(
        2 * len(pairs), len(MODALITIES), figsize=(2.1 * len(MODALITIES), 4.3 * len(pairs)), squeeze=False
    )
    for k, pair in enumerate(pairs):
        real = load_case(pair.real_dir)
        fake = load_case(pair.fake_dir, with_seg=False)
        axis = axial_axis(real.affine)
        tumour = axial_slices(np.isin(real.mask, tumour_values).astype(float), axis)
        z = lesion_slice(real.mask, tumour_values, axis)
        rows = table[table["case_id"] == pair.case_id].set_index("modality")
        for r, (label, image) in enumerate((("real", real.image), ("synthetic", fake.image))):
            for c, modality in enumerate(MODALITIES):
                ax = axes[2 * k + r, c]
                ax.imshow(axial_slices(image[c], axis)[z].T, cmap="gray", vmin=0, vmax=1, origin="lower")
                if tumour[z].any():
                    ax.contour(tumour[z].T, levels=[0.5], colors="r", linewidths=0.8)
                if modality in rows.index:
                    m = rows.loc[modality]
                    text = f"contrast {m['contrast_' + ('real' if r == 0 else 'synthetic')]:.2f}"
                    if r == 1:
                        text += f", r {m['pearson_r']:.2f}"
                    ax.set_title(f"{modality}: {text}" if k == 0 and r == 0 else text, fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[2 * k + r, 0].set_ylabel(f"{pair.case_id}\n{label}", fontsize=7)
    fig.suptitle(
        "Validation masks: real (upper) vs generated from the mask (lower); red = tumour outline of the mask",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.25 / (4.3 * len(pairs))))  # keep the title off the first row
    return fig
