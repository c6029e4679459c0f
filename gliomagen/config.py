"""One typed, validated configuration per run.

A run is described by a *profile* (``configs/<profile>.yaml``) plus overrides (``--set a.b=value`` on the
CLI, ``overrides=[...]`` as a papermill parameter). Loading validates every key and value and produces a
:class:`Config`; :func:`config_hash` gives a short stable hash that is written next to every output so a
result can always be traced to the exact configuration that made it.

Example:
    >>> cfg = load_config("smoke", ["train.max_steps=50"])
    >>> cfg.train.max_steps
    50
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gliomagen.hashing import content_hash
from gliomagen.paths import PROJECT_ROOT, RunPaths

CONFIG_DIR = PROJECT_ROOT / "configs"
MODALITIES: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f")


class ConfigError(ValueError):
    """A profile or override is invalid; the message names the key and how to fix it."""


#: the paper's label map: background, the derived head label, the four BraTS 2024 post-treatment labels
PAPER_LABELS: tuple[dict[str, Any], ...] = (
    {"name": "background", "source": 0, "value": 0, "tumour": False},
    {"name": "head", "source": None, "value": 1, "tumour": False},
    {"name": "NETC", "source": 1, "value": 2},
    {"name": "SNFH", "source": 2, "value": 3},
    {"name": "ET", "source": 3, "value": 4},
    {"name": "RC", "source": 4, "value": 5},
)
#: the paper's six nnU-Net training-data mixes
PAPER_CONFIGURATIONS: tuple[dict[str, Any], ...] = (
    {"name": "real_only", "real_fraction": 1.0, "synthetic": 0},
    {"name": "real_1062syn", "real_fraction": 1.0, "synthetic": 1062, "synthetic_pool": "all"},
    {"name": "real_2124syn", "real_fraction": 1.0, "synthetic": 2124, "synthetic_pool": "all"},
    {"name": "real_598hq", "real_fraction": 1.0, "synthetic": 598, "synthetic_pool": "hq"},
    {"name": "hq598_only", "real_fraction": 0.0, "synthetic": 598, "synthetic_pool": "hq"},
    {"name": "halfreal_598hq", "real_fraction": 0.5, "synthetic": 598, "synthetic_pool": "hq"},
)


class _Section(BaseModel):
    """A config section: unknown keys are errors, and nothing changes after loading (the hash describes
    what ran). Each field is described in the class docstring's ``Args:`` (``gliomagen config --explain``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------------------------- data
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


