"""The files generation writes (and the sampler sweep), and their readers: only this module spells them.

Other stages and the notebooks build these paths through :class:`GenerationOutputs` and read them with the
functions below, never through a literal file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gliomagen.cases import is_complete
from gliomagen.stages import StageOutputs

#: the columns of ``synthetic/manifest.csv`` (one row per generated volume)
MANIFEST_COLUMNS = [
    "id",
    "split",
    "source_id",
    "source_mask",
    "sampler",
    "steps",
    "seed",
    "checkpoint",
    "checkpoint_sha256",
    "checkpoint_step",
    "seconds",
    "batch_size",
    "clamped_fraction",
    "device",
    "shard",
    "config_hash",
    "finished_at",
]
#: manifest columns read as text (seeds are 63-bit integers; ids look numeric to pandas)
_TEXT_COLUMNS = [
    "id",
    "split",
    "source_id",
    "source_mask",
    "sampler",
    "seed",
    "checkpoint",
    "checkpoint_sha256",
    "shard",
]


@dataclass(frozen=True)
class GenerationOutputs(StageOutputs):
    """Where ``gliomagen generate`` and ``gliomagen sweep-samplers`` write inside a run folder."""

    @property
    def synthetic(self) -> Path:
        return self.paths.synthetic

    @property
    def manifest(self) -> Path:
        """``synthetic/manifest.csv``: every generated volume, the shard parts merged."""
        return self.paths.synthetic / "manifest.csv"

    @property
    def manifest_parts(self) -> Path:
        """One manifest part per shard (merged into :attr:`manifest`)."""
        return self.paths.synthetic / "manifest_parts"

    def manifest_part(self, shard: tuple[int, int]) -> Path:
        return self.manifest_parts / f"shard-{shard[0]:04d}-of-{shard[1]:04d}.csv"

    def volume_dir(self, split: str, volume_id: str) -> Path:
        """``synthetic/<split>/<id>/`` (BraTS naming; ``val`` keeps the real case's id)."""
        return self.paths.synthetic / split / volume_id

    def summary(self, shard: tuple[int, int] = (0, 1)) -> Path:
        """``metrics/generation[_shard-i-of-n].json``: counts and seconds of the last run of a shard."""
        suffix = "" if shard == (0, 1) else f"_shard-{shard[0]}-of-{shard[1]}"
        return self.paths.metrics / f"generation{suffix}.json"

    @property
    def sampler_timing(self) -> Path:
        """``metrics/sampler_timing.csv``: seconds per volume of each timed sampler (notebook 04)."""
        return self.paths.metrics / "sampler_timing.csv"

    # ---------------------------------------------------------------------------------- sampler sweep
    @property
    def sweep_root(self) -> Path:
        """``sampler_sweep/<sampler>-<nfe>/<case>/``: the sweep's volumes with a per-volume record."""
        return self.paths.root / "sampler_sweep"

    def sweep_volume_dir(self, sampler: str, nfe: int, case_id: str) -> Path:
        return self.sweep_root / f"{sampler}-{nfe:04d}" / case_id

    def sweep_record(self, sampler: str, nfe: int, case_id: str) -> Path:
        """The per-volume record (metrics, seconds, identity); written last, so it marks a finished volume."""
        return self.sweep_volume_dir(sampler, nfe, case_id) / f"{case_id}-sweep.json"

    def sweep_features(self, sampler: str, nfe: int, case_id: str) -> Path:
        """Radiomics features of a sweep volume's distance slices (a cache keyed by its inputs)."""
        return self.sweep_volume_dir(sampler, nfe, case_id) / f"{case_id}-radiomics.npz"

    def sweep_real_features(self, case_id: str) -> Path:
        """Radiomics features of the real validation volume's distance slices (a cache keyed by its inputs)."""
        return self.sweep_root / "real_features" / f"{case_id}-radiomics.npz"

    @property
    def sweep_resegmentation(self) -> Path:
        """nnU-Net inputs and predictions of the re-segmentation Dice."""
        return self.sweep_root / "resegmentation"

    @property
    def sweep_table(self) -> Path:
        """``metrics/sampler_sweep.csv``: one row per (sampler, NFE) with CIs over subjects."""
        return self.paths.metrics / "sampler_sweep.csv"

    @property
    def sweep_volumes_table(self) -> Path:
        """``metrics/sampler_sweep_volumes.csv``: one row per generated sweep volume."""
        return self.paths.metrics / "sampler_sweep_volumes.csv"

    @property
    def sweep_recommendation(self) -> Path:
        """``metrics/sampler_sweep.json``: per sampler the smallest NFE whose CIs overlap DDPM's."""
        return self.paths.metrics / "sampler_sweep.json"

    @property
    def sweep_figure_stem(self) -> Path:
        """``sampler_sweep/fig_sampler_sweep`` (``.png`` and ``.pdf``; the figures stage may publish it)."""
        return self.sweep_root / "fig_sampler_sweep"

    def markers(self) -> list[Path]:
        return [self.manifest]

    def declared(self) -> list[Path]:
        return [
            self.manifest,
            self.summary(),
            self.sampler_timing,
            self.paths.synthetic / "val" / "*" / "*.nii.gz",
            self.paths.synthetic / "train" / "*" / "*.nii.gz",
            *self.sweep_declared(),  # notebook 04 runs the sampler sweep
        ]

    def sweep_declared(self) -> list[Path]:
        """What a complete ``sweep-samplers`` run leaves."""
        stem = self.sweep_figure_stem
        return [
            self.sweep_table,
            self.sweep_volumes_table,
            self.sweep_recommendation,
            stem.with_suffix(".png"),
            stem.with_suffix(".pdf"),
        ]


# ------------------------------------------------------------------------------------------- readers
def read_manifest_file(path: Path) -> pd.DataFrame:
    """One manifest file (or shard part) with the text columns kept as text."""
    return pd.read_csv(path, dtype=dict.fromkeys(_TEXT_COLUMNS, str), keep_default_na=False)


def read_manifest(out: GenerationOutputs) -> pd.DataFrame:
    """Every generated volume's latest row: ``manifest.csv`` merged with all shard parts.

    Rows whose output folder is not complete are dropped; for an id listed twice the latest wins.
    """
    paths = [out.manifest, *sorted(out.manifest_parts.glob("*.csv"))]
    frames = [read_manifest_file(p) for p in paths if p.is_file()]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    frame = pd.concat(frames, ignore_index=True).sort_values("finished_at", kind="stable")
    frame = frame.drop_duplicates(["split", "id"], keep="last")
    complete = [is_complete(out.volume_dir(s, i)) for s, i in zip(frame["split"], frame["id"], strict=True)]
    frame = frame[complete].sort_values(["split", "id"], ascending=[False, True])
    return frame.reindex(columns=MANIFEST_COLUMNS).reset_index(drop=True)


def read_sampler_timing(out: GenerationOutputs) -> pd.DataFrame:
    """The table of :func:`gliomagen.generation.timing.time_samplers`."""
    return pd.read_csv(out.sampler_timing)


def read_sweep(out: GenerationOutputs) -> pd.DataFrame:
    """The sampler sweep's table (one row per sampler and NFE)."""
    return pd.read_csv(out.sweep_table)


def read_sweep_volumes(out: GenerationOutputs) -> pd.DataFrame:
    """The sampler sweep's per-volume rows."""
    return pd.read_csv(out.sweep_volumes_table, dtype={"case_id": str, "seed": str})


def read_sweep_recommendation(out: GenerationOutputs) -> dict[str, Any]:
    """The sampler sweep's recommendation record (rule, statuses of its metrics, per-sampler NFE or why none)."""
    from gliomagen.io import read_json

    record: dict[str, Any] = read_json(out.sweep_recommendation)
    return record
