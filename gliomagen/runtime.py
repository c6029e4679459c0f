"""Where the work runs: the one device rule and the one thread limit every stage uses (``runtime`` section)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from gliomagen.errors import InputError


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The torch device of ``runtime.device``.

    Args:
        name: ``auto`` (the local rank's CUDA GPU if there is one, else the CPU), ``cpu``, ``cuda`` (the local
            rank's GPU) or ``cuda:<i>``.
        local_rank: the process's rank on this node (default: ``LOCAL_RANK`` set by ``torchrun``, else 0).

    Raises:
        InputError: a CUDA device is asked for where none is visible.
    """
    rank = int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", rank % torch.cuda.device_count())
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"runtime.device={name!r} but no CUDA GPU is visible here; use 'cpu' or 'auto'")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", rank % torch.cuda.device_count())
    return device


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Use ``threads`` torch CPU threads inside the block (``None``: leave torch's setting alone).

    Why: many tiny ops (MONAI's surface metrics, 32x40 slices) spend more on OpenMP start-up than they save
    on a busy 2-core CPU (measured: 12 s per smoke case with the default threads).
    """
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
