"""Training checkpoints: atomic writes, safe loading (``weights_only=True``) and config checks.

A checkpoint holds the model, the EMA, the optimiser, the LR scheduler, the step, the RNG states and the
trainer's bookkeeping, plus the *model* and *training* parts of the config that made it. Loading for
training refuses a checkpoint whose training config differs; loading for sampling refuses one whose
network/diffusion config differs. Both errors name the differing keys.

Files (in ``<run>/checkpoints/``): ``step_0002500.pt`` every ``train.checkpoint_every`` steps (the newest
``train.keep_checkpoints`` are kept), ``last.pt`` (the newest) and ``best.pt`` (lowest validation loss).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gliomagen.config import Config
from gliomagen.io import atomic_path, file_sha256

log = logging.getLogger(__name__)

FORMAT = "gliomagen-diffusion-v1"
#: train keys that do not change the optimisation trajectory (so they may change on resume)
_TRAIN_FREE = {
    "max_steps",
    "checkpoint_every",
    "keep_checkpoints",
    "val_every",
    "val_cases",
    "val_timesteps",
    "early_stopping_patience",
    "preview_every",
    "preview_sampler",
    "preview_steps",
    "grad_checkpointing",
    "channels_last",
    "compile",
    "device",
    "num_workers",
}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or was made with another configuration."""


def model_config(cfg: Config) -> dict[str, Any]:
    """The config that defines the network and the diffusion process (must match for sampling)."""
    return {
        "model": cfg.model.model_dump(mode="json"),
        "diffusion": cfg.diffusion.model_dump(mode="json"),
        "labels": [lab.model_dump(mode="json") for lab in cfg.data.labels],
    }


def train_config(cfg: Config) -> dict[str, Any]:
    """The config that defines the optimisation trajectory (must match to resume training)."""
    train = {k: v for k, v in cfg.train.model_dump(mode="json").items() if k not in _TRAIN_FREE}
    return {
        **model_config(cfg),
        "train": train,
        "target_shape": list(cfg.data.target_shape),
        "split": cfg.data.split.model_dump(mode="json"),
    }


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in sorted(set(saved) | set(current)):
            out += _differences(saved.get(key), current.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == current else [f"{prefix.rstrip('.')}: checkpoint {saved!r} vs config {current!r}"]


# ------------------------------------------------------------------------------------------------ RNG
def rng_state() -> dict[str, Any]:
    """Global RNG states (torch CPU/CUDA, numpy, python) in a ``weights_only``-safe form."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------- save / load
def save_checkpoint(path: str | Path, cfg: Config, step: int, **state: Any) -> Path:
    """Write a checkpoint atomically (temp file + rename).

    Args:
        path: destination ``.pt`` file.
        cfg: run configuration (its model/train parts are stored for the checks on loading).
        step: optimiser steps done.
        state: ``model``, ``ema``, ``optimizer``, ``lr_scheduler`` state dicts, ``trainer`` bookkeeping.
    """
    payload = {
        "format": FORMAT,
        "step": step,
        "config_hash": cfg.hash,
        "model_config": json.dumps(model_config(cfg), sort_keys=True),
        "train_config": json.dumps(train_config(cfg), sort_keys=True),
        "rng": rng_state(),
        **state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a clear error if it is missing or corrupted."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/corrupted archives
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "it is truncated, corrupted or not a gliomagen checkpoint - delete it or choose another"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a gliomagen diffusion checkpoint ({FORMAT})")
    return ckpt


def check_compatible(ckpt: dict[str, Any], cfg: Config, path: str | Path, for_training: bool) -> None:
    """Refuse a checkpoint made with another model (sampling) or training config (resuming).

    Raises:
        CheckpointError: naming every differing key.
    """
    key, current = (
        ("train_config", train_config(cfg)) if for_training else ("model_config", model_config(cfg))
    )
    saved = json.loads(ckpt[key])
    diffs = _differences(saved, current)
    if diffs:
        what, hint = (
            (
                "resume training",
                "use the configuration it was trained with, another --run-dir, or --no-resume",
            )
            if for_training
            else (
                "sample",
                "use the model/diffusion/label settings it was trained with, or another checkpoint",
            )
        )
        raise CheckpointError(
            f"checkpoint {path} was made with a different configuration, cannot {what} with it:\n  - "
            + "\n  - ".join(diffs)
            + f"\n{hint[0].upper()}{hint[1:]}."
        )


def checkpoint_path(cfg: Config, which: str | Path) -> Path:
    """``best`` / ``last`` inside the run's checkpoint folder, or an explicit file path."""
    if str(which) in {"best", "last"}:
        path = cfg.paths.checkpoints / f"{which}.pt"
        if which == "best" and not path.is_file() and (cfg.paths.checkpoints / "last.pt").is_file():
            log.warning("no best.pt yet (no validation has run); using last.pt")
            return cfg.paths.checkpoints / "last.pt"
        if not path.is_file():
            raise CheckpointError(
                f"no {which} checkpoint in {cfg.paths.checkpoints}; run `gliomagen train --profile {cfg.profile}` first"
            )
        return path
    return Path(which)


def copy_checkpoint(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def prune_checkpoints(folder: Path, keep: int | None) -> None:
    """Delete all but the newest ``keep`` ``step_*.pt`` files (``None`` keeps all)."""
    if keep is None:
        return
    steps = sorted(folder.glob("step_*.pt"))
    for old in steps[: max(len(steps) - keep, 0)]:
        old.unlink()


def load_for_sampling(
    cfg: Config, which: str | Path = "best", device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The EMA network of a checkpoint, in eval mode, ready for a sampler.

    Args:
        cfg: run configuration (its model/diffusion/labels must match the checkpoint's).
        which: ``best``, ``last`` or a path to a checkpoint file.
        device: where to put the network.

    Returns:
        ``(model, meta)`` with meta ``sha256`` (of the checkpoint file), ``step``, ``path``, ``config_hash``.
    """
    from gliomagen.diffusion.network import build_model

    path = checkpoint_path(cfg, which)
    ckpt = read_checkpoint(path)
    check_compatible(ckpt, cfg, path, for_training=False)
    model = build_model(cfg)
    ema_state = {k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    model.load_state_dict(ema_state)
    model.to(device).eval().requires_grad_(False)
    meta = {
        "sha256": file_sha256(path),
        "step": int(ckpt["step"]),
        "path": str(path),
        "config_hash": ckpt["config_hash"],
    }
    return model, meta
