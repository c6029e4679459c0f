"""Preparation stage (``gliomagen prepare``): validate, relabel, normalise, resample, QC and split.

For every BraTS case folder in the raw directory (in parallel over ``data.workers`` processes):

1. validate the five files (:mod:`gliomagen.data.validate`); a bad case becomes an ``invalid`` row whose
   ``qc_reason`` names each bad file, and the other cases carry on;
2. shift the tumour labels and add the head label, once per scan (:mod:`gliomagen.data.head`);
3. per-volume min-max to [0, 1] after clipping outlier voxels (``data.intensity.outlier_fence``; a no-op on
   clean scans) and optionally to percentiles of the non-zero voxels; outliers are flagged by QC;
4. isotropic rescale + centre pad/crop to ``data.target_shape`` with the correct affine
   (:mod:`gliomagen.data.geometry`); float32 images, uint8 masks;
5. automatic QC (:mod:`gliomagen.data.qc`).

Then the split (:mod:`gliomagen.data.split`) puts each case folder into ``prepared/train``,
``prepared/val`` or ``prepared/excluded`` (flagged cases listed in ``data.qc.exclude``), and
``prepared/cases.csv``, ``prepared/qc_report.md`` and ``prepared/summary.json`` are written.
Re-running skips every case whose record (``prepared/qc/<id>.json``) matches the raw files and the
preparation settings; only the split is redone. Any failure of one scan, in a worker process or not,
becomes an ``invalid`` row naming the case (and the file, where known); the other scans carry on. The
stage holds the run folder's ``prepare`` lock (:mod:`gliomagen.locks`) and removes partial files left by an
interrupted run. Every prepared case is also written as uncompressed arrays for training
(:mod:`gliomagen.data.cache`). Output paths and their readers: :mod:`gliomagen.data.outputs`.

Over 400 lines on purpose: the per-case pipeline (run in worker processes) and the stage around it share
the record format and are read together; the helpers it calls live in their own modules.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gliomagen.cases import Case, is_complete, write_case
from gliomagen.cases import raw_case_files as case_files
from gliomagen.config import (
    MODALITIES,
    Config,
    ConfigError,
    DataConfig,
    IntensityConfig,
    require_raw_data,
    resolve_path,
)
from gliomagen.data.cache import remove_cache, write_cache
from gliomagen.data.geometry import plan_geometry, resample_image, resample_mask, voxel_spacing
from gliomagen.data.head import prepared_mask
from gliomagen.data.outputs import FOLDERS, SPLITS, PrepareOutputs, cache_root, read_cases_table, usable_cases
from gliomagen.data.parallel import parallel_map
from gliomagen.data.qc import DETECT_FENCE, Outliers, find_outliers, label_counts, outlier_message, qc_flags
from gliomagen.data.split import paper_split, patient_split, patients_on_both_sides, read_val_ids
from gliomagen.data.validate import CaseError, RawCase, RawScan, discover_cases, load_raw_case
from gliomagen.hashing import content_hash
from gliomagen.io import provenance, write_csv, write_json, write_text
from gliomagen.locks import run_lock

log = logging.getLogger(__name__)

#: readers re-exported here for existing callers (their home is gliomagen.data.outputs)
__all__ = ["PrepareOutputs", "PrepareSummary", "prepare", "read_cases_table", "usable_cases"]


@dataclass
class PrepareSummary:
    """Outcome of :func:`prepare` (also written to ``prepared/summary.json``)."""

    raw_dir: str
    cases: int = 0
    patients: int = 0
    ok: int = 0
    flagged: int = 0
    invalid: int = 0
    train: int = 0
    val: int = 0
    excluded: int = 0
    train_patients: int = 0
    val_patients: int = 0
    patients_on_both_sides: list[str] = field(default_factory=list)
    prepared_now: int = 0
    skipped: int = 0
    skipped_folders: list[str] = field(default_factory=list)
    missing_val_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def text(self) -> str:
        lines = [
            f"prepared {self.cases} scans of {self.patients} patients from {self.raw_dir} "
            f"({self.prepared_now} now, {self.skipped} already done) in {self.seconds:.1f} s",
            f"  QC: {self.ok} ok, {self.flagged} flagged, {self.invalid} invalid",
            f"  split: {self.train} train ({self.train_patients} patients), {self.val} val "
            f"({self.val_patients} patients), {self.excluded} excluded",
        ]
        if self.patients_on_both_sides:
            lines.append(f"  WARNING: patients on both sides: {', '.join(self.patients_on_both_sides)}")
        if self.skipped_folders:
            lines.append(f"  ignored folders (not BraTS case ids): {', '.join(self.skipped_folders)}")
        if self.missing_val_ids:
            lines.append(f"  WARNING: validation ids not usable here: {', '.join(self.missing_val_ids)}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------- one case
def prep_key(data: DataConfig) -> str:
    """Hash of the settings that change a prepared case (not the split, not the worker count)."""
    payload = data.model_dump(mode="json", include={"labels", "head", "intensity", "target_shape", "qc"})
    return content_hash(payload)


def source_signature(case_dir: Path) -> list[list[Any]]:
    """Name, size and modification time of the raw files (a changed raw file redoes the case)."""
    sig = []
    for path in case_files(case_dir).values():
        stat = path.stat() if path.is_file() else None
        sig.append([path.name, stat.st_size if stat else None, stat.st_mtime_ns if stat else None])
    return sig


def normalise(
    image: np.ndarray, clip_percentiles: tuple[float, float] | None, outlier_fence: float | None = None
) -> np.ndarray:
    """Per-volume min-max to [0, 1] (float32).

    Args:
        image: one image.
        clip_percentiles: first clip to these percentiles of the non-zero voxels (``None``: no clipping).
        outlier_fence: first clip outliers (:func:`gliomagen.data.qc.find_outliers`) to the inlier range
            (``None``: off). Without outliers the result equals plain min-max exactly.
    """
    data = image.astype(np.float32)
    found = find_outliers(data, outlier_fence) if outlier_fence is not None else None
    if found is not None:
        data = np.clip(data, found.inlier_min, found.inlier_max)
    if clip_percentiles is not None:
        nonzero = data[data != 0]
        if nonzero.size:
            lo, hi = np.percentile(nonzero, clip_percentiles)
            data = np.clip(data, lo, hi)
    lo, hi = float(data.min()), float(data.max())
    if not hi > lo:
        return np.zeros_like(data)
    with np.errstate(over="ignore", invalid="ignore"):
        out = (data - lo) / (hi - lo)  # float32 arithmetic, as before (bit-identical results)
    if not np.all(np.isfinite(out)):  # a range beyond float32 (|values| near 3.4e38): redo in float64
        out = ((data.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)
    return out


def _normalised_images(
    scan: RawScan, intensity: IntensityConfig, files: dict[str, Path]
) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Every modality normalised, and the ``intensity_outlier`` QC flags (one per affected file)."""
    images, flags = {}, []
    for m in MODALITIES:
        fence = intensity.outlier_fence
        found: Outliers | None = find_outliers(scan.images[m], fence or DETECT_FENCE)
        if found is not None:
            flags.append(
                ("intensity_outlier", outlier_message(files[m].name, found, fence is not None, fence))
            )
        images[m] = normalise(scan.images[m], intensity.clip_percentiles, fence)
    return images, flags


