"""The files diffusion training (``gliomagen train``) writes, and their readers: only this module spells them.

Other stages and the notebooks build these paths through :class:`TrainingOutputs` and read them with the
functions below, never through a literal file name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gliomagen.stages import StageOutputs


@dataclass(frozen=True)
class TrainingOutputs(StageOutputs):
    """Where ``gliomagen train`` writes inside a run folder (``<run>/checkpoints``, ``<run>/training``)."""

    @property
    def checkpoints(self) -> Path:
        return self.paths.checkpoints

    @property
    def training(self) -> Path:
        return self.paths.training

    @property
    def last(self) -> Path:
        """``checkpoints/last.pt``: the newest checkpoint (what a resumed run continues from)."""
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        """``checkpoints/best.pt``: the lowest validation loss so far."""
        return self.checkpoints / "best.pt"

    def step_checkpoint(self, step: int) -> Path:
        """``checkpoints/step_<7 digits>.pt`` (the newest ``train.keep_checkpoints`` are kept)."""
        return self.checkpoints / f"step_{step:07d}.pt"

    @property
    def train_log(self) -> Path:
        """``training/train_log.csv``: step, loss, lr, seconds, frozen (one row per optimiser step)."""
        return self.training / "train_log.csv"

    @property
    def val_log(self) -> Path:
        """``training/val_log.csv``: the EMA validation loss per timestep at every validation."""
        return self.training / "val_log.csv"

    @property
    def run_info(self) -> Path:
        """``training/run_info.json``: provenance, device, world size, parameters, options."""
        return self.training / "run_info.json"

    @property
    def tensorboard(self) -> Path:
        return self.training / "tensorboard"

    @property
    def previews(self) -> Path:
        return self.training / "previews"

    def preview(self, step: int, suffix: str) -> Path:
        """``training/previews/step_<7 digits><suffix>`` (``.nii.gz`` and ``.png``)."""
        return self.previews / f"step_{step:07d}{suffix}"

    def markers(self) -> list[Path]:
        return [self.checkpoints / "*.pt", self.train_log]

    def declared(self) -> list[Path]:
        return [
            self.last,
            self.best,
            self.checkpoints / "step_*.pt",
            self.train_log,
            self.val_log,
            self.run_info,
            self.tensorboard / "events.out.tfevents.*",
            self.previews / "step_*.nii.gz",
            self.previews / "step_*.png",
        ]


# ------------------------------------------------------------------------------------------- readers
def read_train_log(out: TrainingOutputs) -> pd.DataFrame:
    """One row per optimiser step (``step, loss, lr, seconds, frozen``)."""
    return pd.read_csv(out.train_log)


def read_val_log(out: TrainingOutputs) -> pd.DataFrame | None:
    """One row per validation, or ``None`` before the first."""
    return pd.read_csv(out.val_log) if out.val_log.is_file() else None


def read_run_info(out: TrainingOutputs) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(out.run_info.read_text())
    return info
