"""Readers' answer files: what the kit's page exports (``Export CSV`` / ``Export JSON``), read and checked
against the answer key; :func:`write_answer_file` writes the same two formats from Python (used by the
simulated readers and the tests).

* JSON: ``{"format": "gliomagen-reader-study-answers", "version": 1, "kit_id", "reader", "exported_at",
  "complete", "n_panels", "answers": [{"panel_id", "position", "answer", "rating", "comment", "seconds",
  "answered_at"}, ...]}``
* CSV: one row per panel with the columns of :data:`CSV_COLUMNS`.

``answer`` is ``real`` or ``synthetic``; ``rating`` an integer 1 (clearly artificial) .. 5 (indistinguishable
from a real scan).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from gliomagen.io import atomic_path, write_json

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


class AnswerFileError(ValueError):
    """An answer file is malformed, incomplete or belongs to another kit; the message names the file."""


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
        key: the answer key (:func:`gliomagen.reader_study.outputs.read_key`).

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
    frames: list[pd.DataFrame] = []
    seen: dict[str, Path] = {}
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
