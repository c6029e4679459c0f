"""The fidelity stage (``gliomagen fidelity``, notebook 05): real validation volumes vs the volumes generated
from their masks.

:func:`run_fidelity` is the stage's entry point: :func:`evaluate` (every metric in its paper and corrected
definitions, each beside its real-vs-real floor) and the mask-following measures
(:func:`gliomagen.fidelity.conditioning.evaluate_conditioning`), under the run folder's ``fidelity`` lock.
What it writes: :class:`gliomagen.fidelity.outputs.FidelityOutputs`. Slice features are cached per case; a
finished evaluation with the same config and inputs is loaded instead of recomputed.

Where the rows come from: :mod:`~gliomagen.fidelity.subjects` (per pair), :mod:`~gliomagen.fidelity.synthetic`
(synthetic vs real), :mod:`~gliomagen.fidelity.floor` (real vs real), :mod:`~gliomagen.fidelity.rows` (the
table's schema and the mean row). Definitions: ``docs/metrics.md``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from gliomagen.config import MODALITIES, Config
from gliomagen.fidelity import metrics as M
from gliomagen.fidelity import rows as R
from gliomagen.fidelity.conditioning import evaluate_conditioning
from gliomagen.fidelity.features import FeatureExtractor, WeightsMissingError, build_extractor
from gliomagen.fidelity.floor import floor_rows, halves_of
from gliomagen.fidelity.outputs import LOCK, FidelityOutputs, FidelityResults, read_conditioning
from gliomagen.fidelity.pairs import Pair, find_pairs, inputs_fingerprint
from gliomagen.fidelity.subjects import SubjectResult, evaluate_subject
from gliomagen.fidelity.synthetic import feature_rows, frd_row, structural_rows
from gliomagen.io import provenance, read_json, write_csv, write_json
from gliomagen.locks import run_lock
from gliomagen.runtime import torch_threads

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FidelitySummary:
    """What one run of the fidelity stage produced.

    Args:
        results: the content of ``fidelity.json``.
        conditioning: the mask-following measures, one row per case and modality.
        outputs: where the stage's files are (readers: :mod:`gliomagen.fidelity.outputs`).
    """

    results: FidelityResults
    conditioning: pd.DataFrame
    outputs: FidelityOutputs


def run_fidelity(cfg: Config, force: bool = False, progress: bool = True) -> FidelitySummary:
    """The whole stage: fidelity metrics and mask-following measures, written under the run's lock.

    Args:
        cfg: run configuration (section ``fidelity``).
        force: recompute the metrics even if ``fidelity.json`` matches the config and the inputs.
        progress: show tqdm progress bars.

    Raises:
        FileNotFoundError: no validation pair to evaluate (the message names the stage to run first).
        gliomagen.locks.LockHeld: another process is running the stage on this run folder.
    """
    out = FidelityOutputs(cfg.paths)
    with run_lock(cfg.paths.root, LOCK, clean=[cfg.paths.metrics]):
        results = evaluate(cfg, force=force, progress=progress)
        # written after the results from the same inputs: still current unless the results were rewritten
        current = (
            not force
            and out.conditioning_csv.is_file()
            and out.conditioning_csv.stat().st_mtime_ns >= out.results_json.stat().st_mtime_ns
        )
        conditioning = read_conditioning(out) if current else evaluate_conditioning(cfg)
    return FidelitySummary(results, conditioning, out)


def evaluate(cfg: Config, force: bool = False, progress: bool = True) -> FidelityResults:
    """Run the fidelity evaluation and write ``fidelity.json`` and the per-subject/per-slice tables.

    Args:
        cfg: run configuration (section ``fidelity``).
        force: recompute even if ``fidelity.json`` matches the config and the inputs.
        progress: show tqdm progress bars.
    """
    with run_lock(cfg.paths.root, LOCK, clean=[cfg.paths.metrics]), torch_threads(cfg.runtime.threads):
        return _evaluate(cfg, force, progress)


def _evaluate(cfg: Config, force: bool, progress: bool) -> FidelityResults:
    fc = cfg.fidelity
    out = FidelityOutputs(cfg.paths)
    pairs, skipped = find_pairs(cfg)
    fingerprint = inputs_fingerprint(pairs)
    if not force and out.results_json.is_file():
        previous = FidelityResults.from_dict(read_json(out.results_json))
        prov = previous.provenance
        if prov.get("config_hash") == cfg.hash and prov.get("inputs") == fingerprint:
            log.info(
                "fidelity results in %s are up to date; skipping (force=True recomputes)", out.results_json
            )
            return previous
    extractors, extractor_status = _load_extractors(cfg)
    frd_quota = math.ceil(fc.frd_max_slices / len(pairs)) if fc.frd_max_slices else None
    subjects: list[SubjectResult] = []
    for index, pair in enumerate(tqdm(pairs, desc="fidelity", unit="case", disable=not progress)):
        try:
            subjects.append(evaluate_subject(cfg, pair, extractors, index, frd_quota))
        except (ValueError, OSError) as exc:  # one bad case never stops the others
            log.error("skipping %s: %s", pair.case_id, exc)
            skipped.append({"id": pair.case_id, "reason": str(exc)})
    if not subjects:
        raise RuntimeError(f"no validation pair could be evaluated; problems: {skipped}")
    rows = _aggregate(cfg, subjects, pairs, extractors, extractor_status, progress)
    per_subject, per_slice = _subject_tables(subjects)
    results = FidelityResults(
        provenance=provenance(cfg.hash, inputs=fingerprint, profile=cfg.profile),
        subjects=[s.case_id for s in subjects],
        skipped=skipped,
        extractors=extractor_status,
        settings=_settings(cfg, subjects),
        results=rows,
    )
    results = FidelityResults.from_dict(_clean(results.to_dict()))
    write_csv(out.per_subject_csv, per_subject)
    write_csv(out.per_slice_csv, per_slice)
    write_json(out.results_json, results.to_dict())  # written last: its presence marks a finished evaluation
    return results


def _load_extractors(cfg: Config) -> tuple[dict[str, FeatureExtractor], dict[str, dict[str, str]]]:
    fc = cfg.fidelity
    ready: dict[str, FeatureExtractor] = {}
    status: dict[str, dict[str, str]] = {}
    for name in fc.extractors:
        try:
            ready[name] = build_extractor(
                name, fc.batch_size, cfg.runtime.device, fc.weights_dir, cfg.runtime.workers
            )
            status[name] = {"status": "ok", "description": ready[name].description}
        except WeightsMissingError as exc:
            log.warning("%s", exc)
            status[name] = {"status": "not available: weights missing", "message": str(exc)}
        except ImportError as exc:
            log.warning("extractor %s unavailable: %s", name, exc)
            status[name] = {"status": "not available: missing package", "message": str(exc)}
    return ready, status


def _aggregate(
    cfg: Config,
    subjects: list[SubjectResult],
    pairs: list[Pair],
    extractors: dict[str, FeatureExtractor],
    extractor_status: dict[str, dict[str, str]],
    progress: bool,
) -> list[R.Row]:
    rows: list[R.Row] = []
    for modality in tqdm(MODALITIES, desc="aggregate", unit="modality", disable=not progress, leave=False):
        rows += structural_rows(cfg, subjects, modality)
        for extractor in extractors.values():
            rows += feature_rows(cfg, subjects, modality, extractor)
        if cfg.fidelity.frd:
            rows.append(R.guarded(partial(frd_row, cfg, subjects, modality), modality, "corrected"))
    if cfg.fidelity.real_floor:
        rows += floor_rows(cfg, subjects, pairs, extractors, progress)
    for name, state in extractor_status.items():
        if state["status"] != "ok":
            rows += R.unavailable_rows(name, state["status"], cfg.fidelity.real_floor)
    return rows + R.mean_rows(rows)


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become ``None`` (JSON has no NaN/Infinity)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _subject_tables(subjects: list[SubjectResult]) -> tuple[pd.DataFrame, pd.DataFrame]:
    per_subject, per_slice = [], []
    for s in subjects:
        for m in MODALITIES:
            values, keep = s.ms_ssim_slices[m], s.nonempty[m]
            per_subject.append(
                {
                    "id": s.case_id,
                    "modality": m,
                    "n_slices": int(values.size),
                    "n_nonempty": int(keep.sum()),
                    "ms_ssim_2d_all_mean": float(values.mean()),
                    "ms_ssim_2d_all_sd": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                    "ms_ssim_2d_nonempty_mean": float(values[keep].mean()) if keep.any() else float("nan"),
                    **s.volume_metrics[m],
                }
            )
            per_slice += [
                {"id": s.case_id, "modality": m, "slice": i, "empty": not bool(k), "ms_ssim": float(v)}
                for i, (v, k) in enumerate(zip(values, keep, strict=True))
            ]
    return pd.DataFrame(per_subject), pd.DataFrame(per_slice)


def _settings(cfg: Config, subjects: list[SubjectResult]) -> dict[str, Any]:
    fc = cfg.fidelity
    first = subjects[0]
    volume_shape = first.volume_shape
    slice_shape = tuple(s for i, s in enumerate(volume_shape) if i != first.axis)
    return {
        "profile": cfg.profile,
        "axial_voxel_axis": first.axis,
        "slice_shape": list(slice_shape),
        "volume_shape": list(volume_shape),
        "slices_per_subject": int(volume_shape[first.axis]),
        "ms_ssim_kernel": fc.ms_ssim_kernel,
        "ms_ssim_scales_2d": fc.ms_ssim_scales or M.ms_ssim_scales_that_fit(slice_shape, fc.ms_ssim_kernel),
        "ms_ssim_scales_3d": M.ms_ssim_scales_that_fit(volume_shape, fc.ms_ssim_kernel),
        "exclude_empty_slices": fc.exclude_empty_slices,
        "empty_threshold": fc.empty_threshold,
        "bootstrap": fc.bootstrap,
        "confidence": fc.confidence,
        "kid_subsets": fc.kid_subsets,
        "kid_subset_size": fc.kid_subset_size,
        "frd_max_slices": fc.frd_max_slices,
        "real_floor": fc.real_floor,
        "real_floor_halves": [[subjects[i].case_id for i in half] for half in halves_of(cfg, len(subjects))]
        if fc.real_floor
        else None,
        "seed": fc.seed,
    }
