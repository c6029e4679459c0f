"""``gliomagen generate``: kept as the CLI's entry point and for existing imports; the code lives in
:mod:`gliomagen.generation` (jobs, sampling, stage, outputs, timing, plots, sweep)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from gliomagen.config import Config
from gliomagen.generation import *  # noqa: F403 -- the package's public names
from gliomagen.generation import __all__ as _names
from gliomagen.generation.outputs import GenerationOutputs
from gliomagen.generation.outputs import read_manifest as _read_manifest
from gliomagen.generation.plots import plot_diffusion_process, plot_real_vs_synthetic, plot_sampler_timing
from gliomagen.generation.timing import default_timings, time_samplers


def read_manifest(cfg: Config) -> pd.DataFrame:
    """Every generated volume's latest row (see :func:`gliomagen.generation.outputs.read_manifest`)."""
    return _read_manifest(GenerationOutputs(cfg.paths))


def sampler_timing_path(cfg: Config) -> Any:
    """Where :func:`time_samplers` stores its table."""
    return GenerationOutputs(cfg.paths).sampler_timing


__all__ = [
    *_names,
    "default_timings",
    "plot_diffusion_process",
    "plot_real_vs_synthetic",
    "plot_sampler_timing",
    "read_manifest",
    "sampler_timing_path",
    "time_samplers",
]
