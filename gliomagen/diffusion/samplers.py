"""Reverse-process samplers behind one interface: ``make_sampler(cfg, name, steps).sample(model, condition)``.

- ``ddpm``: the paper's ancestral sampler over all ``T`` steps (MONAI ``DDPMScheduler``, posterior
  variance "fixed small", ``x̂_0`` clamped to ``[0, 1]``).
- ``ddim``: DDIM with a chosen number of steps (MONAI ``DDIMScheduler``; ``eta`` from
  ``generate.eta``). MONAI steps back by ``T // steps`` from each timestep while its own ``linspace``
  timesteps are spaced ``(T-1)/(steps-1)`` apart; we choose ``steps_offset`` so that both agree exactly
  (timesteps ``T-1, T-1-T//steps, ...``).
- ``dpmpp``: DPM-Solver++ (2nd-order multistep, data prediction) from ``diffusers``
  (``DPMSolverMultistepScheduler``) - MONAI 1.6 has no high-order solver. It gets the exact betas of our
  MONAI schedule, so one trained model serves all three samplers.

Every sampler clamps the predicted clean image ``x̂_0`` to ``generate.clip_range`` at every step:
``[0, 1]`` by default (images live in ``[0, 1]``), ``[-1, 1]`` to reproduce the original (its clamp; see
docs/original_weights.md). The schedule is computed in float64 and cast (``schedule.set_schedule``). The
result is the ``x̂_0`` of the last step: for DDPM (at ``t = 0``) and DPM-Solver++ that *is* the last
update, and for DDIM it equals a final deterministic step to ``abar = 1`` even when ``T`` is not a multiple
of the number of steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from tqdm.auto import tqdm

from gliomagen.config import Config
from gliomagen.diffusion.schedule import betas64, set_schedule

SAMPLERS = ("ddpm", "ddim", "dpmpp")

#: callback(step_index, timestep, x_t after the step, x̂_0 predicted at this step)
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def _copy_schedule(target: Any, cfg: Config) -> None:
    """Give a MONAI scheduler exactly the betas of ``cfg`` (float64 formula cast to float32)."""
    set_schedule(target, cfg)


class _MonaiBackend:
    """Wraps a MONAI scheduler: timesteps + ``step`` returning ``(x_prev, x̂_0)``."""

    def __init__(self, scheduler: DDPMScheduler | DDIMScheduler, eta: float | None) -> None:
        self.scheduler = scheduler
        self.eta = eta

    @property
    def timesteps(self) -> list[int]:
        return [int(t) for t in self.scheduler.timesteps]

    def reset(self) -> None:
        return None

    def step(
        self, eps: torch.Tensor, t: int, x: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.scheduler
        for name in ("betas", "alphas", "alphas_cumprod"):
            setattr(s, name, getattr(s, name).to(x.device))
        if isinstance(s, DDIMScheduler):
            s.final_alpha_cumprod = s.final_alpha_cumprod.to(x.device)
            return s.step(eps, t, x, eta=self.eta or 0.0, generator=generator)
        s.one = s.one.to(x.device)
        return s.step(eps, t, x, generator=generator)


class _DiffusersBackend:
    """Wraps diffusers' DPM-Solver++; clamps ``x̂_0`` by rewriting the model output as a noise prediction.

    diffusers only offers symmetric or dynamic thresholding, so the clamp of ``x̂_0`` to ``clip_range`` is
    applied before the solver sees the model output: the output (noise, ``x_0`` or ``v``, following
    ``diffusion.prediction``) is turned into ``x̂_0``, clamped, and handed over as
    ``eps' = (x_t - sqrt(abar) clamp(x̂_0)) / sqrt(1 - abar)``, which the solver converts back into exactly
    the clamped ``x̂_0``.
    """

    def __init__(self, cfg: Config, steps: int) -> None:
        from diffusers import DPMSolverMultistepScheduler

        self.cfg, self.steps = cfg, steps
        self.prediction = cfg.diffusion.prediction
        self.clip = cfg.generate.clip_range
        b = betas64(cfg)
        self.alphas_cumprod = torch.cumprod(1.0 - b, dim=0)
        self.scheduler = DPMSolverMultistepScheduler(
            num_train_timesteps=cfg.diffusion.timesteps,
            trained_betas=b.numpy(),
            algorithm_type="dpmsolver++",
            solver_order=2,
            prediction_type="epsilon",
            timestep_spacing="trailing",  # start at t = T-1 like the other samplers
            lower_order_final=True,
        )
        self.reset()

    @property
    def timesteps(self) -> list[int]:
        return [int(t) for t in self.scheduler.timesteps]

    def reset(self) -> None:
        # the multistep solver keeps a history of model outputs: start fresh for every sample
        self.scheduler.set_timesteps(self.steps)

    def step(
        self, eps: torch.Tensor, t: int, x: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        abar = self.alphas_cumprod[t].to(x.device, torch.float32)
        out = eps  # the raw network output
        if self.prediction == "epsilon":
            x0 = (x - (1 - abar).sqrt() * out) / abar.sqrt()
        elif self.prediction == "sample":
            x0 = out
        else:  # v-prediction: v = sqrt(abar) eps - sqrt(1 - abar) x0
            x0 = abar.sqrt() * x - (1 - abar).sqrt() * out
        x0 = x0.clamp(*self.clip)
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        out = self.scheduler.step(eps, t, x, generator=generator, return_dict=True)
        return out.prev_sample, x0


@dataclass
class Sampler:
    """One reverse-process sampler.

    Args:
        name: ``ddpm``, ``ddim`` or ``dpmpp``.
        steps: number of network evaluations.
        backend: the library scheduler wrapper.
        image_channels: channels of the generated image (the four modalities).
    """

    name: str
    steps: int
    backend: Any = field(repr=False)
    image_channels: int = 4
    clip_range: tuple[float, float] = (0.0, 1.0)

    @property
    def timesteps(self) -> list[int]:
        return self.backend.timesteps

    @torch.no_grad()
    def sample(
        self,
        model: torch.nn.Module,
        condition: torch.Tensor,
        generator: torch.Generator | None = None,
        progress: bool = False,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Generate images for a batch of encoded masks.

        Args:
            model: the denoiser (its device is used; put it in eval mode).
            condition: encoded masks ``(B, C_mask, X, Y, Z)`` (see ``encode_mask``).
            generator: seeded ``torch.Generator`` on the model's device, for reproducible samples.
            progress: show a tqdm bar over the steps.
            callback: called after every step with ``(i, t, x_t, x̂_0)`` (for the process figure).

        Returns:
            ``(B, 4, X, Y, Z)`` float32 in ``generate.clip_range`` (``[0, 1]`` by default).
        """
        device = next(model.parameters()).device
        if generator is not None and generator.device.type != device.type:
            raise ValueError(
                f"the generator is on {generator.device} but the model on {device}; create it with "
                f"torch.Generator(device={str(device)!r}).manual_seed(seed)"
            )
        cond = condition.to(device=device, dtype=torch.float32)
        shape = (cond.shape[0], self.image_channels, *cond.shape[2:])
        x = torch.randn(shape, generator=generator, device=device)
        self.backend.reset()
        x0 = x
        steps = self.timesteps
        for i, t in enumerate(
            tqdm(steps, desc=f"{self.name}-{self.steps}", disable=not progress, leave=False)
        ):
            t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)
            eps = model(torch.cat([x, cond], dim=1), timesteps=t_batch).float()
            x, x0 = self.backend.step(eps, t, x, generator)
            if callback is not None:
                callback(i, t, x, x0)
        return x0.clamp(*self.clip_range)

    def trajectory(
        self,
        model: torch.nn.Module,
        condition: torch.Tensor,
        record: int = 5,
        generator: torch.Generator | None = None,
    ) -> list[dict[str, Any]]:
        """Intermediate states of one reverse run (the paper's reverse-process figure).

        Args:
            model: the denoiser.
            condition: encoded masks ``(B, C_mask, X, Y, Z)``.
            record: number of evenly spaced steps to keep (the last step is always kept).
            generator: seeded generator on the model's device.

        Returns:
            ``[{"step": i, "t": t, "x_t": tensor, "x0": tensor}, ...]`` on the CPU.
        """
        n = len(self.timesteps)
        keep = {round(k * (n - 1) / max(record - 1, 1)) for k in range(record)}
        states: list[dict[str, Any]] = []

        def grab(i: int, t: int, x: torch.Tensor, x0: torch.Tensor) -> None:
            if i in keep:
                states.append({"step": i, "t": t, "x_t": x.detach().cpu(), "x0": x0.detach().cpu()})

        self.sample(model, condition, generator=generator, callback=grab)
        return states


