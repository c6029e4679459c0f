"""Turning masks into images: the loaded model and sampler (:class:`SamplingSetup`) and one batched call.

Every volume draws its noise from its own generator seeded by ``(generate.seed, id)``, and every sampler runs
the same batched loop (:func:`gliomagen.diffusion.samplers.sample_loop`, one network call per step for the
batch, one draw per volume for ``x_T`` and for each step's noise), so a volume does not depend on sharding
or resuming, and on batching only up to the rounding of the convolution kernels: at most
:data:`BATCH_TOLERANCE` (1e-3 on the [0, 1] scale). A batch of one is bit for bit the sampler's own run
with that volume's generator. Batching matters on a CPU: batch-1 thin 3D convolutions fall to PyTorch's
slow reference kernel (issue 18: 1.19 s per network evaluation at batch 1 vs 0.41 s at batch 2, 1 thread,
smoke network, 32x40x32).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gliomagen.config import MODALITIES, Config
from gliomagen.runtime import resolve_device

#: the most a generated voxel may change with the batch size (see the module docstring)
BATCH_TOLERANCE = 1e-3


@dataclass
class SamplingSetup:
    """Everything needed to turn masks into images.

    Args:
        model: the EMA denoiser in eval mode.
        sampler: object with ``.sample(model, condition, generator=[one per volume], progress=False)``
            returning ``[B, 4, X, Y, Z]`` (a :class:`gliomagen.diffusion.samplers.Sampler`).
        encode: mask batch ``(B, X, Y, Z)`` -> conditioning ``(B, C, X, Y, Z)``.
        sampler_name: recorded in the manifest.
        steps: sampling steps, recorded in the manifest.
        checkpoint: ``best``, ``last`` or a path (recorded).
        checkpoint_sha256: of the checkpoint file (recorded; part of the resume identity).
        checkpoint_step: training step of the checkpoint.
        device: where the model runs.
        input_orientation: array orientation the weights expect (``"RAS"`` for the original's imported
            weights, ``None`` for weights trained here); masks are reoriented for the network and the
            images turned back, so outputs keep each mask's geometry.
    """

    model: torch.nn.Module
    sampler: Any
    encode: Callable[[torch.Tensor], torch.Tensor]
    sampler_name: str
    steps: int
    checkpoint: str
    checkpoint_sha256: str
    checkpoint_step: int
    device: torch.device
    input_orientation: str | None = None

    def with_sampler(self, cfg: Config, name: str, steps: int) -> SamplingSetup:
        """The same model with another sampler."""
        from gliomagen.diffusion.samplers import make_sampler

        return SamplingSetup(
            **{
                **self.__dict__,
                "sampler": make_sampler(cfg, name, steps),
                "sampler_name": name,
                "steps": steps,
            }
        )


def default_steps(cfg: Config, sampler: str, steps: int | None) -> int:
    """``steps`` or the default: all ``T`` for ``ddpm`` (it has no other), else ``generate.steps``."""
    return steps or (cfg.diffusion.timesteps if sampler == "ddpm" else cfg.generate.steps)


def load_setup(cfg: Config, sampler: str | None = None, steps: int | None = None) -> SamplingSetup:
    """Load the EMA weights of ``generate.checkpoint`` and build the configured sampler.

    Args:
        cfg: run configuration.
        sampler: one of ``gliomagen.diffusion.samplers.SAMPLERS`` (default ``generate.sampler``).
        steps: sampling steps (default ``generate.steps``; all ``T`` for ``ddpm``).
    """
    from gliomagen.diffusion.checkpoint import load_for_sampling
    from gliomagen.diffusion.network import encode_mask
    from gliomagen.diffusion.samplers import make_sampler

    device = resolve_device(cfg.runtime.device)
    name = sampler or cfg.generate.sampler
    n_steps = default_steps(cfg, name, steps)
    model, meta = load_for_sampling(cfg, cfg.generate.checkpoint, device=device)
    return SamplingSetup(
        model=model,
        sampler=make_sampler(cfg, name, n_steps),
        encode=lambda m: encode_mask(m, cfg),
        sampler_name=name,
        steps=n_steps,
        checkpoint=str(cfg.generate.checkpoint),
        checkpoint_sha256=str(meta["sha256"]),
        checkpoint_step=int(meta["step"]),
        device=device,
        input_orientation=meta.get("input_orientation"),
    )


def sample_batch(setup: SamplingSetup, masks: np.ndarray, seeds: Sequence[int]) -> tuple[np.ndarray, float]:
    """Sample one batch in one batched run; each volume draws its noise from its own seeded generator.

    Returns:
        images ``(B, 4, X, Y, Z)`` float32 clamped to [0, 1] and the fraction of values that were outside.
    """
    condition = setup.encode(torch.as_tensor(masks)).to(setup.device)
    # generators live on the model's device type: samples reproduce for a seed on one device type
    generators = [torch.Generator(device=setup.device).manual_seed(int(s)) for s in seeds]
    with torch.inference_mode():
        out = setup.sampler.sample(setup.model, condition, generator=generators, progress=False)
    out = out.detach().float().cpu()
    if out.shape[1] != len(MODALITIES) or tuple(out.shape[2:]) != masks.shape[1:]:
        raise RuntimeError(
            f"sampler returned shape {tuple(out.shape)}, expected (B, {len(MODALITIES)}, *{masks.shape[1:]})"
        )
    outside = float(((out < 0) | (out > 1)).float().mean())
    return out.clamp_(0, 1).numpy().astype(np.float32), outside
