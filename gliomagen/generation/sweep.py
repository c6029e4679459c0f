"""The sampler sweep (``gliomagen sweep-samplers``, issue 18): quality and speed against network evaluations.

For every sampler and NFE of the grid (``sweep`` section; the DDPM reference runs all ``T`` steps) the first
``sweep.max_masks`` validation masks are sampled with the same per-volume seeds as generation, batched as
``generate.batch_size``. Each volume is written (BraTS naming) with a per-volume record, atomically and
record last, so a rerun skips what is done (same sampler, NFE, seed, checkpoint and sampler rule).

Per volume, against its real validation volume: the corrected MS-SSIM (2D, the real volume's non-empty axial
slices, mean over slices then over the four modalities; :mod:`gliomagen.fidelity.metrics`) and the
re-segmentation Dice of the run's real-only nnU-Net model (filled in on a rerun once ``gliomagen segment`` has
trained it; not available before). Per sampler and NFE: median seconds per volume, each per-volume metric's
mean over subjects with a percentile bootstrap interval over subjects
(:func:`gliomagen.bootstrap.bootstrap_subjects`, the same resamples for every grid cell), and the radiomics
FID against the real volumes with its real-vs-real floor (:mod:`gliomagen.generation.sweep_metrics`, which
also says when no interval is possible). The recommendation per sampler is the smallest NFE whose every
metric's interval overlaps the DDPM reference's; without the reference in the grid (``sweep.reference``, off
in smoke for time) there is none, and the table, figure and JSON say so.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from gliomagen.bootstrap import bootstrap_subjects
from gliomagen.cases import Case, is_complete, load_case, write_case
from gliomagen.config import MODALITIES, Config
from gliomagen.generation.jobs import volume_seed
from gliomagen.generation.outputs import GenerationOutputs
from gliomagen.generation.sampling import SamplingSetup, load_setup, sample_batch
from gliomagen.generation.sweep_metrics import DISTANCE_COLUMNS, fill_resegmentation, sweep_distances
from gliomagen.io import provenance, read_json, write_csv, write_json
from gliomagen.locks import run_lock

log = logging.getLogger(__name__)

#: the full grid (``sweep.full_grid``)
FULL_SAMPLERS = ("ddim", "dpmpp", "unipc")
FULL_NFE = (5, 10, 25, 50, 100, 250)
#: the clipping rule of the samplers; part of a volume's identity (volumes of another rule are redone)
SAMPLER_RULE = "x0-clamped-eps-rederived"
#: per-volume metrics, summarised over subjects
METRICS = ("ms_ssim", "reseg_dice")
#: every metric the recommendation compares with the reference (where its interval exists)
RECOMMEND_METRICS = (*METRICS, "rad_fid")
#: what the table, figure and notebooks say when the grid has no DDPM reference
NO_REFERENCE = "no DDPM reference in the grid (sweep.reference false): no recommendation"


def grid(cfg: Config) -> list[tuple[str, int]]:
    """``(sampler, nfe)`` pairs of the sweep, the DDPM reference first (NFE above ``T`` are left out)."""
    s = cfg.sweep
    T = cfg.diffusion.timesteps
    samplers, nfes = (FULL_SAMPLERS, FULL_NFE) if s.full_grid else (tuple(s.samplers), tuple(s.nfe))
    cells = [("ddpm", T)] if s.reference else []
    return cells + [(name, n) for name in samplers for n in sorted(set(nfes)) if n <= T]


def sweep_cases(cfg: Config) -> list[Path]:
    """The validation cases of the sweep: the first ``sweep.max_masks`` by id (all when ``null``)."""
    from gliomagen.data.outputs import usable_cases

    cases = list(usable_cases(cfg, "val"))
    return cases[: cfg.sweep.max_masks] if cfg.sweep.max_masks else cases


# --------------------------------------------------------------------------------------- per volume
def corrected_ms_ssim(cfg: Config, real: Case, image: np.ndarray) -> dict[str, float]:
    """Corrected 2D MS-SSIM of one generated volume against its real one, per modality and their mean."""
    from gliomagen.fidelity.metrics import axial_axis, axial_slices, ms_ssim, nonempty_slices

    fc = cfg.fidelity
    axis = axial_axis(real.affine)
    out: dict[str, float] = {}
    for channel, modality in enumerate(MODALITIES):
        r, f = axial_slices(real.image[channel], axis), axial_slices(image[channel], axis)
        keep = nonempty_slices(r, fc.empty_threshold) if fc.exclude_empty_slices else np.ones(len(r), bool)
        if not keep.any():
            out[f"ms_ssim_{modality}"] = float("nan")
            continue
        values, _ = ms_ssim(r[keep], f[keep], kernel_size=fc.ms_ssim_kernel, scales=fc.ms_ssim_scales)
        out[f"ms_ssim_{modality}"] = float(values.mean())
    out["ms_ssim"] = float(np.nanmean([out[f"ms_ssim_{m}"] for m in MODALITIES]))
    return out


def _identity(setup: SamplingSetup, name: str, nfe: int, seed: int) -> dict[str, Any]:
    return {
        "sampler": name,
        "nfe": nfe,
        "seed": str(seed),
        "checkpoint_sha256": setup.checkpoint_sha256,
        "rule": SAMPLER_RULE,
    }


def _done(out: GenerationOutputs, name: str, nfe: int, case_id: str, identity: dict[str, Any]) -> bool:
    record = out.sweep_record(name, nfe, case_id)
    if not (record.is_file() and is_complete(out.sweep_volume_dir(name, nfe, case_id))):
        return False
    saved = read_json(record)
    return all(str(saved.get(k)) == str(v) for k, v in identity.items())


@dataclass(frozen=True)
class SweepResult:
    """What a sweep run did and found.

    Args:
        table: one row per (sampler, NFE) (``metrics/sampler_sweep.csv``).
        volumes: one row per volume.
        recommendation: per sampler the smallest NFE whose CIs overlap DDPM's (or why there is none).
        generated: volumes generated by this run.
        skipped: volumes found done.
        resegmentation: ``available`` or why the re-segmentation Dice is not.
        seconds: wall time of this run.
        resegmented: volumes re-segmented by this run (0 when every Dice was there).
        distance: ``available`` or why the radiomics FID is not.
        metric_seconds: wall seconds of this run's re-segmentation and distance, each.
    """

    table: pd.DataFrame = field(repr=False)
    volumes: pd.DataFrame = field(repr=False)
    recommendation: dict[str, Any]
    generated: int
    skipped: int
    resegmentation: str
    seconds: float
    resegmented: int = 0
    distance: str = ""
    metric_seconds: dict[str, float] = field(default_factory=dict)


def sweep_samplers(
    cfg: Config,
    setup: SamplingSetup | None = None,
    cells: list[tuple[str, int]] | None = None,
    progress: bool = True,
) -> SweepResult:
    """Run (or resume) the sweep, then write its table, per-volume rows, recommendation and figure.

    Args:
        cfg: run configuration.
        setup: a loaded model (default: ``generate.checkpoint``); its sampler is replaced per grid cell.
        cells: ``(sampler, nfe)`` pairs (default :func:`grid`).
        progress: log each grid cell.
    """
    out = GenerationOutputs(cfg.paths)
    with run_lock(cfg.paths.root, "sweep-samplers", clean=[out.sweep_root]):
        return _sweep(cfg, out, setup, cells or grid(cfg), progress)


def _sweep(
    cfg: Config,
    out: GenerationOutputs,
    setup: SamplingSetup | None,
    cells: list[tuple[str, int]],
    progress: bool,
) -> SweepResult:
    t_start = time.perf_counter()
    setup = setup or load_setup(cfg)
    case_dirs = sweep_cases(cfg)
    cases = [load_case(d) for d in case_dirs]
    if len(cases) < 2:
        raise ValueError(
            f"the sampler sweep needs at least 2 validation cases for an interval, found {len(cases)}"
        )
    generated = skipped = 0
    size = cfg.generate.batch_size
    for name, nfe in cells:
        cell = setup.with_sampler(cfg, name, nfe)
        seeds = {c.case_id: volume_seed(cfg.generate.seed, c.case_id) for c in cases}
        todo = [
            c
            for c in cases
            if not _done(out, name, nfe, c.case_id, _identity(setup, name, nfe, seeds[c.case_id]))
        ]
        skipped += len(cases) - len(todo)
        for k in range(0, len(todo), size):
            batch = todo[k : k + size]
            t0, c0 = time.perf_counter(), time.process_time()
            images, _ = sample_batch(
                cell, np.stack([c.mask for c in batch]), [seeds[c.case_id] for c in batch]
            )
            per_volume = (time.perf_counter() - t0) / len(batch)
            # CPU seconds of this process: on a shared machine they depend far less on the others' load
            cpu_per_volume = (time.process_time() - c0) / len(batch)
            for case, image in zip(batch, images, strict=True):
                folder = out.sweep_volume_dir(name, nfe, case.case_id)
                write_case(folder.parent, Case(case.case_id, image, case.mask, case.affine), cfg.hash)
                record = {
                    **_identity(setup, name, nfe, seeds[case.case_id]),
                    "case_id": case.case_id,
                    "seconds": per_volume,
                    "cpu_seconds": cpu_per_volume,
                    "batch_size": len(batch),
                    "threads": torch.get_num_threads(),
                    "device": str(setup.device),
                    **corrected_ms_ssim(cfg, case, image),
                    "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                write_json(out.sweep_record(name, nfe, case.case_id), record)  # last: marks the volume done
                generated += 1
        if progress:
            log.info("sweep %s-%d: %d volumes (%d new)", name, nfe, len(cases), len(todo))
    records = [read_json(out.sweep_record(name, nfe, c.case_id)) for name, nfe in cells for c in cases]
    t0 = time.perf_counter()
    status, resegmented = fill_resegmentation(cfg, out, records)
    t1 = time.perf_counter()
    distances, distance_status = sweep_distances(cfg, out, cells, cases, case_dirs)
    timings = {"resegmentation": t1 - t0, "distance": time.perf_counter() - t1}
    log.info(
        "sweep metrics: re-segmentation %.1f s (%d volumes), distance %.1f s",
        timings["resegmentation"],
        resegmented,
        timings["distance"],
    )
    volumes = pd.DataFrame(records)
    table = summarise(cfg, volumes)
    table["resegmentation"] = status
    table = _with_distances(table, distances, distance_status)
    recommendation = recommend(table)
    write_csv(out.sweep_volumes_table, volumes)
    write_csv(out.sweep_table, table)
    write_json(
        out.sweep_recommendation,
        {
            **provenance(cfg.hash, checkpoint_sha256=setup.checkpoint_sha256),
            "rule": "per sampler, the smallest NFE whose every metric's CI overlaps the DDPM reference's",
            "sampler_rule": SAMPLER_RULE,
            "resegmentation": status,
            "distance": distance_status,
            "recommendation": recommendation,
        },
    )
    from gliomagen.figures.export import save_figure
    from gliomagen.generation.plots import plot_sweep

    stem = out.sweep_figure_stem
    save_figure(
        plot_sweep(table, recommendation_text(recommendation)),
        stem.parent,
        stem.name,
        footer=f"{cfg.profile} run, config {cfg.hash}",
    )
    return SweepResult(
        table,
        volumes,
        recommendation,
        generated,
        skipped,
        status,
        time.perf_counter() - t_start,
        resegmented,
        distance_status,
        timings,
    )


def _with_distances(
    table: pd.DataFrame, distances: dict[tuple[str, int], dict[str, Any]], status: str
) -> pd.DataFrame:
    """The table with the distance columns of each cell (empty, with the reason, when not available)."""
    cols = [f"{c}{s}" for c in DISTANCE_COLUMNS for s in ("", "_low", "_high")]
    keys = zip(table["sampler"].astype(str), table["nfe"].astype(int), strict=True)
    rows = [distances.get((name, int(nfe)), {}) for name, nfe in keys]
    for col in cols:
        table[col] = [float(r.get(col, np.nan)) for r in rows]
    table["distance_pairs"] = [int(r.get("distance_pairs", 0)) for r in rows]
    table["distance"] = [str(r.get("distance", status)) for r in rows]
    return table


# ------------------------------------------------------------------------------------------ summary
def _mean_of(values: np.ndarray) -> Callable[[np.ndarray], float]:
    """The statistic of the subject bootstrap: the mean of ``values`` over resampled subject indices."""
    return lambda idx: float(np.nanmean(values[idx]))


def summarise(cfg: Config, volumes: pd.DataFrame) -> pd.DataFrame:
    """One row per (sampler, NFE): median wall and CPU seconds per volume (their ratios to DDPM's), each
    metric's mean over subjects and its CI."""
    fc = cfg.fidelity
    rows = []
    for (name, nfe), g in volumes.groupby(["sampler", "nfe"], sort=False):
        g = g.sort_values("case_id")
        row: dict[str, Any] = {"sampler": str(name), "nfe": int(str(nfe)), "n_subjects": len(g)}
        row["seconds_per_volume"] = float(g["seconds"].median())
        cpu = g["cpu_seconds"] if "cpu_seconds" in g else pd.Series(dtype=float)
        row["cpu_seconds_per_volume"] = float(cpu.median()) if cpu.notna().any() else np.nan
        for m in METRICS:
            values = g[m].to_numpy(float)
            if not np.isfinite(values).any():
                row.update({m: np.nan, f"{m}_low": np.nan, f"{m}_high": np.nan})
                continue
            boot = bootstrap_subjects(
                _mean_of(values),
                len(values),
                fc.bootstrap,
                fc.seed,
                fc.confidence,
            )
            row.update({m: boot.estimate, f"{m}_low": boot.low, f"{m}_high": boot.high})
        rows.append(row)
    table = pd.DataFrame(rows)
    ddpm = table.loc[table["sampler"] == "ddpm", "seconds_per_volume"]
    table["speedup_vs_ddpm"] = float(ddpm.iloc[0]) / table["seconds_per_volume"] if len(ddpm) else np.nan
    ddpm_cpu = table.loc[table["sampler"] == "ddpm", "cpu_seconds_per_volume"]
    table["cpu_speedup_vs_ddpm"] = (
        float(ddpm_cpu.iloc[0]) / table["cpu_seconds_per_volume"] if len(ddpm_cpu) else np.nan
    )
    return table


def _overlap(row: pd.Series, ref: pd.Series, m: str) -> bool:
    return bool(row[f"{m}_low"] <= ref[f"{m}_high"] and ref[f"{m}_low"] <= row[f"{m}_high"])


def recommend(table: pd.DataFrame) -> dict[str, Any]:
    """Per sampler: the smallest NFE whose every available metric's CI overlaps DDPM's (``None`` if none).

    A metric counts when the reference has an interval for it (MS-SSIM, re-segmentation Dice once a model
    exists, the radiomics FID with at least two subject pairs). Without a DDPM row: ``available`` false and
    :data:`NO_REFERENCE` as the reason.
    """
    ref_rows = table[table["sampler"] == "ddpm"]
    if ref_rows.empty:
        return {"available": False, "why": NO_REFERENCE}
    ref = ref_rows.iloc[0]
    metrics = [m for m in RECOMMEND_METRICS if np.isfinite(ref.get(f"{m}_low", np.nan))]
    out: dict[str, Any] = {
        "available": True,
        "metrics": metrics,
        "reference_nfe": int(ref["nfe"]),
        "samplers": {},
    }
    for name, rows in table[table["sampler"] != "ddpm"].groupby("sampler", sort=True):
        ok = [r for _, r in rows.sort_values("nfe").iterrows() if all(_overlap(r, ref, m) for m in metrics)]
        best = ok[0] if ok else None
        out["samplers"][name] = (
            {
                "nfe": int(best["nfe"]),
                "seconds_per_volume": float(best["seconds_per_volume"]),
                "speedup_vs_ddpm": float(best["speedup_vs_ddpm"]),
            }
            if best is not None
            else None
        )
    return out


def recommendation_text(recommendation: dict[str, Any]) -> str:
    """One line for tables, figures and notebooks: the recommended NFE per sampler, or why there is none."""
    if not recommendation.get("available"):
        return str(recommendation.get("why", NO_REFERENCE))
    parts = []
    for name, best in recommendation["samplers"].items():
        parts.append(
            f"{name}: none overlaps DDPM-{recommendation['reference_nfe']}"
            if best is None
            else f"{name}: NFE {best['nfe']} ({best['speedup_vs_ddpm']:.0f}x faster than DDPM)"
        )
    return "recommended: " + "; ".join(parts) + f" (metrics: {', '.join(recommendation['metrics'])})"


# ---------------------------------------------------------------------------------------------- CLI
def run_cli(cfg: Config, args: argparse.Namespace) -> SweepResult:
    """``gliomagen sweep-samplers`` (the grid from the ``sweep`` section: ``--set sweep.full_grid=true``)."""
    result = sweep_samplers(cfg)
    cols = ["sampler", "nfe", "seconds_per_volume", "ms_ssim", "ms_ssim_low", "ms_ssim_high", "reseg_dice"]
    cols += ["rad_fid", "rad_fid_floor", "rad_fid_ratio"]
    print(result.table[cols].to_string(index=False))
    print(f"re-segmentation Dice: {result.resegmentation} ({result.resegmented} volumes re-segmented now)")
    print(f"radiomics FID: {result.distance}; {result.table['distance'].iloc[0]}")
    print(recommendation_text(result.recommendation))
    out = GenerationOutputs(cfg.paths)
    print(
        f"{result.generated} generated, {result.skipped} skipped in {result.seconds:.0f} s -> {out.sweep_table}"
    )
    return result
