"""The long results table of ``fidelity.json``: its row schema and what every kind of row shares.

One row per (modality, metric, variant, extractor); ``variant`` is ``paper``, ``corrected`` or
``real-vs-real``. The rows themselves are computed in :mod:`gliomagen.fidelity.synthetic` (synthetic vs
real) and :mod:`gliomagen.fidelity.floor` (real vs real); this module holds the schema, the seeds, the
subject-level helpers both use, the paper's *mean* row and the status rows of what could not be computed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from gliomagen.bootstrap import Bootstrap
from gliomagen.config import MODALITIES, Config
from gliomagen.fidelity import metrics as M
from gliomagen.fidelity.subjects import SubjectResult
from gliomagen.hashing import stable_seed

log = logging.getLogger(__name__)

Row = dict[str, Any]

FLOOR = "real-vs-real"
FRD_EXTRACTOR = "frd-score v1 (pyradiomics)"


def seed(cfg: Config, *labels: str) -> int:
    """The seed of one random choice (a bootstrap, KID subsets, the real-vs-real halves), from
    ``fidelity.seed`` and labels naming the choice: the same in every process and on every machine."""
    return stable_seed(cfg.fidelity.seed, *labels)


def row(modality: str, metric: str, variant: str, extractor: str = "", **values: Any) -> Row:
    """A results row with every standard column (``None`` where not given); extra columns may be added."""
    base: Row = {
        "modality": modality,
        "metric": metric,
        "variant": variant,
        "extractor": extractor,
        "value": None,
        "spread": None,
        "spread_kind": "",
        "ci_low": None,
        "ci_high": None,
        "n_subjects": None,
        "n_slices": None,
        "status": "ok",
        "definition": "",
    }
    base.update(values)
    return base


def with_ci(r: Row, boot: Bootstrap) -> Row:
    """``r`` with the bootstrap interval (left empty when no resample gave a value)."""
    if boot.replicates:
        r.update(ci_low=boot.low, ci_high=boot.high)
    return r


def nanmean(values: np.ndarray) -> float:
    """Mean of the finite entries; ``nan`` (without a warning) when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def mean_of(values: np.ndarray) -> Callable[[np.ndarray], float]:
    """The bootstrap statistic "mean of the finite ``values`` of the resampled subjects"."""
    return lambda idx: nanmean(values[idx])


def kept_slices(cfg: Config, s: SubjectResult, modality: str) -> np.ndarray:
    """The slices the corrected metrics use: the reference's non-empty ones (or all)."""
    return s.nonempty[modality] if cfg.fidelity.exclude_empty_slices else np.ones_like(s.nonempty[modality])


def subject_ms_ssim(cfg: Config, subjects: list[SubjectResult], modality: str) -> np.ndarray:
    """Corrected 2D MS-SSIM per subject: the mean over its kept slices (NaN when none is kept)."""
    out = []
    for s in subjects:
        k = kept_slices(cfg, s, modality)
        out.append(s.ms_ssim_slices[modality][k].mean() if k.any() else np.nan)
    return np.asarray(out, np.float64)


def gather(
    subjects: list[SubjectResult], name: str, modality: str, masks: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real and generated features of the chosen slices of every subject (float64), and each row's subject."""
    real = np.concatenate([s.features[name][modality][0][k] for s, k in zip(subjects, masks, strict=True)])
    fake = np.concatenate([s.features[name][modality][1][k] for s, k in zip(subjects, masks, strict=True)])
    owner = np.concatenate([np.full(int(k.sum()), i) for i, k in enumerate(masks)])
    return real.astype(np.float64), fake.astype(np.float64), owner


def by_subjects(owner: np.ndarray, n: int) -> list[np.ndarray]:
    """The rows of each of ``n`` subjects."""
    return [np.flatnonzero(owner == i) for i in range(n)]


def resampled(groups: list[np.ndarray], idx: np.ndarray) -> np.ndarray:
    """The rows of the resampled subjects ``idx`` (with repeats)."""
    return np.concatenate([groups[i] for i in idx])


def guarded(compute: Callable[[], Row], modality: str, variant: str) -> Row:
    """An FRD row, or a status row when frd-score is missing or fails (the other metrics go on)."""
    from gliomagen.fidelity.frd import FRDUnavailable

    try:
        return compute()
    except FRDUnavailable as exc:
        return row(modality, "FRD", variant, FRD_EXTRACTOR, status=f"not available: {exc}")
    except (ValueError, RuntimeError) as exc:
        log.error("FRD (%s) failed for %s: %s", variant, modality, exc)
        return row(modality, "FRD", variant, FRD_EXTRACTOR, status=f"failed: {exc}")


def unavailable_rows(name: str, state: str, floor: bool = True) -> list[Row]:
    """Status rows of an extractor that could not run (every modality, FID and KID, every variant)."""
    return [
        row(m, metric, variant, name, status=state)
        for m in MODALITIES
        for metric in ("FID", "KID")
        for variant in ("paper", "corrected", *((FLOOR,) if floor else ()))
    ]


def mean_rows(rows: list[Row]) -> list[Row]:
    """The paper's "mean" row: mean over modalities ± SD over modalities, per metric/variant/extractor;
    real-vs-real rows also average the matched synthetic value and the ratio over the modalities.

    The SD has ddof 1. The paper's printed mean rows follow no single rule (from its own modality rows:
    MS-SSIM ± 0.06 is the ddof-1 SD 0.061, KID ± 0.003 the ddof-0 SD 0.0032, FID ± 6.5 neither 7.28 nor
    6.30), so no choice reproduces all three; docs/metrics.md says so.
    """
    frame = pd.DataFrame(rows)
    out = []
    for (metric, variant, extractor), group in frame.groupby(["metric", "variant", "extractor"], sort=False):
        values = pd.to_numeric(group["value"], errors="coerce").to_numpy(dtype=float)
        ok = group["status"].eq("ok").all() and np.isfinite(values).all() and len(values) == len(MODALITIES)
        mean, sd = M.mean_sd(values) if ok else (None, None)
        extra = {}
        if variant == FLOOR:
            for key in ("synthetic_matched", "ratio"):
                col = pd.to_numeric(group.get(key, pd.Series(dtype=float)), errors="coerce").to_numpy(float)
                fine = ok and col.size == len(MODALITIES) and np.isfinite(col).all()
                extra[key] = float(col.mean()) if fine else None
        out.append(
            row(
                "mean",
                str(metric),
                str(variant),
                str(extractor),
                value=mean,
                spread=sd,
                spread_kind="SD over modalities",
                n_subjects=group["n_subjects"].iloc[0],
                status=group["status"].iloc[0],
                definition="mean over the four modalities ± SD over modalities (the paper's mean row)",
                **extra,
            )
        )
    return out
