"""The whole run configuration (:class:`Config`), its ``runtime`` section and its hash."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from gliomagen.config.base import _Section, resolve_path
from gliomagen.config.data import DataConfig, LabelSpec
from gliomagen.config.diffusion import DiffusionConfig, ModelConfig, TrainConfig
from gliomagen.config.stages import (
    AugmentConfig,
    FidelityConfig,
    FiguresConfig,
    GenerateConfig,
    ReaderStudyConfig,
    SegmentConfig,
    SweepConfig,
)
from gliomagen.hashing import content_hash
from gliomagen.paths import RunPaths


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


def config_hash(cfg: Config, length: int = 12) -> str:
    """Stable short hash of everything that defines the results (run folder and ``runtime`` excluded)."""
    payload = cfg.model_dump(
        mode="json", exclude={"run_dir": True, "runtime": True, "figures": {"figures_dir", "tables_dir"}}
    )
    return content_hash(payload, length)
