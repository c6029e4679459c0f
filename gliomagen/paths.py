"""Where everything lives: the project root and one run's folder layout (paths from one place)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
FIGURES_DIR = PROJECT_ROOT / "figures"
PAPER_DIR = PROJECT_ROOT / "paper"


@dataclass(frozen=True)
class RunPaths:
    """The folders of one run (``runs/<profile>/`` by default); every stage reads and writes here.

    Args:
        root: the run folder.
    """

    root: Path

    @property
    def raw(self) -> Path:
        """Default raw BraTS-layout folder (the smoke profile builds its phantom here)."""
        return self.root / "raw"

    @property
    def prepared(self) -> Path:
        return self.root / "prepared"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def training(self) -> Path:
        """Training logs, loss CSVs, TensorBoard events and preview samples."""
        return self.root / "training"

    @property
    def augmented(self) -> Path:
        return self.root / "augmented_masks"

    @property
    def synthetic(self) -> Path:
        return self.root / "synthetic"

    @property
    def nnunet(self) -> Path:
        return self.root / "nnunet"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def reader_study(self) -> Path:
        return self.root / "reader_study"
