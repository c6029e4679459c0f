"""Plan, preprocess, train and predict one configuration with nnunetv2's own Python APIs.

Each configuration runs in **its own process** (:mod:`gliomagen.segmentation.worker`, started by
:func:`run_job`); this module describes a configuration's job, runs it and knows where its model and
predictions are. Checkpoint safety (issue 13) is in :mod:`gliomagen.segmentation.checkpoints`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from gliomagen.config import Config
from gliomagen.io import read_json, write_json
from gliomagen.locks import run_child, run_lock
from gliomagen.segmentation.checkpoints import (
    REFUSED,
    REFUSED_EXIT,
    SHA_SUFFIX,
    CheckpointRefused,
    guarded_torch_load,
    load_checkpoint_safely,
    record_checkpoint,
    verify_checkpoint,
)
from gliomagen.segmentation.export import DatasetPlan, dataset_dir
from gliomagen.segmentation.outputs import SegmentationOutputs
from gliomagen.segmentation.worker import PLANS

log = logging.getLogger(__name__)

#: the checkpoint guard is re-exported under its import path before the split (``checkpoints`` is its home)
__all__ = [
    "CONFIGURABLE_TRAINER",
    "SHA_SUFFIX",
    "TRAINER_DIR",
    "CheckpointRefused",
    "NnUNetError",
    "guarded_torch_load",
    "is_trained",
    "load_checkpoint_safely",
    "make_job",
    "model_dir",
    "nnunet_env",
    "prediction_dir",
    "record_checkpoint",
    "resolve_device",
    "run_job",
    "trainer_name",
    "verify_checkpoint",
    "write_job",
]

TRAINER_DIR = Path(__file__).resolve().parent / "trainers"
CONFIGURABLE_TRAINER = "nnUNetTrainerGliomaGen"


class NnUNetError(RuntimeError):
    """An nnU-Net step failed; the message names the log file and shows its last lines."""


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other names pass through."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def trainer_name(cfg: Config) -> str:
    """The trainer class: ``nnUNetTrainer`` in the profile means nnU-Net's default trainer with the profile's
    epochs and iterations (:mod:`gliomagen.segmentation.trainers`); any other name is used as given."""
    return CONFIGURABLE_TRAINER if cfg.segment.trainer == "nnUNetTrainer" else cfg.segment.trainer


def nnunet_env(cfg: Config) -> dict[str, str]:
    """The environment variables nnU-Net needs for this run (folders under ``<run>/nnunet``)."""
    seg = cfg.segment
    root = cfg.paths.nnunet
    return {
        "nnUNet_raw": str(root / "raw"),
        "nnUNet_preprocessed": str(root / "preprocessed"),
        "nnUNet_results": str(root / "results"),
        "nnUNet_n_proc_DA": str(cfg.runtime.nnunet_augmentation_workers),
        "nnUNet_def_n_proc": str(cfg.runtime.workers),
        "nnUNet_extTrainer": str(TRAINER_DIR),
        "GLIOMAGEN_NNUNET_EPOCHS": str(seg.epochs),
        "GLIOMAGEN_NNUNET_ITERATIONS": str(seg.iterations_per_epoch),
        "GLIOMAGEN_NNUNET_VAL_ITERATIONS": str(seg.val_iterations_per_epoch),
        "GLIOMAGEN_NNUNET_SEED": str(seg.seed),
        "GLIOMAGEN_NNUNET_SAVE_EVERY": str(seg.checkpoint_every),
        **(
            {"OMP_NUM_THREADS": str(cfg.runtime.threads), "MKL_NUM_THREADS": str(cfg.runtime.threads)}
            if cfg.runtime.threads and resolve_device(cfg.runtime.device) == "cpu"
            else {}
        ),
    }


def model_dir(cfg: Config, plan: DatasetPlan) -> Path:
    """nnU-Net's training output folder of a configuration (holds ``fold_all/``)."""
    return (
        cfg.paths.nnunet
        / "results"
        / plan.dataset_name
        / f"{trainer_name(cfg)}__{PLANS}__{cfg.segment.nnunet_configuration}"
    )


def is_trained(cfg: Config, plan: DatasetPlan) -> bool:
    return (model_dir(cfg, plan) / "fold_all" / "checkpoint_final.pth").is_file()


