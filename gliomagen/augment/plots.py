"""Figures of notebook 03: augmented masks before/after, label-volume changes, the drawn parameters."""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure

from gliomagen.augment.outputs import AugmentationOutputs, read_manifest
from gliomagen.augment.stage import training_mask_dirs
from gliomagen.cases import load_mask, modality_path
from gliomagen.config import Config
from gliomagen.data.outputs import PrepareOutputs
from gliomagen.figures.palette import label_cmap
from gliomagen.figures.slices import lesion_slice


def plot_augmentation_examples(cfg: Config, aug_ids: Sequence[str] | None = None, n: int = 4) -> Figure:
    """Before/after figure: source T2-FLAIR with its mask, the augmented mask, and both lesion outlines.

    Args:
        cfg: run configuration.
        aug_ids: which augmented masks (default: the first ``n`` accepted, flipped ones first).
        n: number of rows when ``aug_ids`` is not given.
    """
    import matplotlib.pyplot as plt

    outputs = AugmentationOutputs(cfg.paths)
    frame = read_manifest(cfg)
    accepted = frame[frame["status"] == "accepted"]
    if aug_ids is None:
        aug_ids = list(accepted.sort_values("flipped", ascending=False)["aug_id"][:n])
    if not aug_ids:
        raise ValueError(f"no accepted augmented masks in {outputs.manifest}")
    tumour = [lab.value for lab in cfg.tumour_labels]
    values = [lab.value for lab in cfg.data.labels]
    cmap, _ = label_cmap(cfg)  # the project's label colours (gliomagen/figures/palette.py)
    fig, axes = plt.subplots(len(aug_ids), 3, figsize=(9, 3 * len(aug_ids)), squeeze=False)
    by_id = {str(r["aug_id"]): r for r in frame.to_dict("records")}
    sources = {p.name: p for p in training_mask_dirs(cfg)}
    lr_axis = -1
    for row_axes, aug_id in zip(axes, aug_ids, strict=True):
        info = by_id[aug_id]
        source_id = str(info["source_id"])
        src_dir = sources.get(source_id, PrepareOutputs(cfg.paths).folder("train") / source_id)
        src, _ = load_mask(src_dir)
        aug = np.asarray(nib.load(str(outputs.mask(aug_id))).dataobj).astype(np.uint8)  # type: ignore[attr-defined]
        k = lesion_slice(src, tumour, axis=2)
        flair_path = modality_path(src_dir, "t2f")
        flair = (
            np.asarray(nib.load(str(flair_path)).dataobj, dtype=np.float32)  # type: ignore[attr-defined]
            if flair_path.is_file()
            else None
        )
        ax0, ax1, ax2 = row_axes
        if flair is not None:
            ax0.imshow(flair[:, :, k].T, cmap="gray", origin="lower")
        ax0.imshow(
            np.ma.masked_where(~np.isin(src, tumour), src)[:, :, k].T,
            cmap=cmap,
            vmin=0,
            vmax=max(values),
            alpha=0.6,
            origin="lower",
            interpolation="nearest",
        )
        ax0.set_title(f"{source_id}\nsource (T2-FLAIR + lesion)", fontsize=8)
        ax1.imshow(
            aug[:, :, k].T, cmap=cmap, vmin=0, vmax=max(values), origin="lower", interpolation="nearest"
        )
        ax1.set_title(f"{aug_id}\nflip={bool(info['flipped'])} scale={float(info['scale']):.3f}", fontsize=8)
        ax2.imshow((src[:, :, k] > 0).T, cmap="gray", origin="lower", alpha=0.5)
        ax2.contour(np.isin(src, tumour)[:, :, k].T, levels=[0.5], colors="cyan", linewidths=1)
        ax2.contour(np.isin(aug, tumour)[:, :, k].T, levels=[0.5], colors="red", linewidths=1)
        ax2.set_title("lesion outline: source (cyan), augmented (red)", fontsize=8)
        for ax in row_axes:
            ax.set_axis_off()
        lr_axis = int(info["lr_axis"])
    fig.suptitle(
        f"Mask augmentation (axial slice through the source lesion; array axis {lr_axis} is left-right)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def plot_label_volume_changes(cfg: Config) -> Figure:
    """Label volume after / before per accepted mask against the scale factor (expected about s^3)."""
    import matplotlib.pyplot as plt

    frame = read_manifest(cfg)
    accepted = frame[frame["status"] == "accepted"]
    labels = [lab.name for lab in cfg.data.labels if lab.value != 0]
    fig, ax = plt.subplots(figsize=(6, 4))
    scale = accepted["scale"].astype(float)
    for name in labels:
        before, after = accepted.get(f"voxels_{name}_source"), accepted.get(f"voxels_{name}_aug")
        if before is None or after is None:
            continue
        ok = before.astype(float) > 0
        ax.scatter(scale[ok], after[ok].astype(float) / before[ok].astype(float), s=12, label=name, alpha=0.7)
    if len(scale):
        s = np.linspace(scale.min(), scale.max(), 50)
        ax.plot(s, s**3, "k--", lw=1, label="s³ (ideal)")
    ax.set_xlabel("scale factor s")
    ax.set_ylabel("label volume after / before")
    ax.set_title("Label-volume change of accepted augmented masks")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_augmentation_parameters(cfg: Config) -> Figure:
    """Drawn scale factors by outcome, attempts per try, and the discard reasons."""
    import matplotlib.pyplot as plt

    frame = read_manifest(cfg)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    lo, hi = cfg.augment.scale_range
    bins = np.linspace(lo, hi, 11) if hi > lo else 5
    for status, colour in [("accepted", "#4c72b0"), ("discarded", "#dd8452")]:
        part = frame[frame["status"] == status]
        axes[0].hist(
            part["scale"].astype(float), bins=bins, alpha=0.7, label=f"{status} ({len(part)})", color=colour
        )
    axes[0].set_xlabel("scale factor (last attempt)")
    axes[0].set_ylabel("tries")
    axes[0].legend(fontsize=7)
    attempts = frame["attempts"].astype(int)
    axes[1].hist(attempts, bins=np.arange(0.5, max(attempts.max(), 1) + 1.5), color="#55a868")
    axes[1].set_xlabel("attempts until the head was inside")
    reasons = (
        frame.loc[frame["status"] != "accepted", "reason"].astype(str).str.split(":").str[0].value_counts()
    )
    axes[2].barh(list(reasons.index) or ["none"], list(reasons.values) or [0], color="#c44e52")
    axes[2].set_xlabel("discarded tries")
    axes[2].set_title("discard reasons", fontsize=9)
    fig.suptitle(
        f"Augmentation parameters ({int(frame['flipped'].sum())} of {len(frame)} tries flipped)", fontsize=9
    )
    fig.tight_layout()
    return fig
