"""The segmentation stage: export, train and predict every configuration, score the HQ pool, evaluate.

``segment(cfg)`` runs the configurations in dependency order -- the real-only baseline first (its model
scores the synthetic pool for the HQ subset), then the ``all``-pool mixes, then the HQ mixes -- each in its
own nnU-Net process, and finally :func:`evaluate` on the real validation scans. Every step skips finished
work, so a re-run resumes. ``gliomagen segment --configuration NAME`` runs a single configuration (a job
array can run the six in parallel once the baseline and the HQ scoring exist).

Outputs in ``<run>/metrics/``:
    segmentation_paper.csv            the paper's table (its definitions), one row per configuration
    segmentation_paper_per_case.csv   per scan and tumour class: Dice, HD95/ASSD in voxels
    segmentation_volumes.csv          per scan: total tumour volume, truth and prediction (voxels and ml)
    segmentation_confusion.json       the pooled restricted confusion matrices
    segmentation_corrected.csv        per configuration and BraTS region: means of the corrected metrics
    segmentation_corrected_per_case.csv   per scan and region: Dice, HD95/ASSD in mm, status, lesion-wise
    segmentation_stats.csv            paired Wilcoxon and bootstrap CI of each mix minus real-only
    segmentation_hq_scores.csv        the HQ score of every synthetic volume (see hq.py)
    segmentation.json                 summary, timings and provenance
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from gliomagen.cases import load_mask
from gliomagen.config import Config, ConfigError, SegConfiguration
from gliomagen.io import provenance, read_json, write_csv, write_json
from gliomagen.locks import run_lock
from gliomagen.segmentation import hq as hq_mod
from gliomagen.segmentation.export import (
    FILE_ENDING,
    DatasetPlan,
    ExportError,
    dataset_dir,
    export_dataset,
    export_images,
    inverse_label_lut,
    plan_configuration,
    real_case_dirs,
    synthetic_pool,
)
from gliomagen.segmentation.metrics import (
    corrected_case_metrics,
    paper_case_metrics,
    paper_summary,
    spacing_of,
    total_tumour_volume,
    tumour_values,
)
from gliomagen.segmentation.nnunet import is_trained, make_job, model_dir, prediction_dir, run_job
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


def _ordered(cfg: Config) -> list[SegConfiguration]:
    """Baseline first, then the mixes that need no HQ ranking, then the HQ mixes (stable otherwise)."""

    def key(conf: SegConfiguration) -> int:
        if conf is baseline_configuration(cfg):
            return 0
        return 2 if conf.synthetic_pool == "hq" and conf.synthetic > 0 else 1

    return sorted(cfg.segment.configurations, key=key)


def _needs_hq(conf: SegConfiguration) -> bool:
    return conf.synthetic_pool == "hq" and conf.synthetic > 0


def _clear_outputs(cfg: Config, plan: DatasetPlan) -> None:
    """A rewritten dataset makes its model and predictions stale: remove them (they are rebuilt)."""
    for path in (model_dir(cfg, plan).parent, cfg.paths.nnunet / "predictions" / plan.name):
        if path.exists():
            log.info("%s: dataset changed, removing stale %s", plan.name, path)
            shutil.rmtree(path)


def _val_ids(cfg: Config) -> list[str]:
    return [d.name for d in real_case_dirs(cfg, "val")]


def _predictions_complete(cfg: Config, name: str) -> bool:
    out = prediction_dir(cfg, name)
    ids = _val_ids(cfg)
    return bool(ids) and all((out / f"{i}{FILE_ENDING}").is_file() for i in ids)


def run_configuration(
    cfg: Config,
    conf: SegConfiguration,
    hq_ranking: list[str] | None,
    skip_training: bool,
    plans_from: str | None = None,
) -> tuple[DatasetPlan, dict[str, Any]]:
    """Export one configuration and (unless skipped) train and predict it in its own process."""
    plan = plan_configuration(cfg, conf, hq_ranking)
    if export_dataset(cfg, plan):
        _clear_outputs(cfg, plan)
    images_ts = dataset_dir(cfg, plan) / "imagesTs"
    predict = [(images_ts, prediction_dir(cfg, plan.name))]
    if skip_training:
        if is_trained(cfg, plan) and not _predictions_complete(cfg, plan.name):
            return plan, run_job(cfg, make_job(cfg, plan, predict, train=False))
        return plan, {"skipped": True}
    if is_trained(cfg, plan) and _predictions_complete(cfg, plan.name):
        return plan, {"skipped": True}
    return plan, run_job(cfg, make_job(cfg, plan, predict, plans_from=plans_from))


def compute_hq(cfg: Config, baseline: DatasetPlan, skip_training: bool) -> list[str]:
    """Segment every synthetic training volume with the real-only model and rank by agreement (hq.py)."""
    ranking = hq_mod.hq_ranking(cfg)
    if ranking is not None:
        return ranking
    if not is_trained(cfg, baseline):
        raise ExportError(
            f"the HQ subset needs the trained real-only model ({baseline.name}); run "
            f"`gliomagen segment --configuration {baseline.name}` first"
            + (" (training is skipped with --skip-training)" if skip_training else "")
        )
    pool = synthetic_pool(cfg)
    if pool.empty:
        raise ExportError(
            f"no synthetic training volumes in {cfg.paths.synthetic / 'train'}: run generation first"
        )
    inputs = cfg.paths.nnunet / "hq_input"
    export_images({r.id: Path(r.path) for r in pool.itertuples()}, inputs)
    out = prediction_dir(cfg, baseline.name, "hq")
    run_job(cfg, {**make_job(cfg, baseline, [(inputs, out)], train=False), "name": f"{baseline.name}_hq"})
    table = hq_mod.score_synthetic(cfg, pool, out)
    return table.loc[table["hq"], "id"].tolist()


def segment(cfg: Config, configuration: str | None = None, skip_training: bool = False) -> dict[str, Any]:
    """Run the segmentation stage (all configurations, or only ``configuration``) and evaluate.

    Args:
        cfg: run configuration.
        configuration: a name from ``segment.configurations``; ``None`` runs them all.
        skip_training: only export datasets (and predict with existing models) and evaluate.

    Returns:
        the summary written to ``<run>/metrics/segmentation.json``.
    """
    names = [c.name for c in cfg.segment.configurations]
    if configuration is not None and configuration not in names:
        raise ConfigError(f"unknown segmentation configuration {configuration!r}; known: {', '.join(names)}")
    base_conf = baseline_configuration(cfg)
    todo = [c for c in _ordered(cfg) if configuration in (None, c.name)]
    if base_conf is None and any(_needs_hq(c) for c in todo):
        raise ExportError(
            "an HQ configuration needs a real-only configuration (real_fraction 1, synthetic 0)"
        )
    timings: dict[str, Any] = {}
    hq_ranking = hq_mod.hq_ranking(cfg)
    base_plan: DatasetPlan | None = None
    first_planned: str | None = None
    for conf in tqdm(todo, desc="nnU-Net configurations", unit="config"):
        t0 = time.perf_counter()
        if _needs_hq(conf) and hq_ranking is None:
            assert base_conf is not None
            base_plan = base_plan or plan_configuration(cfg, base_conf)
            with run_lock(cfg.paths.root, f"segment-{base_conf.name}"):  # its model must not change meanwhile
                hq_ranking = compute_hq(cfg, base_plan, skip_training)
            timings["hq_scoring_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
        plans_from = _plans_source(cfg, conf, first_planned)
        # one process per data mix at a time (export, training, prediction); others may run in parallel
        with run_lock(cfg.paths.root, f"segment-{conf.name}", clean=[cfg.paths.nnunet]):
            plan, timing = run_configuration(cfg, conf, hq_ranking, skip_training, plans_from)
        first_planned = first_planned or plan.dataset_name
        if conf is base_conf:
            base_plan = plan
        timings[conf.name] = {**timing, "wall_s": round(time.perf_counter() - t0, 2), **plan.summary()}
        log.info("configuration %s: %s", conf.name, timing)
        _merge_timings(cfg, timings)  # after every configuration, so an interruption keeps what was measured
    return {**evaluate(cfg), "this_run": timings}


def _plans_source(cfg: Config, conf: SegConfiguration, first_planned: str | None) -> str | None:
    """With ``shared_plans`` every configuration after the first reuses the first one's nnU-Net plans."""
    if not cfg.segment.shared_plans:
        return None
    first = _ordered(cfg)[0]
    if conf is first:
        return None
    dataset_id = cfg.segment.dataset_id_start + [c.name for c in cfg.segment.configurations].index(first.name)
    return first_planned or f"Dataset{dataset_id:03d}_GG_{first.name}"