def prediction_dir(cfg: Config, name: str, target: str = "val") -> Path:
    """Where the predictions of configuration ``name`` on ``target`` (``val`` or ``hq``) are written."""
    return SegmentationOutputs(cfg.paths).predictions(name, target)


def make_job(
    cfg: Config,
    plan: DatasetPlan,
    predict: list[tuple[Path, Path]],
    train: bool = True,
    plans_from: str | None = None,
) -> dict[str, Any]:
    """Describe one configuration's work for the worker process.

    Args:
        cfg: run configuration.
        plan: the configuration's dataset plan (its dataset must be exported).
        predict: (input images folder, output folder) pairs to predict after training.
        train: plan, preprocess and train (``False``: only predict with an existing model).
        plans_from: dataset name whose nnU-Net plans are reused (``segment.shared_plans``).
    """
    seg = cfg.segment
    return {
        "name": plan.name,
        "dataset_id": plan.dataset_id,
        "dataset_name": plan.dataset_name,
        "raw_dir": str(dataset_dir(cfg, plan)),
        "configuration": seg.nnunet_configuration,
        "trainer": trainer_name(cfg),
        "plans": PLANS,
        "device": resolve_device(cfg.runtime.device),
        "processes": cfg.runtime.workers,
        "final_validation": seg.final_validation,
        "tta": seg.tta,
        "feature_scale": seg.feature_scale,
        "plans_from": plans_from,
        "train": train,
        "model_dir": str(model_dir(cfg, plan)),
        "predict": [{"input": str(i), "output": str(o)} for i, o in predict],
        "env": nnunet_env(cfg),
    }


def write_job(cfg: Config, job: dict[str, Any]) -> Path:
    """Write ``job`` to its file (``<run>/nnunet/jobs/<name>.json``), which the worker process reads."""
    return write_json(cfg.paths.nnunet / "jobs" / f"{job['name']}.json", job)


def run_job(cfg: Config, job: dict[str, Any], written: Path | None = None) -> dict[str, Any]:
    """Run a job in a fresh Python process and return its timing record.

    The job holds the run folder's lock ``nnunet-<dataset>`` while it trains (one trainer per model folder);
    the process dies with this one (:func:`gliomagen.locks.run_child`).

    Args:
        cfg: run configuration.
        job: the job (:func:`make_job`).
        written: its file, when the caller wrote it already (:func:`write_job`). The segmentation stage
            writes its files from one thread and runs jobs in pool threads
            (:mod:`gliomagen.segmentation.schedule`); then only the log is appended to here.

    Raises:
        CheckpointRefused: the worker refused to load a checkpoint (exit code 2; the message names the file).
        NnUNetError: the worker failed otherwise (message has the log path and its tail).
        LockHeld: another process is training the same dataset.
    """
    key = f"nnunet-{job['dataset_name']}" if job["train"] else f"nnunet-{job['name']}-predict"
    with run_lock(cfg.paths.root, key):
        return _run_job_locked(cfg, job, written or write_job(cfg, job))


def _run_job_locked(cfg: Config, job: dict[str, Any], job_path: Path) -> dict[str, Any]:
    log_path = SegmentationOutputs(cfg.paths).log(job["name"])
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **job["env"]}
    t0 = time.perf_counter()
    with open(log_path, "a") as fh:
        fh.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} job {job_path}\n")
        fh.flush()
        returncode = run_child(
            [sys.executable, "-m", "gliomagen.segmentation.worker", str(job_path)], env, fh
        )
    if returncode == REFUSED_EXIT:
        refused = [
            line[len(REFUSED) :].strip()
            for line in log_path.read_text(errors="replace").splitlines()
            if line.startswith(REFUSED)
        ]
        if refused:
            raise CheckpointRefused(f"{refused[-1]} (nnU-Net job {job['name']!r}; log {log_path})")
    if returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise NnUNetError(
            f"nnU-Net failed for configuration {job['name']!r} (exit code {returncode}); "
            f"full log: {log_path}\n--- last lines ---\n{tail}"
        )
    timing_path = Path(job["model_dir"]).parent / f"gliomagen_timing_{job['name']}.json"
    timing = read_json(timing_path) if timing_path.is_file() else {}
    timing["total_s"] = round(time.perf_counter() - t0, 2)
    return timing
