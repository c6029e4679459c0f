"""nnU-Net checkpoints that cannot run code (issue 13).

nnunetv2 2.8 loads its checkpoints with ``torch.load(weights_only=False)``, which runs any code a forged
``.pth`` pickles. The worker process (:mod:`gliomagen.segmentation.worker`) replaces ``torch.load`` for *every*
caller in it (predictor, trainer resume, pretrained weights) with :func:`load_checkpoint_safely`:
``weights_only=True`` with only numpy scalar/dtype classes allow-listed (what nnU-Net stores besides tensors,
plain containers and ``torch.device``), and, where gliomagen recorded the file's sha256 when it was written
(``<file>.sha256.json``, see :func:`record_checkpoint`), the bytes must match it. A refusal ends the worker
with exit code :data:`REFUSED_EXIT` and one line starting with :data:`REFUSED` naming the file, which
``gliomagen segment`` reports as its own exit-2 error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gliomagen.errors import UnsafeFileError
from gliomagen.io import file_sha256, read_json, write_json

log = logging.getLogger(__name__)

#: suffix of the record gliomagen writes beside every nnU-Net checkpoint it produced
SHA_SUFFIX = ".sha256.json"
#: first word of the line a worker prints when it refuses a file (read back by ``nnunet.run_job``)
REFUSED = "GLIOMAGEN-REFUSED:"
REFUSED_EXIT = 2


class CheckpointRefused(UnsafeFileError):
    """An nnU-Net checkpoint was not loaded: it could run code, is corrupted, or differs from its record."""


def safe_globals() -> list[Any]:
    """The non-tensor classes nnU-Net 2.8 checkpoints hold, all plain data (nothing that can run code).

    Measured on a checkpoint of ``nnUNetTrainer`` (``torch.serialization.get_unsafe_globals_in_checkpoint``
    plus the dtype classes it needs): numpy scalars (the logger's losses/Dice, ``_best_ema``) are pickled as
    ``numpy._core.multiarray.scalar(dtype, bytes)``. ``torch.device`` (``init_args``) is allowed by torch.
    """
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    numeric = [
        getattr(np.dtypes, name)
        for name in dir(np.dtypes)
        if name.endswith("DType") and any(k in name for k in ("Int", "Float", "Bool", "Complex"))
    ]
    return [core.multiarray.scalar, np.dtype, *numeric]


def record_checkpoint(path: Path, sha256: str | None = None) -> None:
    """Record the sha256 of a checkpoint gliomagen wrote (``<path>.sha256.json``), keeping the previous one.

    The previous hash is kept because the record is written just *before* the checkpoint is renamed into
    place: a kill between the two leaves the old file, which must still verify.
    """
    record_path = path.with_name(path.name + SHA_SUFFIX)
    old = read_json(record_path).get("sha256") if record_path.is_file() else None
    new = sha256 or file_sha256(path)
    write_json(
        record_path,
        {"file": path.name, "sha256": new, "previous": old if old != new else None,
         "written": datetime.now(UTC).isoformat(timespec="seconds")},
    )  # fmt: skip


def verify_checkpoint(path: Path) -> bool:
    """Check ``path`` against its sha256 record; ``False`` if there is no record.

    Raises:
        CheckpointRefused: the file differs from what gliomagen wrote (modified or replaced).
    """
    record_path = path.with_name(path.name + SHA_SUFFIX)
    if not record_path.is_file():
        return False
    try:
        record = read_json(record_path)
    except (OSError, ValueError) as exc:
        raise CheckpointRefused(
            f"refused to load {path}: its sha256 record {record_path} is unreadable ({exc})"
        ) from None
    actual = file_sha256(path)
    if actual not in {record.get("sha256"), record.get("previous")}:
        raise CheckpointRefused(
            f"refused to load {path}: its sha256 {actual[:16]}... differs from the one gliomagen recorded when "
            f"it wrote the file ({record_path}); it was modified or replaced. Delete it (and the record) to "
            "retrain, or restore the original"
        )
    return True


def load_checkpoint_safely(path: str | os.PathLike[str], map_location: Any = None) -> Any:
    """``torch.load`` that cannot run code: sha256 record check, then ``weights_only=True`` + :func:`safe_globals`.

    Raises:
        CheckpointRefused: the file holds other objects (possibly code), is unreadable, or fails its record.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointRefused(f"refused to load {path}: the file does not exist")
    if not verify_checkpoint(path):
        log.warning("%s has no sha256 record from gliomagen; loading it with weights_only=True only", path)
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.serialization.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = " ".join(line for line in str(exc).splitlines() if "got <" in line or "GLOBAL" in line)[:200]
        raise CheckpointRefused(
            f"refused to load {path}: it contains objects other than tensors and plain data (possibly unsafe)"
            + (f"; {detail.strip()}" if detail else "")
        ) from None
    except Exception as exc:  # noqa: BLE001 -- torch raises several types for truncated/corrupted archives
        first = (str(exc).splitlines() or [""])[0][:200]
        raise CheckpointRefused(
            f"refused to load {path}: it cannot be read ({type(exc).__name__}: {first}); it is truncated or "
            "corrupted (an nnU-Net killed while saving?): delete it to retrain from the previous checkpoint"
        ) from None


def _guarded_load(f: Any, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:
    """Drop-in for ``torch.load`` inside the worker: paths go through :func:`load_checkpoint_safely`."""
    kwargs.pop("weights_only", None)
    if isinstance(f, (str, os.PathLike)) and not args and not kwargs:
        return load_checkpoint_safely(f, map_location)
    import torch

    with torch.serialization.safe_globals(safe_globals()):  # file objects / extra options: still weights only
        return torch.serialization.load(f, map_location, *args, weights_only=True, **kwargs)


@contextlib.contextmanager
def guarded_torch_load() -> Iterator[None]:
    """Within the block, every ``torch.load`` (nnU-Net's included) is :func:`_guarded_load`.

    ``torch.serialization.load`` (the same function as the original ``torch.load``) is left alone and is
    what the guard itself calls.
    """
    import torch

    before = torch.load
    torch.load = _guarded_load
    try:
        yield
    finally:
        torch.load = before
