"""The segmentation stage: export, train and predict every configuration, score the HQ pool, evaluate.

``segment(cfg)`` runs the configurations in dependency order -- the real-only baseline first (its model
scores the synthetic pool for the HQ subset), then the ``all``-pool mixes, then the HQ mixes -- each in its
own nnU-Net process, and finally :func:`~gliomagen.segmentation.evaluation.evaluate` on the real validation
scans. Every step skips finished work, so a re-run resumes. ``gliomagen segment --configuration NAME`` runs a
single configuration (a job array can run the six in parallel once the baseline and the HQ scoring exist).
The files it writes are listed in :mod:`gliomagen.segmentation.outputs`.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from gliomagen.config import Config, ConfigError, SegConfiguration
from gliomagen.io import provenance, read_json, write_json
from gliomagen.locks import run_lock
from gliomagen.segmentation import hq as hq_mod
from gliomagen.segmentation import outputs
from gliomagen.segmentation.evaluation import (
    _predictions_complete,
    baseline_configuration,
    evaluate,
)
from gliomagen.segmentation.export import dataset_dir, export_dataset, export_images
from gliomagen.segmentation.nnunet import is_trained, make_job, model_dir, prediction_dir, run_job
from gliomagen.segmentation.outputs import Evaluation, SegmentationOutputs
from gliomagen.segmentation.selection import DatasetPlan, ExportError, plan_configuration, synthetic_pool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentResult:
    """What :func:`segment` did and measured.

    Args:
        evaluated: configurations whose validation predictions were evaluated.
        missing: configurations without complete predictions (not evaluated).
        validation_cases: real validation scans evaluated.
        paper_table: the paper's table (one row per evaluated configuration).
        corrected_table: corrected metrics, one row per configuration and BraTS region.
        timing: every measured timing of the run folder (``segmentation_timing.json``).
        this_run: the timings of this call (per configuration, ``hq_scoring_s``).
        summary_path: where the summary was written.
    """

    evaluated: tuple[str, ...]
    missing: tuple[str, ...]
    validation_cases: int
    paper_table: pd.DataFrame
    corrected_table: pd.DataFrame
    timing: dict[str, Any]
    this_run: dict[str, Any]
    summary_path: Path

    @classmethod
    def of(cls, summary: dict[str, Any], this_run: dict[str, Any], summary_path: Path) -> SegmentResult:
        """Build the result from the summary :func:`evaluate` wrote."""
        return cls(
            evaluated=tuple(summary["evaluated"]),
            missing=tuple(summary["missing"]),
            validation_cases=int(summary["validation_cases"]),
            paper_table=pd.DataFrame(summary["paper_table"]),
            corrected_table=pd.DataFrame(summary["corrected_table"]),
            timing=dict(summary["timing"]),
            this_run=this_run,
            summary_path=summary_path,
        )

    def configuration_timings(self) -> pd.DataFrame:
        """One row per configuration that was trained (and timed) in this run folder."""
        rows = {k: v for k, v in self.timing.items() if isinstance(v, dict) and "n_real" in v}
        return pd.DataFrame(rows).T


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
    for path in (model_dir(cfg, plan).parent, prediction_dir(cfg, plan.name).parent):
        if path.exists():
            log.info("%s: dataset changed, removing stale %s", plan.name, path)
            shutil.rmtree(path)


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
    export_images({str(r.id): Path(str(r.path)) for r in pool.itertuples()}, inputs)
    out = prediction_dir(cfg, baseline.name, "hq")
    run_job(cfg, {**make_job(cfg, baseline, [(inputs, out)], train=False), "name": f"{baseline.name}_hq"})
    table = hq_mod.score_synthetic(cfg, pool, out)
    return table.loc[table["hq"], "id"].tolist()


def segment(cfg: Config, configuration: str | None = None, skip_training: bool = False) -> SegmentResult:
    """Run the segmentation stage (all configurations, or only ``configuration``) and evaluate.

    Args:
        cfg: run configuration.
        configuration: a name from ``segment.configurations``; ``None`` runs them all.
        skip_training: only export datasets (and predict with existing models) and evaluate.

    Returns:
        what was evaluated, the two tables and the timings (:class:`SegmentResult`); the same summary is
        written to ``<run>/metrics/segmentation.json``.
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
    return SegmentResult.of(evaluate(cfg), timings, SegmentationOutputs(cfg.paths).summary)


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
    path = SegmentationOutputs(cfg.paths).timing
    old = read_json(path) if path.is_file() else {}
    fresh = {
        k: v
        for k, v in timings.items()
        if not (isinstance(v, dict) and v.get("skipped") and isinstance(old.get(k), dict))
    }
    write_json(path, {**old, **fresh, **provenance(cfg.hash)})


def load_evaluation(cfg: Config) -> Evaluation:
    """The written metrics of the run (:func:`gliomagen.segmentation.outputs.load_evaluation`)."""
    return outputs.load_evaluation(SegmentationOutputs(cfg.paths))


def run_cli(cfg: Config, args: argparse.Namespace) -> None:
    """``gliomagen segment [--configuration NAME] [--skip-training]``: run the stage, print the paper table.

    The verb's entry is :mod:`gliomagen.segmentation.cli` (its options and this function); it lives here
    until ``gliomagen.cli`` names ``gliomagen.segmentation.cli:run_cli``, so that both paths work meanwhile.
    """
    result = segment(
        cfg,
        configuration=getattr(args, "configuration", None),
        skip_training=bool(getattr(args, "skip_training", False)),
    )
    table = result.paper_table
    if not table.empty:
        print(
            table.drop(columns=[c for c in table.columns if str(c).startswith("bland_altman")]).to_string(
                index=False
            )
        )
    print(f"metrics written to {cfg.paths.metrics}")
