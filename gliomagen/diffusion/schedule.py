"""The forward (noising) process: the noise schedule, ``q(x_t | x_0)`` and the training loss.

Images live in ``[0, 1]`` as in the paper (no rescaling to ``[-1, 1]``); the network predicts the noise
``epsilon`` (paper; ``diffusion.prediction``) and the loss is L1 (paper) or L2. The cosine betas are
computed in float64 from the formula and cast to float32 once, as the original and diffusers do (MONAI's
own cosine schedule is evaluated in float32: up to 1.4e-3 relative error in beta at small t); MONAI's
``DDPMScheduler`` then holds them for ``q(x_t | x_0)`` and the samplers.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.networks.schedulers.ddpm import DDPMScheduler

from gliomagen.config import Config


def cosine_betas64(timesteps: int, s: float = 0.008, beta_max: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine betas computed in float64 (as the original and diffusers do).

    ``f(t) = cos((t / T + s) / (1 + s) * pi / 2)^2``, ``beta_t = min(1 - f(t + 1) / f(t), beta_max)``.
    MONAI evaluates the same formula in float32, which is off by up to 1.4e-3 (relative) at small t.

    Args:
        timesteps: ``T``.
        s: offset of the cosine schedule.
        beta_max: upper clip of the betas.
    """
    x = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((x + s) / (1 + s) * math.pi / 2) ** 2
    return torch.clip(1.0 - f[1:] / f[:-1], 0.0, beta_max)


def betas64(cfg: Config) -> torch.Tensor:
    """The beta schedule of ``cfg`` in float64: the cosine one from the formula, others from MONAI."""
    d = cfg.diffusion
    if d.schedule == "cosine":
        return cosine_betas64(d.timesteps, d.cosine_s, d.beta_max)
    sched = DDPMScheduler(num_train_timesteps=d.timesteps, schedule=d.schedule)
    return torch.clip(sched.betas.double(), 0.0, d.beta_max)


def set_schedule(scheduler: Any, cfg: Config) -> None:
    """Give a MONAI scheduler the betas of ``cfg``: computed in float64, then cast to float32.

    ``alphas_cumprod`` is the float64 cumulative product cast once (as the original's buffers were), not
    a float32 product of float32 alphas.
    """
    b = betas64(cfg)
    scheduler.betas = b.float()
    scheduler.alphas = (1.0 - b).float()
    scheduler.alphas_cumprod = torch.cumprod(1.0 - b, dim=0).float()


def make_train_scheduler(cfg: Config) -> DDPMScheduler:
    """MONAI scheduler holding the betas/alphas of ``cfg.diffusion`` (used for ``q(x_t | x_0)``).

    Args:
        cfg: run configuration.
    """
    d = cfg.diffusion
    lo, hi = cfg.generate.clip_range
    sched = DDPMScheduler(
        num_train_timesteps=d.timesteps,
        schedule="linear_beta",  # replaced by the profile's float64 schedule just below
        prediction_type=d.prediction,
        clip_sample=True,
        clip_sample_min=lo,
        clip_sample_max=hi,
    )
    set_schedule(sched, cfg)
    return sched


def betas(cfg: Config) -> torch.Tensor:
    """The beta schedule of ``cfg`` as float64 (for handing to other libraries' schedulers)."""
    return betas64(cfg)


def add_noise(
    scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise`` for a batch of timesteps ``t``."""
    return scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean L1 (paper) or L2 loss; computed in float32 even under bf16 autocast."""
    pred, target = pred.float(), target.float()
    if kind == "l1":
        return torch.nn.functional.l1_loss(pred, target)
    return torch.nn.functional.mse_loss(pred, target)


def noisy_examples(
    cfg: Config, x0: torch.Tensor, timesteps: list[int], seed: int = 0
) -> dict[int, torch.Tensor]:
    """The forward process for the process figure: ``x_t`` of one volume at chosen timesteps, same noise.

    Args:
        cfg: run configuration.
        x0: clean volume ``(C, X, Y, Z)`` in ``[0, 1]``.
        timesteps: the ``t`` to show (0-based, ``< cfg.diffusion.timesteps``).
        seed: seed of the shared noise.
    """
    sched = make_train_scheduler(cfg)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g)
    out = {}
    for t in timesteps:
        if not 0 <= t < cfg.diffusion.timesteps:
            raise ValueError(f"timestep {t} outside 0..{cfg.diffusion.timesteps - 1}")
        out[t] = add_noise(sched, x0[None].float(), noise[None], torch.tensor([t]))[0]
    return out


# ------------------------------------------------------------------------------ learning-rate schedule
def lr_factor(step: int, milestones: list[int], factors: list[float]) -> float:
    """LR multiplier after ``step`` optimiser steps (``factors[i]`` from ``milestones[i-1]`` on)."""
    return factors[bisect.bisect_right(milestones, step)]


def lr_schedule(cfg: Config, steps: int | None = None) -> pd.DataFrame:
    """The learning rate at every step (for the notebook's LR-schedule plot)."""
    t = cfg.train
    n = steps or t.max_steps
    grid = np.unique(np.linspace(0, n, min(n + 1, 2000)).astype(int))
    return pd.DataFrame(
        {"step": grid, "lr": [t.lr * lr_factor(int(s), t.lr_milestones, t.lr_factors) for s in grid]}
    )
