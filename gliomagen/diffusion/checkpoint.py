"""Training checkpoints: atomic writes, safe loading (``weights_only=True``) and config checks.

A checkpoint holds the model, the EMA, the optimiser, the LR scheduler, the step, the RNG states and the
trainer's bookkeeping, plus the *model* and *training* parts of the config that made it. Loading for
training refuses a checkpoint whose training config differs; loading for sampling refuses one whose
model-relevant config (target shape, label map, mask encoding, network, diffusion) differs unless
``generate.allow_config_mismatch`` is set. Both errors name the file and the differing keys. A key that an
older checkpoint does not have counts as its default value (so adding a model option with MONAI's default
does not invalidate existing checkpoints).

Every load uses ``torch.load(weights_only=True)``: a file holding anything but tensors and plain containers
(e.g. a pickle that would run code) is refused with "refused to load FILE: it contains objects other than
tensors (possibly unsafe)". All these errors are :class:`gliomagen.errors.InputError` s: the CLI prints
them as one line and exits with code 2.

Checkpoints imported from the original's released weights (``gliomagen import-weights``) have the same
format plus an ``imported`` record (source sha256, step, mapping version) and ``input_orientation``: the
array orientation the weights expect (``RAS``, the original's ``as_closest_canonical``), which generation
honours (:mod:`gliomagen.diffusion.orientation`). A checkpoint trained here has ``None``: arrays as prepared.

Files (in ``<run>/checkpoints/``): ``step_0002500.pt`` every ``train.checkpoint_every`` steps (the newest
``train.keep_checkpoints`` are kept), ``last.pt`` (the newest) and ``best.pt`` (lowest validation loss).
"""

from __future__ import annotations

import json
import logging
import pickle
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gliomagen.config import Config, ModelConfig, load_config
from gliomagen.errors import InputError, UnsafeFileError
from gliomagen.hashing import content_hash
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
}


class CheckpointError(InputError, RuntimeError):
    """A checkpoint is missing, unreadable or was made with another configuration."""


class UnsafeCheckpointError(CheckpointError, UnsafeFileError):
    """A checkpoint holds objects other than tensors: loading it could run code, so it is refused."""


def model_config(cfg: Config) -> dict[str, Any]:
    """The config that defines the network, its input and the diffusion process (must match for sampling)."""
    return {
        "model": cfg.model.model_dump(mode="json"),
        "diffusion": cfg.diffusion.model_dump(mode="json"),
        "labels": [lab.model_dump(mode="json") for lab in cfg.data.labels],
        "target_shape": list(cfg.data.target_shape),
    }


#: the network options older checkpoints lack, at the values those checkpoints were trained with
MONAI_MODEL_OPTIONS: dict[str, Any] = {
    "upsample_mode": "nearest",
    "time_embed_max_period": 10000,
    "zero_init_attention_out": False,
}


