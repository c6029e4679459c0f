"""What the augmentation stage writes into a run folder, and how other stages read it.

* ``<run>/augmented_masks/<aug_id>/<aug_id>-seg.nii.gz``: each accepted mask (``aug_id = <source id>-a<round>``);
* ``<run>/augmented_masks/manifest.csv``: one row per try, accepted or discarded with the reason
  (:data:`MANIFEST_COLUMNS`, then voxel counts per label before and after);
* ``<run>/metrics/augmentation_summary.json``: counts beside the paper's (:class:`AugmentSummary`).

Only this module spells these names; generation, figures and the notebooks go through
:class:`AugmentationOutputs` and :func:`read_manifest`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gliomagen.cases import modality_path
from gliomagen.config import Config
from gliomagen.io import read_json
from gliomagen.stages import StageOutputs

MANIFEST_COLUMNS = [
    "aug_id",
    "source_id",
    "patient",
    "round",
    "flipped",
    "scale",
    "attempts",
    "status",
    "reason",
    "lr_axis",
    "rotation_deg_x",
    "rotation_deg_y",
    "rotation_deg_z",
    "elastic",
    "move_mm_x",
    "move_mm_y",
    "move_mm_z",
    "changed_voxels",
    "augment_hash",
]
TEXT_COLUMNS = ["aug_id", "source_id", "patient", "status", "reason", "augment_hash"]


@dataclass(frozen=True)
class AugmentationOutputs(StageOutputs):
    """The augmentation stage's files in a run folder (``AugmentationOutputs(cfg.paths)``)."""

    @property
    def root(self) -> Path:
        """Folder of the accepted masks and the manifest."""
        return self.paths.augmented

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"

    @property
    def summary(self) -> Path:
        return self.paths.metrics / "augmentation_summary.json"

    def mask(self, aug_id: str) -> Path:
        """The mask file of one augmented try (exists only when it was accepted)."""
        return modality_path(self.root / aug_id, "seg")

    def markers(self) -> list[Path]:
        return [self.manifest]

    def declared(self) -> list[Path]:
        return [self.manifest, self.summary, self.root / "*" / "*-seg.nii.gz"]


@dataclass(frozen=True)
class AugmentSummary:
    """Counts of one augmentation run beside the paper's (written as ``augmentation_summary.json``).

    Args:
        tried: (source, round) tries in the manifest.
        accepted: tries kept.
        discarded: tries discarded.
        acceptance_rate: accepted / tried.
        discard_reasons: discarded tries per reason (``head_outside_volume``, ``label_lost``, ...).
        sources: distinct source masks.
        flipped: tries that flipped the mask.
        mean_attempts: mean scale attempts per try.
        unchanged_by_resampling: tries whose resampling changed no voxel (sub-voxel scale).
        max_scale_shift_voxels: largest edge displacement the scale range can cause.
        paper: the paper's counts (tried, accepted, discarded, acceptance_rate).
        provenance: package version, config hash, augmentation hash.
    """

    tried: int
    accepted: int
    discarded: int
    acceptance_rate: float
    discard_reasons: dict[str, int]
    sources: int
    flipped: int
    mean_attempts: float
    unchanged_by_resampling: int
    max_scale_shift_voxels: float
    paper: dict[str, float]
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_manifest(cfg: Config) -> pd.DataFrame:
    """The augmentation manifest (empty frame with the manifest columns if there is none yet)."""
    path = AugmentationOutputs(cfg.paths).manifest
    if not path.is_file():
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    frame = pd.read_csv(path, dtype=dict.fromkeys(TEXT_COLUMNS, str), keep_default_na=False)
    frame["flipped"] = frame["flipped"].astype(str).str.lower().isin(["true", "1"])
    return frame


def read_summary(cfg: Config) -> AugmentSummary:
    """The summary written by the last augmentation run.

    Raises:
        FileNotFoundError: the stage has not run in this run folder.
    """
    path = AugmentationOutputs(cfg.paths).summary
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `gliomagen augment` first")
    return AugmentSummary(**read_json(path))


def accepted_masks(cfg: Config) -> pd.DataFrame:
    """The accepted tries of the manifest with a ``path`` column (their mask files)."""
    frame = read_manifest(cfg)
    accepted = frame[frame["status"] == "accepted"].copy()
    outputs = AugmentationOutputs(cfg.paths)
    paths = [outputs.mask(str(aug_id)) for aug_id in accepted["aug_id"]]
    accepted["path"] = pd.Series(paths, index=accepted.index, dtype=object)
    return accepted
