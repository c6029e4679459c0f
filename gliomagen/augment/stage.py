"""The augmentation stage (``gliomagen augment``, notebook 03): every usable training mask, every round.

Resumable: tries already in the manifest with the same augmentation settings (and, if accepted, whose mask
file exists) are skipped, so results do not depend on ``--limit``, the worker count or an interruption. The
run folder's ``augment`` lock is held while writing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from gliomagen.augment.outputs import (
    MANIFEST_COLUMNS,
    AugmentationOutputs,
    AugmentSummary,
    read_manifest,
)
from gliomagen.augment.recipe import AugmentResult, aug_id_for, augment_hash, augment_mask
from gliomagen.cases import load_mask, modality_path
from gliomagen.config import Config
from gliomagen.data.outputs import PrepareOutputs, usable_cases
from gliomagen.io import provenance, write_csv, write_json, write_nifti
from gliomagen.locks import run_lock

log = logging.getLogger(__name__)

PAPER_COUNTS = {"tried": 2470, "accepted": 2124, "discarded": 346}


def training_mask_dirs(cfg: Config) -> list[Path]:
    """The usable training case folders (from the data stage's QC; sorted by id)."""
    return list(usable_cases(cfg, "train"))


def _check_mask(mask: np.ndarray, path: Path, cfg: Config) -> None:
    if mask.ndim != 3:
        raise ValueError(f"{path}: expected a 3D mask, got shape {mask.shape}")
    known = {lab.value for lab in cfg.data.labels}
    unknown = sorted(set(np.unique(mask).tolist()) - known)
    if unknown:
        raise ValueError(f"{path}: label values {unknown} are not in data.labels {sorted(known)}")


def augment_source(case_dir: Path, rounds: Iterable[int], cfg: Config) -> list[dict[str, Any]]:
    """All requested rounds of one source mask; writes accepted masks; never raises on bad input."""
    case_dir = Path(case_dir)
    source_id = case_dir.name
    rounds = list(rounds)
    outputs = AugmentationOutputs(cfg.paths)
    seg = modality_path(case_dir, "seg")
    try:
        mask, affine = load_mask(case_dir)
        _check_mask(mask, seg, cfg)
    except Exception as exc:  # noqa: BLE001 -- one unreadable mask must not stop the others
        reason = f"unreadable_source: {exc}" if str(seg) in str(exc) else f"unreadable_source: {seg}: {exc}"
        log.error(reason)
        return [
            AugmentResult(
                aug_id_for(source_id, r),
                source_id,
                source_id,
                r,
                False,
                1.0,
                0,
                "discarded",
                reason,
                augment_hash=augment_hash(cfg),
            ).row()
            for r in rounds
        ]
    rows = []
    for r in rounds:
        out, result = augment_mask(mask, affine, source_id, r, cfg)
        path = outputs.mask(result.aug_id)
        if out is not None:
            write_nifti(path, out, affine, cfg.hash, np.uint8)
        elif path.exists():  # a stale accepted mask from an earlier configuration
            path.unlink()
        rows.append(result.row())
    return rows


def _done(row: pd.Series, current_hash: str, outputs: AugmentationOutputs) -> bool:
    if row.get("augment_hash") != current_hash:
        return False
    if row["status"] == "accepted":
        return outputs.mask(str(row["aug_id"])).is_file()
    return not str(row["reason"]).startswith("unreadable_source")  # retry unreadable sources


def _write_manifest(cfg: Config, rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows.values()))
    if frame.empty:
        frame = pd.DataFrame(columns=MANIFEST_COLUMNS)
    extra = sorted(c for c in frame.columns if c not in MANIFEST_COLUMNS)
    frame = frame.reindex(columns=MANIFEST_COLUMNS + extra).sort_values(["source_id", "round"])
    write_csv(AugmentationOutputs(cfg.paths).manifest, frame)
    return frame


def max_scale_shift(cfg: Config) -> float:
    """Largest displacement (voxels) that the scale range causes at the edge of the target grid.

    Below 0.5 voxel, nearest-neighbour scaling cannot change any voxel: the recipe then reduces to the flip.
    """
    half = max(cfg.data.target_shape) / 2
    lo, hi = cfg.augment.scale_range
    return float(half * max(abs(1 - 1 / lo), abs(1 - 1 / hi)))


