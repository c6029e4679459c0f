"""What the fidelity stage writes (``<run>/metrics/``) and the readers other stages and notebooks use.

Only this module spells the stage's file names: everything else goes through :class:`FidelityOutputs` and
the ``read_*`` functions.

* ``fidelity.json``: the long results table, settings and provenance (:class:`FidelityResults`); written
  last, so its presence marks a finished evaluation.
* ``fidelity_per_subject.csv``: per subject and modality, the 2D MS-SSIM summaries and the 3D metrics.
* ``fidelity_per_slice.csv``: per subject, modality and axial slice, the 2D MS-SSIM and whether the real
  slice is empty.
* ``conditioning.csv``: the mask-following measures per case and modality
  (:mod:`gliomagen.fidelity.conditioning`).
* ``fidelity_features/<extractor>/<case>.npz``: the cached slice features of each pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gliomagen.io import read_json
from gliomagen.paths import RunPaths
from gliomagen.stages import StageOutputs

#: the run-folder lock the stage holds while it writes (gliomagen.locks.run_lock)
LOCK = "fidelity"


@dataclass(frozen=True)
class FidelityOutputs(StageOutputs):
    """The files of the fidelity stage in a run folder (``FidelityOutputs(cfg.paths)``)."""

    @property
    def results_json(self) -> Path:
        """``metrics/fidelity.json``."""
        return self.paths.metrics / "fidelity.json"

    @property
    def per_subject_csv(self) -> Path:
        return self.paths.metrics / "fidelity_per_subject.csv"

    @property
    def per_slice_csv(self) -> Path:
        return self.paths.metrics / "fidelity_per_slice.csv"

    @property
    def conditioning_csv(self) -> Path:
        return self.paths.metrics / "conditioning.csv"

    @property
    def features_cache(self) -> Path:
        """Folder of the cached slice features, one subfolder per extractor."""
        return self.paths.metrics / "fidelity_features"

    def features_file(self, extractor: str, case_id: str) -> Path:
        """The cached features of one pair for one extractor."""
        return self.features_cache / extractor / f"{case_id}.npz"

    def markers(self) -> list[Path]:
        return [self.results_json]

    def declared(self) -> list[Path]:
        # the radiomics extractor needs no downloaded weights, so a complete run always caches its features
        return [
            self.results_json,
            self.per_subject_csv,
            self.per_slice_csv,
            self.conditioning_csv,
            self.features_cache / "radiomics" / "*.npz",
        ]


@dataclass(frozen=True)
class FidelityResults:
    """The content of ``fidelity.json``.

    Args:
        provenance: package version, config hash, fingerprint of the input files, profile.
        subjects: the evaluated validation cases, in order.
        skipped: ``{"id", "reason"}`` of every validation case that was not evaluated.
        extractors: per configured extractor, ``status`` (``ok`` or why not) and its description/message.
        settings: what the numbers depend on (shapes, scales, bootstrap, seeds, real-vs-real halves).
        results: the long table, one row per (modality, metric, variant, extractor); see :meth:`frame`.
    """

    provenance: dict[str, Any]
    subjects: list[str]
    skipped: list[dict[str, str]]
    extractors: dict[str, dict[str, str]]
    settings: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FidelityResults:
        return cls(
            provenance=dict(data["provenance"]),
            subjects=list(data["subjects"]),
            skipped=list(data["skipped"]),
            extractors=dict(data["extractors"]),
            settings=dict(data["settings"]),
            results=list(data["results"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (key order as written)."""
        return asdict(self)

    def frame(self) -> pd.DataFrame:
        """The long results table as a DataFrame."""
        return pd.DataFrame(self.results)

    @property
    def profile(self) -> str:
        return str(self.settings.get("profile", self.provenance.get("profile", "?")))

    def available_extractors(self) -> list[str]:
        """The extractors that produced numbers, in configured order."""
        return [name for name, state in self.extractors.items() if state.get("status") == "ok"]

    def primary_extractor(self) -> str:
        """The first extractor with numbers (else the first configured): the one the paper table shows."""
        available = self.available_extractors()
        return available[0] if available else next(iter(self.extractors), "")


def as_results(results: FidelityResults | Mapping[str, Any]) -> FidelityResults:
    """``results`` as :class:`FidelityResults` (also accepts the JSON object)."""
    return results if isinstance(results, FidelityResults) else FidelityResults.from_dict(results)


def _missing(path: Path, profile: str) -> FileNotFoundError:
    return FileNotFoundError(f"{path} does not exist: run `gliomagen fidelity --profile {profile}` first")


def _outputs(paths: RunPaths | FidelityOutputs) -> FidelityOutputs:
    return paths if isinstance(paths, FidelityOutputs) else FidelityOutputs(paths)


def read_results(paths: RunPaths | FidelityOutputs, profile: str = "<profile>") -> FidelityResults:
    """The content of ``fidelity.json`` (raises with a hint when the stage has not run).

    Args:
        paths: the run's folders (``cfg.paths``).
        profile: named in the hint.
    """
    path = _outputs(paths).results_json
    if not path.is_file():
        raise _missing(path, profile)
    return FidelityResults.from_dict(read_json(path))


def _read_csv(path: Path, profile: str) -> pd.DataFrame:
    if not path.is_file():
        raise _missing(path, profile)
    return pd.read_csv(path)


def read_per_subject(paths: RunPaths | FidelityOutputs, profile: str = "<profile>") -> pd.DataFrame:
    """``fidelity_per_subject.csv``: one row per subject and modality."""
    return _read_csv(_outputs(paths).per_subject_csv, profile)


def read_per_slice(paths: RunPaths | FidelityOutputs, profile: str = "<profile>") -> pd.DataFrame:
    """``fidelity_per_slice.csv``: one row per subject, modality and axial slice."""
    return _read_csv(_outputs(paths).per_slice_csv, profile)


def read_conditioning(paths: RunPaths | FidelityOutputs, profile: str = "<profile>") -> pd.DataFrame:
    """``conditioning.csv``: the mask-following measures, one row per case and modality."""
    return _read_csv(_outputs(paths).conditioning_csv, profile)
