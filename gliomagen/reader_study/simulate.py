"""Seeded simulated readers, to exercise the scoring end to end before real readers have answered.

Simulated answers are for checking the pipeline and for showing what the report looks like; they say
nothing about how realistic the synthetic images are. Each reader has a skill (probability of a correct
call on an average panel); panels share a difficulty offset, so that readers agree more than chance would
give, as real readers do. Ratings follow the call: a panel called real gets 3-5, one called synthetic 1-3.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gliomagen.reader_study.answers import ANSWER_FORMAT, write_answer_file

REAL_RATINGS = (np.array([3, 4, 5]), np.array([0.25, 0.45, 0.30]))
SYNTHETIC_RATINGS = (np.array([1, 2, 3]), np.array([0.30, 0.45, 0.25]))


def simulate_answers(
    key: pd.DataFrame, reader: str, skill: float, difficulty: np.ndarray, rng: np.random.Generator
) -> dict[str, Any]:
    """One reader's answers in the page's export structure.

    Args:
        key: the answer key (panel_id, truth, kit_id).
        reader: the reader's name.
        skill: probability of a correct call on a panel of average difficulty (0.5 = guessing).
        difficulty: per-panel offset added to ``skill`` (shared by all readers).
        rng: seeded generator.
    """
    p_correct = np.clip(skill + difficulty, 0.01, 0.99)
    correct = rng.random(len(key)) < p_correct
    order = rng.permutation(len(key))  # each reader sees the panels in an own order, like on the page
    answers = []
    for position, i in enumerate(order, start=1):
        truth = key["truth"].iloc[i]
        call = truth if correct[i] else ("real" if truth == "synthetic" else "synthetic")
        values, probs = REAL_RATINGS if call == "real" else SYNTHETIC_RATINGS
        answers.append(
            {
                "panel_id": str(key["panel_id"].iloc[i]),
                "position": position,
                "answer": call,
                "rating": int(rng.choice(values, p=probs)),
                "comment": "",
                "seconds": round(float(rng.gamma(4.0, 1.5)), 1),
                "answered_at": "",
            }
        )
    return {
        "format": ANSWER_FORMAT,
        "version": 1,
        "kit_id": str(key["kit_id"].iloc[0]),
        "reader": reader,
        "exported_at": "",
        "complete": True,
        "n_panels": len(key),
        "answers": answers,
    }


def write_simulated_readers(
    key: pd.DataFrame,
    out_dir: str | Path,
    skills: Sequence[float] = (0.5, 0.6, 0.75),
    seed: int = 0,
    difficulty_sd: float = 0.15,
) -> list[Path]:
    """Write one JSON answer file per simulated reader (``sim-reader-<i>.json``) into ``out_dir``.

    Keep ``out_dir`` apart from the real answers folder so that simulated and real readings never mix.
    """
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, difficulty_sd, len(key))
    paths = []
    for i, skill in enumerate(skills, start=1):
        payload = simulate_answers(key, f"sim-reader-{i}", skill, difficulty, rng)
        paths.append(write_answer_file(Path(out_dir) / f"sim-reader-{i}.json", payload))
    return paths
