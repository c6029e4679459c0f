"""Training of the mask-conditioned diffusion model (``gliomagen train``), as the paper ran it.

One optimiser step = ``train.grad_accum`` micro-batches of ``train.batch_size`` (the *global* batch, split
over DDP processes). Adam with a piecewise-constant LR (``lr_milestones``/``lr_factors``), EMA of the
weights, the encoder (input blocks) frozen from ``freeze_encoder_step``. Validation: L1/L2 noise-prediction
loss of the EMA weights on fixed validation cases at fixed timesteps with fixed noise (comparable across
steps), best checkpoint kept, optional early stopping. Outputs go to ``<run>/checkpoints`` and
``<run>/training`` (CSV logs, TensorBoard events, preview samples as PNG and NIfTI).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from gliomagen.config import MODALITIES, Config
from gliomagen.diffusion import ddp
from gliomagen.diffusion.checkpoint import (
    CheckpointError,
    check_compatible,
    copy_checkpoint,
    prune_checkpoints,
    read_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from gliomagen.diffusion.dataset import (
    CaseDataset,
    case_for_sample,
    noise_for_sample,
    sample_indices,
    usable_cases,
)
from gliomagen.diffusion.ema import EMA
from gliomagen.diffusion.network import (
    build_model,
    count_parameters,
    enable_grad_checkpointing,
    set_encoder_frozen,
)
from gliomagen.diffusion.schedule import add_noise, diffusion_loss, lr_factor, make_train_scheduler
from gliomagen.io import provenance, write_csv, write_json

log = logging.getLogger(__name__)

TRAIN_LOG = "train_log.csv"
VAL_LOG = "val_log.csv"


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

    folder: Path
    train: list[dict[str, Any]] = field(default_factory=list)
    val: list[dict[str, Any]] = field(default_factory=list)

    def load(self, upto: int) -> None:
        """Keep only rows of steps ``<= upto`` from an earlier run (resume)."""
        for name, rows in ((TRAIN_LOG, self.train), (VAL_LOG, self.val)):
            path = self.folder / name
            if path.is_file():
                frame = pd.read_csv(path)
                rows[:] = frame[frame["step"] <= upto].to_dict("records")

    def flush(self) -> None:
        if self.train:
            write_csv(self.folder / TRAIN_LOG, pd.DataFrame(self.train))
        if self.val:
            write_csv(self.folder / VAL_LOG, pd.DataFrame(self.val))


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
        self.train_data = CaseDataset(usable_cases(cfg, "train"), cfg)
        self.val_data = CaseDataset(usable_cases(cfg, "val")[: t.val_cases], cfg)
        self.logs = Logs(cfg.paths.training)

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
            net = torch.compile(net)
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

    def save(self, name: str) -> Path:
        folder = self.cfg.paths.checkpoints
        return save_checkpoint(
            folder / name,
            self.cfg,
            self.step,
            model=self.net.state_dict(),
            ema=self.ema.state_dict(),
            optimizer=self.optimizer.state_dict(),
            lr_scheduler=self.lr_sched.state_dict(),
            trainer=self.state.as_dict(),
        )

    # ------------------------------------------------------------------------------------------ one step
    def _batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        images, conds, ts, noises = [], [], [], []
        n, seed = len(self.train_data), self.cfg.train.seed
        for g in indices:
            image, cond = self.train_data[case_for_sample(g, n, seed)]
            t, noise = noise_for_sample(g, tuple(image.shape), self.cfg.diffusion.timesteps, seed)
            images.append(image)
            conds.append(cond)
            ts.append(t)
            noises.append(noise)
        put = lambda xs: torch.stack(xs).to(self.device)  # noqa: E731
        return put(images), put(conds), torch.tensor(ts, device=self.device), put(noises)

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

    def train_step(self) -> float:
        """One optimiser step (``grad_accum`` micro-batches); returns the mean loss over all processes."""
        self._update_freeze()
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        accum, total = self.cfg.train.grad_accum, 0.0
        for micro in range(accum):
            idx = sample_indices(self.step, micro, self.cfg, self.dist.rank, self.dist.world)
            x0, cond, t, noise = self._batch(idx)
            sync = micro == accum - 1 or not isinstance(self.forward_net, DistributedDataParallel)
            ctx = contextlib.nullcontext() if sync else self.forward_net.no_sync()
            with ctx:
                loss = self._loss(self.forward_net, x0, cond, t, noise) / accum
                loss.backward()
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
        folder = cfg.paths.training / "previews"
        nii = write_nifti(
            folder / f"step_{self.step:07d}.nii.gz",
            np.moveaxis(image, 0, -1),
            real.affine,
            cfg.hash,
            np.float32,
        )
        save_preview_png(
            folder / f"step_{self.step:07d}.png", image, real.mask, cfg, title=f"step {self.step}"
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
            self.save("best.pt")
        return stop


# ------------------------------------------------------------------------------------------------ train
def _archive_previous(cfg: Config) -> None:
    """``--no-resume``: move earlier checkpoints and logs aside (nothing is silently overwritten)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in (cfg.paths.checkpoints, cfg.paths.training):
        if folder.is_dir() and any(folder.iterdir()):
            target = folder.with_name(f"{folder.name}.old-{stamp}")
            shutil.move(str(folder), str(target))
            log.warning("--no-resume: moved the previous %s to %s", folder, target)


