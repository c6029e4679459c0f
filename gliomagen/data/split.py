"""Train/validation split: by patient (corrected) or from a list of validation ids (the paper's split).

``patient`` (default): patients are shuffled with ``data.split.seed``; walking through them in that order,
a patient joins validation when all of its usable scans still fit into ``data.split.n_val`` scans (a
patient that would overshoot is skipped, a later smaller one may fit); the walk stops once exactly
``n_val`` scans are in validation. Validation thus never exceeds ``n_val`` and reaches it whenever the
shuffled order allows (always when single-scan patients remain). Every scan of a patient lands on the
same side, so no patient is on both sides.

``paper``: the validation ids are read from ``data.split.val_ids_file`` (one id per line, ``#`` comments,
or a CSV with an ``id`` column); every other usable scan is training. This reproduces a given
(scan-level) split, leaks included; the summary reports patients on both sides.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd


def patient_split(ids: list[str], patients: list[str], n_val: int, seed: int) -> dict[str, str]:
    """``{case id: "train" | "val"}`` for the usable scans ``ids`` of ``patients`` (parallel lists).

    Raises:
        ValueError: fewer than two patients, or ``n_val`` would leave no patient for training.
    """
    per_patient = Counter(patients)
    if len(per_patient) < 2:
        raise ValueError(
            f"a patient-level split needs at least two patients with usable scans, got {len(per_patient)}"
        )
    if n_val >= len(ids):
        raise ValueError(
            f"data.split.n_val={n_val} but only {len(ids)} usable scans: nothing left to train on"
        )
    order = np.random.default_rng(seed).permutation(sorted(per_patient))
    val_patients: set[str] = set()
    count = 0
    for patient in order:
        if count + per_patient[patient] <= n_val:
            val_patients.add(str(patient))
            count += per_patient[patient]
        if count == n_val:
            break
    if len(val_patients) == len(per_patient):  # never put everyone in validation
        val_patients.discard(str(order[-1]))
    return {i: ("val" if p in val_patients else "train") for i, p in zip(ids, patients, strict=True)}


def read_val_ids(path: str | Path) -> list[str]:
    """Validation ids from a text file (one per line, ``#`` comments) or a CSV with an ``id`` column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.split.val_ids_file {path} does not exist")
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path, dtype=str)
        if "id" not in frame.columns:
            raise ValueError(
                f"{path}: a CSV of validation ids needs an 'id' column, has {list(frame.columns)}"
            )
        return [s.strip() for s in frame["id"].dropna()]
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def paper_split(ids: list[str], val_ids: list[str]) -> tuple[dict[str, str], list[str]]:
    """``{id: split}`` with the listed validation ids, and the listed ids that are not usable scans."""
    wanted = set(val_ids)
    missing = sorted(wanted - set(ids))
    return {i: ("val" if i in wanted else "train") for i in ids}, missing


def patients_on_both_sides(split: dict[str, str], patient_of: dict[str, str]) -> list[str]:
    """Patients with scans in training and in validation (a leak; empty for the patient split)."""
    sides: dict[str, set[str]] = {}
    for case_id, side in split.items():
        sides.setdefault(patient_of[case_id], set()).add(side)
    return sorted(p for p, s in sides.items() if len(s) > 1)
