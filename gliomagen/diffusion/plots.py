"""Figures of the training stage: previews, loss curves, LR schedule, seconds per step, model summary."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gliomagen.config import MODALITIES, Config
from gliomagen.figures.slices import lesion_slice
from gliomagen.io import atomic_path, load_nifti


def _show(ax: Axes, plane: np.ndarray, **kwargs: Any) -> None:
    # arrays are RAS-ordered (x right, y anterior): transpose + origin=lower shows anterior up
    ax.imshow(plane.transpose(1, 0, *range(2, plane.ndim)), origin="lower", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])


def mask_rgb(mask2d: np.ndarray, cfg: Config) -> np.ndarray:
    """Colour image of a 2D mask in the project's label colours (:mod:`gliomagen.figures.palette`)."""
    from gliomagen.figures.palette import mask_rgb as palette_rgb

    return palette_rgb(mask2d, cfg)


def preview_figure(image: np.ndarray, mask: np.ndarray, cfg: Config, title: str = "") -> Figure:
    """One row: the conditioning mask and the four generated modalities at the lesion slice.

    Args:
        image: ``(4, X, Y, Z)`` in ``[0, 1]``.
        mask: ``(X, Y, Z)`` prepared mask.
        cfg: run configuration (label map).
        title: figure title.
    """
    z = lesion_slice(mask, [lab.value for lab in cfg.tumour_labels])
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
    z = lesion_slice(real.mask, [lab.value for lab in cfg.tumour_labels])
    rows = [("real " + real.case_id, real.image)] + [
        (f"step {_step_of(f)}", np.moveaxis(np.asarray(load_nifti(f).dataobj), -1, 0)) for f in files
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
    from gliomagen.figures.palette import add_label_legend

    fig.tight_layout()
    add_label_legend(fig, cfg)
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
    target = {"epsilon": "noise", "sample": "x0", "v_prediction": "v"}[cfg.diffusion.prediction]
    ax.set_ylabel(f"{cfg.diffusion.loss.upper()} loss ({target} prediction)")
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
    from gliomagen.diffusion.schedule import lr_schedule

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


def state_times(timesteps: list[int] | np.ndarray, steps: list[int]) -> list[int]:
    """The ``t`` that a recorded reverse-process state stands for.

    A sampler's step ``i`` takes the sample at ``timesteps[i]`` to the next timestep, so the state recorded
    after step ``i`` is at ``timesteps[i + 1]``, and after the last step at ``t = 0`` (the final sample).

    Args:
        timesteps: the sampler's timesteps, noisiest first.
        steps: indices of the recorded steps.
    """
    ts = [int(t) for t in timesteps]
    return [ts[i + 1] if i + 1 < len(ts) else 0 for i in steps]


def process_figure(
    forward: dict[int, np.ndarray],
    reverse: list[tuple[int, np.ndarray]],
    mask: np.ndarray,
    cfg: Config,
    reverse_label: str,
    title: str,
) -> Figure:
    """The paper's forward/reverse process figure, one column per ``t`` so both rows share their times.

    The forward row reads left to right (noise is added), the reverse row right to left (noise is removed,
    ending in the final sample at ``t = 0`` in the first column).

    Args:
        forward: ``{t: 2D plane}`` of ``q(x_t | x_0)``.
        reverse: ``(t, 2D plane)`` of the reverse run, ``t`` as :func:`state_times` gives it.
        mask: the 2D conditioning mask plane.
        cfg: run configuration (labels).
        reverse_label: the sampler, e.g. ``"ddim, 10 steps"``.
        title: figure title.
    """
    from gliomagen.figures.palette import add_label_legend, mask_rgb

    times = sorted(set(forward) | {t for t, _ in reverse})
    by_t = dict(reverse)
    n = len(times)
    fig, axes = plt.subplots(2, n + 1, figsize=(1.9 * (n + 1), 4.6), squeeze=False)
    for r in range(2):
        _show(axes[r, 0], mask_rgb(mask, cfg))
    axes[0, 0].set_title("conditioning mask", fontsize=8)
    for k, t in enumerate(times, start=1):
        for r, plane in enumerate((forward.get(t), by_t.get(t))):
            if plane is None:
                axes[r, k].set_axis_off()
                continue
            _show(axes[r, k], plane, cmap="gray")
        axes[0, k].set_title(f"t = {t}", fontsize=8)
        axes[1, k].set_title("t = 0: final sample" if t == 0 else f"t = {t}", fontsize=8)
    axes[0, 1].set_ylabel("forward q(x_t | x_0)\nadds noise  →", fontsize=8)
    axes[1, 1].set_ylabel(f"reverse ({reverse_label})\n←  removes noise", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    add_label_legend(fig, cfg)
    plt.close(fig)
    return fig
