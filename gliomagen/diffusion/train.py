"""Training of the mask-conditioned diffusion model (``gliomagen train``), as the paper ran it.

The loop: optimiser steps (:class:`gliomagen.diffusion.trainer.Trainer`) fed by the training loader, with
validation, previews and checkpoints on fixed step grids; best checkpoint kept, optional early stopping,
exact resume. The stage holds the run folder's ``train`` lock. Outputs (paths in
:class:`gliomagen.diffusion.outputs.TrainingOutputs`) go to ``<run>/checkpoints`` and ``<run>/training``
(CSV logs, TensorBoard events, preview samples as PNG and NIfTI). :func:`train` returns a
:class:`TrainingResult`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from gliomagen.config import MODALITIES, Config
from gliomagen.diffusion import ddp
from gliomagen.diffusion.checkpoint import copy_checkpoint, prune_checkpoints
from gliomagen.diffusion.network import count_parameters
from gliomagen.diffusion.outputs import TrainingOutputs
from gliomagen.diffusion.schedule import lr_factor
from gliomagen.diffusion.trainer import Trainer, encoder_frozen_at, training_target
from gliomagen.io import provenance, write_json
from gliomagen.locks import run_lock

__all__ = ["Trainer", "TrainingResult", "encoder_frozen_at", "lr_factor", "train", "training_target"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingResult:
    """What :func:`train` did.

    Args:
        step: the optimiser step reached.
        best_val: the best validation loss so far (``inf`` before the first validation).
        best_step: its step (-1 before the first validation).
        stopped_early: early stopping ended training.
        seconds: wall-clock seconds of this call's training loop.
        steps_run: optimiser steps run by this call (0: already trained).
        seconds_per_step: ``seconds / steps_run`` (``nan`` when none ran).
    """

    step: int
    best_val: float
    best_step: int
    stopped_early: bool
    seconds: float
    steps_run: int
    seconds_per_step: float

    def __getitem__(self, key: str) -> Any:  # the dict-style access of earlier callers
        return getattr(self, key)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
) -> TrainingResult:
    """Train (or continue training) the diffusion model of ``cfg``.

    Args:
        cfg: run configuration.
        resume: continue from ``<run>/checkpoints/last.pt`` if it exists (exact continuation).
        max_steps: stop after this global step (default ``train.max_steps``); a later call resumes.
        progress: show a tqdm bar (main process only).

    Returns:
        the step reached, best validation loss and step, and this call's timing.

    Raises:
        gliomagen.locks.LockHeld: another process is training this run.
        gliomagen.diffusion.checkpoint.CheckpointError: ``last.pt`` is unreadable or from another config.
    """
    dist = ddp.setup(cfg.runtime.device)
    try:
        # one lock per run (rank 0 takes it; the other DDP ranks write nothing but through rank 0)
        lock = run_lock(cfg.paths.root, "train") if dist.is_main else contextlib.nullcontext()
        with lock:
            return _train(cfg, dist, resume, max_steps, progress)
    finally:
        ddp.teardown(dist)


def _train(
    cfg: Config, dist: ddp.Dist, resume: bool, max_steps: int | None, progress: bool
) -> TrainingResult:
    t = cfg.train
    stop = min(max_steps or t.max_steps, t.max_steps)
    if not resume and dist.is_main:
        _archive_previous(cfg)
    ddp.barrier(dist)
    trainer = Trainer(cfg, dist)
    out = TrainingOutputs(cfg.paths)
    last = out.last
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
    batches = iter(trainer.loader(stop))
    while trainer.step < stop:
        tic = time.perf_counter()
        loss = trainer.train_step(batches)
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
    del batches  # ends the loader's worker processes
    bar.close()
    if dist.is_main:
        if trainer.step % t.checkpoint_every:  # always leave a resumable checkpoint at the stopping step
            trainer.save(out.last)
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
            path = trainer.save(trainer.out.step_checkpoint(step))
            copy_checkpoint(path, trainer.out.last)
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
    return SummaryWriter(log_dir=str(TrainingOutputs(cfg.paths).tensorboard), purge_step=step or None)


def _write_run_info(cfg: Config, trainer: Trainer, dist: ddp.Dist) -> None:
    write_json(
        trainer.out.run_info,
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


def _summary(trainer: Trainer, seconds: float, steps: int) -> TrainingResult:
    return TrainingResult(
        step=trainer.step,
        best_val=trainer.state.best_val,
        best_step=trainer.state.best_step,
        stopped_early=trainer.state.stopped_early,
        seconds=seconds,
        steps_run=steps,
        seconds_per_step=seconds / steps if steps else float("nan"),
    )


def run_cli(cfg: Config, args: argparse.Namespace) -> TrainingResult:
    """``gliomagen train``: train or resume; ``--no-resume`` starts over, ``--max-steps`` stops early.

    A bad or mismatched checkpoint, a busy run folder or missing prepared data are input errors: the CLI
    prints one line and exits with code 2.
    """
    result = train(
        cfg, resume=not getattr(args, "no_resume", False), max_steps=getattr(args, "max_steps", None)
    )
    log.info(
        "trained to step %d; best validation loss %.4f at step %d; %.2f s/step",
        result.step,
        result.best_val,
        result.best_step,
        result.seconds_per_step,
    )
    return result
