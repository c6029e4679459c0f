"""The schedulers behind :mod:`gliomagen.diffusion.samplers` and their one clipping rule.

A scheduler knows its timesteps (``set_timesteps``) and takes one step from the network's output (``step``),
as diffusers' and MONAI's do. Every scheduler turns the network output into ``x̂_0``, clamps it to
``generate.clip_range`` and re-derives the noise from the clamped ``x̂_0`` (:func:`clipped_prediction`); the
module docstring of :mod:`gliomagen.diffusion.samplers` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from gliomagen.config import Config
from gliomagen.diffusion.schedule import betas64


@dataclass(frozen=True)
class StepOutput:
    """What one step returns: the sample at the next timestep and the clamped ``x̂_0`` it used."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class Scheduler(Protocol):
    """The interface :func:`sample_loop` needs (diffusers/MONAI style)."""

    timesteps: list[int]

    def set_timesteps(self, steps: int) -> None:
        """Choose the timesteps of a run of ``steps`` network evaluations and forget any solver history."""

    def needs_noise(self, t: int) -> bool:
        """Whether the step at ``t`` adds fresh noise (then :func:`sample_loop` draws it per volume)."""

    def step(
        self, model_output: torch.Tensor, t: int, sample: torch.Tensor, noise: torch.Tensor | None
    ) -> StepOutput:
        """One reverse step from ``x_t`` given the network output at ``t``."""


# ------------------------------------------------------------------------------------- the clipping rule
def predicted_x0(
    output: torch.Tensor, sample: torch.Tensor, abar: torch.Tensor, prediction: str
) -> torch.Tensor:
    """``x̂_0`` from the network output (``epsilon``, ``sample`` or ``v_prediction``), MONAI's formulas."""
    if prediction == "epsilon":
        return (sample - (1 - abar) ** 0.5 * output) / abar**0.5
    if prediction == "sample":
        return output
    return abar**0.5 * sample - (1 - abar) ** 0.5 * output  # v = sqrt(abar) eps - sqrt(1 - abar) x0