def prepare_case(case: RawCase, data: DataConfig, out_root: Path, config_hash: str) -> dict[str, Any]:
    """Validate, prepare, QC and write one case into ``out_root/<id>``; returns its record.

    Never raises: problems become ``qc_status = invalid`` with the messages (each naming the file where
    it is known, else the case).
    """
    record = base_record(case, data)
    try:
        return {**record, **_prepare(case, data, out_root, config_hash)}
    except CaseError as exc:
        return {**record, "qc_status": "invalid", "qc_reason": "; ".join(exc.problems)}
    except Exception as exc:  # noqa: BLE001 -- one bad case never stops the others
        return invalid_record(record, exc)


def base_record(case: RawCase, data: DataConfig) -> dict[str, Any]:
    """The identity part of a case's record (what a finished record is matched against on a re-run)."""
    try:
        signature = source_signature(case.path)
    except OSError:  # an unreadable folder: the case is redone next time
        signature = None
    return {
        "id": case.case_id, "patient": case.patient, "timepoint": case.timepoint, "source": str(case.path),
        "signature": signature, "prep_key": prep_key(data), "flags": [],
    }  # fmt: skip


def invalid_record(record: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """``record`` marked invalid by an unexpected error (its first line, with the case id)."""
    text = (str(exc).splitlines() or [""])[0][:300]
    return {**record, "qc_status": "invalid", "qc_reason": f"{record['id']}: {type(exc).__name__}: {text}"}


def _prepare(case: RawCase, data: DataConfig, out_root: Path, config_hash: str) -> dict[str, Any]:
    start = time.perf_counter()
    files = case_files(case.path)
    scan = load_raw_case(case, data.labels)
    native = prepared_mask(scan.seg, scan.images, data.labels, data.head.source, data.head.closing_radius)
    geom = plan_geometry(native.shape, scan.affine, data.target_shape)
    normalised, intensity_flags = _normalised_images(scan, data.intensity, files)
    channels = []
    for m in MODALITIES:
        channel = np.clip(resample_image(normalised[m], geom), 0, 1).astype(np.float32)
        if not np.all(np.isfinite(channel)):  # the last cast before writing: nothing non-finite gets out
            raise CaseError(case.case_id, [f"{files[m].name}: non-finite values after normalisation"])
        channels.append(channel)
    image = np.stack(channels)
    mask = resample_mask(native, geom)
    native_counts = label_counts(native, data.labels)
    voxel_ml = float(np.prod(geom.out_spacing)) / 1000
    head_from = MODALITIES if data.head.source == "multi" else (data.head.source,)
    head_file = ", ".join(files[m].name for m in head_from)
    flags = qc_flags(native_counts, mask, data.labels, data.qc, files["seg"].name, voxel_ml, head_file)
    flags += intensity_flags
    case_dir = write_case(out_root, Case(case.case_id, image, mask, geom.out_affine), config_hash)
    # uncompressed arrays for training (prepared/cache), keyed by these settings and the files just written
    write_cache(cache_root(out_root.parent), case_dir, prep_key(data), image, mask)
    return {
        "qc_status": "flagged" if flags else "ok",
        "qc_reason": "; ".join(message for _, message in flags),
        "flags": [flag for flag, _ in flags],
        "counts": label_counts(mask, data.labels),
        "native_counts": native_counts,
        "native_shape": list(native.shape),
        "native_spacing": [round(s, 4) for s in voxel_spacing(scan.affine)],
        "spacing": [round(s, 4) for s in geom.out_spacing],
        "scale": round(geom.factor, 6),
        "seconds": round(time.perf_counter() - start, 3),
    }


def _case_task(task: dict[str, Any]) -> dict[str, Any]:
    """Worker entry: prepare one case and store its record (a finished record marks the case done).

    Never raises: whatever goes wrong becomes the case's ``invalid`` record.
    """
    data = DataConfig.model_validate(task["data"])
    case = RawCase(task["id"], Path(task["path"]), task["patient"], task["timepoint"])
    prepared = Path(task["prepared"])
    try:
        for folder in FOLDERS:  # an old copy (other settings) must not survive under another split
            shutil.rmtree(prepared / folder / case.case_id, ignore_errors=True)
        remove_cache(cache_root(prepared), case.case_id)
        record = prepare_case(case, data, prepared / "staging", task["config_hash"])
        write_json(prepared / "qc" / f"{case.case_id}.json", record)
    except Exception as exc:  # noqa: BLE001 -- e.g. a full disk: reported for this case, redone next time
        record = invalid_record(base_record(case, data), exc)
    return record


def _task_failed(task: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """The record of a case whose worker process died (killed, out of memory): invalid, redone next time."""
    case = RawCase(task["id"], Path(task["path"]), task["patient"], task["timepoint"])
    return invalid_record(base_record(case, DataConfig.model_validate(task["data"])), exc)


# -------------------------------------------------------------------------------------- the stage
def locate(prepared: Path, case_id: str) -> Path | None:
    """The folder holding a prepared case, whichever split it is in."""
    for folder in FOLDERS:
        if is_complete(prepared / folder / case_id):
            return prepared / folder / case_id
    return None


def _is_done(prepared: Path, case: RawCase, key: str) -> dict[str, Any] | None:
    path = prepared / "qc" / f"{case.case_id}.json"
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if record.get("prep_key") != key or record.get("signature") != source_signature(case.path):
        return None
    if record["qc_status"] != "invalid" and locate(prepared, case.case_id) is None:
        return None
    return record


def resolve_raw_dir(cfg: Config, raw_dir: str | Path | None, progress: bool = True) -> Path:
    """The raw folder: ``raw_dir`` if given, else the profile's; a profile with a ``data.phantom``
    section writes (or completes) its phantom there first."""
    if raw_dir is not None:
        raw = Path(raw_dir).expanduser().resolve()
        if not raw.is_dir():
            raise ConfigError(f"--raw-dir {raw} does not exist")
        return raw
    raw = require_raw_data(cfg)  # explains how to get BraTS when there is no phantom to make
    user_data = raw.is_dir() and any(raw.iterdir()) and not (raw / "phantom.json").is_file()
    if cfg.data.phantom is not None and not user_data:
        from gliomagen.data.phantom import make_phantom

        # the profile's own phantom folder: a stale phantom (other settings/generator) is replaced
        make_phantom(
            raw, cfg.data.phantom, cfg.runtime.workers, cfg.data.target_shape, progress, replace=True
        )
    return raw


def prepare(cfg: Config, raw_dir: str | Path | None = None, progress: bool = True) -> PrepareSummary:
    """Run the data stage for ``cfg`` (see the module docstring).

    Args:
        cfg: run configuration (``data`` section; outputs under ``cfg.paths.prepared``).
        raw_dir: BraTS-layout folder; default ``cfg.raw_dir`` (the smoke profile's phantom is made there).
        progress: show progress bars.

    Returns:
        counts of cases, QC outcomes and split sizes.
    """
    with run_lock(cfg.paths.root, "prepare", clean=[cfg.paths.prepared]):
        return _prepare_locked(cfg, raw_dir, progress)


def _prepare_locked(cfg: Config, raw_dir: str | Path | None, progress: bool) -> PrepareSummary:
    start = time.perf_counter()
    raw = resolve_raw_dir(cfg, raw_dir, progress)
    cases, skipped_folders = discover_cases(raw)
    prepared = cfg.paths.prepared
    key = prep_key(cfg.data)
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for case in cases:
        done = _is_done(prepared, case, key)
        if done is not None:
            records[case.case_id] = done
        else:
            todo.append(case)
    tasks = [
        {"id": c.case_id, "path": str(c.path), "patient": c.patient, "timepoint": c.timepoint,
         "data": cfg.data.model_dump(mode="json"), "prepared": str(prepared), "config_hash": cfg.hash}
        for c in todo
    ]  # fmt: skip
    results = parallel_map(
        _case_task, tasks, cfg.runtime.workers, "prepare cases", progress, on_error=_task_failed
    )
    for record in results:
        records[record["id"]] = record
    ordered = [records[c.case_id] for c in cases]
    split, missing = assign_splits(cfg, ordered)
    _move_cases(prepared, ordered, split)
    table = cases_table(cfg, ordered, split)
    out = PrepareOutputs(cfg.paths)
    write_csv(out.cases_csv, table)
    summary = _summarise(table, raw, split, len(todo), skipped_folders, missing, time.perf_counter() - start)
    write_json(out.summary, {**asdict(summary), "provenance": provenance(cfg.hash, stage="prepare")})
    write_text(out.qc_report, qc_report(table, summary))
    _warn_stale(prepared, {c.case_id for c in cases})
    log.info("%s", summary.text())
    return summary


def assign_splits(cfg: Config, records: list[dict[str, Any]]) -> tuple[dict[str, str], list[str]]:
    """``{id: train|val|excluded}`` and, for the paper split, the listed ids that are not usable."""
    excluding = set(cfg.data.qc.exclude)
    usable = [r for r in records if r["qc_status"] != "invalid" and not excluding & set(r["flags"])]
    split = {r["id"]: "excluded" for r in records}
    missing: list[str] = []
    ids = [r["id"] for r in usable]
    if cfg.data.split.method == "paper":
        if cfg.data.split.val_ids_file is None:
            raise ConfigError(
                "data.split.method=paper needs data.split.val_ids_file (a file of validation ids)"
            )
        chosen, missing = paper_split(ids, read_val_ids(resolve_path(cfg.data.split.val_ids_file)))
    else:
        try:
            patients = [r["patient"] for r in usable]
            chosen = patient_split(ids, patients, cfg.data.split.n_val, cfg.data.split.seed)
        except ValueError as exc:  # too few usable scans for this split: a configuration problem
            raise ConfigError(f"data.split: {exc}") from None
    split.update(chosen)
    return split, missing


def _move_cases(prepared: Path, records: list[dict[str, Any]], split: dict[str, str]) -> None:
    """Move each prepared folder into its split folder (a rename: atomic and instant)."""
    for record in records:
        if record["qc_status"] == "invalid":
            continue
        current = locate(prepared, record["id"])
        target = prepared / split[record["id"]] / record["id"]
        if current is None or current == target:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        current.replace(target)


def cases_table(cfg: Config, records: list[dict[str, Any]], split: dict[str, str]) -> pd.DataFrame:
    """One row per scan: id, patient, timepoint, split, qc_status, qc_reason, ``voxels_<label>``, geometry."""
    rows = []
    for r in records:
        row = {
            "id": r["id"], "patient": r["patient"], "timepoint": r["timepoint"], "split": split[r["id"]],
            "qc_status": r["qc_status"], "qc_reason": r["qc_reason"], "qc_flags": ";".join(r.get("flags", [])),
        }  # fmt: skip
        for lab in cfg.data.labels:
            row[f"voxels_{lab.name}"] = r.get("counts", {}).get(lab.name, 0)
        for lab in cfg.data.labels:
            row[f"raw_voxels_{lab.name}"] = r.get("native_counts", {}).get(lab.name, 0)
        spacing = r.get("spacing")
        row["voxel_ml"] = float(np.prod(spacing)) / 1000 if spacing else 0.0
        row["native_shape"] = "x".join(map(str, r.get("native_shape", []))) or ""
        row["native_spacing"] = "x".join(f"{s:g}" for s in r.get("native_spacing", [])) or ""
        row["source"] = r["source"]
        rows.append(row)
    return pd.DataFrame(rows).sort_values("id").reset_index(drop=True)


def _summarise(
    table: pd.DataFrame, raw: Path, split: dict[str, str], prepared_now: int,
    skipped_folders: list[str], missing: list[str], seconds: float,
) -> PrepareSummary:  # fmt: skip
    patient_of = dict(zip(table["id"], table["patient"], strict=True))
    used = {i: s for i, s in split.items() if s in SPLITS}
    counts = table["qc_status"].value_counts()
    sides = table["split"].value_counts()
    return PrepareSummary(
        raw_dir=str(raw), cases=len(table), patients=table["patient"].nunique(),
        ok=int(counts.get("ok", 0)), flagged=int(counts.get("flagged", 0)), invalid=int(counts.get("invalid", 0)),
        train=int(sides.get("train", 0)), val=int(sides.get("val", 0)), excluded=int(sides.get("excluded", 0)),
        train_patients=table.loc[table["split"] == "train", "patient"].nunique(),
        val_patients=table.loc[table["split"] == "val", "patient"].nunique(),
        patients_on_both_sides=patients_on_both_sides(used, patient_of),
        prepared_now=prepared_now, skipped=len(table) - prepared_now,
        skipped_folders=skipped_folders, missing_val_ids=missing, seconds=round(seconds, 2),
    )  # fmt: skip


def qc_report(table: pd.DataFrame, summary: PrepareSummary) -> str:
    """Markdown QC report: the summary and every flagged or invalid scan with its reason."""
    lines = ["# QC report", "", "```", summary.text(), "```", ""]
    bad = table[table["qc_status"] != "ok"]
    if bad.empty:
        lines.append("Every scan passed validation and QC.")
    else:
        lines += ["| id | status | split | reason |", "|---|---|---|---|"]
        for _, row in bad.iterrows():
            reason = str(row["qc_reason"]).replace("|", "\\|")
            lines.append(f"| {row['id']} | {row['qc_status']} | {row['split']} | {reason} |")
    return "\n".join(lines) + "\n"


def _warn_stale(prepared: Path, current: set[str]) -> None:
    stale = sorted(
        p.name for folder in FOLDERS if (prepared / folder).is_dir()
        for p in (prepared / folder).iterdir() if p.is_dir() and p.name not in current
    )  # fmt: skip
    if stale:
        log.warning(
            "prepared/ holds %d case folder(s) not in the raw data (left untouched): %s", len(stale), stale
        )


def run_cli(cfg: Config, args: argparse.Namespace) -> PrepareSummary:
    """``gliomagen prepare [--raw-dir DIR]``: prints the summary and where the QC report is."""
    summary = prepare(cfg, raw_dir=getattr(args, "raw_dir", None))
    print(summary.text())
    out = PrepareOutputs(cfg.paths)
    print(f"  cases table: {out.cases_csv}\n  QC report:   {out.qc_report}")
    table = read_cases_table(cfg)
    for _, row in table[table["qc_status"] != "ok"].iterrows():
        print(f"  {row['qc_status']:>8} {row['id']}: {row['qc_reason']}")
    return summary