def ddim_steps_offset(timesteps: int, steps: int) -> int:
    """The ``steps_offset`` that makes MONAI's DDIM timesteps ``T-1, T-1-T//steps, ...`` (its step size)."""
    return timesteps - 1 - (steps - 1) * (timesteps // steps)


def make_sampler(cfg: Config, name: str | None = None, steps: int | None = None) -> Sampler:
    """The sampler for ``cfg`` (defaults: ``generate.sampler`` and ``generate.steps``).

    Args:
        cfg: run configuration.
        name: ``ddpm``, ``ddim`` or ``dpmpp``.
        steps: network evaluations; ``ddpm`` needs all ``diffusion.timesteps``.

    Raises:
        ValueError: for an unknown sampler or an impossible number of steps.
    """
    name = name or cfg.generate.sampler
    steps = steps or cfg.generate.steps
    T = cfg.diffusion.timesteps
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    if not 1 <= steps <= T:
        raise ValueError(f"sampler {name}: steps must be in 1..{T} (diffusion.timesteps), got {steps}")
    if name == "ddpm":
        if steps != T:
            raise ValueError(
                f"the ancestral DDPM sampler runs all {T} steps (got steps={steps}); "
                "for fewer steps use the ddim or dpmpp sampler"
            )
        sched = DDPMScheduler(
            num_train_timesteps=T,
            schedule="linear_beta",  # replaced by the profile's betas just below
            clip_sample=True,
            clip_sample_min=cfg.generate.clip_range[0],
            clip_sample_max=cfg.generate.clip_range[1],
            prediction_type=cfg.diffusion.prediction,
        )
        _copy_schedule(sched, cfg)
        sched.set_timesteps(T)
        backend: Any = _MonaiBackend(sched, None)
    elif name == "ddim":
        sched = DDIMScheduler(
            num_train_timesteps=T,
            schedule="linear_beta",
            clip_sample=True,
            clip_sample_min=cfg.generate.clip_range[0],
            clip_sample_max=cfg.generate.clip_range[1],
            set_alpha_to_one=True,
            steps_offset=ddim_steps_offset(T, steps),
            prediction_type=cfg.diffusion.prediction,
        )
        _copy_schedule(sched, cfg)
        sched.set_timesteps(steps)
        backend = _MonaiBackend(sched, cfg.generate.eta)
    else:
        backend = _DiffusersBackend(cfg, steps)
    return Sampler(name=name, steps=steps, backend=backend, clip_range=tuple(cfg.generate.clip_range))


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A seeded generator on ``device`` (samples are reproducible for a seed on one device type)."""
    return torch.Generator(device=device).manual_seed(seed)