def train(
    cfg: Config, resume: bool = True, max_steps: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """Train (or continue training) the diffusion model of ``cfg``.

    Args:
        cfg: run configuration.
        resume: continue from ``<run>/checkpoints/last.pt`` if it exists (exact continuation).
        max_steps: stop after this global step (default ``train.max_steps``); a later call resumes.
        progress: show a tqdm bar (main process only).

    Returns:
        summary dict (``step``, ``best_val``, ``best_step``, ``seconds``, ``seconds_per_step``, ...).
    """
    dist = ddp.setup(cfg.train.device)
    try:
        return _train(cfg, dist, resume, max_steps, progress)
    finally:
        ddp.teardown(dist)


def _train(
    cfg: Config, dist: ddp.Dist, resume: bool, max_steps: int | None, progress: bool
) -> dict[str, Any]:
    t = cfg.train
    stop = min(max_steps or t.max_steps, t.max_steps)
    if not resume and dist.is_main:
        _archive_previous(cfg)
    ddp.barrier(dist)
    trainer = Trainer(cfg, dist)
    last = cfg.paths.checkpoints / "last.pt"
    if resume and last.is_file():
        trainer.resume(last)
    if trainer.state.stopped_early or trainer.step >= stop:
        log.info("already trained to step %d (target %d); nothing to do", trainer.step, stop)
        return _summary(trainer, 0.0, 0)
    writer = _tensorboard(cfg, trainer.step) if dist.is_main else None
    if dist.is_main:
        _write_run_info(cfg, trainer, dist)
    bar = tqdm(
        total=stop, initial=trainer.step, desc="train", disable=not (progress and dist.is_main), unit="step"
    )
    start_step, t0 = trainer.step, time.perf_counter()
    while trainer.step < stop:
        tic = time.perf_counter()
        loss = trainer.train_step()
        seconds = time.perf_counter() - tic
        lr = trainer.optimizer.param_groups[0]["lr"]
        row = {"step": trainer.step, "loss": loss, "lr": lr, "seconds": seconds, "frozen": trainer.frozen}
        trainer.logs.train.append(row)
        if writer is not None:
            writer.add_scalar("train/loss", loss, trainer.step)
            writer.add_scalar("train/lr", lr, trainer.step)
            writer.add_scalar("train/seconds_per_step", seconds, trainer.step)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        bar.update(1)
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at step {trainer.step}; lower train.lr")
        early = _periodic(trainer, writer, dist)
        if early:
            log.info(
                "early stopping at step %d (no improvement in %d validations)",
                trainer.step,
                t.early_stopping_patience,
            )
            break
    bar.close()
    if dist.is_main:
        if trainer.step % t.checkpoint_every:  # always leave a resumable checkpoint at the stopping step
            trainer.save("last.pt")
        trainer.logs.flush()
        if writer is not None:
            writer.close()
    ddp.barrier(dist)
    return _summary(trainer, time.perf_counter() - t0, trainer.step - start_step)


def _periodic(trainer: Trainer, writer: Any, dist: ddp.Dist) -> bool:
    """Validation, previews and checkpoints at their fixed step grids (main process); early-stop flag."""
    cfg, step = trainer.cfg, trainer.step
    t = cfg.train
    final = step == t.max_steps
    stop = False
    if dist.is_main:
        if step % t.val_every == 0 or final:
            metrics = trainer.validate()
            stop = trainer.after_validation(metrics)
            if writer is not None:
                for key, value in metrics.items():
                    writer.add_scalar(f"val/{key.removeprefix('val_')}", value, step)
            trainer.logs.flush()
        if step % t.preview_every == 0 or final:
            trainer.preview()
        if step % t.checkpoint_every == 0 or final or stop:
            path = trainer.save(f"step_{step:07d}.pt")
            copy_checkpoint(path, cfg.paths.checkpoints / "last.pt")
            prune_checkpoints(cfg.paths.checkpoints, t.keep_checkpoints)
            trainer.logs.flush()
    if dist.enabled:
        flag = torch.tensor([int(stop)], device=dist.device)
        torch.distributed.broadcast(flag, src=0)
        stop = bool(flag.item())
    return stop


def _tensorboard(cfg: Config, step: int) -> Any:
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops events after the resumed step, so a resumed curve has no duplicates
    return SummaryWriter(log_dir=str(cfg.paths.training / "tensorboard"), purge_step=step or None)


def _write_run_info(cfg: Config, trainer: Trainer, dist: ddp.Dist) -> None:
    write_json(
        cfg.paths.training / "run_info.json",
        provenance(
            cfg.hash,
            device=str(dist.device),
            world_size=dist.world,
            parameters=count_parameters(trainer.net),
            train_cases=len(trainer.train_data),
            val_cases=[d.name for d in trainer.val_data.dirs],
            modalities=list(MODALITIES),
            options={
                k: getattr(cfg.train, k) for k in ("bf16", "grad_checkpointing", "channels_last", "compile")
            },
            torch=torch.__version__,
        ),
    )


def _summary(trainer: Trainer, seconds: float, steps: int) -> dict[str, Any]:
    return {
        "step": trainer.step,
        "best_val": trainer.state.best_val,
        "best_step": trainer.state.best_step,
        "stopped_early": trainer.state.stopped_early,
        "seconds": seconds,
        "steps_run": steps,
        "seconds_per_step": seconds / steps if steps else float("nan"),
    }


def run_cli(cfg: Config, args: argparse.Namespace) -> None:
    """``gliomagen train``: train or resume; ``--no-resume`` starts over, ``--max-steps`` stops early."""
    try:
        summary = train(
            cfg, resume=not getattr(args, "no_resume", False), max_steps=getattr(args, "max_steps", None)
        )
    except CheckpointError as exc:
        raise SystemExit(f"gliomagen train: {exc}") from None
    log.info(
        "trained to step %d; best validation loss %.4f at step %d; %.2f s/step",
        summary["step"],
        summary["best_val"],
        summary["best_step"],
        summary["seconds_per_step"],
    )
