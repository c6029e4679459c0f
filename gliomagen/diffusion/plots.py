"""Figures of the training stage: previews, loss curves, LR schedule, seconds per step, model summary."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from gliomagen.config import MODALITIES, Config
from gliomagen.io import atomic_path


def lesion_slice(mask: np.ndarray, cfg: Config) -> int:
    """Axial (last-axis) index with the most tumour voxels; the middle slice if there is no tumour."""
    tumour = np.isin(mask, [lab.value for lab in cfg.tumour_labels])
    counts = tumour.sum(axis=(0, 1))
    return int(counts.argmax()) if counts.any() else mask.shape[-1] // 2


def _show(ax: plt.Axes, plane: np.ndarray, **kwargs: object) -> None:
    # arrays are RAS-ordered (x right, y anterior): transpose + origin=lower shows anterior up
    ax.imshow(plane.transpose(1, 0, *range(2, plane.ndim)), origin="lower", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])


def mask_rgb(mask2d: np.ndarray, cfg: Config) -> np.ndarray:
    """Colour image of a 2D mask (background black, head grey, tumour labels in tab10 colours)."""
    rgb = np.zeros((*mask2d.shape, 3))
    colours = plt.get_cmap("tab10")
    for i, lab in enumerate(cfg.data.labels):
        if lab.value == 0:
            continue
        colour = (0.35, 0.35, 0.35) if not lab.tumour else colours(i % 10)[:3]
        rgb[mask2d == lab.value] = colour
    return rgb


def preview_figure(image: np.ndarray, mask: np.ndarray, cfg: Config, title: str = "") -> Figure:
    """One row: the conditioning mask and the four generated modalities at the lesion slice.

    Args:
        image: ``(4, X, Y, Z)`` in ``[0, 1]``.
        mask: ``(X, Y, Z)`` prepared mask.
        cfg: run configuration (label map).
        title: figure title.
    """
    z = lesion_slice(mask, cfg)
    fig, axes = plt.subplots(1, 5, figsize=(10, 2.4))
    _show(axes[0], mask_rgb(mask[..., z], cfg))
    axes[0].set_title("mask")
    for ax, channel, name in zip(axes[1:], image, MODALITIES, strict=True):
        _show(ax, channel[..., z], cmap="gray", vmin=0, vmax=1)
        ax.set_title(name)
    fig.suptitle(title)
    return _finish(fig)


def _finish(fig: Figure) -> Figure:
    """Lay out and detach from pyplot: the notebook shows the returned figure once, not twice."""
    fig.tight_layout()
    plt.close(fig)
    return fig


def save_preview_png(
    path: str | Path, image: np.ndarray, mask: np.ndarray, cfg: Config, title: str = ""
) -> Path:
    fig = preview_figure(image, mask, cfg, title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(path)


def preview_grid(cfg: Config, max_rows: int = 6) -> Figure:
    """The paper's training-progress figure: EMA previews at increasing steps, real case on top."""
    from gliomagen.cases import load_case
    from gliomagen.diffusion.dataset import usable_cases

    files = sorted((cfg.paths.training / "previews").glob("step_*.nii.gz"))
    if not files:
        raise FileNotFoundError(f"no previews in {cfg.paths.training / 'previews'}; train first")
    if len(files) > max_rows:
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, max_rows).round()]
    real = load_case(usable_cases(cfg, "val")[0])
    z = lesion_slice(real.mask, cfg)
    rows = [("real " + real.case_id, real.image)] + [
        (f"step {_step_of(f)}", np.moveaxis(np.asarray(nib.load(str(f)).dataobj), -1, 0)) for f in files
    ]
    fig, axes = plt.subplots(len(rows), 5, figsize=(9, 1.9 * len(rows)), squeeze=False)
    for r, (label, image) in enumerate(rows):
        _show(axes[r, 0], mask_rgb(real.mask[..., z], cfg))
        axes[r, 0].set_ylabel(label, fontsize=8)
        for c, name in enumerate(MODALITIES):
            _show(axes[r, c + 1], image[c][..., z], cmap="gray", vmin=0, vmax=1)
            if r == 0:
                axes[r, c + 1].set_title(name)
    axes[0, 0].set_title("mask")
    return _finish(fig)


def _step_of(path: Path) -> int:
    return int(re.findall(r"\d+", path.name)[0])


def read_logs(cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training and validation CSV logs of the run."""
    folder = cfg.paths.training
    train = pd.read_csv(folder / "train_log.csv")
    val_path = folder / "val_log.csv"
    val = pd.read_csv(val_path) if val_path.is_file() else pd.DataFrame(columns=["step", "val_loss"])
    return train, val


def loss_curves(cfg: Config, smooth: int = 20) -> Figure:
    """Training loss (raw and running mean) and EMA validation loss over steps."""
    train, val = read_logs(cfg)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(train["step"], train["loss"], alpha=0.3, lw=0.8, label="train (per step)")
    ax.plot(
        train["step"], train["loss"].rolling(smooth, min_periods=1).mean(), label=f"train (mean of {smooth})"
    )
    if len(val):
        ax.plot(val["step"], val["val_loss"], "o-", label="validation (EMA, fixed t and noise)")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(f"{cfg.diffusion.loss.upper()} noise-prediction loss")
    ax.set_yscale("log")
    ax.legend()
    return _finish(fig)


def val_loss_by_timestep(cfg: Config) -> Figure:
    """Validation loss at each fixed timestep over training (the high-``t`` losses stay high by nature)."""
    _, val = read_logs(cfg)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for col in [c for c in val.columns if c.startswith("val_t")]:
        ax.plot(val["step"], val[col], "o-", label=f"t = {col[5:]}")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("validation loss")
    ax.legend(ncol=3, fontsize=8)
    return _finish(fig)


def lr_plot(cfg: Config) -> Figure:
    """The configured learning-rate schedule, with the logged LR of the run on top if available."""
    from gliomagen.diffusion.train import lr_schedule

    sched = lr_schedule(cfg)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.step(sched["step"], sched["lr"], where="post", label="configured")
    log_path = cfg.paths.training / "train_log.csv"
    if log_path.is_file():
        train = pd.read_csv(log_path)
        ax.plot(train["step"], train["lr"], ".", ms=2, label="logged")
    if cfg.train.freeze_encoder_step is not None:
        ax.axvline(cfg.train.freeze_encoder_step, color="grey", ls="--", label="encoder frozen")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("learning rate")
    ax.legend()
    return _finish(fig)


def seconds_per_step_plot(cfg: Config) -> Figure:
    """Wall-clock seconds of every optimiser step (validation/preview/checkpoint time excluded)."""
    train, _ = read_logs(cfg)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot(train["step"], train["seconds"], ".", ms=3)
    ax.axhline(train["seconds"].median(), color="C1", label=f"median {train['seconds'].median():.3f} s")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("seconds per step")
    ax.legend()
    return _finish(fig)
