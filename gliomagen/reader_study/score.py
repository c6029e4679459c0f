"""Scoring a reader study: readings + the answer key -> detection, realism and agreement.

Detection is scored with **synthetic as the positive class**: sensitivity = synthetic panels called synthetic,
specificity = real panels called real. Confidence intervals are Wilson score intervals (scipy's
``binomtest``), and ``p_chance`` is the exact two-sided binomial test of the accuracy against 0.5. Rows for
"all readers" pool every reading; their intervals treat readings as independent, which overstates precision
when readers see the same panels (reported in the summary's notes). Answer files are read by
:mod:`gliomagen.reader_study.answers`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest, mannwhitneyu

from gliomagen.config import Config
from gliomagen.io import provenance, write_csv, write_json
from gliomagen.locks import run_lock
from gliomagen.reader_study.answers import ANSWERS, read_all_answers
from gliomagen.reader_study.outputs import ReaderStudyOutputs, read_key

log = logging.getLogger(__name__)

ALL_READERS = "all readers"
STRATUM_NAMES = {"all": "4-modality"}
KIND_ORDER = ("t1n", "t1c", "t2w", "t2f", "all")
LOCATION_ORDER = ("lesion", "away")

#: the detection columns a person reads first (the CLI and notebook 08 show these)
SUMMARY_COLUMNS: list[str] = [
    "reader", "n", "accuracy", "accuracy_low", "accuracy_high", "sensitivity", "specificity", "p_chance",
]  # fmt: skip


@dataclass(frozen=True)
class ScoreResult:
    """Everything :func:`score_readings` computes.

    Args:
        detection: one row per reader (and pooled) and stratum with counts, accuracy, sensitivity and
            specificity with confidence bounds, and the binomial p-value against chance.
        ratings: realism ratings of real vs synthetic panels per reader (and pooled) and stratum.
        agreement: inter-reader agreement on the real/synthetic calls.
        readings: every reading joined with the key.
        outputs: files written (by :func:`score`).
    """

    detection: pd.DataFrame
    ratings: pd.DataFrame
    agreement: dict[str, Any]
    readings: pd.DataFrame
    outputs: tuple[Path, ...] = ()


def proportion(k: int, n: int, confidence: float) -> tuple[float, float, float]:
    """Proportion k/n with its Wilson score interval (NaN when n is 0)."""
    if n == 0:
        return math.nan, math.nan, math.nan
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return k / n, float(ci.low), float(ci.high)


def detection_row(truth: Iterable[str], called: Iterable[str], confidence: float) -> dict[str, float]:
    """Confusion counts and accuracy / sensitivity / specificity (positive = synthetic) with CIs."""
    t = np.asarray(list(truth)) == "synthetic"
    c = np.asarray(list(called)) == "synthetic"
    tp, fn, tn, fp = int((t & c).sum()), int((t & ~c).sum()), int((~t & ~c).sum()), int((~t & c).sum())
    n = tp + fn + tn + fp
    row: dict[str, float] = {"n": n, "tp": tp, "fn": fn, "tn": tn, "fp": fp}
    for name, (k, m) in {
        "accuracy": (tp + tn, n),
        "sensitivity": (tp, tp + fn),
        "specificity": (tn, tn + fp),
    }.items():
        value, low, high = proportion(k, m, confidence)
        row |= {name: value, f"{name}_low": low, f"{name}_high": high}
    row["p_chance"] = float(binomtest(tp + tn, n, 0.5).pvalue) if n else math.nan
    return row


def _strata(readings: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Overall, then per panel kind and per location, in a fixed order (only those present)."""
    strata = [("overall", readings)]
    for column, levels in (("kind", KIND_ORDER), ("location", LOCATION_ORDER)):
        present = set(readings[column])
        for level in [*levels, *sorted(present - set(levels))]:
            if level in present:
                strata.append((STRATUM_NAMES.get(level, level), readings[readings[column] == level]))
    return strata


