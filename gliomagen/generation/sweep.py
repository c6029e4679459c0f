"""The sampler sweep (``gliomagen sweep-samplers``, issue 18): quality and speed against network evaluations.

For every sampler and NFE of the grid (``sweep`` section; the DDPM reference runs all ``T`` steps) the first
``sweep.max_masks`` validation masks are sampled with the same per-volume seeds as generation, batched as
``generate.batch_size``. Each volume is written (BraTS naming) with a per-volume record, atomically and
record last, so a rerun skips what is done (same sampler, NFE, seed, checkpoint and sampler rule).

Per volume, against its real validation volume: the corrected MS-SSIM (2D, the real volume's non-empty axial
slices, mean over slices then over the four modalities; :mod:`gliomagen.fidelity.metrics`), and the
re-segmentation Dice: the run's real-only nnU-Net model segments the synthetic volume and the mean Dice of
the tumour labels present is taken against the conditioning mask (:func:`resegmentation_dice`; recorded as
not available when the run has no trained real-only model). Per sampler and NFE: median seconds per volume
and each metric's mean over subjects with a percentile bootstrap interval over subjects
(:func:`gliomagen.bootstrap.bootstrap_subjects`, the same resamples for every grid cell). The recommendation
per sampler is the smallest NFE whose every metric's interval overlaps DDPM's.
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
from gliomagen.cases import Case, is_complete, load_case, load_mask, write_case
from gliomagen.config import MODALITIES, Config
from gliomagen.generation.jobs import volume_seed
from gliomagen.generation.outputs import GenerationOutputs
from gliomagen.generation.sampling import SamplingSetup, load_setup, sample_batch
from gliomagen.io import load_nifti, provenance, read_json, write_csv, write_json
from gliomagen.locks import run_lock

log = logging.getLogger(__name__)

#: the full grid (``sweep.full_grid``)
FULL_SAMPLERS = ("ddim", "dpmpp", "unipc")
FULL_NFE = (5, 10, 25, 50, 100, 250)
#: the clipping rule of the samplers; part of a volume's identity (volumes of another rule are redone)
SAMPLER_RULE = "x0-clamped-eps-rederived"
METRICS = ("ms_ssim", "reseg_dice")


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
    """

    table: pd.DataFrame = field(repr=False)
    volumes: pd.DataFrame = field(repr=False)
    recommendation: dict[str, Any]
    generated: int
    skipped: int
    resegmentation: str
    seconds: float


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
    cases = [load_case(d) for d in sweep_cases(cfg)]
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
    volumes = pd.DataFrame(
        [read_json(out.sweep_record(name, nfe, c.case_id)) for name, nfe in cells for c in cases]
    )
    dice, status = (
        resegmentation_dice(cfg, out, volumes) if cfg.sweep.resegment else ({}, "off (sweep.resegment)")
    )
    volumes["reseg_dice"] = [dice.get(key, np.nan) for key in _keys(volumes)]
    table = summarise(cfg, volumes)
    table["resegmentation"] = status
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
            "recommendation": recommendation,
        },
    )
    from gliomagen.figures.export import save_figure
    from gliomagen.generation.plots import plot_sweep

    stem = out.sweep_figure_stem
    save_figure(plot_sweep(table), stem.parent, stem.name, footer=f"{cfg.profile} run, config {cfg.hash}")
    return SweepResult(
        table, volumes, recommendation, generated, skipped, status, time.perf_counter() - t_start
    )


# ---------------------------------------------------------------------------------- re-segmentation
def _keys(volumes: pd.DataFrame) -> list[tuple[str, int, str]]:
    """``(sampler, nfe, case_id)`` of each per-volume row."""
    cols = (volumes["sampler"].astype(str), volumes["nfe"].astype(int), volumes["case_id"].astype(str))
    return [(s, int(n), c) for s, n, c in zip(*cols, strict=True)]


