"""Config sections of the stages after training: augmentation, generation and its sampler sweep, fidelity,
segmentation, figures and the reader study."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from gliomagen.config.base import PAPER_CONFIGURATIONS, _Section


class AugmentConfig(_Section):
    """Mask augmentation (``gliomagen augment``): the paper's flip + scale recipe, optional extras.

    Args:
        rounds: augmented masks tried per training mask (paper: 2).
        flip_p: probability of a left-right flip (axis found from the affine).
        scale_range: isotropic nearest-neighbour scale factor range about the volume centre.
        max_retries: attempts (new scale/rotation/deformation) until no head voxel is on the border.
        rotation_deg: maximum absolute rotation about each world axis (0 = off, paper).
        elastic: smooth random elastic deformation (off in the paper).
        elastic_sigma_mm: smoothness (Gaussian sigma) of the displacement field.
        elastic_magnitude_mm: standard deviation of the displacement.
        move_lesion: translate the lesion inside the head (off in the paper).
        move_max_mm: largest translation per world axis when moving the lesion.
        seed: base seed; each (source, round) gets its own stream.
    """

    rounds: int = Field(2, ge=1)
    flip_p: float = Field(0.5, ge=0, le=1)
    scale_range: tuple[float, float] = (0.98, 1.02)
    max_retries: int = Field(10, ge=1)
    rotation_deg: float = Field(0.0, ge=0, le=45)
    elastic: bool = False
    elastic_sigma_mm: float = Field(8.0, gt=0)
    elastic_magnitude_mm: float = Field(1.5, ge=0)
    move_lesion: bool = False
    move_max_mm: float = Field(10.0, ge=0)
    seed: int = 0

    @field_validator("scale_range")
    @classmethod
    def _scale_ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1]):
            raise ValueError(f"must be two factors with 0 < low <= high, got {v}")
        return v


# ------------------------------------------------------------------------------------------- generate
class GenerateConfig(_Section):
    """Generation (``gliomagen generate``) from the EMA weights of a checkpoint.

    Args:
        sampler: ``ddpm`` (the paper's ancestral sampler, all T steps), ``ddim``, ``dpmpp`` (DPM-Solver++ 2M) or
            ``unipc`` (UniPC bh2); every sampler clamps its x0 prediction and re-derives the noise from it.
        steps: sampling steps (``ddpm`` needs ``diffusion.timesteps``).
        eta: DDIM stochasticity (0 = deterministic).
        batch_size: volumes per sampler call.
        checkpoint: ``best``, ``last`` or a checkpoint file.
        n_synthetic: augmented masks to generate from (round 1 first); ``null`` = all accepted.
        seed: base seed; each volume's noise seed is derived from ``(seed, id)``.
        timing_budget_s: notebook 04 runs a sampler for timing only if it is predicted to take at most this
            long; slower ones are extrapolated from a short run (and labelled so).
        timing_fast_steps: steps used for the ddim and dpmpp timings in notebook 04.
        clip_range: every sampler clamps its prediction of the clean image to this range at each step.
            ``[0, 1]`` (default) is the range images live in; ``[-1, 1]`` is the original's clamp, needed to
            reproduce its samples from its released weights. Written volumes are clamped to [0, 1] anyway.
        allow_config_mismatch: use a checkpoint whose model-relevant config (target shape, label map, mask
            encoding, network, diffusion) differs from the run's; refused by default, naming the keys.
    """

    sampler: Literal["ddpm", "ddim", "dpmpp", "unipc"] = "ddpm"
    steps: int = Field(1000, ge=1)
    eta: float = Field(0.0, ge=0)
    batch_size: int = Field(1, ge=1)
    checkpoint: str = "best"
    n_synthetic: int | None = Field(None, ge=0)
    seed: int = 0
    timing_budget_s: float = Field(600.0, ge=0)
    timing_fast_steps: int = Field(50, ge=1)
    clip_range: tuple[float, float] = (0.0, 1.0)
    allow_config_mismatch: bool = False

    @field_validator("clip_range")
    @classmethod
    def _clip_ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not v[0] < v[1]:
            raise ValueError(f"must be [low, high] with low < high, got {list(v)}")
        return v


# ---------------------------------------------------------------------------------------------- sweep
class SweepConfig(_Section):
    """The sampler sweep (``gliomagen sweep-samplers``, notebook 04): quality and speed against NFE.

    Args:
        full_grid: the full grid (every sampler of ``ddim``, ``dpmpp``, ``unipc`` at NFE 5, 10, 25, 50, 100,
            250); ``false``: only ``samplers`` x ``nfe``.
        samplers: the fast samplers compared with the DDPM reference when ``full_grid`` is false.
        nfe: their numbers of network evaluations when ``full_grid`` is false.
        reference: also run the paper's DDPM over all ``T`` steps (the reference every CI is compared with).
        max_masks: validation masks used (the first by id); ``null`` = all.
        resegment: re-segment every sweep volume with the run's real-only nnU-Net model when there is one.
        distance_slices: per volume and modality, at most this many of the real volume's non-empty axial
            slices (a seeded sample, the same slice indices in the real and the generated volume) go to the
            sweep's radiomics FID and its real-vs-real floor; ``null`` = all of them.
    """

    full_grid: bool = True
    samplers: list[Literal["ddim", "dpmpp", "unipc"]] = ["ddim", "dpmpp", "unipc"]
    nfe: list[int] = [5, 10, 25, 50, 100, 250]
    reference: bool = True
    max_masks: int | None = Field(None, ge=2)
    resegment: bool = True
    distance_slices: int | None = Field(None, ge=2)


# ------------------------------------------------------------------------------------------- fidelity
class FidelityConfig(_Section):
    """Fidelity of generated validation volumes (``gliomagen fidelity``, notebook 05).

    Args:
        extractors: slice feature extractors for FID/KID (see ``gliomagen.fidelity.features.REGISTRY``):
            ``inception-torchvision`` (the paper's), ``inception-fid`` (torch-fidelity's standard FID
            network), ``radiomics`` (pyradiomics texture features; needs no downloaded weights).
        weights_dir: folder searched first for extractor weights (then the torch hub cache).
        exclude_empty_slices: corrected metrics drop axial slices whose real image is empty.
        empty_threshold: a slice is empty when every real voxel in it is <= this value.
        ms_ssim_kernel: Gaussian window of (MS-)SSIM (paper: 11).
        ms_ssim_scales: MS-SSIM scales; ``None`` = as many of the standard 5 as the image size allows.
        bootstrap: resamples of subjects for the 95% confidence intervals (0 = no intervals).
        confidence: level of the bootstrap intervals.
        kid_subsets: KID subsets (paper: 10).
        kid_subset_size: slices per KID subset (capped at the number of slices available).
        frd: compute the Fréchet Radiomics Distance with ``frd-score``.
        frd_max_slices: at most this many non-empty slices per set and modality go to FRD (``None`` = all).
        real_floor: also compute every corrected metric real-vs-real (validation subjects split into two
            seeded halves, bootstrap over subject pairs) and the ratio synthetic / real-vs-real.
        batch_size: slices per forward pass of a network extractor.
        seed: drives KID subsets, bootstrap and FRD slice selection.
    """

    extractors: list[Literal["inception-torchvision", "inception-fid", "radiomics"]] = [
        "inception-torchvision",
        "inception-fid",
        "radiomics",
    ]
    weights_dir: str | None = None
    exclude_empty_slices: bool = True
    empty_threshold: float = Field(0.0, ge=0)
    ms_ssim_kernel: int = Field(11, ge=3)
    ms_ssim_scales: int | None = Field(None, ge=1, le=5)
    bootstrap: int = Field(1000, ge=0)
    confidence: float = Field(0.95, gt=0, lt=1)
    kid_subsets: int = Field(10, ge=1)
    kid_subset_size: int = Field(1000, ge=2)
    frd: bool = True
    frd_max_slices: int | None = Field(None, ge=2)
    real_floor: bool = True
    batch_size: int = Field(64, ge=1)
    seed: int = 0

    @field_validator("ms_ssim_kernel")
    @classmethod
    def _odd_kernel(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"the (MS-)SSIM window must be odd, got {v}")
        return v


# ------------------------------------------------------------------------------------------- segment
class SegConfiguration(_Section):
    """One training-data mix for nnU-Net.

    Args:
        name: identifier (used for the nnU-Net dataset name).
        real_fraction: share of the real training scans used (patient-level, seeded).
        synthetic: number of synthetic volumes added.
        synthetic_pool: ``all`` augmented-mask volumes or the measured ``hq`` subset.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    real_fraction: float = Field(1.0, ge=0, le=1)
    synthetic: int = Field(0, ge=0)
    synthetic_pool: Literal["all", "hq"] = "all"


class SegmentConfig(_Section):
    """nnU-Net v2 on the six real/synthetic data mixes (``gliomagen segment``, notebook 06).

    Args:
        configurations: the training-data mixes (the paper's six by default).
        dataset_id_start: nnU-Net dataset id of the first configuration (the others follow).
        nnunet_configuration: nnU-Net configuration (paper: ``3d_fullres``).
        trainer: nnU-Net trainer class.
        epochs: training epochs.
        iterations_per_epoch: training iterations per epoch.
        val_iterations_per_epoch: nnU-Net's validation iterations per epoch.
        final_validation: nnU-Net's own validation after training (fold ``all``: its training set).
        tta: mirroring test-time augmentation at prediction (nnU-Net's default).
        shared_plans: plan once (first configuration) and reuse the plans and the preprocessed real cases
            for the others (every mix has the same geometry).
        feature_scale: scales the planned U-Net's features per stage (1 = nnU-Net's plan).
        checkpoint_every: epochs between nnU-Net's ``checkpoint_latest.pth``.
        include_head: train on the head label as well as the tumour labels.
        hq_count: size of the high-quality synthetic pool.
        hq_score: how synthetic volumes are ranked for the pool.
        bootstrap: resamples of scans for the confidence intervals.
        confidence: level of the intervals.
        seed: seed of the real-subset choice and nnU-Net's training.
    """

    configurations: list[SegConfiguration] = Field(
        default_factory=lambda: [SegConfiguration(**spec) for spec in PAPER_CONFIGURATIONS]
    )
    dataset_id_start: int = Field(501, ge=1, le=999)
    nnunet_configuration: str = "3d_fullres"
    trainer: str = "nnUNetTrainer"
    epochs: int = Field(1000, ge=1)
    iterations_per_epoch: int = Field(250, ge=1)
    val_iterations_per_epoch: int = Field(50, ge=1)
    final_validation: bool = True
    tta: bool = True
    shared_plans: bool = False
    feature_scale: float = Field(1.0, gt=0, le=1)
    checkpoint_every: int = Field(50, ge=1)
    include_head: bool = True
    hq_count: int = Field(598, ge=0)
    hq_score: Literal["segmentation_agreement"] = "segmentation_agreement"
    bootstrap: int = Field(1000, ge=0)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _unique_names(self) -> SegmentConfig:
        names = [c.name for c in self.configurations]
        if len(set(names)) != len(names):
            raise ValueError(f"configuration names must be unique, got {names}")
        if self.dataset_id_start + len(names) - 1 > 999:
            raise ValueError("dataset_id_start + number of configurations must stay <= 999 (nnU-Net ids)")
        return self


class FiguresConfig(_Section):
    """Where notebook 07 writes figures and the paper's generated tables ({profile} is substituted).

    Args:
        figures_dir: the published copy of the figures.
        tables_dir: the published copy of the paper's generated tables and numbers.
        formats: figure file formats.
        dpi: resolution of raster figures.
    """

    figures_dir: str = "figures/{profile}"
    tables_dir: str = "paper/generated/{profile}"
    formats: list[Literal["png", "pdf", "svg"]] = ["png", "pdf"]
    dpi: int = Field(150, ge=50)


# --------------------------------------------------------------------------------------- reader study
class ReaderStudyConfig(_Section):
    """The blinded reader study kit, a visual Turing test (``gliomagen reader-study build|score``).

    Args:
        max_cases: use at most this many validation cases (seeded subset); ``None`` = every paired case.
        panels: panel kinds: one modality each, or ``all`` (the four modalities side by side).
        locations: axial slices ``lesion`` (through the lesion) and ``away`` (tumour-free, away from it).
        slices_per_location: slices drawn per case, location and panel kind.
        lesion_min_fraction: a lesion slice has at least this fraction of the largest tumour cross-section.
        away_margin_mm: an away slice is at least this far (mm) from any slice that holds tumour.
        head_min_fraction: an away slice has at least this fraction of the largest head cross-section.
        window_percentiles: display window per volume and modality, percentiles of the head voxels.
        image_size: longer side of each PNG in pixels (upsampled, never downsampled below native).
        convention: ``radiological`` (patient's right on the image's left) or ``neurological``.
        title: shown on the page.
        confidence: level of the confidence intervals in the scores.
        seed: drives case choice, class assignment, slices, random ids and panel order.
    """

    max_cases: int | None = Field(24, ge=2)
    panels: list[Literal["t1n", "t1c", "t2w", "t2f", "all"]] = ["t1n", "t1c", "t2w", "t2f", "all"]
    locations: list[Literal["lesion", "away"]] = ["lesion", "away"]
    slices_per_location: int = Field(1, ge=1)
    lesion_min_fraction: float = Field(0.5, gt=0, le=1)
    away_margin_mm: float = Field(10.0, ge=0)
    head_min_fraction: float = Field(0.3, ge=0, le=1)
    window_percentiles: tuple[float, float] = (0.5, 99.5)
    image_size: int = Field(384, ge=16, le=4096)
    convention: Literal["radiological", "neurological"] = "radiological"
    title: str = "GliomaGen reader study: real or synthetic?"
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0

    @field_validator("panels", "locations")
    @classmethod
    def _non_empty_unique(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"must be a non-empty list without repeats, got {v}")
        return v

    @field_validator("window_percentiles")
    @classmethod
    def _window(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 <= v[0] < v[1] <= 100):
            raise ValueError("must be two percentiles with 0 <= low < high <= 100")
        return v
