"""Score a reader study: readers' answer files + the answer key -> detection, realism and agreement.

Answer files are what the kit's page exports (``Export CSV`` / ``Export JSON``); :func:`write_answer_file`
writes the same two formats from Python (used by the simulated readers and the tests).

* JSON: ``{"format": "gliomagen-reader-study-answers", "version": 1, "kit_id", "reader", "exported_at",
  "complete", "n_panels", "answers": [{"panel_id", "position", "answer", "rating", "comment", "seconds",
  "answered_at"}, ...]}``
* CSV: one row per panel with the columns of :data:`CSV_COLUMNS`.

``answer`` is ``real`` or ``synthetic``; ``rating`` an integer 1 (clearly artificial) .. 5 (indistinguishable
from a real scan). Detection is scored with **synthetic as the positive class**: sensitivity = synthetic
panels called synthetic, specificity = real panels called real. Confidence intervals are Wilson score
intervals (scipy's ``binomtest``), and ``p_chance`` is the exact two-sided binomial test of the accuracy
against 0.5. Rows for "all readers" pool every reading; their intervals treat readings as independent,
which overstates precision when readers see the same panels (reported in the summary's notes).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest, mannwhitneyu

from gliomagen.config import Config
from gliomagen.io import atomic_path, provenance, write_csv, write_json

log = logging.getLogger(__name__)

ANSWER_FORMAT = "gliomagen-reader-study-answers"
CSV_COLUMNS = [
    "kit_id",
    "reader",
    "panel_id",
    "position",
    "answer",
    "rating",
    "comment",
    "seconds",
    "answered_at",
]
REQUIRED_CSV = ["kit_id", "reader", "panel_id", "answer", "rating"]
ANSWERS = ("real", "synthetic")
ALL_READERS = "all readers"
STRATUM_NAMES = {"all": "4-modality"}
KIND_ORDER = ("t1n", "t1c", "t2w", "t2f", "all")
LOCATION_ORDER = ("lesion", "away")

#: the detection columns a person reads first (the CLI and notebook 08 show these)
SUMMARY_COLUMNS: list[str] = [
    "reader", "n", "accuracy", "accuracy_low", "accuracy_high", "sensitivity", "specificity", "p_chance",
]  # fmt: skip


class AnswerFileError(ValueError):
    """An answer file is malformed, incomplete or belongs to another kit; the message names the file."""


@dataclass
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
    outputs: list[Path] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ reading
def read_key(path: str | Path) -> pd.DataFrame:
    """The organiser's answer key (``answer_key.csv`` written by the build)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: answer key not found; build the kit first (gliomagen reader-study build)"
        )
    key = pd.read_csv(path, dtype={"panel_id": str, "kit_id": str, "case_id": str})
    missing = {"kit_id", "panel_id", "truth", "kind", "location"} - set(key.columns)
    if missing:
        raise ValueError(f"{path}: not an answer key (missing columns {sorted(missing)})")
    if key["kit_id"].nunique() != 1:
        raise ValueError(f"{path}: the key mixes several kits {sorted(key['kit_id'].unique())}")
    bad = sorted(set(key["truth"]) - set(ANSWERS))
    if bad:
        raise ValueError(f"{path}: truth must be real or synthetic, found {bad}")
    return key