def saved_model_config(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's model config, with keys that older checkpoints lack filled in.

    Model options added later count as MONAI's behaviour, which those checkpoints had (not as today's code
    defaults, which are the paper's network); ``target_shape`` comes from the stored training config when the
    model config predates it.
    """
    saved = json.loads(ckpt["model_config"])
    saved["model"] = {
        **ModelConfig().model_dump(mode="json"),
        **MONAI_MODEL_OPTIONS,
        **saved.get("model", {}),
    }
    if "target_shape" not in saved and "train_config" in ckpt:
        shape = json.loads(ckpt["train_config"]).get("target_shape")
        if shape is not None:
            saved["target_shape"] = shape
    return saved


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
    return content_hash(obj)


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
    np_state: Any = np.random.get_state()
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
        "profile": cfg.profile,
        "config_hash": cfg.hash,
        "model_config": json.dumps(model_config(cfg), sort_keys=True),
        "train_config": json.dumps(train_config(cfg), sort_keys=True),
        "rng": rng_state(),
        **state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def safe_torch_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with errors that say what is wrong with the file.

    Raises:
        CheckpointError: the file is missing, truncated or corrupted.
        UnsafeCheckpointError: it holds objects other than tensors (unpickling them could run code).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            raise UnsafeCheckpointError(
                f"refused to load {path}: it contains objects other than tensors (possibly unsafe)"
            ) from None
        raise CheckpointError(_unreadable(path, exc)) from None
    except Exception as exc:  # torch raises several types for truncated/corrupted archives
        raise CheckpointError(_unreadable(path, exc)) from None


def _unreadable(path: Path, exc: Exception) -> str:
    first = (str(exc).splitlines() or [""])[0][:200]
    return (
        f"checkpoint {path} cannot be read ({type(exc).__name__}: {first}); it is truncated, corrupted or "
        "not a checkpoint - delete it or choose another"
    )


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a gliomagen checkpoint with ``weights_only=True``; a clear error if it is unsafe or unusable."""
    path = Path(path)
    ckpt = safe_torch_load(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        hint = ""
        if isinstance(ckpt, dict) and {"model", "ema"} <= set(ckpt) and "format" not in ckpt:
            hint = "; it looks like the original's checkpoint: convert it with `gliomagen import-weights`"
        raise CheckpointError(f"checkpoint {path} is not a gliomagen diffusion checkpoint ({FORMAT}){hint}")
    return ckpt


def check_compatible(
    ckpt: dict[str, Any], cfg: Config, path: str | Path, for_training: bool, allow_mismatch: bool = False
) -> list[str]:
    """Refuse a checkpoint made with another model (sampling) or training config (resuming).

    Args:
        ckpt: the loaded checkpoint.
        cfg: the run's configuration.
        path: the checkpoint file (named in the message).
        for_training: compare the training config (resume) instead of the model config (sampling).
        allow_mismatch: sampling only: warn instead of refusing (``generate.allow_config_mismatch``).

    Returns:
        the differences that were allowed (empty when the configs match).

    Raises:
        CheckpointError: naming the file and every differing key.
    """
    if for_training:
        saved, current = json.loads(ckpt["train_config"]), train_config(cfg)
    else:
        saved, current = saved_model_config(ckpt), model_config(cfg)
    diffs = _differences(saved, current)
    if diffs and allow_mismatch and not for_training:
        log.warning(
            "using checkpoint %s although its configuration differs (generate.allow_config_mismatch):\n  - %s",
            path,
            "\n  - ".join(diffs),
        )
        return diffs
    if diffs:
        what, hint = (
            (
                "resume training",
                "use the configuration it was trained with, another --run-dir, or --no-resume",
            )
            if for_training
            else (
                "sample",
                "use the model/diffusion/label/shape settings it was made with, another checkpoint, or "
                "--set generate.allow_config_mismatch=true to use it anyway",
            )
        )
        made_with = ckpt.get("profile")
        if made_with and made_with != cfg.profile:
            hint = f"it was made with profile {made_with!r} (try --profile {made_with}); or {hint}"
        raise CheckpointError(
            f"checkpoint {path} was made with a different configuration, cannot {what} with it: "
            + "; ".join(diffs)
            + f". {hint[0].upper()}{hint[1:]}."
        )
    return []


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
    cfg: Config,
    which: str | Path = "best",
    device: str | torch.device = "cpu",
    allow_mismatch: bool | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The EMA network of a checkpoint (trained or imported), in eval mode, ready for a sampler.

    Args:
        cfg: run configuration (its model/diffusion/labels/target shape must match the checkpoint's).
        which: ``best``, ``last`` or a path to a checkpoint file.
        device: where to put the network.
        allow_mismatch: use the checkpoint although its model config differs (default
            ``generate.allow_config_mismatch``).

    Returns:
        ``(model, meta)`` with meta ``sha256`` (of the checkpoint file), ``step``, ``path``, ``config_hash``,
        ``input_orientation`` (``None`` or ``"RAS"``) and ``imported`` (the import record or ``None``).
    """
    from gliomagen.diffusion.network import build_model

    path = checkpoint_path(cfg, which)
    ckpt = read_checkpoint(path)
    allow = cfg.generate.allow_config_mismatch if allow_mismatch is None else allow_mismatch
    check_compatible(ckpt, cfg, path, for_training=False, allow_mismatch=allow)
    model = build_model(cfg)
    ema_state = {k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    try:
        model.load_state_dict(ema_state)
    except RuntimeError as exc:  # shapes/keys of another network (possible only with allow_mismatch)
        raise CheckpointError(
            f"checkpoint {path}: its weights do not fit the network of this configuration "
            f"({str(exc).splitlines()[0][:200]} ...)"
        ) from None
    model.to(device).eval().requires_grad_(False)
    meta = {
        "sha256": file_sha256(path),
        "step": int(ckpt["step"]),
        "path": str(path),
        "config_hash": ckpt["config_hash"],
        "input_orientation": ckpt.get("input_orientation"),
        "imported": json.loads(ckpt["imported"]) if ckpt.get("imported") else None,
    }
    return model, meta


def load_denoiser(
    path: str | Path,
    profile: str = "paper",
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """The network of a project checkpoint (trained or imported), in eval mode: the loader generation uses.

    Args:
        path: a checkpoint file written by ``gliomagen train`` or ``gliomagen import-weights``.
        profile: the profile whose model config the checkpoint must match (``paper`` for the released
            weights).
        overrides: ``section.key=value`` config overrides, as on the command line.
        device: where to put the network.

    Raises:
        CheckpointError: unreadable, unsafe or made with another model configuration (names the keys).
    """
    cfg = load_config(profile, list(overrides))
    model, _ = load_for_sampling(cfg, Path(path), device=device)
    return model