def summarise(frame: pd.DataFrame, cfg: Config) -> AugmentSummary:
    """Counts tried/accepted/discarded, reasons, and the paper's numbers beside them."""
    discarded = frame[frame["status"] != "accepted"]
    reasons = discarded["reason"].astype(str).str.split(":").str[0].value_counts().to_dict()
    tried = len(frame)
    return AugmentSummary(
        tried=tried,
        accepted=int((frame["status"] == "accepted").sum()),
        discarded=len(discarded),
        acceptance_rate=float((frame["status"] == "accepted").mean()) if tried else float("nan"),
        discard_reasons={str(k): int(v) for k, v in reasons.items()},
        sources=int(frame["source_id"].nunique()) if tried else 0,
        flipped=int(frame["flipped"].astype(bool).sum()) if tried else 0,
        mean_attempts=float(frame["attempts"].astype(float).mean()) if tried else float("nan"),
        unchanged_by_resampling=int((pd.to_numeric(frame["changed_voxels"], errors="coerce") == 0).sum()),
        max_scale_shift_voxels=max_scale_shift(cfg),
        paper={**PAPER_COUNTS, "acceptance_rate": PAPER_COUNTS["accepted"] / PAPER_COUNTS["tried"]},
        provenance=provenance(cfg.hash, augment_hash=augment_hash(cfg)),
    )


def augment(cfg: Config, limit: int | None = None, progress: bool = True) -> AugmentSummary:
    """Augment every usable training mask ``cfg.augment.rounds`` times; resumable.

    Tries that are already in the manifest with the same augmentation settings (and, if accepted, whose
    mask file exists) are skipped. Rows of sources no longer in the training set are dropped.

    Args:
        cfg: run configuration.
        limit: only the first ``limit`` training masks (sorted by id).
        progress: show a tqdm bar.

    Returns:
        the summary (also written to :attr:`AugmentationOutputs.summary`).

    Raises:
        FileNotFoundError: no usable training masks (the data stage has not run).
        gliomagen.locks.LockHeld: another process is augmenting this run.
    """
    outputs = AugmentationOutputs(cfg.paths)
    with run_lock(cfg.paths.root, "augment", clean=[outputs.root]):
        return _augment_locked(cfg, outputs, limit, progress)


def _augment_locked(
    cfg: Config, outputs: AugmentationOutputs, limit: int | None, progress: bool
) -> AugmentSummary:
    sources = training_mask_dirs(cfg)
    if not sources:
        raise FileNotFoundError(
            f"no training masks under {PrepareOutputs(cfg.paths).folder('train')}; run `gliomagen prepare` first"
        )
    all_ids = {p.name for p in sources}
    if limit is not None:
        sources = sources[:limit]
    current = augment_hash(cfg)
    old = read_manifest(cfg)
    rows: dict[str, dict[str, Any]] = {
        str(r["aug_id"]): {str(k): v for k, v in r.to_dict().items()}
        for _, r in old.iterrows()
        if r["source_id"] in all_ids and _done(r, current, outputs)
    }
    rounds = range(1, cfg.augment.rounds + 1)
    todo = [(p, [r for r in rounds if aug_id_for(p.name, r) not in rows]) for p in sources]
    todo = [(p, rs) for p, rs in todo if rs]
    log.info(
        "augmenting %d of %d training masks (%d already done)",
        len(todo),
        len(sources),
        len(sources) - len(todo),
    )
    bar = tqdm(total=len(todo), desc="augment", unit="mask", disable=not progress)
    flush_every = max(1, len(todo) // 20)
    for done, new_rows in enumerate(_run(todo, cfg), start=1):
        rows.update({r["aug_id"]: r for r in new_rows})
        bar.update()
        if done % flush_every == 0:  # an interrupted run keeps most of its work
            _write_manifest(cfg, rows)
    bar.close()
    frame = _write_manifest(cfg, rows)
    summary = summarise(frame, cfg)
    write_json(outputs.summary, summary.to_dict())
    log.info(
        "augmentation: %d tried, %d accepted, %d discarded %s",
        summary.tried,
        summary.accepted,
        summary.discarded,
        summary.discard_reasons,
    )
    return summary


def _run(todo: list[tuple[Path, list[int]]], cfg: Config) -> Iterator[list[dict[str, Any]]]:
    if cfg.runtime.workers <= 1 or len(todo) <= 1:
        for path, rounds in todo:
            yield augment_source(path, rounds, cfg)
        return
    with ProcessPoolExecutor(max_workers=cfg.runtime.workers) as pool:
        futures = [pool.submit(augment_source, p, rs, cfg) for p, rs in todo]
        for future in futures:
            yield future.result()