def _raw_entries(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """File-level fields (kit_id, reader) and the per-panel entries of a CSV or JSON export."""
    if not path.is_file():
        raise AnswerFileError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AnswerFileError(f"{path}: cannot read the file as UTF-8 text ({exc})") from None
    if not text.strip():
        raise AnswerFileError(f"{path}: the file is empty")
    if path.suffix.lower() == ".json":
        return _json_entries(path, text)
    if path.suffix.lower() == ".csv":
        return _csv_entries(path, text)
    raise AnswerFileError(f"{path}: unknown answer file type {path.suffix!r} (expected .csv or .json)")


def _json_entries(path: Path, text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnswerFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != ANSWER_FORMAT:
        raise AnswerFileError(
            f'{path}: not a reader-study answer file (expected "format": "{ANSWER_FORMAT}")'
        )
    entries = data.get("answers")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise AnswerFileError(f'{path}: "answers" must be a list of objects')
    return {"kit_id": data.get("kit_id"), "reader": data.get("reader")}, entries


def _csv_entries(path: Path, text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        rows = list(csv.DictReader(text.splitlines(keepends=True)))
    except csv.Error as exc:
        raise AnswerFileError(f"{path}: not a valid CSV file ({exc})") from None
    header = list(rows[0].keys()) if rows else next(csv.reader(text.splitlines()), [])
    missing = [c for c in REQUIRED_CSV if c not in header]
    if missing:
        raise AnswerFileError(
            f"{path}: missing CSV column(s) {missing}; expected header {','.join(CSV_COLUMNS)}"
        )
    if any(None in row for row in rows):
        raise AnswerFileError(f"{path}: a row has more fields than the header (unquoted comma in a comment?)")
    meta = {}
    for column in ("kit_id", "reader"):
        values = {row[column] for row in rows}
        if len(values) > 1:
            raise AnswerFileError(f"{path}: column {column} must hold one value, found {sorted(values)}")
        meta[column] = values.pop() if values else None
    return meta, rows


def _rating(value: Any) -> int | None:
    """An integer 1..5, ``None`` for blank; raises ``ValueError`` otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(value)
    number = float(value)
    if not number.is_integer() or not 1 <= number <= 5:
        raise ValueError(value)
    return int(number)


def read_answers(path: str | Path, key: pd.DataFrame) -> pd.DataFrame:
    """Read and validate one reader's export against the key.

    Args:
        path: a ``.csv`` or ``.json`` file exported by the page (or :func:`write_answer_file`).
        key: the answer key (:func:`read_key`).

    Returns:
        One row per panel: reader, panel_id, answer, rating, comment, seconds, file.

    Raises:
        AnswerFileError: naming the file and the problem (format, other kit, missing reader, unknown,
            duplicate or unanswered panels, invalid answer or rating).
    """
    path = Path(path)
    meta, entries = _raw_entries(path)
    kit_id = str(key["kit_id"].iloc[0])
    if str(meta.get("kit_id") or "") != kit_id:
        raise AnswerFileError(
            f"{path}: answers are for kit {meta.get('kit_id')!r}, but the key is for kit {kit_id!r}"
        )
    reader = str(meta.get("reader") or "").strip()
    if not reader:
        raise AnswerFileError(f"{path}: the reader's name is missing")
    rows, problems = [], []
    for number, entry in enumerate(entries, start=1):
        pid = str(entry.get("panel_id") or "").strip()
        answer = str(entry.get("answer") or "").strip().lower()
        try:
            rating = _rating(entry.get("rating"))
        except (TypeError, ValueError):
            problems.append(
                f"entry {number} (panel {pid}): rating {entry.get('rating')!r} is not an integer 1-5"
            )
            continue
        if answer and answer not in ANSWERS:
            problems.append(
                f"entry {number} (panel {pid}): answer {entry.get('answer')!r} is not real/synthetic"
            )
            continue
        seconds = pd.to_numeric(pd.Series([entry.get("seconds")]), errors="coerce").iloc[0]
        rows.append(
            {
                "reader": reader,
                "panel_id": pid,
                "answer": answer or None,
                "rating": rating,
                "comment": str(entry.get("comment") or ""),
                "seconds": seconds,
                "file": str(path),
            }
        )
    if problems:
        raise AnswerFileError(
            f"{path}: {len(problems)} invalid entr{'y' if len(problems) == 1 else 'ies'}: "
            + "; ".join(problems[:5])
            + (" ..." if len(problems) > 5 else "")
        )
    frame = pd.DataFrame(
        rows, columns=["reader", "panel_id", "answer", "rating", "comment", "seconds", "file"]
    )
    _check_coverage(path, frame, key)
    return frame


def _check_coverage(path: Path, frame: pd.DataFrame, key: pd.DataFrame) -> None:
    """Every panel of the key answered exactly once, nothing else."""
    ids = frame["panel_id"]
    dup = sorted(ids[ids.duplicated()].unique())
    if dup:
        raise AnswerFileError(f"{path}: panel(s) answered more than once: {_short(dup)}")
    unknown = sorted(set(ids) - set(key["panel_id"]))
    if unknown:
        raise AnswerFileError(f"{path}: {len(unknown)} panel id(s) are not in the kit: {_short(unknown)}")
    absent = sorted(set(key["panel_id"]) - set(ids))
    blank = sorted(frame.loc[frame["answer"].isna() | frame["rating"].isna(), "panel_id"])
    if absent or blank:
        n = len(absent) + len(blank)
        raise AnswerFileError(
            f"{path}: incomplete: {n} of {len(key)} panels lack an answer or a rating "
            f"({_short(absent + blank)}); the reader should finish the study and export again"
        )


def _short(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def answer_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders to the ``.csv``/``.json`` files inside (sorted); files are kept as given."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix.lower() in {".csv", ".json"} and q.is_file())
        else:
            found.append(p)
    return found


def read_all_answers(paths: Iterable[str | Path], key: pd.DataFrame) -> pd.DataFrame:
    """Read several readers' files; each reader may appear in one file only."""
    frames, seen = [], {}
    for path in answer_files(paths):
        frame = read_answers(path, key)
        reader = frame["reader"].iloc[0]
        if reader in seen:
            raise AnswerFileError(
                f"{path}: reader {reader!r} also answered in {seen[reader]}; keep one file per reader"
            )
        seen[reader] = path
        frames.append(frame)
    if not frames:
        raise AnswerFileError(f"no answer files (.csv or .json) found in {', '.join(map(str, paths))}")
    return pd.concat(frames, ignore_index=True)


def write_answer_file(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write an answer payload (the JSON structure above) as ``.json`` or, like the page, as ``.csv``."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return write_json(path, payload)
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, CSV_COLUMNS, quoting=csv.QUOTE_ALL)
        writer.writeheader()
        for entry in payload["answers"]:
            writer.writerow(
                {
                    "kit_id": payload["kit_id"],
                    "reader": payload["reader"],
                    **{c: entry.get(c, "") for c in CSV_COLUMNS[2:]},
                }
            )
    return path


# ------------------------------------------------------------------------------------------ scoring
def proportion(k: int, n: int, confidence: float) -> tuple[float, float, float]:
    """Proportion k/n with its Wilson score interval (NaN when n is 0)."""
    if n == 0:
        return math.nan, math.nan, math.nan
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return k / n, float(ci.low), float(ci.high)


def detection_row(truth: Sequence[str], called: Sequence[str], confidence: float) -> dict[str, float]:
    """Confusion counts and accuracy / sensitivity / specificity (positive = synthetic) with CIs."""
    t = np.asarray(truth) == "synthetic"
    c = np.asarray(called) == "synthetic"
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
    readers = [(r, g) for r, g in readings.groupby("reader", sort=True)]
    return readers + [(ALL_READERS, readings)] if len(readers) > 1 else readers


def ratings_row(truth: Sequence[str], rating: Sequence[int]) -> dict[str, float]:
    """Realism ratings of real vs synthetic panels and a Mann-Whitney U test between them."""
    frame = pd.DataFrame({"truth": list(truth), "rating": np.asarray(rating, dtype=float)})
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


# ---------------------------------------------------------------------------------------------- run
def score(cfg: Config, answers: Sequence[str | Path] | None = None, tag: str = "") -> ScoreResult:
    """Score a run's reader study and write ``<run>/metrics/reader_study[_tag]_*.csv`` and ``.json``.

    Args:
        cfg: the run configuration.
        answers: answer files or folders (default ``<run>/reader_study/answers/``).
        tag: output name suffix, e.g. ``simulated``, so simulated and real results never mix.
    """
    study = cfg.paths.reader_study
    key = read_key(study / "answer_key.csv")
    readings = read_all_answers(answers or [study / "answers"], key)
    result = score_readings(readings, key, cfg.reader_study.confidence)
    stem = "reader_study" + (f"_{tag}" if tag else "")
    out = cfg.paths.metrics
    result.outputs = [
        write_csv(out / f"{stem}_detection.csv", result.detection),
        write_csv(out / f"{stem}_ratings.csv", result.ratings),
        write_json(out / f"{stem}.json", _summary(result, key, cfg)),
    ]
    log.info("reader study scored: %d reader(s), %d panels -> %s", result.agreement["readers"], len(key), out)
    return result


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
    return json.loads(frame.to_json(orient="records"))


def plot_scores(result: ScoreResult) -> Any:
    """Two panels: detection accuracy with CIs per stratum and reader; realism rating distributions."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    det = result.detection
    strata = list(dict.fromkeys(det["stratum"]))
    readers = list(dict.fromkeys(det["reader"]))
    width = 0.8 / len(readers)
    for i, reader in enumerate(readers):
        part = det[det["reader"] == reader].set_index("stratum").loc[strata]
        x = np.arange(len(strata)) + (i - (len(readers) - 1) / 2) * width
        err = np.vstack([part["accuracy"] - part["accuracy_low"], part["accuracy_high"] - part["accuracy"]])
        ax1.bar(
            x,
            part["accuracy"],
            width,
            yerr=err,
            capsize=2,
            label=reader,
            color="0.35" if reader == ALL_READERS else None,
        )
    ax1.axhline(0.5, color="k", ls="--", lw=1, label="chance")
    ax1.set(
        xticks=np.arange(len(strata)),
        xticklabels=strata,
        ylim=(0, 1.05),
        ylabel="accuracy (95% CI)",
        title="Telling real from synthetic",
    )
    ax1.legend(fontsize=8, ncol=2, loc="lower right")
    levels = np.arange(1, 6)
    for offset, label in ((-0.2, "real"), (0.2, "synthetic")):
        r = result.readings.loc[result.readings["truth"] == label, "rating"].astype(int)
        share = np.array([(r == v).mean() if len(r) else 0 for v in levels])
        ax2.bar(levels + offset, share, 0.4, label=f"{label} (mean {r.mean():.2f})")
    ax2.set(
        xticks=levels,
        xlabel="realism rating (1 artificial .. 5 real)",
        ylabel="share of ratings",
        title="Realism ratings",
    )
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig
