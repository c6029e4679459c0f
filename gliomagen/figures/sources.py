"""The run files each figure and table is made from (recorded with their SHA-256, so a stale table is noticed)."""

from __future__ import annotations

from pathlib import Path

from gliomagen.augment.outputs import AugmentationOutputs
from gliomagen.config import Config
from gliomagen.data.outputs import PrepareOutputs
from gliomagen.diffusion.outputs import TrainingOutputs
from gliomagen.fidelity.outputs import FidelityOutputs


def cases_table(cfg: Config) -> list[Path]:
    return [PrepareOutputs(cfg.paths).cases_csv]


def training_logs(cfg: Config) -> list[Path]:
    training = TrainingOutputs(cfg.paths)
    return [p for p in (training.train_log, training.val_log) if p.is_file()]


def previews(cfg: Config) -> list[Path]:
    return sorted(TrainingOutputs(cfg.paths).previews.glob("*.png"))


def augment_manifest(cfg: Config) -> list[Path]:
    return [AugmentationOutputs(cfg.paths).manifest]


def synthetic_manifest(cfg: Config) -> list[Path]:
    from gliomagen.generation.outputs import GenerationOutputs  # the generation package imports torch

    return [GenerationOutputs(cfg.paths).manifest]


def sampler_timing(cfg: Config) -> list[Path]:
    from gliomagen.generation.outputs import GenerationOutputs

    return [GenerationOutputs(cfg.paths).sampler_timing]


def sampler_sweep(cfg: Config) -> list[Path]:
    from gliomagen.generation.outputs import GenerationOutputs

    out = GenerationOutputs(cfg.paths)
    return [out.sweep_table, out.sweep_recommendation]


def fidelity(cfg: Config) -> list[Path]:
    return [FidelityOutputs(cfg.paths).results_json]


def segmentation(cfg: Config) -> list[Path]:
    from gliomagen.segmentation.outputs import TABLES, SegmentationOutputs

    out = SegmentationOutputs(cfg.paths)
    files = [out.table(name) for name in TABLES]
    files += [out.hq_scores, out.summary, out.confusion, out.timing, out.hq_summary]
    return [p for p in files if p.is_file()]


def nothing(cfg: Config) -> list[Path]:
    return []
