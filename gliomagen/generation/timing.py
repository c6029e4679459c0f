"""Seconds per volume of each sampler (notebook 04's timing table, ``metrics/sampler_timing.csv``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from gliomagen.config import Config
from gliomagen.generation.jobs import load_job_mask, val_jobs, volume_seed
from gliomagen.generation.outputs import GenerationOutputs
from gliomagen.generation.sampling import SamplingSetup, load_setup, sample_batch
from gliomagen.io import write_csv


def default_timings(cfg: Config) -> list[tuple[str, int]]:
    """The samplers timed in notebook 04: the paper's full DDPM, and DDIM / DPM-Solver++ with few steps."""
    fast = min(cfg.generate.timing_fast_steps, cfg.diffusion.timesteps)
    return [("ddpm", cfg.diffusion.timesteps), ("ddim", fast), ("dpmpp", fast)]


def time_samplers(
    cfg: Config,
    samplers: Sequence[tuple[str, int]] | None = None,
    setup: SamplingSetup | None = None,
    budget_s: float | None = None,
    probe_steps: int = 5,
) -> pd.DataFrame:
    """Seconds per volume for each ``(sampler, steps)`` on the first validation mask.

    Each sampler is first run for ``probe_steps`` steps (DDPM, which must run all T steps, is probed with
    DDIM: the cost per step is the network evaluation). A sampler whose full run is then predicted to take
    longer than ``budget_s`` is not run: its time is extrapolated from its probe and labelled so in the
    ``how`` column.

    Args:
        cfg: run configuration.
        samplers: ``(name, steps)`` pairs (default :func:`default_timings`).
        setup: sampling setup (default: the configured checkpoint).
        budget_s: the most seconds one full timing run may take (default ``generate.timing_budget_s``).
        probe_steps: steps of the probe run.
    """
    from gliomagen.diffusion.samplers import make_sampler

    samplers = samplers or default_timings(cfg)
    budget_s = cfg.generate.timing_budget_s if budget_s is None else budget_s
    setup = setup or load_setup(cfg)
    job = val_jobs(cfg)[0]
    mask, _ = load_job_mask(job, cfg)
    seed = [volume_seed(cfg.generate.seed, job.id)]
    probe_steps = min(probe_steps, cfg.diffusion.timesteps)

    def run(sampler: Any) -> float:
        t0 = time.perf_counter()
        sample_batch(SamplingSetup(**{**setup.__dict__, "sampler": sampler}), mask[None], seed)
        return time.perf_counter() - t0

    per_step: dict[str, float] = {}
    rows = []
    for name, steps in samplers:
        sampler = make_sampler(cfg, name, steps)
        # the ancestral DDPM cannot run fewer than T steps: its step cost is probed with DDIM (same network)
        probe_name = "ddim" if name == "ddpm" else name
        if probe_name not in per_step:
            per_step[probe_name] = run(make_sampler(cfg, probe_name, probe_steps)) / probe_steps
        predicted = per_step[probe_name] * len(sampler.timesteps)  # one network evaluation per timestep
        if predicted <= budget_s:
            seconds, how = run(sampler), "measured"
        else:
            seconds = predicted
            how = (
                f"extrapolated: {per_step[probe_name]:.3f} s/step from a {probe_steps}-step {probe_name} run"
            )
        rows.append({"sampler": name, "steps": steps, "seconds_per_volume": seconds, "how": how})
    frame = pd.DataFrame(rows)
    frame["shape"] = "x".join(map(str, mask.shape))
    frame["device"] = str(setup.device)
    frame["config_hash"] = cfg.hash
    write_csv(GenerationOutputs(cfg.paths).sampler_timing, frame)  # read back by the figures stage
    return frame
