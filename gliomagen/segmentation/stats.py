"""Paired comparison of each configuration with the real-only baseline, per metric and region.

Every configuration is evaluated on the same validation scans, so the comparison is paired by scan: the
Wilcoxon signed-rank test (scipy) on the per-scan differences, and a seeded percentile bootstrap
confidence interval of the mean difference that resamples scans (the unit that was sampled, not voxels or
slices), by the project's one bootstrap rule (:func:`gliomagen.bootstrap.bootstrap_subjects`), seeded per
(configuration, group, metric) so that each interval does not depend on which others were computed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from gliomagen.bootstrap import bootstrap_subjects
from gliomagen.hashing import stable_seed


def mean_ci(diff: np.ndarray, n_boot: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap CI of ``mean(diff)`` resampling the paired scans (NaN without scans or resamples)."""
    if n_boot == 0 or diff.size == 0:
        return float("nan"), float("nan")
    boot = bootstrap_subjects(lambda idx: float(diff[idx].mean()), diff.size, n_boot, seed, confidence)
    return boot.low, boot.high


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; NaN when every difference is zero or there is none."""
    if diff.size == 0 or not np.any(diff != 0):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_comparison(
    per_case: pd.DataFrame,
    metrics: Sequence[str],
    baseline: str,
    n_boot: int,
    confidence: float,
    seed: int,
    group: str | None = "region",
) -> pd.DataFrame:
    """Compare every configuration with ``baseline`` on each metric (and each ``group`` value).

    Args:
        per_case: long table with columns ``configuration``, ``case``, the metrics and ``group``.
        metrics: metric columns to compare.
        baseline: configuration name of the reference (real only).
        n_boot: bootstrap resamples.
        confidence: CI level.
        seed: bootstrap seed.
        group: an extra key (e.g. ``region``) or ``None``.

    Returns:
        one row per (configuration, group, metric): ``n`` (scans with a finite value in both),
        ``n_nonfinite`` (scans left out because a value is infinite), ``baseline_mean``, ``mean``, ``mean_diff``,
        ``ci_low``, ``ci_high``, ``p_wilcoxon`` (differences are configuration minus baseline).
    """
    keys = ["case"] + ([group] if group else [])
    rows = []
    groups = sorted(per_case[group].unique()) if group else [None]
    for g in groups:
        part = per_case if g is None else per_case[per_case[group] == g]
        for metric in metrics:
            wide = part.pivot_table(index=keys, columns="configuration", values=metric, aggfunc="first")
            if baseline not in wide:
                continue
            for conf in wide.columns:
                if conf == baseline:
                    continue
                pair = wide[[baseline, conf]].dropna()
                # BraTS lesion-wise HD95 is infinite where no lesion matched: such a scan has no finite
                # difference; it is left out of the mean and the test, and counted in n_nonfinite
                finite = np.isfinite(pair.to_numpy(float)).all(axis=1)
                n_nonfinite = int((~finite).sum())
                pair = pair[finite]
                diff = (pair[conf] - pair[baseline]).to_numpy(float)
                low, high = mean_ci(diff, n_boot, confidence, stable_seed(seed, conf, g, metric))
                rows.append(
                    {
                        "configuration": conf,
                        **({group: g} if group else {}),
                        "metric": metric,
                        "n": int(diff.size),
                        "n_nonfinite": n_nonfinite,
                        "baseline_mean": float(pair[baseline].mean()) if diff.size else float("nan"),
                        "mean": float(pair[conf].mean()) if diff.size else float("nan"),
                        "mean_diff": float(diff.mean()) if diff.size else float("nan"),
                        "ci_low": low,
                        "ci_high": high,
                        "p_wilcoxon": wilcoxon_p(diff),
                    }
                )
    return pd.DataFrame(rows)
