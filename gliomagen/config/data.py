"""Config sections of data preparation (``data:``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gliomagen.config.base import PAPER_LABELS, _Section


class LabelSpec(_Section):
    """One label of the prepared masks.

    Args:
        name: short name (``head``, ``NETC``, ...).
        source: value in the raw BraTS segmentation, or ``None`` for a label derived during
            preparation (the head label).
        value: value in the prepared mask.
        tumour: whether the label is part of the lesion (used by metrics and QC).
    """

    name: str
    source: int | None
    value: int = Field(ge=0, le=255)
    tumour: bool = True


class PhantomConfig(_Section):
    """The built-in BraTS-layout phantom (see ``gliomagen phantom --help``).

    Args:
        patients: phantom patients (each with 1..max_timepoints scans).
        max_timepoints: most scans (timepoints) per patient.
        shape: raw volume shape in voxels (the BraTS grid is 182x218x182 at 1 mm).
        spacing: voxel size in mm.
        seed: seed of anatomy, lesions and intensities.
        faults: include deliberately broken cases (to exercise QC).
    """

    patients: int = Field(8, ge=1)
    max_timepoints: int = Field(3, ge=1, le=9)
    shape: tuple[int, int, int] = (182, 218, 182)
    spacing: float = Field(1.0, gt=0)
    seed: int = 0
    faults: bool = False


class HeadConfig(_Section):
    """How the head label is derived, once per scan.

    Args:
        source: modality (or ``multi``: any modality) whose non-zero voxels define the head.
        closing_radius: radius (voxels) of the morphological closing that fills small gaps.
    """

    source: Literal["t2f", "t1n", "t1c", "t2w", "multi"] = "t2f"
    closing_radius: int = Field(4, ge=0)


class IntensityConfig(_Section):
    """Per-volume intensity normalisation (``gliomagen.data.prepare.normalise``).

    Args:
        clip_percentiles: clip to these percentiles of the non-zero voxels before min-max (``None``: off,
            the paper's plain min-max).
        outlier_fence: voxels further than this many robust ranges (99th - 1st percentile of the non-zero
            voxels) beyond those percentiles are outliers: they are clipped to the most extreme inlier value
            before min-max and flagged by QC (``intensity_outlier``). On clean scans no voxel is that far out
            and the result equals the paper's min-max bit for bit; one corrupt voxel (e.g. 1e30) no longer
            squeezes the whole scan to ~0. ``None`` turns it off (outliers are still flagged).
    """

    clip_percentiles: tuple[float, float] | None = None
    outlier_fence: float | None = Field(10.0, gt=0)

    @field_validator("clip_percentiles")
    @classmethod
    def _ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not (0 <= v[0] < v[1] <= 100):
            raise ValueError("must be two percentiles with 0 <= low < high <= 100")
        return v


class SplitConfig(_Section):
    """Train/validation split (see ``gliomagen.data.split``).

    Args:
        method: ``patient`` (no patient on both sides) or ``paper`` (validation ids from a file).
        n_val: number of validation *scans* to aim for; whole patients are added, never exceeding it.
        val_ids_file: the validation ids for ``method: paper``.
        seed: shuffle seed of the patient split.
    """

    method: Literal["patient", "paper"] = "patient"
    n_val: int = Field(48, ge=1)
    val_ids_file: str | None = None
    seed: int = 0


class QCConfig(_Section):
    """Automatic QC (see ``gliomagen.data.qc``): which flags exclude a scan, and the hole tolerance.

    Args:
        exclude: flags that remove a scan from the split (others are only reported).
        max_hole_ml: largest tolerated hole: background enclosed by the head within axial slices, as one
            connected region (ml). Basal cisterns give a few ml on every brain; a channel cut through the
            head by a skull-stripping failure gives tens.
        max_border_voxels: head voxels tolerated on the faces of the prepared volume.
    """

    exclude: list[
        Literal["head_holes", "head_touches_border", "label_lost", "empty_mask", "intensity_outlier"]
    ] = [
        "head_holes",
        "head_touches_border",
        "label_lost",
        "empty_mask",
    ]
    max_hole_ml: float = Field(15.0, ge=0)
    max_border_voxels: int = Field(0, ge=0)


class DataConfig(_Section):
    """Data preparation (``gliomagen prepare``, notebook 01).

    Args:
        raw_dir: the raw BraTS-layout folder (``{run_dir}`` and ``{profile}`` are substituted).
        phantom: build the phantom dataset into ``raw_dir`` (``null``: use real data there).
        labels: the prepared label map (raw BraTS value -> prepared value; which labels are tumour).
        head: how the head label is derived.
        intensity: per-volume intensity normalisation.
        target_shape: the prepared grid in voxels (paper: 192x192x144).
        split: the train/validation split.
        qc: automatic quality control.
    """

    raw_dir: str = "data/BraTS2024-GLI-post"
    phantom: PhantomConfig | None = None
    labels: list[LabelSpec] = Field(default_factory=lambda: [LabelSpec(**spec) for spec in PAPER_LABELS])
    head: HeadConfig = HeadConfig()
    intensity: IntensityConfig = IntensityConfig()
    target_shape: tuple[int, int, int] = (192, 192, 144)
    split: SplitConfig = SplitConfig()
    qc: QCConfig = QCConfig()

    @field_validator("labels")
    @classmethod
    def _labels_consistent(cls, labels: list[LabelSpec]) -> list[LabelSpec]:
        values = [lab.value for lab in labels]
        if len(set(values)) != len(values):
            raise ValueError(f"label values must be unique, got {values}")
        if 0 not in values:
            raise ValueError("the label map must contain the background value 0")
        sources = [lab.source for lab in labels if lab.source is not None]
        if len(set(sources)) != len(sources):
            raise ValueError(f"label source values must be unique, got {sources}")
        return labels

    @field_validator("target_shape")
    @classmethod
    def _positive(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) < 1:
            raise ValueError(f"every side must be positive, got {v}")
        return v
