"""The segmentation stage's file contract (outputs.py) and the worker's process-pool rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from gliomagen.paths import RunPaths
from gliomagen.segmentation.outputs import (
    TABLES,
    SegmentationOutputs,
    load_evaluation,
    read_hq_scores,
    read_summary,
    read_timing,
)
from gliomagen.segmentation.worker import CASES_PER_PROCESS, _InlinePool, _pools_inline, pool_size


def test_marker_and_declared_files():
    out = SegmentationOutputs(RunPaths(Path("/run")))
    assert out.markers() == [Path("/run/metrics/segmentation.json")]
    names = {p.name for p in out.declared()}
    assert {
        *TABLES.values(),
        "segmentation.json",
        "segmentation_hq_scores.csv",
        "segmentation_timing.json",
    } <= names
    assert out.predictions("real_only") == Path("/run/nnunet/predictions/real_only/val")
    assert out.log("real_only_hq") == Path("/run/logs/nnunet_real_only_hq.log")


def test_readers_before_the_stage_ran(tmp_path):
    out = SegmentationOutputs(RunPaths(tmp_path))
    assert read_summary(out) == {} and read_timing(out) == {}
    with pytest.raises(FileNotFoundError, match="gliomagen segment"):
        load_evaluation(out)
    with pytest.raises(FileNotFoundError, match="HQ scoring"):
        read_hq_scores(out)


def test_small_datasets_run_nnunet_in_process():
    assert pool_size(8, 13) == 1  # the smoke datasets: no spawned pool
    assert pool_size(2, 2 * CASES_PER_PROCESS) == 2
    assert pool_size(8, 1350) == 8  # BraTS size: every worker


def test_inline_pool_runs_tasks_in_order_in_this_process():
    pool = _InlinePool(4)
    assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
    assert pool.starmap_async(pow, [(2, 5)]).get() == [32] and all(w.is_alive() for w in pool._pool)
    from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor
    from nnunetv2.utilities import utils

    before, pool_before = fingerprint_extractor.multiprocessing, utils.Pool
    with _pools_inline():
        assert fingerprint_extractor.multiprocessing.get_context("spawn").Pool is _InlinePool
        assert utils.Pool is _InlinePool
    assert fingerprint_extractor.multiprocessing is before and utils.Pool is pool_before
