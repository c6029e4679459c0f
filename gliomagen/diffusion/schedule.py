"""The forward (noising) process: MONAI's noise schedule, ``q(x_t | x_0)`` and the training loss.

Images live in ``[0, 1]`` as in the paper (no rescaling to ``[-1, 1]``); the network predicts the noise
``epsilon`` and the loss is L1 (paper) or L2 between predicted and true noise.
"""

from __future__ import annotations

import torch
from monai.networks.schedulers import DDPMScheduler

from gliomagen.config import Config


def make_train_scheduler(cfg: Config) -> DDPMScheduler:
    """MONAI scheduler holding the betas/alphas of ``cfg.diffusion`` (used for ``q(x_t | x_0)``).

    Args:
        cfg: run configuration.
    """
    d = cfg.diffusion
    kwargs: dict[str, float] = {}
    if d.schedule == "cosine":
        kwargs["s"] = d.cosine_s
    sched = DDPMScheduler(
        num_train_timesteps=d.timesteps,
        schedule=d.schedule,
        prediction_type=d.prediction,
        clip_sample=True,
        clip_sample_min=0.0,
        clip_sample_max=1.0,
        **kwargs,
    )
    if d.schedule == "cosine" and d.beta_max != 0.999:
        # MONAI clips cosine betas at 0.999; re-clip if the profile asks for another bound
        betas = torch.clip(sched.betas, 0.0, d.beta_max)
        sched.betas, sched.alphas = betas, 1.0 - betas
        sched.alphas_cumprod = torch.cumprod(sched.alphas, dim=0)
    return sched


def betas(cfg: Config) -> torch.Tensor:
    """The beta schedule of ``cfg`` as float64 (for handing to other libraries' schedulers)."""
    return make_train_scheduler(cfg).betas.double()


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
