"""The files the data stage (``gliomagen prepare``) writes, and their readers: only this module spells them.

Other stages and the notebooks build these paths through :class:`PrepareOutputs` and read them with
:func:`read_cases_table` and :func:`usable_cases`, never through a literal file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gliomagen.cases import is_complete
from gliomagen.config import Config
from gliomagen.stages import StageOutputs

SPLITS = ("train", "val")
FOLDERS = ("train", "val", "excluded", "staging")


def cache_root(prepared: Path) -> Path:
    """``<prepared>/cache``: the arrays of :mod:`gliomagen.data.cache` (for workers that get a folder)."""
    return prepared / "cache"


@dataclass(frozen=True)
class PrepareOutputs(StageOutputs):
    """Where ``gliomagen prepare`` writes inside a run folder (``<run>/prepared/``)."""

    @property
    def root(self) -> Path:
        return self.paths.prepared

    @property
    def cases_csv(self) -> Path:
        """``prepared/cases.csv``: one row per discovered scan (split, QC status and reason, label counts)."""
        return self.root / "cases.csv"

    @property
    def qc_report(self) -> Path:
        """``prepared/qc_report.md``: the summary and every flagged or invalid scan with its reason."""
        return self.root / "qc_report.md"

    @property
    def summary(self) -> Path:
        """``prepared/summary.json``: the :class:`~gliomagen.data.prepare.PrepareSummary` with provenance."""
        return self.root / "summary.json"

    def qc_record(self, case_id: str) -> Path:
        """``prepared/qc/<id>.json``: one case's record (a finished record marks the case done)."""
        return self.root / "qc" / f"{case_id}.json"

    def folder(self, name: str) -> Path:
        """``prepared/<train|val|excluded|staging>/``."""
        return self.root / name

    @property
    def cache(self) -> Path:
        """``prepared/cache/<id>/<key>.{image,mask}.npy``: uncompressed arrays for training
        (:mod:`gliomagen.data.cache`)."""
        return cache_root(self.root)

    def markers(self) -> list[Path]:
        return [self.cases_csv]

    def declared(self) -> list[Path]:
        return [
            self.cases_csv,
            self.qc_report,
            self.summary,
            self.root / "qc" / "*.json",
            self.folder("train") / "*" / "*.nii.gz",
            self.folder("val") / "*" / "*.nii.gz",
            self.cache / "*" / "*.npy",
        ]


# ------------------------------------------------------------------------------------------- readers
def read_cases_table(cfg: Config) -> pd.DataFrame:
    """The prepared ``cases.csv`` of a run (one row per discovered scan).

    Raises:
        FileNotFoundError: when the data stage has not run yet.
    """
    path = PrepareOutputs(cfg.paths).cases_csv
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `gliomagen prepare` (notebook 01) first")
    return pd.read_csv(path, dtype={"id": str, "patient": str, "timepoint": str}, keep_default_na=False)


def usable_cases(cfg: Config, split: str) -> list[Path]:
    """The usable prepared case folders of ``split`` (``train`` or ``val``), sorted by case id.

    Args:
        cfg: the run configuration (reads ``<run>/prepared/cases.csv``).
        split: ``train`` or ``val``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    table = read_cases_table(cfg)
    rows = table[(table["split"] == split) & (table["qc_status"] != "invalid")]
    folder = PrepareOutputs(cfg.paths).folder(split)
    dirs = [folder / case_id for case_id in sorted(rows["id"])]
    return [d for d in dirs if is_complete(d)]
