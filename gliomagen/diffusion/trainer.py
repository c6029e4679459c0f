"""One training process's state and its optimiser step, validation and previews (see :mod:`.train`).

One optimiser step = ``train.grad_accum`` micro-batches of ``train.batch_size`` (the *global* batch, split
over DDP processes), read through the loader of :mod:`gliomagen.diffusion.dataset`. Adam with a
piecewise-constant LR (``lr_milestones``/``lr_factors``), EMA of the weights, the encoder (input blocks)
frozen from ``freeze_encoder_step``. Validation: L1/L2 noise-prediction loss of the EMA weights on fixed
validation cases at fixed timesteps with fixed noise (comparable across steps).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from gliomagen.config import Config
from gliomagen.diffusion import ddp
from gliomagen.diffusion.checkpoint import check_compatible, read_checkpoint, save_checkpoint, set_rng_state
from gliomagen.diffusion.dataset import Batch, CaseDataset, draw_on_device, make_loader, usable_cases
from gliomagen.diffusion.ema import EMA
from gliomagen.diffusion.network import build_model, enable_grad_checkpointing, set_encoder_frozen
from gliomagen.diffusion.outputs import TrainingOutputs
from gliomagen.diffusion.schedule import add_noise, diffusion_loss, lr_factor, make_train_scheduler
from gliomagen.errors import InputError
from gliomagen.io import write_csv

log = logging.getLogger(__name__)


class NoCasesError(InputError, FileNotFoundError):
    """The run has no usable prepared cases of a split (the data stage has not run, or excluded them all)."""


def _cases(cfg: Config, split: str) -> list[Path]:
    dirs = usable_cases(cfg, split)
    if not dirs:
        raise NoCasesError(
            f"no usable {split} cases in {cfg.paths.prepared / split}; run `gliomagen prepare` (notebook 01) first"
        )
    return dirs


# ---------------------------------------------------------------------------------------------- helpers
def training_target(scheduler: Any, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the network learns to output for ``x_t`` (``scheduler.prediction_type``).

    ``epsilon``: the noise (the paper); ``sample``: the clean image ``x_0``; ``v_prediction``:
    ``v = sqrt(abar_t) noise - sqrt(1 - abar_t) x_0`` (Salimans & Ho 2022, MONAI's ``get_velocity``).
    """
    kind = scheduler.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    raise ValueError(f"unknown diffusion.prediction {kind!r}")


def encoder_frozen_at(step: int, cfg: Config) -> bool:
    """Whether the encoder is frozen for the optimiser step that follows ``step`` completed steps."""
    f = cfg.train.freeze_encoder_step
    return f is not None and step >= f


@dataclass
class TrainerState:
    """Bookkeeping saved in checkpoints (for exact resume and early stopping)."""

    best_val: float = math.inf
    best_step: int = -1
    bad_evals: int = 0
    stopped_early: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Logs:
    """Rows of the CSV logs, rewritten atomically at every checkpoint and validation."""

    out: TrainingOutputs
    train: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)

    def load(self, upto: int) -> None:
        """Keep only rows of steps ``<= upto`` from an earlier run (resume)."""
        for path, rows in ((self.out.train_log, self.train), (self.out.val_log, self.val)):
            if path.is_file():
                frame = pd.read_csv(path)
                rows[:] = [
                    {str(k): v for k, v in r.items()} for r in frame[frame["step"] <= upto].to_dict("records")
                ]

    def flush(self) -> None:
        if self.train:
            write_csv(self.out.train_log, pd.DataFrame(self.train))
        if self.val:
            write_csv(self.out.val_log, pd.DataFrame(self.val))


