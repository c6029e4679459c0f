"""Figures of the generation stage: sampler timing, the diffusion process, real vs synthetic, the NFE sweep."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gliomagen.cases import load_mask, modality_path
from gliomagen.config import MODALITIES, Config
from gliomagen.figures.slices import lesion_slice
from gliomagen.generation.jobs import val_jobs, volume_seed
from gliomagen.generation.outputs import GenerationOutputs, read_manifest
from gliomagen.generation.sampling import SamplingSetup, load_setup
from gliomagen.io import load_nifti


def _tumour(cfg: Config) -> list[int]:
    return [lab.value for lab in cfg.tumour_labels]


def plot_sampler_timing(timing: pd.DataFrame) -> Figure:
    """Bar chart of seconds per volume per sampler; extrapolated bars are hatched."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [f"{r.sampler}\n{r.steps} steps" for r in timing.itertuples()]
    bars = ax.bar(labels, timing["seconds_per_volume"], color="#4c72b0")
    for bar, how in zip(bars, timing["how"], strict=True):
        if how != "measured":
            bar.set_hatch("//")
            bar.set_facecolor("#c0c8d8")
        ax.annotate(
            f"{bar.get_height():.1f} s",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_yscale("log")
    ax.set_ylabel("seconds per volume (log)")
    device = timing["device"].iloc[0] if len(timing) else "?"
    shape = timing["shape"].iloc[0] if len(timing) else "?"
    ax.set_title(f"Sampling time per volume ({shape} on {device}; hatched = extrapolated)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_diffusion_process(
    cfg: Config,
    setup: SamplingSetup | None = None,
    case_id: str | None = None,
    modality: str = "t1c",
    n: int = 6,
) -> Figure:
    """The paper's process figure for one validation case: the forward process q(x_t | x_0) applied to the
    real volume (top) and the reverse process from noise, conditioned on the same mask (bottom).

    Args:
        cfg: run configuration.
        setup: sampling setup (default: the configured checkpoint and sampler).
        case_id: validation case (default: the first).
        modality: which channel to show.
        n: number of time points per row.
    """
    from gliomagen.cases import load_case
    from gliomagen.diffusion.plots import process_figure, state_times
    from gliomagen.diffusion.schedule import noisy_examples

    setup = setup or load_setup(cfg)
    job = next(j for j in val_jobs(cfg) if case_id in (None, j.id))
    case = load_case(job.mask_path.parent)
    channel = MODALITIES.index(modality)
    z = lesion_slice(case.mask, _tumour(cfg))
    condition = setup.encode(torch.as_tensor(case.mask[None])).to(setup.device)
    generator = torch.Generator(device=setup.device).manual_seed(volume_seed(cfg.generate.seed, job.id))
    with torch.inference_mode():
        states = setup.sampler.trajectory(setup.model, condition, record=n, generator=generator)
    # a state recorded after step i stands for the next timestep (t = 0 after the last step); the forward row
    # shows the same t values, so each column is one time point of both processes
    times = state_times(setup.sampler.timesteps, [s["step"] for s in states])
    forward = noisy_examples(cfg, torch.from_numpy(case.image), sorted(set(times)), seed=cfg.generate.seed)
    return process_figure(
        {t: x[channel, :, :, z].numpy() for t, x in forward.items()},
        [(t, s["x_t"][0, channel, :, :, z].numpy()) for t, s in zip(times, states, strict=True)],
        case.mask[:, :, z],
        cfg,
        reverse_label=f"{setup.sampler_name}, {len(setup.sampler.timesteps)} steps",
        title=f"Diffusion process with the mask, {job.id}, {modality}, axial slice {z}",
    )


def plot_real_vs_synthetic(cfg: Config, ids: Sequence[str] | None = None, n: int = 3) -> Figure:
    """The qualitative figure: for each validation case, real (top) and synthetic (bottom) rows of the four
    modalities on the axial slice through the lesion, plus the conditioning mask.

    Args:
        cfg: run configuration.
        ids: validation case ids (default: the first ``n`` generated ones).
        n: number of cases when ``ids`` is not given.
    """
    import matplotlib.pyplot as plt

    from gliomagen.diffusion.plots import mask_rgb

    out = GenerationOutputs(cfg.paths)
    if ids is None:
        frame = read_manifest(out)
        ids = list(frame.loc[frame["split"] == "val", "id"][:n])
    if not ids:
        raise ValueError(f"no generated validation volumes under {out.synthetic / 'val'}")
    fig, axes = plt.subplots(
        2 * len(ids),
        len(MODALITIES) + 1,
        figsize=(2.2 * (len(MODALITIES) + 1), 4.4 * len(ids)),
        squeeze=False,
    )
    for k, case_id in enumerate(ids):
        real_dir, syn_dir = cfg.paths.prepared / "val" / case_id, out.volume_dir("val", case_id)
        mask, _ = load_mask(syn_dir)
        z = lesion_slice(mask, _tumour(cfg))
        for r, (label, folder) in enumerate([("real", real_dir), ("synthetic", syn_dir)]):
            row = axes[2 * k + r]
            for c, modality in enumerate(MODALITIES):
                vol = np.asarray(load_nifti(modality_path(folder, modality)).dataobj, dtype=np.float32)
                row[c].imshow(vol[:, :, z].T, cmap="gray", vmin=0, vmax=1, origin="lower")
                if k == 0 and r == 0:
                    row[c].set_title(modality)
            row[-1].imshow(np.transpose(mask_rgb(mask[:, :, z], cfg), (1, 0, 2)), origin="lower")
            row[0].set_ylabel(f"{case_id}\n{label}", fontsize=7)
            if k == 0 and r == 0:
                row[-1].set_title("mask")
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle("Validation cases: real (upper) vs generated from the real mask (lower)", fontsize=10)
    fig.tight_layout()
    return fig


#: the sweep's metrics as (column stem, axis label)
SWEEP_METRICS = (
    ("ms_ssim", "corrected MS-SSIM vs real (↑)"),
    ("reseg_dice", "re-segmentation Dice (↑)"),
    ("rad_fid", "radiomics FID vs real (↓)"),
)


def _floor_line(ax: Axes, table: pd.DataFrame, m: str) -> None:
    """The real-vs-real floor of a distance (one value for the whole grid: the same real halves in every cell)."""
    floor = table.get(f"{m}_floor")
    if floor is None or not floor.notna().any():
        return
    r = table[floor.notna()].iloc[0]
    ax.axhline(r[f"{m}_floor"], color="0.4", ls="--", lw=1, label="real-vs-real floor")
    if np.isfinite(r[f"{m}_floor_low"]):
        ax.axhspan(r[f"{m}_floor_low"], r[f"{m}_floor_high"], color="0.4", alpha=0.1)


def _nfe_axis(ax: Axes, table: pd.DataFrame) -> None:
    """A log NFE axis labelled at the grid's NFE values (not at powers of ten)."""
    nfes = sorted({int(n) for n in table["nfe"]})
    ax.set_xscale("log")
    ax.set_xticks(nfes, [str(n) for n in nfes])
    ax.minorticks_off()


def plot_sweep(table: pd.DataFrame, note: str = "") -> Figure:
    """Each metric and seconds per volume against NFE, one line per sampler with its CI band over subjects
    (where one exists); the DDPM reference as a horizontal band and, for the distance, the real-vs-real floor
    as a dashed line.

    Args:
        table: the sweep table (:func:`gliomagen.generation.outputs.read_sweep`).
        note: a line under the title, e.g. the recommendation or why there is none
            (:func:`gliomagen.generation.sweep.recommendation_text`).
    """
    import matplotlib.pyplot as plt

    metrics = [(m, label) for m, label in SWEEP_METRICS if m in table and table[m].notna().any()]
    fig, axes = plt.subplots(1, len(metrics) + 1, figsize=(4.2 * (len(metrics) + 1), 3.6), squeeze=False)
    ref = table[table["sampler"] == "ddpm"]
    others = table[table["sampler"] != "ddpm"]
    for ax, (m, label) in zip(axes[0], metrics, strict=False):
        for k, (name, rows) in enumerate(others.groupby("sampler", sort=True)):
            rows = rows.sort_values("nfe")
            ax.plot(rows["nfe"], rows[m], "o-", color=f"C{k}", label=name)
            ax.fill_between(rows["nfe"], rows[f"{m}_low"], rows[f"{m}_high"], color=f"C{k}", alpha=0.2)
        if len(ref) and np.isfinite(ref[m].iloc[0]):
            r = ref.iloc[0]
            ax.axhline(r[m], color="k", lw=1, label=f"DDPM-{int(r['nfe'])}")
            ax.axhspan(r[f"{m}_low"], r[f"{m}_high"], color="k", alpha=0.1)
        _floor_line(ax, table, m)
        _nfe_axis(ax, table)
        ax.set_xlabel("network evaluations (NFE)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    ax = axes[0][-1]
    for name, rows in table.groupby("sampler", sort=True):
        rows = rows.sort_values("nfe")
        ax.plot(rows["nfe"], rows["seconds_per_volume"], "o-" if name != "ddpm" else "ks", label=name)
    _nfe_axis(ax, table)
    ax.set_yscale("log")
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("seconds per volume")
    ax.legend(fontsize=7)
    n = int(table["n_subjects"].max()) if len(table) else 0
    title = f"Sampler sweep on {n} validation masks (bands: 95% bootstrap CI over subjects, where one exists)"
    if "distance" in table and len(table):
        title += f"\nradiomics FID: {table['distance'].iloc[0]}"
    if "resegmentation" in table and len(table) and table["resegmentation"].iloc[0] != "available":
        title += f"\nre-segmentation Dice: {table['resegmentation'].iloc[0]}"
    if note:
        title += f"\n{note}"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