def clipped_prediction(
    output: torch.Tensor, sample: torch.Tensor, abar: torch.Tensor, prediction: str, clip: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared clipping rule: ``(clamp(x̂_0), ε̂ re-derived from the clamped x̂_0)``.

    Args:
        output: raw network output.
        sample: ``x_t``.
        abar: ``alphas_cumprod[t]`` (0-dim float32 tensor).
        prediction: what the network predicts.
        clip: the range of ``x̂_0``.
    """
    if prediction == "epsilon":  # the exact expressions the DPM-Solver++ wrapper always used
        x0 = (sample - (1 - abar).sqrt() * output) / abar.sqrt()
    elif prediction == "sample":
        x0 = output
    else:
        x0 = abar.sqrt() * sample - (1 - abar).sqrt() * output
    x0 = x0.clamp(*clip)
    eps = (sample - abar.sqrt() * x0) / (1 - abar).sqrt()
    return x0, eps


# ---------------------------------------------------------------------------------------- the schedulers
class _Gaussian:
    """Shared state of DDPM and DDIM: float32 betas/alphas/abar from the float64 schedule."""

    def __init__(self, cfg: Config) -> None:
        b = betas64(cfg)
        self.T = cfg.diffusion.timesteps
        self.betas = b.float()
        self.alphas = (1.0 - b).float()
        self.alphas_cumprod = torch.cumprod(1.0 - b, dim=0).float()
        self.one = torch.tensor(1.0)
        self.prediction = cfg.diffusion.prediction
        self.clip = (float(cfg.generate.clip_range[0]), float(cfg.generate.clip_range[1]))
        self.timesteps: list[int] = []

    def _to(self, device: torch.device) -> None:
        if self.betas.device != device:
            for name in ("betas", "alphas", "alphas_cumprod", "one"):
                setattr(self, name, getattr(self, name).to(device))


class DDPMScheduler(_Gaussian):
    """Ancestral DDPM: posterior mean of ``(x_t, clamp(x̂_0))``, variance "fixed small" (MONAI's arithmetic)."""

    def set_timesteps(self, steps: int) -> None:
        if steps != self.T:
            raise ValueError(
                f"the ancestral DDPM sampler runs all {self.T} steps (got steps={steps}); "
                "for fewer steps use the ddim, dpmpp or unipc sampler"
            )
        self.timesteps = list(range(self.T - 1, -1, -1))

    def needs_noise(self, t: int) -> bool:
        return t > 0

    def step(
        self, model_output: torch.Tensor, t: int, sample: torch.Tensor, noise: torch.Tensor | None
    ) -> StepOutput:
        self._to(sample.device)
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[t - 1] if t > 0 else self.one
        beta_prod_t, beta_prod_prev = 1 - a_t, 1 - a_prev
        # the posterior mean depends on x_t and x̂_0 only: clamping x̂_0 is the whole clipping rule here
        x0 = predicted_x0(model_output, sample, a_t, self.prediction).clamp(*self.clip)
        if t == 0:  # the posterior at t = 0 is x̂_0 itself (its coefficients are 1 and 0 up to rounding)
            return StepOutput(x0, x0)
        c0 = (a_prev ** (0.5) * self.betas[t]) / beta_prod_t
        ct = self.alphas[t] ** (0.5) * beta_prod_prev / beta_prod_t
        prev = c0 * x0 + ct * sample
        if t > 0:
            if noise is None:
                raise ValueError("the DDPM step at t > 0 needs noise")
            variance = torch.clamp(beta_prod_prev / beta_prod_t * self.betas[t], min=1e-20)
            prev = prev + variance**0.5 * noise
        return StepOutput(prev, x0)


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """``T-1, T-1-T//steps, ...``: evenly spaced by DDIM's step size ``T // steps``, starting at ``T - 1``."""
    return [T - 1 - k * (T // steps) for k in range(steps)]


class DDIMScheduler(_Gaussian):
    """DDIM, eq. 12 of Song et al. with ``σ_t = eta sqrt((1-abar_prev)/(1-abar)) sqrt(1 - abar/abar_prev)``.

    Uses the shared clipping rule (ε re-derived from the clamped ``x̂_0``), unlike MONAI's ``DDIMScheduler``.
    """

    def __init__(self, cfg: Config, eta: float = 0.0) -> None:
        super().__init__(cfg)
        self.eta = float(eta)
        self.stride = 1

    def set_timesteps(self, steps: int) -> None:
        self.stride = self.T // steps
        self.timesteps = ddim_timesteps(self.T, steps)

    def needs_noise(self, t: int) -> bool:
        return self.eta > 0

    def step(
        self, model_output: torch.Tensor, t: int, sample: torch.Tensor, noise: torch.Tensor | None
    ) -> StepOutput:
        self._to(sample.device)
        # the last step goes to abar = 1 (MONAI stops at t = 0 when T is not a multiple of the steps)
        prev_t = -1 if t == self.timesteps[-1] else t - self.stride
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        x0, eps = clipped_prediction(model_output, sample, a_t, self.prediction, self.clip)
        variance = ((1 - a_prev) / (1 - a_t)) * (1 - a_t / a_prev)
        std = self.eta * variance**0.5
        prev = a_prev**0.5 * x0 + (1 - a_prev - std**2).clamp(min=0) ** 0.5 * eps
        if self.eta > 0:
            if noise is None:
                raise ValueError("DDIM with eta > 0 needs noise")
            prev = prev + std * noise
        return StepOutput(prev, x0)


class DiffusersScheduler:
    """A ``diffusers`` multistep solver fed the clipped noise estimate.

    diffusers offers only symmetric or dynamic thresholding, so the shared clipping rule is applied before the
    solver sees the output: it gets ``ε̂`` re-derived from the clamped ``x̂_0`` (as ``prediction_type
    ="epsilon"``) and converts it back into exactly that ``x̂_0``.

    Args:
        cfg: run configuration (schedule, prediction, clip range).
        kind: ``dpmpp`` (DPM-Solver++ 2M) or ``unipc`` (UniPC bh2).
    """

    def __init__(self, cfg: Config, kind: str) -> None:
        b = betas64(cfg)
        self.alphas_cumprod = torch.cumprod(1.0 - b, dim=0)
        self.prediction = cfg.diffusion.prediction
        self.clip = (float(cfg.generate.clip_range[0]), float(cfg.generate.clip_range[1]))
        common: dict[str, Any] = {
            "num_train_timesteps": cfg.diffusion.timesteps,
            "trained_betas": b.numpy(),
            "solver_order": 2,
            "prediction_type": "epsilon",
            "timestep_spacing": "trailing",  # start at t = T-1 like the other samplers
            "lower_order_final": True,
        }
        if kind == "dpmpp":
            from diffusers import DPMSolverMultistepScheduler

            self.scheduler: Any = DPMSolverMultistepScheduler(  # type: ignore[no-untyped-call]
                algorithm_type="dpmsolver++", **common
            )
        elif kind == "unipc":
            from diffusers import UniPCMultistepScheduler

            self.scheduler = UniPCMultistepScheduler(  # type: ignore[no-untyped-call]
                predict_x0=True, solver_type="bh2", **common
            )
        else:
            raise ValueError(f"no diffusers solver {kind!r}")
        self.timesteps: list[int] = []

    def set_timesteps(self, steps: int) -> None:
        # the multistep solvers keep a history of model outputs: a fresh one for every run
        self.scheduler.set_timesteps(steps)
        self.timesteps = [int(t) for t in self.scheduler.timesteps]

    def needs_noise(self, t: int) -> bool:
        return False

    def step(
        self, model_output: torch.Tensor, t: int, sample: torch.Tensor, noise: torch.Tensor | None
    ) -> StepOutput:
        abar = self.alphas_cumprod[t].to(sample.device, torch.float32)
        x0, eps = clipped_prediction(model_output, sample, abar, self.prediction, self.clip)
        out = self.scheduler.step(eps, t, sample, return_dict=True)
        return StepOutput(out.prev_sample, x0)
