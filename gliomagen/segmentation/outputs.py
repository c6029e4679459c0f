"""The files the segmentation stage writes, and their readers: no other module spells these names.

``<run>/metrics/``:
    segmentation_paper.csv            the paper's table (its definitions), one row per configuration
    segmentation_paper_per_case.csv   per scan and tumour class: Dice, HD95/ASSD in voxels
    segmentation_volumes.csv          per scan: total tumour volume, truth and prediction (voxels and ml)
    segmentation_confusion.json       the pooled restricted confusion matrices
    segmentation_corrected.csv        per configuration and BraTS region: means of the corrected metrics
    segmentation_corrected_per_case.csv   per scan and region: Dice, HD95/ASSD in mm, status, lesion-wise
    segmentation_stats.csv            paired Wilcoxon and bootstrap CI of each mix minus real-only
    segmentation_hq_scores.csv/.json  the HQ score of every synthetic volume (see hq.py) and its summary
    segmentation_timing.json          measured seconds per configuration (kept across resumed runs)
    segmentation.json                 summary, timings and provenance (the stage's marker)

``<run>/nnunet/predictions/<configuration>/val/<case>.nii.gz``: each configuration's validation predictions
(nnU-Net label values); ``<run>/logs/nnunet_<configuration>.log``: each nnU-Net process's log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gliomagen.io import read_json
from gliomagen.stages import StageOutputs

#: table name (the :class:`Evaluation` attribute) -> file name in ``<run>/metrics``
TABLES: dict[str, str] = {
    "paper": "segmentation_paper.csv",
    "paper_per_case": "segmentation_paper_per_case.csv",
    "volumes": "segmentation_volumes.csv",
    "corrected": "segmentation_corrected.csv",
    "corrected_per_case": "segmentation_corrected_per_case.csv",
    "stats": "segmentation_stats.csv",
}


@dataclass(frozen=True)
class SegmentationOutputs(StageOutputs):
    """Paths of everything ``gliomagen segment`` writes into a run folder."""

    @property
    def summary(self) -> Path:
        """``segmentation.json``: what was evaluated, the two tables, timings, provenance."""
        return self.paths.metrics / "segmentation.json"

    @property
    def confusion(self) -> Path:
        return self.paths.metrics / "segmentation_confusion.json"

    @property
    def timing(self) -> Path:
        return self.paths.metrics / "segmentation_timing.json"

    @property
    def hq_scores(self) -> Path:
        """The HQ ranking of the synthetic pool (one row per volume, best first)."""
        return self.paths.metrics / "segmentation_hq_scores.csv"

    @property
    def hq_summary(self) -> Path:
        return self.hq_scores.with_suffix(".json")

    def table(self, name: str) -> Path:
        """The CSV of table ``name`` (a key of :data:`TABLES`)."""
        return self.paths.metrics / TABLES[name]

    def predictions(self, configuration: str, target: str = "val") -> Path:
        """Where configuration ``configuration``'s predictions on ``target`` (``val`` or ``hq``) are."""
        return self.paths.nnunet / "predictions" / configuration / target

    def log(self, job: str) -> Path:
        """The log of one nnU-Net process (a configuration's name, or ``<name>_hq``)."""
        return self.paths.logs / f"nnunet_{job}.log"

    def markers(self) -> list[Path]:
        return [self.summary]

    def declared(self) -> list[Path]:
        return [
            *[self.table(name) for name in TABLES],
            self.confusion,
            self.timing,
            self.hq_scores,
            self.hq_summary,
            self.summary,
            self.predictions("*") / "*.nii.gz",
            self.log("*"),
        ]


@dataclass(frozen=True)
class Evaluation:
    """Everything measured for the configurations that have predictions (the stage's tables)."""

    paper: pd.DataFrame
    paper_per_case: pd.DataFrame
    volumes: pd.DataFrame
    confusion: dict[str, list[list[int]]]
    corrected: pd.DataFrame
    corrected_per_case: pd.DataFrame
    stats: pd.DataFrame
    missing: list[str] = field(default_factory=list)


def _read_csv(path: Path) -> pd.DataFrame:
    """A written table, or an empty frame when it is absent or was written empty."""
    return pd.read_csv(path) if path.is_file() and path.stat().st_size > 1 else pd.DataFrame()


def load_evaluation(out: SegmentationOutputs) -> Evaluation:
    """Read the written metrics back (notebooks, figures and tables).

    Raises:
        FileNotFoundError: the stage has not run (no ``segmentation.json``).
    """
    if not out.summary.is_file():
        raise FileNotFoundError(f"{out.summary} is missing: run `gliomagen segment` first")
    tables = {name: _read_csv(out.table(name)) for name in TABLES}
    confusion = read_json(out.confusion)["matrices"] if out.confusion.is_file() else {}
    return Evaluation(confusion=confusion, missing=list(read_json(out.summary).get("missing", [])), **tables)


def read_summary(out: SegmentationOutputs) -> dict[str, Any]:
    """``segmentation.json`` as written (empty when the stage has not run)."""
    return read_json(out.summary) if out.summary.is_file() else {}


def read_timing(out: SegmentationOutputs) -> dict[str, Any]:
    """The measured timings (empty when nothing was measured yet)."""
    return read_json(out.timing) if out.timing.is_file() else {}


def read_hq_scores(out: SegmentationOutputs) -> pd.DataFrame:
    """The HQ ranking (``rank, id, source_id, dice_<label>..., score, error, hq, config_hash``).

    Raises:
        FileNotFoundError: the HQ scoring has not run.
    """
    if not out.hq_scores.is_file():
        raise FileNotFoundError(f"{out.hq_scores} is missing: the HQ scoring runs in `gliomagen segment`")
    return pd.read_csv(out.hq_scores, dtype={"id": str, "source_id": str})