def _by_reader(readings: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    readers = [(str(r), g) for r, g in readings.groupby("reader", sort=True)]
    return readers + [(ALL_READERS, readings)] if len(readers) > 1 else readers


def ratings_row(truth: Iterable[str], rating: Iterable[int]) -> dict[str, float]:
    """Realism ratings of real vs synthetic panels and a Mann-Whitney U test between them."""
    frame = pd.DataFrame({"truth": list(truth), "rating": np.asarray(list(rating), dtype=float)})
    row: dict[str, float] = {}
    groups = {}
    for label in ANSWERS:
        r = frame.loc[frame["truth"] == label, "rating"]
        groups[label] = r
        row |= {
            f"{label}_n": len(r),
            f"{label}_mean": r.mean(),
            f"{label}_sd": r.std(ddof=1),
            f"{label}_median": r.median(),
        }
    row["difference"] = row["real_mean"] - row["synthetic_mean"]
    a, b = groups["real"], groups["synthetic"]
    row["mannwhitney_p"] = (
        float(mannwhitneyu(a, b, alternative="two-sided").pvalue) if len(a) and len(b) else math.nan
    )
    return row


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an items x categories matrix of rater counts (same number of raters per item).

    Written out because statsmodels is not a dependency; the formula is Fleiss (1971):
    P_i = (sum_j n_ij^2 - n) / (n (n - 1)), P_bar = mean P_i, P_e = sum_j p_j^2, kappa = (P_bar - P_e) / (1 - P_e).
    """
    counts = np.asarray(counts, dtype=float)
    raters = counts.sum(axis=1)
    if counts.ndim != 2 or len(counts) == 0 or not np.all(raters == raters[0]) or raters[0] < 2:
        raise ValueError(
            "need an items x categories count matrix with the same number (>= 2) of raters per item"
        )
    n = raters[0]
    p_items = ((counts**2).sum(axis=1) - n) / (n * (n - 1))
    p_cat = counts.sum(axis=0) / counts.sum()
    p_bar, p_e = p_items.mean(), (p_cat**2).sum()
    return math.nan if math.isclose(p_e, 1.0) else float((p_bar - p_e) / (1 - p_e))


def agreement(readings: pd.DataFrame) -> dict[str, Any]:
    """Agreement of the real/synthetic calls: Cohen's kappa for two readers, Fleiss' kappa for more."""
    table = readings.pivot(index="panel_id", columns="reader", values="answer")
    readers = list(table.columns)
    out: dict[str, Any] = {"readers": len(readers), "panels": len(table), "method": None, "kappa": math.nan}
    if len(readers) < 2:
        out["note"] = "agreement needs at least two readers"
        return out
    calls = table.to_numpy()
    out["observed_agreement"] = float(np.mean([len(set(row)) == 1 for row in calls]))
    if len(readers) == 2:
        from sklearn.metrics import cohen_kappa_score

        out["method"], out["name"] = "cohen", "Cohen's kappa"
        out["kappa"] = float(cohen_kappa_score(calls[:, 0], calls[:, 1], labels=list(ANSWERS)))
    else:
        counts = np.stack([(calls == label).sum(axis=1) for label in ANSWERS], axis=1)
        out["method"], out["name"] = "fleiss", "Fleiss' kappa"
        out["kappa"] = fleiss_kappa(counts)
    return out


def score_readings(readings: pd.DataFrame, key: pd.DataFrame, confidence: float = 0.95) -> ScoreResult:
    """Score validated readings (:func:`read_all_answers`) against the key."""
    merged = readings.merge(key[["panel_id", "truth", "kind", "location"]], on="panel_id", how="left")
    detection, ratings = [], []
    for reader, group in _by_reader(merged):
        for stratum, part in _strata(group):
            detection.append(
                {
                    "reader": reader,
                    "stratum": stratum,
                    **detection_row(part["truth"], part["answer"], confidence),
                }
            )
            ratings.append(
                {"reader": reader, "stratum": stratum, **ratings_row(part["truth"], part["rating"])}
            )
    return ScoreResult(pd.DataFrame(detection), pd.DataFrame(ratings), agreement(merged), merged)


def score(cfg: Config, answers: Sequence[str | Path] | None = None, tag: str = "") -> ScoreResult:
    """Score a run's reader study and write the scores (:class:`ReaderStudyOutputs` ``detection``, ``ratings``,
    ``summary``) under the run folder's ``reader-study`` lock.

    Args:
        cfg: the run configuration.
        answers: answer files or folders (default: the run's answers folder, ``<run>/reader_study/answers/``).
        tag: output name suffix, e.g. ``simulated``, so simulated and real results never mix.

    Raises:
        gliomagen.reader_study.answers.AnswerFileError: a bad answer file (the message names it).
        gliomagen.locks.LockHeld: another process is building or scoring this run's reader study.
    """
    outputs = ReaderStudyOutputs(cfg.paths)
    key = read_key(outputs.files.key)
    readings = read_all_answers(answers or [outputs.files.answers], key)
    result = score_readings(readings, key, cfg.reader_study.confidence)
    with run_lock(cfg.paths.root, "reader-study"):
        written = (
            write_csv(outputs.detection(tag), result.detection),
            write_csv(outputs.ratings(tag), result.ratings),
            write_json(outputs.summary(tag), _summary(result, key, cfg)),
        )
    log.info(
        "reader study scored: %d reader(s), %d panels -> %s",
        result.agreement["readers"],
        len(key),
        cfg.paths.metrics,
    )
    return dataclasses.replace(result, outputs=written)


def _summary(result: ScoreResult, key: pd.DataFrame, cfg: Config) -> dict[str, Any]:
    pooled = result.detection[result.detection["stratum"] == "overall"]
    per_reader = pooled[pooled["reader"] != ALL_READERS]
    return {
        "kit_id": str(key["kit_id"].iloc[0]),
        "panels": len(key),
        "readers": sorted(result.readings["reader"].unique()),
        "files": sorted(result.readings["file"].unique()),
        "confidence": cfg.reader_study.confidence,
        "positive_class": "synthetic",
        "overall": _records(pooled),
        "mean_reader_accuracy": float(per_reader["accuracy"].mean()),
        "agreement": result.agreement,
        "notes": [
            "Wilson score intervals; p_chance: exact two-sided binomial test of accuracy against 0.5.",
            "Rows for 'all readers' pool readings as if independent; readers share panels, so those "
            "intervals are too narrow. Prefer per-reader rows or the mean reader accuracy.",
        ],
        **provenance(cfg.hash),
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return records
