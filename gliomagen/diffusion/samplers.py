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
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from gliomagen.config import Config
from gliomagen.diffusion.schedule import betas64

SAMPLERS = ("ddpm", "ddim", "dpmpp", "unipc")
#: samplers that draw noise only once (``x_T``); DDIM too when ``eta == 0``
DETERMINISTIC = ("dpmpp", "unipc")

#: callback(step_index, timestep, x_t after the step, x̂_0 predicted at this step)
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
#: one generator for the whole batch (draws batch-shaped noise) or one per volume
Generators = torch.Generator | Sequence[torch.Generator] | None


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
