"""Percentile bootstrap over subjects: the project's one resampling rule for every interval it reports.

Slices, lesions and voxels of one subject are correlated, so the subject (or the pair of subjects) is the
unit that is resampled. Replicates whose statistic is not finite (e.g. a ratio to a zero floor) are left
out of the interval and *counted* (``Bootstrap.replicates``), never dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bootstrap:
    """A statistic with a percentile bootstrap interval over subjects.

    Args:
        estimate: the statistic on all subjects.
        low: lower bound of the interval (``nan`` without resamples).
        high: upper bound.
        se: SD of the bootstrap replicates.
        replicates: how many resamples produced a finite value.
        confidence: level of the interval.
    """

    estimate: float
    low: float
    high: float
    se: float
    replicates: int
    confidence: float


def bootstrap_subjects(
    statistic: Callable[[np.ndarray], float],
    n_subjects: int,
    n_boot: int,
    seed: int,
    confidence: float = 0.95,
) -> Bootstrap:
    """Percentile bootstrap of ``statistic`` resampling *subjects* with replacement.

    Slices of one subject are correlated, so the subject (not the slice) is the unit that is resampled.

    Args:
        statistic: maps an array of subject indices (with repeats) to a number.
        n_subjects: number of subjects.
        n_boot: resamples (0 = estimate only).
        seed: seed of the resampling (same seed, same interval).
        confidence: interval level, e.g. 0.95.
    """
    if n_subjects < 1:
        raise ValueError("bootstrap needs at least one subject")
    estimate = float(statistic(np.arange(n_subjects)))
    rng = np.random.default_rng(seed)
    reps = np.asarray([statistic(rng.integers(0, n_subjects, n_subjects)) for _ in range(n_boot)], float)
    return summarise_replicates(estimate, reps, confidence)


def summarise_replicates(estimate: float, reps: np.ndarray, confidence: float) -> Bootstrap:
    """The interval of bootstrap replicates ``reps`` around ``estimate`` (non-finite replicates counted out)."""
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return Bootstrap(estimate, float("nan"), float("nan"), float("nan"), 0, confidence)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(reps, [alpha, 1 - alpha])
    se = float(reps.std(ddof=1)) if reps.size > 1 else 0.0
    return Bootstrap(estimate, float(low), float(high), se, int(reps.size), confidence)