def _merge_timings(cfg: Config, timings: dict[str, Any]) -> None:
    """Record measured timings; a configuration skipped this time keeps the timing of the run that did it."""
    path = cfg.paths.metrics / "segmentation_timing.json"
    old = read_json(path) if path.is_file() else {}
    fresh = {
        k: v
        for k, v in timings.items()
        if not (isinstance(v, dict) and v.get("skipped") and isinstance(old.get(k), dict))
    }
    write_json(path, {**old, **fresh, **provenance(cfg.hash)})


# -------------------------------------------------------------------------------------------- evaluation
@dataclass
class Evaluation:
    """Everything measured for the configurations that have predictions."""

    paper: pd.DataFrame
    paper_per_case: pd.DataFrame
    volumes: pd.DataFrame
    confusion: dict[str, list[list[int]]]
    corrected: pd.DataFrame
    corrected_per_case: pd.DataFrame
    stats: pd.DataFrame
    missing: list[str] = field(default_factory=list)


def _load_prediction(path: Path, lut: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    img = nib.load(str(path))
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
        spacing = spacing_of(affine)
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
    with _torch_threads(cfg.segment.cpu_threads):
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
        summary = paper_summary(res["paper"], res["confusion"], vols["gt_voxels"], vols["pred_voxels"], cfg)
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
    paper: list,
    per_case: list,
    volumes: list,
    confusion: dict,
    corrected: list,
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
    out = cfg.paths.metrics
    tables = {
        "segmentation_paper.csv": ev.paper,
        "segmentation_paper_per_case.csv": ev.paper_per_case,
        "segmentation_volumes.csv": ev.volumes,
        "segmentation_corrected.csv": ev.corrected,
        "segmentation_corrected_per_case.csv": ev.corrected_per_case,
        "segmentation_stats.csv": ev.stats,
    }
    for fname, frame in tables.items():
        write_csv(out / fname, frame.assign(config_hash=cfg.hash))
    classes = ["background", *[lab.name for lab in cfg.tumour_labels]]
    write_json(
        out / "segmentation_confusion.json",
        {
            **provenance(cfg.hash),
            "rows": "ground truth",
            "columns": "prediction",
            "classes": classes,
            "matrices": ev.confusion,
        },
    )
    timing_path = out / "segmentation_timing.json"
    summary = {
        **provenance(cfg.hash),
        "evaluated": list(ev.confusion),
        "missing": ev.missing,
        "validation_cases": int(ev.volumes["case"].nunique()) if not ev.volumes.empty else 0,
        "paper_table": ev.paper.to_dict(orient="records"),
        "corrected_table": ev.corrected.to_dict(orient="records"),
        "timing": read_json(timing_path) if timing_path.is_file() else {},
        "files": sorted(tables),
    }
    write_json(out / "segmentation.json", summary)
    if ev.missing:
        log.warning("no complete predictions yet for: %s", ", ".join(ev.missing))
    return summary


def load_evaluation(cfg: Config) -> Evaluation:
    """Read the written metrics back (for notebooks and figures)."""
    out = cfg.paths.metrics

    def read(name: str) -> pd.DataFrame:
        path = out / name
        return pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else pd.DataFrame()

    conf = read_json(out / "segmentation_confusion.json")
    summary = read_json(out / "segmentation.json")
    return Evaluation(
        read("segmentation_paper.csv"),
        read("segmentation_paper_per_case.csv"),
        read("segmentation_volumes.csv"),
        conf["matrices"],
        read("segmentation_corrected.csv"),
        read("segmentation_corrected_per_case.csv"),
        read("segmentation_stats.csv"),
        summary.get("missing", []),
    )


def run_cli(cfg: Config, args: argparse.Namespace) -> None:
    """``gliomagen segment [--configuration NAME] [--skip-training]``."""
    summary = segment(
        cfg,
        configuration=getattr(args, "configuration", None),
        skip_training=bool(getattr(args, "skip_training", False)),
    )
    table = pd.DataFrame(summary["paper_table"])
    if not table.empty:
        print(table.drop(columns=[c for c in table if c.startswith("bland_altman")]).to_string(index=False))
    print(f"metrics written to {cfg.paths.metrics}")