def real_only_configuration(cfg: Config) -> Any:
    """The segmentation configuration trained on all real data and nothing else, or ``None``."""
    return next((c for c in cfg.segment.configurations if c.synthetic == 0 and c.real_fraction == 1.0), None)


def resegmentation_dice(
    cfg: Config, out: GenerationOutputs, volumes: pd.DataFrame
) -> tuple[dict[tuple[str, int, str], float], str]:
    """Dice of the real-only nnU-Net's segmentation of each sweep volume against its conditioning mask.

    Uses the segmentation stage read-only: its plan of the real-only configuration, its trained model (only
    if :func:`gliomagen.segmentation.nnunet.is_trained`), its prediction worker and its agreement score (mean
    Dice over the tumour labels present, :func:`gliomagen.segmentation.hq.agreement_score`). Predictions are
    kept, so a rerun predicts only new volumes.

    Returns:
        ``{(sampler, nfe, case_id): dice}`` and ``"available"``, or ``{}`` and why it is not available.
    """
    conf = real_only_configuration(cfg)
    if conf is None:
        return {}, "not available: no real-only configuration in segment.configurations"
    try:
        from gliomagen.segmentation import export, nnunet
        from gliomagen.segmentation.hq import agreement_score

        plan = export.plan_configuration(cfg, conf)
        if not nnunet.is_trained(cfg, plan):
            return {}, f"not available: the real-only nnU-Net model ({conf.name}) is not trained in this run"
        uid = {(s, n, c): f"{s}-{n:04d}-{c}" for s, n, c in _keys(volumes)}
        inputs, preds = out.sweep_resegmentation / "input", out.sweep_resegmentation / "pred"
        inputs.mkdir(parents=True, exist_ok=True)
        export.export_images({u: out.sweep_volume_dir(s, n, c) for (s, n, c), u in uid.items()}, inputs)
        nnunet.run_job(cfg, nnunet.make_job(cfg, plan, [(inputs, preds)], train=False))
        lut = export.inverse_label_lut(cfg)
        dice = {}
        for (s, n, c), u in uid.items():
            pred = lut[np.asarray(load_nifti(preds / f"{u}{export.FILE_ENDING}").dataobj).astype(np.uint8)]
            dice[(s, n, c)] = agreement_score(load_mask(out.sweep_volume_dir(s, n, c))[0], pred, cfg)["score"]
        return dice, "available"
    except Exception as exc:  # noqa: BLE001 -- the sweep's other metrics stand without it; the reason is kept
        log.error("re-segmentation Dice not available: %s", exc)
        return {}, f"not available: {type(exc).__name__}: {exc}"


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
    """Per sampler: the smallest NFE whose every available metric's CI overlaps DDPM's (``None`` if none)."""
    ref_rows = table[table["sampler"] == "ddpm"]
    if ref_rows.empty:
        return {"available": False, "why": "no DDPM reference in the grid (sweep.reference)"}
    ref = ref_rows.iloc[0]
    metrics = [m for m in METRICS if np.isfinite(ref.get(f"{m}_low", np.nan))]
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


# ---------------------------------------------------------------------------------------------- CLI
def run_cli(cfg: Config, args: argparse.Namespace) -> SweepResult:
    """``gliomagen sweep-samplers`` (the grid from the ``sweep`` section: ``--set sweep.full_grid=true``)."""
    result = sweep_samplers(cfg)
    cols = ["sampler", "nfe", "seconds_per_volume", "ms_ssim", "ms_ssim_low", "ms_ssim_high", "reseg_dice"]
    print(result.table[cols].to_string(index=False))
    print(f"re-segmentation Dice: {result.resegmentation}")
    print(f"recommendation: {result.recommendation}")
    out = GenerationOutputs(cfg.paths)
    print(
        f"{result.generated} generated, {result.skipped} skipped in {result.seconds:.0f} s -> {out.sweep_table}"
    )
    return result