# ----------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Everything one training process holds; see :func:`train`.

    Args:
        cfg: run configuration.
        dist: this process's place in a DDP group (single process by default).
    """

    def __init__(self, cfg: Config, dist: ddp.Dist | None = None) -> None:
        self.cfg, self.dist = cfg, dist or ddp.Dist()
        t = cfg.train
        if t.batch_size % self.dist.world:
            raise ValueError(
                f"train.batch_size={t.batch_size} (global batch) must be divisible by the {self.dist.world} "
                "processes"
            )
        bad_t = [v for v in t.val_timesteps if not 0 <= v < cfg.diffusion.timesteps]
        if bad_t:
            raise ValueError(f"train.val_timesteps {bad_t} outside 0..{cfg.diffusion.timesteps - 1}")
        torch.manual_seed(t.seed)
        self.device = self.dist.device
        self.net = build_model(cfg).to(self.device)
        if t.grad_checkpointing:
            enable_grad_checkpointing(self.net)
        if t.channels_last:
            self.net.to(memory_format=torch.channels_last_3d)
        self.ema = EMA(self.net, t.ema_decay, t.ema_every, t.ema_start)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=t.lr)
        self.lr_sched = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, t.lr_milestones, t.lr_factors)
        )
        self.scheduler = make_train_scheduler(cfg)
        self.state = TrainerState()
        self.step = 0
        self.frozen = False
        self.forward_net: nn.Module = self.net
        self.out = TrainingOutputs(cfg.paths)
        self.train_data = CaseDataset(_cases(cfg, "train"), cfg)
        self.val_data = CaseDataset(_cases(cfg, "val")[: t.val_cases], cfg)
        self.logs = Logs(self.out)

    # -------------------------------------------------------------------------------------- model wrapping
    def _wrap(self) -> None:
        """(Re)build the forward module: DDP and/or torch.compile around the raw network."""
        net: nn.Module = self.net
        if self.dist.enabled:
            # rebuilt when the encoder freezes: DDP fixes its set of trainable parameters at construction
            net = DistributedDataParallel(
                net, device_ids=[self.device] if self.device.type == "cuda" else None
            )
        if self.cfg.train.compile:
            net = cast(nn.Module, torch.compile(net))
        self.forward_net = net

    def _update_freeze(self) -> None:
        frozen = encoder_frozen_at(self.step, self.cfg)
        needs_wrap = self.forward_net is self.net and (self.dist.enabled or self.cfg.train.compile)
        if frozen != self.frozen or needs_wrap:
            self.frozen = frozen
            set_encoder_frozen(self.net, frozen)
            self._wrap()

    # ------------------------------------------------------------------------------------------ resume
    def resume(self, path: Path) -> None:
        """Restore everything from a checkpoint written by :meth:`save` (exact continuation)."""
        ckpt = read_checkpoint(path, map_location=self.device)
        check_compatible(ckpt, self.cfg, path, for_training=True)
        self.net.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.lr_sched.load_state_dict(ckpt["lr_scheduler"])
        self.state = TrainerState(**ckpt["trainer"])
        self.step = int(ckpt["step"])
        set_rng_state(ckpt["rng"])
        self.logs.load(self.step)
        log.info("resumed from %s at step %d", path, self.step)

    def save(self, path: Path) -> Path:
        """Everything needed for an exact continuation, written to ``path`` (a :class:`TrainingOutputs` path)."""
        return save_checkpoint(
            path,
            self.cfg,
            self.step,
            model=self.net.state_dict(),
            ema=self.ema.state_dict(),
            optimizer=self.optimizer.state_dict(),
            lr_scheduler=self.lr_sched.state_dict(),
            trainer=self.state.as_dict(),
        )

    # ------------------------------------------------------------------------------------------ one step
    def loader(self, stop: int) -> DataLoader[Any]:
        """This process's micro-batches from the current step to ``stop`` (:func:`make_loader`).

        Off the CPU the device draws timesteps and noise (:func:`draw_on_device`): microseconds there
        instead of about half a second per 192x192x144 sample in a loader worker.
        """
        on_cpu = self.device.type == "cpu"
        return make_loader(
            self.cfg, self.train_data, self.step, stop, self.dist.rank, self.dist.world,
            pin=self.device.type == "cuda", noise_in_loader=on_cpu,
        )  # fmt: skip

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.cfg.train.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _loss(
        self, net: nn.Module, x0: torch.Tensor, cond: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        x_t = add_noise(self.scheduler, x0, noise, t)
        inp = torch.cat([x_t, cond], dim=1)
        if self.cfg.train.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last_3d)
        with self._autocast():
            pred = net(inp, timesteps=t)
        return diffusion_loss(pred, training_target(self.scheduler, x0, noise, t), self.cfg.diffusion.loss)

    def train_step(self, batches: Iterator[Batch]) -> float:
        """One optimiser step (``grad_accum`` micro-batches taken from ``batches``, an iterator of
        :meth:`loader`); returns the mean loss over all processes."""
        self._update_freeze()
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        accum, total = self.cfg.train.grad_accum, 0.0
        for micro in range(accum):
            x0, mask, t, noise = draw_on_device(next(batches), self.cfg, self.device)
            cond = self.train_data.encode(mask)  # on the device: the loader moves uint8 masks
            sync = micro == accum - 1 or not isinstance(self.forward_net, DistributedDataParallel)
            ctx = (
                contextlib.nullcontext()
                if sync
                else cast(DistributedDataParallel, self.forward_net).no_sync()
            )
            with ctx:
                loss = self._loss(self.forward_net, x0, cond, t, noise) / accum
                loss.backward()  # type: ignore[no-untyped-call]
            total += float(loss.detach())
        self.optimizer.step()
        self.lr_sched.step()
        self.step += 1
        self.ema.update(self.net, self.step)
        return ddp.mean_across(total, self.dist)

    # ------------------------------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """EMA loss on the fixed validation cases at ``val_timesteps`` with fixed noise, per timestep."""
        net, cfg = self.ema.module, self.cfg
        net.eval()
        per_t: dict[int, list[float]] = {t: [] for t in cfg.train.val_timesteps}
        for i in range(len(self.val_data)):
            x0, cond = (v[None].to(self.device) for v in self.val_data[i])
            for t in cfg.train.val_timesteps:
                gen = torch.Generator().manual_seed(cfg.train.seed * 7919 + i * 1009 + t)
                noise = torch.randn(x0.shape, generator=gen).to(self.device)
                loss = self._loss(net, x0, cond, torch.tensor([t], device=self.device), noise)
                per_t[t].append(float(loss))
        out = {f"val_t{t}": float(np.mean(v)) for t, v in per_t.items()}
        out["val_loss"] = float(np.mean([out[f"val_t{t}"] for t in per_t]))
        return out

    def preview(self) -> Path:
        """Sample the first validation mask with the EMA weights; save NIfTI + PNG under ``previews/``."""
        from gliomagen.cases import load_case
        from gliomagen.diffusion.plots import save_preview_png
        from gliomagen.diffusion.samplers import make_generator, make_sampler
        from gliomagen.io import write_nifti

        cfg = self.cfg
        T, name = cfg.diffusion.timesteps, cfg.train.preview_sampler
        sampler = make_sampler(cfg, name, T if name == "ddpm" else min(cfg.train.preview_steps, T))
        case_dir = self.val_data.dirs[0]
        _, cond = self.val_data[0]
        gen = make_generator(cfg.train.seed, self.device)
        with self._autocast():
            image = sampler.sample(self.ema.module, cond[None], generator=gen)[0].float().cpu().numpy()
        real = load_case(case_dir)
        nii = write_nifti(
            self.out.preview(self.step, ".nii.gz"),
            np.moveaxis(image, 0, -1),
            real.affine,
            cfg.hash,
            np.float32,
        )
        save_preview_png(
            self.out.preview(self.step, ".png"), image, real.mask, cfg, title=f"step {self.step}"
        )
        return nii

    def after_validation(self, metrics: dict[str, float]) -> bool:
        """Update best/patience, save ``best.pt`` on improvement; returns whether to stop early."""
        improved = metrics["val_loss"] < self.state.best_val
        if improved:
            self.state.best_val, self.state.best_step, self.state.bad_evals = (
                metrics["val_loss"],
                self.step,
                0,
            )
        else:
            self.state.bad_evals += 1
        patience = self.cfg.train.early_stopping_patience
        stop = patience is not None and self.state.bad_evals >= patience
        self.state.stopped_early = stop
        self.logs.val.append({"step": self.step, **metrics, "best": improved})
        if improved:
            self.save(self.out.best)
        return stop
