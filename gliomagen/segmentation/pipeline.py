"""The segmentation stage: export, train and predict every configuration, score the HQ pool, evaluate.

``segment(cfg)`` runs the configurations in dependency order -- the real-only baseline first and alone (its
model scores the synthetic pool for the HQ subset; with ``segment.shared_plans`` the others take its plans),
then the HQ scoring, then the ``all``-pool mixes and the HQ mixes, several at a time where the runtime allows
(:mod:`gliomagen.segmentation.schedule`) -- each in its own nnU-Net process, and finally
:func:`~gliomagen.segmentation.evaluation.evaluate` on the real validation scans. Every step skips finished
work, so a re-run resumes. ``gliomagen segment --configuration NAME`` runs a single configuration (a job
array can run the six in parallel once the baseline and the HQ scoring exist).
The files it writes are listed in :mod:`gliomagen.segmentation.outputs`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import shutil
import time
from collections.abc import Callable
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
from gliomagen.segmentation.nnunet import (
    is_trained,
    make_job,
    model_dir,
    prediction_dir,
    run_job,
    write_job,
)
from gliomagen.segmentation.outputs import Evaluation, SegmentationOutputs
from gliomagen.segmentation.schedule import (
    concurrent_configurations,
    overlapping,
    run_scheduled,
    stop_worker_processes,
)
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


def prepare_configuration(
    cfg: Config,
    conf: SegConfiguration,
    hq_ranking: list[str] | None,
    skip_training: bool,
    plans_from: str | None = None,
) -> tuple[DatasetPlan, dict[str, Any] | None]:
    """Export one configuration and describe its nnU-Net process's work (``None``: it has nothing to do)."""
    plan = plan_configuration(cfg, conf, hq_ranking)
    if export_dataset(cfg, plan):
        _clear_outputs(cfg, plan)
    images_ts = dataset_dir(cfg, plan) / "imagesTs"
    predict = [(images_ts, prediction_dir(cfg, plan.name))]
    if skip_training:
        if is_trained(cfg, plan) and not _predictions_complete(cfg, plan.name):
            return plan, make_job(cfg, plan, predict, train=False)
        return plan, None
    if is_trained(cfg, plan) and _predictions_complete(cfg, plan.name):
        return plan, None
    return plan, make_job(cfg, plan, predict, plans_from=plans_from)


