"""Reverse-process samplers: swappable schedulers (``set_timesteps`` / ``step``) and one batched loop.

The diffusers/MONAI split: a *scheduler* knows its timesteps and how to take one step from the network's
output; :func:`sample_loop` owns the loop (noise, network calls, per-volume generators) and works for every
scheduler and any batch size. :class:`Sampler` binds a scheduler to its name and step count.

- ``ddpm``: the paper's ancestral sampler over all ``T`` steps (the posterior mean and variance "fixed small"
  of MONAI's ``DDPMScheduler``, the same float32 operations in the same order).
- ``ddim``: DDIM (Song et al. 2021, eq. 12) with ``eta`` from ``generate.eta``. Timesteps
  ``T-1, T-1-T//steps, ...`` (MONAI's step size; the last step goes to ``abar = 1``).
- ``dpmpp``: DPM-Solver++ (2nd-order multistep, data prediction) from ``diffusers``.
- ``unipc``: UniPC (``bh2``, data prediction, 2nd order) from ``diffusers``.

**One clipping rule for every sampler** (issue 18): the network output (noise, ``x_0`` or ``v``, following
``diffusion.prediction``) is turned into ``x̂_0``, ``x̂_0`` is clamped to ``generate.clip_range``, and the
noise estimate is *re-derived* from the clamped ``x̂_0``: ``ε̂ = (x_t - sqrt(abar_t) x̂_0) / sqrt(1 - abar_t)``
(diffusers' ``use_clipped_model_output=True``). Each update is then a function of ``(x_t, x̂_0)`` only, as the
DDPM posterior mean always was. MONAI's DDIM instead keeps the raw ε (for an ``x_0``-predicting network: the
ε of the *unclamped* ``x_0``) beside the clamped ``x̂_0``; the pair no longer describes ``x_t``
(``x_t != sqrt(abar) x̂_0 + sqrt(1 - abar) ε``), and the part of ``x_0`` clipped away is put back into the
sample as noise direction at every step, so the error grows with the number of steps. With the shared rule
DDIM with ``eta = 1`` over all ``T`` steps is the DDPM chain (tests/test_diffusion_samplers.py).

The schedule is computed in float64 and cast (``schedule.set_schedule``). The result of a run is the sample
after its last step, which lands on ``abar = 1``: the clamped ``x̂_0`` of that step (exactly, for DDPM and
DDIM; for the diffusers solvers their final update, as generation has always written it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from gliomagen.config import Config
from gliomagen.diffusion.schedulers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusersScheduler,
    Scheduler,
)

SAMPLERS = ("ddpm", "ddim", "dpmpp", "unipc")
#: samplers that draw noise only once (``x_T``); DDIM too when ``eta == 0``
DETERMINISTIC = ("dpmpp", "unipc")

#: callback(step_index, timestep, x_t after the step, x̂_0 predicted at this step)
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
#: one generator for the whole batch (draws batch-shaped noise) or one per volume
Generators = torch.Generator | Sequence[torch.Generator] | None


# ------------------------------------------------------------------------------------------- the loop
def _draw(shape: Sequence[int], generators: Generators, device: torch.device) -> torch.Tensor:
    """Noise for a batch: from one generator (batch-shaped draw) or one draw per volume per generator."""
    if generators is None or isinstance(generators, torch.Generator):
        return torch.randn(tuple(shape), generator=generators, device=device)
    one = (1, *shape[1:])
    return torch.cat([torch.randn(one, generator=g, device=device) for g in generators])


@torch.no_grad()
def sample_loop(
    scheduler: Scheduler,
    steps: int,
    model: torch.nn.Module,
    condition: torch.Tensor,
    image_channels: int = 4,
    generator: Generators = None,
    progress: bool = False,
    callback: StepCallback | None = None,
    desc: str = "sampling",
) -> torch.Tensor:
    """Run the reverse process for a batch of encoded masks, one network call per step for the whole batch.

    With one generator per volume every random draw (``x_T`` and each step's noise) is made volume by volume,
    so a volume does not depend on its batch-mates (up to the rounding of batched convolutions); batching
    matters on a CPU, where PyTorch sends batch-1 thin 3D convolutions to a slow reference kernel.

    Args:
        scheduler: any :class:`Scheduler`.
        steps: network evaluations (``scheduler.set_timesteps(steps)``).
        model: the denoiser (its device is used).
        condition: encoded masks ``(B, C_mask, X, Y, Z)``.
        image_channels: channels of the generated image.
        generator: one generator, or one per batch element, on the model's device.
        progress: tqdm bar over the steps.
        callback: ``(i, t, x_t, x̂_0)`` after every step.
        desc: the bar's label.

    Returns:
        the sample after the last step (at ``abar = 1``), ``(B, image_channels, X, Y, Z)`` float32.
    """
    device = next(model.parameters()).device
    gens = [generator] if isinstance(generator, torch.Generator) else list(generator or [])
    for g in gens:
        if g.device.type != device.type:
            raise ValueError(
                f"the generator is on {g.device} but the model on {device}; create it with "
                f"torch.Generator(device={str(device)!r}).manual_seed(seed)"
            )
    if (
        not isinstance(generator, torch.Generator)
        and generator is not None
        and len(gens) != condition.shape[0]
    ):
        raise ValueError(f"{len(gens)} generators for a batch of {condition.shape[0]}")
    cond = condition.to(device=device, dtype=torch.float32)
    shape = (cond.shape[0], image_channels, *cond.shape[2:])
    x = _draw(shape, generator, device)
    scheduler.set_timesteps(steps)
    for i, t in enumerate(tqdm(scheduler.timesteps, desc=desc, disable=not progress, leave=False)):
        t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)
        out = model(torch.cat([x, cond], dim=1), timesteps=t_batch).float()
        noise = _draw(shape, generator, device) if scheduler.needs_noise(t) else None
        result = scheduler.step(out, t, x, noise)
        x, x0 = result.prev_sample, result.pred_original_sample
        if callback is not None:
            callback(i, t, x, x0)
    return x


@dataclass
class Sampler:
    """One reverse-process sampler: a scheduler with its name and number of network evaluations.

    Args:
        name: one of :data:`SAMPLERS`.
        steps: number of network evaluations.
        scheduler: the :class:`Scheduler`.
        image_channels: channels of the generated image (the four modalities).
        clip_range: the clamp of ``x̂_0`` (and of the result).
    """

    name: str
    steps: int
    scheduler: Any = field(repr=False)
    image_channels: int = 4
    clip_range: tuple[float, float] = (0.0, 1.0)

    @property
    def timesteps(self) -> list[int]:
        if not self.scheduler.timesteps:
            self.scheduler.set_timesteps(self.steps)
        return list(self.scheduler.timesteps)

    @property
    def deterministic(self) -> bool:
        """Whether the only random draw is ``x_T`` (DPM-Solver++, UniPC, DDIM with ``eta = 0``)."""
        return not any(self.scheduler.needs_noise(t) for t in self.timesteps)

    def sample(
        self,
        model: torch.nn.Module,
        condition: torch.Tensor,
        generator: Generators = None,
        progress: bool = False,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """Generate images for a batch of encoded masks (see :func:`sample_loop`).

        Returns:
            ``(B, 4, X, Y, Z)`` float32 in ``generate.clip_range`` (``[0, 1]`` by default).
        """
        x0 = sample_loop(
            self.scheduler,
            self.steps,
            model,
            condition,
            self.image_channels,
            generator,
            progress,
            callback,
            desc=f"{self.name}-{self.steps}",
        )
        return x0.clamp(*self.clip_range)

    def trajectory(
        self,
        model: torch.nn.Module,
        condition: torch.Tensor,
        record: int = 5,
        generator: Generators = None,
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
    """MONAI's ``steps_offset`` that gives its DDIM the timesteps of :func:`ddim_timesteps`."""
    return timesteps - 1 - (steps - 1) * (timesteps // steps)


def make_sampler(cfg: Config, name: str | None = None, steps: int | None = None) -> Sampler:
    """The sampler for ``cfg`` (defaults: ``generate.sampler`` and ``generate.steps``).

    Args:
        cfg: run configuration.
        name: one of :data:`SAMPLERS`.
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
    scheduler: Any
    if name == "ddpm":
        scheduler = DDPMScheduler(cfg)
    elif name == "ddim":
        scheduler = DDIMScheduler(cfg, cfg.generate.eta or 0.0)
    else:
        scheduler = DiffusersScheduler(cfg, name)
    scheduler.set_timesteps(steps)  # checks the step count now
    lo, hi = cfg.generate.clip_range
    return Sampler(name=name, steps=steps, scheduler=scheduler, clip_range=(float(lo), float(hi)))


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A seeded generator on ``device`` (samples are reproducible for a seed on one device type)."""
    return torch.Generator(device=device).manual_seed(seed)
