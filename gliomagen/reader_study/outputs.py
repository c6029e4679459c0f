"""What the reader study writes into a run folder, and how it is read back.

``<run>/reader_study/`` (:class:`KitFiles`): ``kit/`` (what readers get: ``index.html``, ``panels.js``,
``img/``), the organiser's ``answer_key.csv`` and ``kit_manifest.json`` beside it, ``answers/`` (real
readers' exports), ``simulated_answers/`` (notebook 08's seeded readers) and ``archive/<kit id>/`` (a kit
replaced with ``--force``). Scores go to ``<run>/metrics/reader_study[_<tag>]_{detection,ratings}.csv`` and
``reader_study[_<tag>].json`` (tag ``simulated`` for simulated readers, so they never mix with real ones).
Only this module spells these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gliomagen.config import Config
from gliomagen.stages import StageOutputs

MODALITY_NAMES = {"t1n": "T1 native", "t1c": "T1 contrast", "t2w": "T2", "t2f": "T2-FLAIR"}
KIND_NAMES = {**MODALITY_NAMES, "all": "All four sequences"}
KEY_COLUMNS = ["kit_id", "panel_id", "truth", "kind", "location", "case_id", "slice", "images"]
#: inside the kit folder: the panel list the page loads, and the folder of the panel images
PAGE_DATA = "panels.js"
IMAGE_DIR = "img"
#: the score files' tag for notebook 08's simulated readers
SIMULATED = "simulated"


@dataclass(frozen=True)
class KitFiles:
    """The files of a kit in a study folder (``<run>/reader_study`` or any folder given to the builder)."""

    study_dir: Path

    @property
    def kit(self) -> Path:
        """The folder given to readers."""
        return self.study_dir / "kit"

    @property
    def page_data(self) -> Path:
        """The panel list the page loads (written last: the kit is complete when it exists)."""
        return self.kit / PAGE_DATA

    @property
    def images(self) -> Path:
        return self.kit / IMAGE_DIR

    @property
    def key(self) -> Path:
        """The organiser's answer key (never inside the kit)."""
        return self.study_dir / "answer_key.csv"

    @property
    def manifest(self) -> Path:
        return self.study_dir / "kit_manifest.json"

    @property
    def answers(self) -> Path:
        """Where real readers' exported answer files go."""
        return self.study_dir / "answers"

    @property
    def simulated_answers(self) -> Path:
        return self.study_dir / "simulated_answers"

    def archive(self, kit_id: str) -> Path:
        return self.study_dir / "archive" / kit_id


@dataclass(frozen=True)
class ReaderStudyOutputs(StageOutputs):
    """The reader study's files in a run folder (``ReaderStudyOutputs(cfg.paths)``)."""

    @property
    def files(self) -> KitFiles:
        return KitFiles(self.paths.reader_study)

    def detection(self, tag: str = "") -> Path:
        return self.paths.metrics / f"{_stem(tag)}_detection.csv"

    def ratings(self, tag: str = "") -> Path:
        return self.paths.metrics / f"{_stem(tag)}_ratings.csv"

    def summary(self, tag: str = "") -> Path:
        return self.paths.metrics / f"{_stem(tag)}.json"

    def markers(self) -> list[Path]:
        return [self.files.key, self.files.page_data]

    def declared(self) -> list[Path]:
        """After the smoke run (notebook 08): the kit and the simulated readers' scores."""
        kit = self.files
        return [
            *self.markers(),
            kit.manifest,
            kit.kit / "index.html",
            kit.images / "*.png",
            kit.simulated_answers / "*.json",
            self.detection(SIMULATED),
            self.ratings(SIMULATED),
            self.summary(SIMULATED),
        ]


def _stem(tag: str) -> str:
    return "reader_study" + (f"_{tag}" if tag else "")


def read_key(path: str | Path) -> pd.DataFrame:
    """The organiser's answer key (``answer_key.csv`` written by the build), checked.

    Raises:
        FileNotFoundError: no key (the kit was not built).
        ValueError: not a key, several kits, or a truth other than real/synthetic.
    """
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
    bad = sorted(set(key["truth"]) - {"real", "synthetic"})
    if bad:
        raise ValueError(f"{path}: truth must be real or synthetic, found {bad}")
    return key


def read_run_key(cfg: Config) -> pd.DataFrame:
    """The answer key of a run's kit."""
    return read_key(ReaderStudyOutputs(cfg.paths).files.key)


def read_detection(cfg: Config, tag: str = "") -> pd.DataFrame:
    """A run's detection scores (``tag="simulated"`` for notebook 08's simulated readers)."""
    return pd.read_csv(ReaderStudyOutputs(cfg.paths).detection(tag))