# ---------------------------------------------------------------------------------------------- model
class ModelConfig(_Section):
    """The denoiser: MONAI ``DiffusionModelUNet`` configured like the paper's network.

    Args:
        channels: feature channels per resolution level (paper: 64, 64, 128, 192, 256; 57.6 M parameters).
        num_res_blocks: residual blocks per level.
        norm_num_groups: GroupNorm groups.
        norm_eps: GroupNorm epsilon.
        num_head_channels: channels per attention head of the middle block (paper: one head).
        mask_encoding: ``paper`` (the original's mask channels) or ``compact`` (one channel per label).
        upsample_mode: ``trilinear`` (the original network) or ``nearest`` (MONAI's default).
        time_embed_max_period: max period of the sinusoidal time embedding (original: 1000; MONAI: 10000).
        zero_init_attention_out: zero-initialise the attention output projection (original: true).
    """

    channels: tuple[int, ...] = (64, 64, 128, 192, 256)
    num_res_blocks: int = Field(2, ge=1)
    norm_num_groups: int = Field(32, ge=1)
    norm_eps: float = Field(1e-5, gt=0)
    num_head_channels: int = Field(256, ge=1)
    mask_encoding: Literal["paper", "compact"] = "paper"
    # the reference network's forward (paper profile); MONAI's defaults: nearest, 10000, false
    upsample_mode: Literal["nearest", "trilinear"] = "trilinear"
    time_embed_max_period: int = Field(1000, ge=2)
    zero_init_attention_out: bool = True

    @model_validator(mode="after")
    def _divisible(self) -> ModelConfig:
        bad = [c for c in self.channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(
                f"channels {bad} are not multiples of norm_num_groups={self.norm_num_groups}; "
                "GroupNorm needs whole groups"
            )
        if self.channels[-1] % self.num_head_channels:
            raise ValueError(
                f"num_head_channels={self.num_head_channels} must divide the last channel count "
                f"{self.channels[-1]} (the middle block's attention); the paper uses one head: set it equal"
            )
        return self


class DiffusionConfig(_Section):
    """The forward process and the training objective.

    Args:
        timesteps: diffusion steps T (paper: 1000).
        schedule: noise schedule (paper: cosine).
        cosine_s: offset ``s`` of the cosine schedule.
        beta_max: largest beta (the cosine schedule is clipped there).
        prediction: what the network predicts: ``epsilon`` (paper), ``sample`` (x0) or ``v_prediction``.
        loss: ``l1`` (paper) or ``l2``.
    """

    timesteps: int = Field(1000, ge=2)
    schedule: Literal["cosine", "linear_beta", "scaled_linear_beta"] = "cosine"
    cosine_s: float = Field(0.008, gt=0)
    beta_max: float = Field(0.999, gt=0, le=1)
    prediction: Literal["epsilon", "sample", "v_prediction"] = "epsilon"
    loss: Literal["l1", "l2"] = "l1"


class TrainConfig(_Section):
    """Diffusion training (``gliomagen train``, notebook 02).

    Args:
        max_steps: optimiser steps (paper: 245 000).
        lr: base learning rate.
        batch_size: volumes per forward pass.
        grad_accum: forward passes per optimiser step.
        ema_decay: EMA decay of the weights used for sampling.
        ema_every: steps between EMA updates.
        ema_start: first step of the EMA (the EMA copies the weights before it).
        lr_milestones: steps where the learning rate changes.
        lr_factors: factor of ``lr`` before the first milestone and after each (one more than milestones).
        freeze_encoder_step: step after which the encoder is frozen (``null``: never).
        checkpoint_every: steps between checkpoints.
        keep_checkpoints: newest ``step_*.pt`` kept (``null``: all); ``best.pt``/``last.pt`` always kept.
        val_every: steps between validation losses.
        val_cases: validation cases in the validation loss.
        val_timesteps: diffusion steps at which the validation loss is measured.
        early_stopping_patience: validations without improvement before stopping (``null``: never).
        preview_every: steps between preview samples.
        preview_sampler: sampler of the previews.
        preview_steps: sampling steps of the previews.
        bf16: bf16 autocast (fast on GPUs with bf16 units and CPUs with AVX512-BF16/AMX).
        grad_checkpointing: recompute activations in the backward pass (less memory, ~30 % more time).
        channels_last: channels-last-3d memory format.
        compile: ``torch.compile`` the network.
        seed: seed of initialisation, case order and noise.
    """

    max_steps: int = Field(245_000, ge=1)
    lr: float = Field(1e-5, gt=0)
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(2, ge=1)
    ema_decay: float = Field(0.995, gt=0, lt=1)
    ema_every: int = Field(10, ge=1)
    ema_start: int = Field(2000, ge=0)
    lr_milestones: list[int] = [65_000, 75_000, 85_000, 100_000]
    lr_factors: list[float] = [1.0, 0.75, 0.5, 0.25, 0.1]
    freeze_encoder_step: int | None = 170_000
    checkpoint_every: int = Field(2500, ge=1)
    keep_checkpoints: int | None = Field(5, ge=1)  # newest step_*.pt kept (None: all); best/last always
    val_every: int = Field(2500, ge=1)
    val_cases: int = Field(8, ge=1)
    val_timesteps: list[int] = [50, 250, 500, 750, 950]
    early_stopping_patience: int | None = None
    preview_every: int = Field(25_000, ge=1)
    preview_sampler: Literal["ddpm", "ddim", "dpmpp"] = "ddim"
    preview_steps: int = Field(100, ge=1)
    bf16: bool = False
    grad_checkpointing: bool = False
    channels_last: bool = False
    compile: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _schedule_consistent(self) -> TrainConfig:
        if len(self.lr_factors) != len(self.lr_milestones) + 1:
            raise ValueError(
                f"lr_factors needs one more entry than lr_milestones "
                f"({len(self.lr_milestones)} milestones, {len(self.lr_factors)} factors)"
            )
        if sorted(self.lr_milestones) != self.lr_milestones:
            raise ValueError(f"lr_milestones must increase, got {self.lr_milestones}")
        return self


# -------------------------------------------------------------------------------------------- augment
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
        sampler: ``ddpm`` (the paper's ancestral sampler, all T steps), ``ddim`` or ``dpmpp``.
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

    sampler: Literal["ddpm", "ddim", "dpmpp"] = "ddpm"
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
    """

    full_grid: bool = True
    samplers: list[Literal["ddim", "dpmpp", "unipc"]] = ["ddim", "dpmpp", "unipc"]
    nfe: list[int] = [5, 10, 25, 50, 100, 250]
    reference: bool = True
    max_masks: int | None = Field(None, ge=2)
    resegment: bool = True


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


# -------------------------------------------------------------------------------------------- runtime
class RuntimeConfig(_Section):
    """Where and how wide the work runs. None of these change a result beyond float rounding, so none is in
    the config hash: the same science on another machine keeps its hash.

    Args:
        device: every stage's torch device: ``auto`` (the local rank's CUDA GPU, else the CPU), ``cpu``,
            ``cuda`` or ``cuda:<i>``.
        workers: CPU processes of the parallel stages: preparation, augmentation, the radiomics features of
            fidelity, nnU-Net's fingerprint, preprocessing and export.
        loader_workers: processes that load training batches (0 = in the training process).
        threads: torch/OpenMP threads of fidelity and of each nnU-Net process on a CPU (``null`` = the
            library's default); on a shared 2-core CPU one thread is faster for small tensors.
        nnunet_augmentation_workers: nnU-Net's data-augmentation processes (``nnUNet_n_proc_DA``; 0 = in the
            training process, deterministic).
    """

    device: str = "auto"
    workers: int = Field(8, ge=1)
    loader_workers: int = Field(4, ge=0)
    threads: int | None = Field(None, ge=1)
    nnunet_augmentation_workers: int = Field(12, ge=0)

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", v):
            raise ValueError(f"must be auto, cpu, cuda or cuda:<index>, got {v!r}")
        return v


# --------------------------------------------------------------------------------------------- config
class Config(_Section):
    """The whole run configuration (one section per pipeline stage).

    Args:
        profile: the profile's name (``configs/<profile>.yaml``).
        run_dir: the run folder (``{profile}`` is substituted; relative paths from the project root).
        data: data preparation.
        model: the denoising network.
        diffusion: the forward process and training objective.
        train: diffusion training.
        augment: mask augmentation.
        generate: generation.
        sweep: the sampler sweep.
        fidelity: fidelity metrics.
        segment: nnU-Net on the data mixes.
        figures: figures and tables.
        reader_study: the reader study kit.
        runtime: devices, processes and threads (not part of the config hash).
    """

    profile: str
    run_dir: str = "runs/{profile}"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()
    generate: GenerateConfig = GenerateConfig()
    sweep: SweepConfig = SweepConfig()
    fidelity: FidelityConfig = FidelityConfig()
    segment: SegmentConfig = SegmentConfig()
    figures: FiguresConfig = FiguresConfig()
    reader_study: ReaderStudyConfig = ReaderStudyConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @model_validator(mode="after")
    def _cross_section_rules(self) -> Config:
        """Rules between sections that would otherwise fail only hours later, in the stage that uses them."""
        problems = []
        T = self.diffusion.timesteps
        bad_t = [v for v in self.train.val_timesteps if not 0 <= v < T]
        if bad_t:
            problems.append(f"train.val_timesteps {bad_t} must lie in 0..{T - 1} (diffusion.timesteps={T})")
        for key, sampler, steps in (
            ("generate", self.generate.sampler, self.generate.steps),
            ("train.preview", self.train.preview_sampler, self.train.preview_steps),
        ):
            if sampler != "ddpm" and steps > T:  # the ancestral DDPM always runs all T steps
                problems.append(
                    f"{key}_steps={steps} exceeds diffusion.timesteps={T} ({key}_sampler={sampler})"
                )
        factor = 2 ** (len(self.model.channels) - 1)  # the U-Net halves every side once per level
        if any(side % factor for side in self.data.target_shape):
            problems.append(
                f"data.target_shape {list(self.data.target_shape)} must be divisible by {factor} on every side "
                f"(2**(levels-1) for the {len(self.model.channels)} levels of model.channels)"
            )
        seg = self.segment
        hq = [c for c in seg.configurations if c.synthetic_pool == "hq" and c.synthetic > 0]
        baseline = any(c.real_fraction == 1.0 and c.synthetic == 0 for c in seg.configurations)
        if hq and not baseline:
            problems.append(
                f"segment configurations {[c.name for c in hq]} use the hq pool, which is ranked by a real-only "
                "configuration (real_fraction 1, synthetic 0): add one"
            )
        too_many = [f"{c.name} ({c.synthetic})" for c in hq if c.synthetic > seg.hq_count]
        if too_many:
            problems.append(
                f"segment configurations {too_many} take more hq volumes than segment.hq_count={seg.hq_count}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def paths(self) -> RunPaths:
        """The run's folder layout (see :class:`gliomagen.paths.RunPaths`)."""
        return RunPaths(resolve_path(self.run_dir.format(profile=self.profile)))

    @property
    def raw_dir(self) -> Path:
        return resolve_path(self.data.raw_dir.format(run_dir=self.paths.root, profile=self.profile))

    @property
    def figures_dir(self) -> Path:
        return resolve_path(self.figures.figures_dir.format(profile=self.profile))

    @property
    def tables_dir(self) -> Path:
        return resolve_path(self.figures.tables_dir.format(profile=self.profile))

    @property
    def hash(self) -> str:
        return config_hash(self)

    @property
    def tumour_labels(self) -> list[LabelSpec]:
        return [lab for lab in self.data.labels if lab.tumour and lab.value != 0]

    def label(self, name: str) -> LabelSpec:
        for lab in self.data.labels:
            if lab.name == name:
                return lab
        raise KeyError(f"no label named {name!r}; known: {[lab.name for lab in self.data.labels]}")


# ------------------------------------------------------------------------------------------- loading
def resolve_path(path: str | Path) -> Path:
    """Absolute path; relative paths are taken from the project root (where ``configs/`` lives)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (PROJECT_ROOT / p).resolve()


def available_profiles() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a YAML-parsed value."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.max_steps=100)")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
    return key.split("."), value


def _apply_override(tree: dict[str, Any], keys: list[str], value: Any, model: type[BaseModel]) -> None:
    node: dict[str, Any] = tree
    current: type[BaseModel] | None = model
    for depth, key in enumerate(keys):
        if current is not None and key not in current.model_fields:
            where = ".".join(keys[:depth]) or "the top level"
            known = ", ".join(sorted(current.model_fields))
            raise ConfigError(f"unknown key {'.'.join(keys[: depth + 1])!r} at {where}; known keys: {known}")
        if depth == len(keys) - 1:
            node[key] = value
            return
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
        current = _submodel(current, key)


def _submodel(model: type[BaseModel] | None, key: str) -> type[BaseModel] | None:
    if model is None:
        return None
    annotation = model.model_fields[key].annotation
    candidates = getattr(annotation, "__args__", (annotation,))
    for cand in candidates:
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent = _model_at(Config, list(err["loc"][:-1]))
            known = ", ".join(sorted(parent.model_fields)) if parent else "?"
            lines.append(f"  - unknown key {key!r}; known keys here: {known}")
        else:
            got = err.get("input")
            got_s = f" (got {got!r})" if not isinstance(got, dict) else ""
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  - {key}: {msg}{got_s}" if key else f"  - {msg}")
    return "\n".join(lines)


def _model_at(model: type[BaseModel] | None, loc: list[Any]) -> type[BaseModel] | None:
    for key in loc:
        if model is None:
            return None
        if isinstance(key, int):
            continue
        if key not in model.model_fields:
            return None
        annotation = model.model_fields[key].annotation
        inner = getattr(annotation, "__args__", (annotation,))
        found = None
        for cand in inner:
            args = getattr(cand, "__args__", (cand,))
            for a in args:
                if isinstance(a, type) and issubclass(a, BaseModel):
                    found = a
        model = found
    return model


def load_config(
    profile: str = "smoke",
    overrides: list[str] | None = None,
    run_dir: str | Path | None = None,
) -> Config:
    """Load ``configs/<profile>.yaml`` (or a YAML file path), apply overrides and validate.

    Args:
        profile: profile name in ``configs/`` or a path to a YAML file.
        overrides: ``section.key=value`` strings, applied in order (later wins).
        run_dir: where the run's outputs go (default ``runs/<profile>`` in the project); a relative path is
            taken from the current directory.

    Raises:
        ConfigError: with a message naming the offending key.
    """
    path = Path(profile)
    if path.suffix not in {".yaml", ".yml"}:
        path = CONFIG_DIR / f"{profile}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"profile {profile!r} not found at {path}; available profiles: {', '.join(available_profiles())}"
        )
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    tree.setdefault("profile", path.stem)
    for item in overrides or []:
        keys, value = parse_override(item)
        _apply_override(tree, keys, value, Config)
    if run_dir is not None:
        # a run folder given by the caller (--run-dir) is relative to the current directory, like any
        # other path on a command line; only the profile's default (runs/<profile>) lives in the checkout
        tree["run_dir"] = str(Path(run_dir).expanduser().resolve())
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(path))) from None


def config_hash(cfg: Config, length: int = 12) -> str:
    """Stable short hash of everything that defines the results (run folder and ``runtime`` excluded)."""
    payload = cfg.model_dump(
        mode="json", exclude={"run_dir": True, "runtime": True, "figures": {"figures_dir", "tables_dir"}}
    )
    return content_hash(payload, length)


def require_raw_data(cfg: Config) -> Path:
    """The raw BraTS folder, or an error that says how to get the data."""
    raw = cfg.raw_dir
    if raw.is_dir() and any(raw.iterdir()):
        return raw
    if cfg.data.phantom is not None:
        return raw  # the caller generates the phantom there
    raise ConfigError(
        f"raw data folder {raw} is missing or empty (data.raw_dir in profile {cfg.profile!r}).\n"
        "Get BraTS 2024 Adult Post-Treatment Glioma training data from Synapse (id syn60086071, needs a "
        "free Synapse account and accepting the data terms), unpack it so that the folder holds "
        "BraTS-GLI-xxxxx-xxx/ case folders, and point data.raw_dir at it, e.g.\n"
        "  gliomagen prepare --profile paper --set data.raw_dir=/data/BraTS2024-GLI-post\n"
        "or run the smoke profile, which builds its own phantom dataset."
    )


# ------------------------------------------------------------------------------------------- explain
def field_descriptions(model: type[BaseModel]) -> dict[str, str]:
    """``{field: description}`` from the ``Args:`` section of a config class's docstring (one source)."""
    doc = inspect.getdoc(model) or ""
    if "Args:" not in doc:
        return {}
    descriptions: dict[str, str] = {}
    current = None
    for line in doc.split("Args:", 1)[1].splitlines():
        entry = re.match(r"^    (\w+): (.*)$", line)
        if entry and entry.group(1) in model.model_fields:
            current = entry.group(1)
            descriptions[current] = entry.group(2).strip()
        elif current and line.startswith("        "):
            descriptions[current] += " " + line.strip()
        elif line.strip():
            current = None
    return descriptions


def _sections(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    yield prefix, model
    for name in model.model_fields:
        sub = _submodel(model, name)
        if sub is not None:
            yield from _sections(sub, f"{prefix}{name}.")


def undescribed_fields() -> list[str]:
    """Config keys without a description (kept empty by a test)."""
    return [
        f"{prefix}{name}"
        for prefix, model in _sections(Config)
        for name in model.model_fields
        if name not in field_descriptions(model)
    ]


def explain(cfg: Config) -> str:
    """Every key of ``cfg`` with its value, the paper's value where this profile differs, and what it means.

    Args:
        cfg: a loaded configuration.
    """
    paper = Config(profile="paper")
    lines = [f"# profile {cfg.profile}, config hash {cfg.hash} (runtime.* is not part of the hash)"]

    def walk(node: BaseModel, reference: BaseModel | None, prefix: str) -> None:
        descriptions = field_descriptions(type(node))
        for name in type(node).model_fields:
            value = getattr(node, name)
            ref = getattr(reference, name, None) if reference is not None else None
            if isinstance(value, BaseModel):
                lines.append(f"\n[{prefix}{name}]  {descriptions.get(name, '')}".rstrip())
                walk(value, ref if isinstance(ref, BaseModel) else None, f"{prefix}{name}.")
                continue
            shown = json.dumps(_plain(value))
            differs = reference is not None and _plain(value) != _plain(ref) and name != "profile"
            note = f"   (paper: {json.dumps(_plain(ref))})" if differs else ""
            lines.append(f"{prefix}{name} = {shown}{note}")
            if descriptions.get(name):
                lines.append(f"    {descriptions[name]}")

    walk(cfg, paper, "")
    return "\n".join(lines)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