def run_configuration(
    cfg: Config,
    conf: SegConfiguration,
    hq_ranking: list[str] | None,
    skip_training: bool,
    plans_from: str | None = None,
) -> tuple[DatasetPlan, dict[str, Any]]:
    """Export one configuration and (unless skipped) train and predict it in its own process."""
    plan, job = prepare_configuration(cfg, conf, hq_ranking, skip_training, plans_from)
    return plan, {"skipped": True} if job is None else run_job(cfg, job)


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

    What the others need runs first and alone: the first configuration when they reuse its plans
    (``segment.shared_plans``) or when it is the real-only baseline, then the HQ scoring with the baseline's
    model. The rest run up to :func:`~gliomagen.segmentation.schedule.concurrent_configurations` at a time
    (each in its own nnU-Net process, with its fixed seed: the results do not depend on the order); each
    configuration's timing lists the configurations that ran ``concurrent_with`` it.

    Args:
        cfg: run configuration.
        configuration: a name from ``segment.configurations``; ``None`` runs them all.
        skip_training: only export datasets (and predict with existing models) and evaluate.

    Returns:
        what was evaluated, the two tables and the timings (:class:`SegmentResult`); the same summary is
        written to ``<run>/metrics/segmentation.json``.

    Raises:
        Exception: a configuration's failure (with a note naming it); the configurations running beside it
            finish and are recorded first, and no new one starts.
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
    hq_ranking = hq_mod.hq_ranking(cfg)
    hq_needed = hq_ranking is None and any(_needs_hq(c) for c in todo)
    alone, together = _phases(cfg, todo, hq_needed)
    by_name = {c.name: c for c in todo}
    order = [*[c.name for c in alone], "hq_scoring_s", *[c.name for c in together]]
    timings: dict[str, Any] = {}
    plans: dict[str, DatasetPlan] = {}
    # (start, end) of each configuration of this call, end None while it runs: what ran concurrently
    intervals: dict[str, tuple[float, float | None]] = {}
    locks: dict[str, contextlib.ExitStack] = {}

    def start(name: str) -> Callable[[], tuple[dict[str, Any], float]]:
        """Take the configuration's lock, export it and write its job (this thread writes every file)."""
        conf = by_name[name]
        nothing_running = all(end is not None for _, end in intervals.values())
        locks[name] = contextlib.ExitStack()
        # one process per data mix at a time (export, training, prediction); others may run in parallel.
        # Partial files of dead writers are cleaned only while none of this run's nnU-Net processes runs:
        # the listing of nnunet/ fails when a running one removes a folder meanwhile
        locks[name].enter_context(
            run_lock(cfg.paths.root, f"segment-{name}", clean=[cfg.paths.nnunet] if nothing_running else [])
        )
        t0 = time.perf_counter()
        intervals[name] = (t0, None)
        first_planned = next((plans[c.name].dataset_name for c in alone if c.name in plans), None)
        try:
            plan, job = prepare_configuration(
                cfg, conf, hq_ranking, skip_training, _plans_source(cfg, conf, first_planned)
            )
        except BaseException:
            intervals[name] = (t0, time.perf_counter())
            locks[name].close()
            raise
        plans[name] = plan
        if job is None:
            return lambda: ({"skipped": True}, time.perf_counter())
        return functools.partial(_run_timed, cfg, job, write_job(cfg, job))

    def finish(name: str, result: tuple[dict[str, Any], float]) -> None:
        timing, end = result
        locks[name].close()
        t0 = intervals[name][0]
        intervals[name] = (t0, end)
        timings[name] = {
            **timing,
            "wall_s": round(end - t0, 2),
            "concurrent_with": overlapping(intervals, name),
            **plans[name].summary(),
        }
        log.info("configuration %s: %s", name, timing)
        # after every configuration, so an interruption keeps what was measured
        _merge_timings(cfg, {k: timings[k] for k in order if k in timings})
        progress.update()

    with tqdm(total=len(todo), desc="nnU-Net configurations", unit="config") as progress:
        try:
            for conf in alone:
                finish(conf.name, start(conf.name)())
            if hq_needed:
                assert base_conf is not None
                t0 = time.perf_counter()
                base_plan = plans.get(base_conf.name) or plan_configuration(cfg, base_conf)
                with run_lock(cfg.paths.root, f"segment-{base_conf.name}"):  # its model must not change
                    hq_ranking = compute_hq(cfg, base_plan, skip_training)
                timings["hq_scoring_s"] = round(time.perf_counter() - t0, 2)
                _merge_timings(cfg, {k: timings[k] for k in order if k in timings})
            run_scheduled(
                [c.name for c in together],
                start,
                finish,
                concurrent_configurations(cfg),
                stop_worker_processes,
            )
        finally:
            for stack in locks.values():
                stack.close()  # the locks of configurations that failed or were interrupted
    return SegmentResult.of(evaluate(cfg), timings, SegmentationOutputs(cfg.paths).summary)


def _run_timed(cfg: Config, job: dict[str, Any], written: Path) -> tuple[dict[str, Any], float]:
    """Run a written job (in a pool thread) and note when it ended."""
    return run_job(cfg, job, written), time.perf_counter()


def _phases(
    cfg: Config, todo: list[SegConfiguration], hq_needed: bool
) -> tuple[list[SegConfiguration], list[SegConfiguration]]:
    """Split ``todo`` into what must run first, alone, and what may then run concurrently.

    Alone: the first configuration when the others reuse its nnU-Net plans (``segment.shared_plans``), or
    when it is the real-only baseline and the HQ scoring (with its model) is still to come.
    """
    first_needed = cfg.segment.shared_plans or (hq_needed and todo[0] is baseline_configuration(cfg))
    if todo and todo[0] is _ordered(cfg)[0] and first_needed:
        return todo[:1], todo[1:]
    return [], todo


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
