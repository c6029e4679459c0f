"""Evaluation of every configuration's validation predictions: the paper's and the corrected metrics.

:func:`evaluate` reads the predictions of every configuration whose validation predictions are complete,
computes the per-case metrics of both modes (:mod:`~gliomagen.segmentation.metrics`,
:mod:`~gliomagen.segmentation.corrected`), the paired comparison against real-only
(:mod:`~gliomagen.segmentation.stats`), and writes the tables (:mod:`~gliomagen.segmentation.outputs`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from gliomagen.cases import load_mask
from gliomagen.config import Config, SegConfiguration
from gliomagen.data.geometry import voxel_spacing
from gliomagen.io import load_nifti, provenance, read_json, write_csv, write_json
from gliomagen.segmentation.corrected import corrected_case_metrics
from gliomagen.segmentation.export import FILE_ENDING, inverse_label_lut
from gliomagen.segmentation.metrics import (
    paper_case_metrics,
    paper_summary,
    total_tumour_volume,
    tumour_values,
)
from gliomagen.segmentation.nnunet import prediction_dir
from gliomagen.segmentation.outputs import TABLES, Evaluation, SegmentationOutputs
from gliomagen.segmentation.selection import ExportError, real_case_dirs
from gliomagen.segmentation.stats import paired_comparison

log = logging.getLogger(__name__)

CORRECTED_METRICS = (
    "dice",
    "hd95_mm",
    "assd_mm",
    "lesion_dice",
    "lesion_hd95_mm",
    "lesion_f1",
    "lesion_dice_penalised",
)


def baseline_configuration(cfg: Config) -> SegConfiguration | None:
    """The real-only mix (all real scans, no synthetic): the reference of every comparison and the HQ scorer."""
    for conf in cfg.segment.configurations:
        if conf.real_fraction == 1.0 and conf.synthetic == 0:
            return conf
    return None


def _val_ids(cfg: Config) -> list[str]:
    return [d.name for d in real_case_dirs(cfg, "val")]


def _predictions_complete(cfg: Config, name: str) -> bool:
    out = prediction_dir(cfg, name)
    ids = _val_ids(cfg)
    return bool(ids) and all((out / f"{i}{FILE_ENDING}").is_file() for i in ids)


def _load_prediction(path: Path, lut: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    img = load_nifti(path)
    pred = lut[np.asarray(img.dataobj).astype(np.uint8)]
    if pred.shape != shape:
        raise ValueError(f"{path}: prediction shape {pred.shape} != ground truth shape {shape}")
    return pred


def evaluate_configuration(
    cfg: Config, name: str, truths: dict[str, tuple[np.ndarray, np.ndarray]]
) -> dict[str, Any]:
    """Per-case paper and corrected metrics of one configuration's validation predictions."""
    lut = inverse_label_lut(cfg)
    pred_dir = prediction_dir(cfg, name)
    paper_rows, corrected_rows, volume_rows = [], [], []
    k = len(tumour_values(cfg)) + 1
    confusion = np.zeros((k, k), np.int64)
    for case_id, (gt, affine) in tqdm(truths.items(), desc=f"evaluate {name}", unit="case", leave=False):
        try:
            pred = _load_prediction(pred_dir / f"{case_id}{FILE_ENDING}", lut, gt.shape)
        except (OSError, ValueError) as exc:  # one bad prediction is reported, the others still count
            log.error("%s: %s not evaluated: %s", name, case_id, exc)
            continue
        spacing = voxel_spacing(affine)
        per_class, cm = paper_case_metrics(gt, pred, cfg)
        confusion += cm
        paper_rows += [{"configuration": name, "case": case_id, **r} for r in per_class]
        corrected_rows += [
            {"configuration": name, "case": case_id, **r}
            for r in corrected_case_metrics(gt, pred, cfg, spacing)
        ]
        voxel_ml = float(np.prod(spacing)) / 1000.0
        gv, pv = total_tumour_volume(gt, cfg), total_tumour_volume(pred, cfg)
        volume_rows.append(
            {
                "configuration": name,
                "case": case_id,
                "gt_voxels": gv,
                "pred_voxels": pv,
                "gt_ml": gv * voxel_ml,
                "pred_ml": pv * voxel_ml,
            }
        )
    return {"paper": paper_rows, "corrected": corrected_rows, "volumes": volume_rows, "confusion": confusion}


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Temporarily limit torch's CPU threads (0 = leave as is).

    Why: MONAI's surface metrics run many tiny torch ops; on a busy 2-core CPU their OpenMP start-up
    dominated (measured 12 s per smoke case with the default threads).
    """
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def evaluate(cfg: Config) -> dict[str, Any]:
    """Evaluate every configuration whose validation predictions are complete and write the metrics files."""
    with _torch_threads(cfg.runtime.threads or 0):
        return _evaluate(cfg)


def _evaluate(cfg: Config) -> dict[str, Any]:
    truths = {d.name: load_mask(d) for d in real_case_dirs(cfg, "val")}
    if not truths:
        raise ExportError(
            f"no validation cases under {cfg.paths.prepared / 'val'}: run `gliomagen prepare` first"
        )
    done = [c.name for c in cfg.segment.configurations if _predictions_complete(cfg, c.name)]
    missing = [c.name for c in cfg.segment.configurations if c.name not in done]
    paper, per_case, volumes, corrected, confusion = [], [], [], [], {}
    for name in done:
        res = evaluate_configuration(cfg, name, truths)
        per_case += res["paper"]
        corrected += res["corrected"]
        volumes += res["volumes"]
        confusion[name] = res["confusion"].tolist()
        vols = pd.DataFrame(res["volumes"])
        summary = paper_summary(
            res["paper"], res["confusion"], vols["gt_voxels"].tolist(), vols["pred_voxels"].tolist(), cfg
        )
        paper.append(
            {
                "configuration": name,
                **summary.row(),
                "n_cases": len(vols),
                "hd_pairs_used": summary.n_hd_pairs,
                "hd_pairs_dropped": summary.n_dropped_pairs,
                **{f"bland_altman_{k}": v for k, v in summary.bland_altman.items()},
            }
        )
    ev = _assemble(cfg, paper, per_case, volumes, confusion, corrected, missing)
    return _write(cfg, ev)


def _assemble(
    cfg: Config,
    paper: list[dict[str, Any]],
    per_case: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    confusion: dict[str, list[list[int]]],
    corrected: list[dict[str, Any]],
    missing: list[str],
) -> Evaluation:
    corrected_pc = pd.DataFrame(corrected)
    base = baseline_configuration(cfg)
    stats = pd.DataFrame()
    corrected_mean = pd.DataFrame()
    if not corrected_pc.empty:
        corrected_mean = (
            corrected_pc.groupby(["configuration", "region"], sort=False)[list(CORRECTED_METRICS)]
            .mean()
            .reset_index()
        )
        counts = corrected_pc.groupby(["configuration", "region"], sort=False)["status"].agg(
            lambda s: ";".join(f"{k}={v}" for k, v in s.value_counts().sort_index().items())
        )
        corrected_mean["status_counts"] = counts.to_numpy()
        if base is not None and base.name in set(corrected_pc["configuration"]):
            stats = paired_comparison(
                corrected_pc,
                CORRECTED_METRICS,
                base.name,
                cfg.segment.bootstrap,
                cfg.segment.confidence,
                cfg.segment.seed,
            )
    return Evaluation(
        pd.DataFrame(paper),
        pd.DataFrame(per_case),
        pd.DataFrame(volumes),
        confusion,
        corrected_mean,
        corrected_pc,
        stats,
        missing,
    )


def _write(cfg: Config, ev: Evaluation) -> dict[str, Any]:
    out = SegmentationOutputs(cfg.paths)
    for name in TABLES:
        frame: pd.DataFrame = getattr(ev, name)
        write_csv(out.table(name), frame.assign(config_hash=cfg.hash))
    classes = ["background", *[lab.name for lab in cfg.tumour_labels]]
    write_json(
        out.confusion,
        {
            **provenance(cfg.hash),
            "rows": "ground truth",
            "columns": "prediction",
            "classes": classes,
            "matrices": ev.confusion,
        },
    )
    summary = {
        **provenance(cfg.hash),
        "evaluated": list(ev.confusion),
        "missing": ev.missing,
        "validation_cases": int(ev.volumes["case"].nunique()) if not ev.volumes.empty else 0,
        "paper_table": ev.paper.to_dict(orient="records"),
        "corrected_table": ev.corrected.to_dict(orient="records"),
        "timing": read_json(out.timing) if out.timing.is_file() else {},
        "files": sorted(TABLES.values()),
    }
    write_json(out.summary, summary)
    if ev.missing:
        log.warning("no complete predictions yet for: %s", ", ".join(ev.missing))
    return summary
