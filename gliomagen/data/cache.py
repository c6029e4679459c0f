"""Prepared cases as uncompressed arrays, written once and memory-mapped by training (fast to read).

Decoding five gzip NIfTI files costs about a second per case at 192x192x144; training reads each case
hundreds of times. ``prepare`` therefore also writes every prepared case as two ``.npy`` files (the image
``(4, X, Y, Z)`` float32 clipped to [0, 1], the mask ``(X, Y, Z)`` uint8) under
``prepared/cache/<id>/<key>.{image,mask}.npy``. The key is a content hash of the preparation settings
(:func:`gliomagen.data.prepare.prep_key`) and the size and modification time of the case's NIfTI files, so a
re-prepared case or other settings never read a stale array; a missing cache (e.g. a run prepared by an
older version) is built from the NIfTI files on first use. Files are written atomically.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from gliomagen.cases import case_files, load_case
from gliomagen.errors import InputError
from gliomagen.hashing import content_hash
from gliomagen.io import atomic_path


class BadCaseError(InputError, ValueError):
    """A prepared case holds values training cannot use (non-finite or outside [0, 1])."""


def cache_key(case_dir: Path, prep: str) -> str:
    """Identity of the arrays of ``case_dir``: preparation settings and the NIfTI files' size and mtime."""
    files = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in case_files(case_dir).values()]
    return content_hash({"prep": prep, "files": files})


def cache_files(cache_root: Path, case_id: str, key: str) -> tuple[Path, Path]:
    """``(image, mask)`` paths of one case's arrays."""
    folder = cache_root / case_id
    return folder / f"{key}.image.npy", folder / f"{key}.mask.npy"


def checked_image(image: np.ndarray, where: Path) -> np.ndarray:
    """The image clipped to [0, 1] (float32), after checking it is finite and within rounding of [0, 1]."""
    lo, hi = float(image.min()), float(image.max())
    if lo < -1e-3 or hi > 1 + 1e-3 or not np.isfinite(image).all():
        raise BadCaseError(f"{where}: image values must be finite and in [0, 1], got [{lo:.3g}, {hi:.3g}]")
    return np.clip(image, 0, 1).astype(np.float32, copy=False)


def write_cache(cache_root: Path, case_dir: Path, prep: str, image: np.ndarray, mask: np.ndarray) -> None:
    """Write the arrays of the prepared case in ``case_dir`` (other keys of the case are removed)."""
    key = cache_key(case_dir, prep)
    image_path, mask_path = cache_files(cache_root, case_dir.name, key)
    folder = image_path.parent
    if folder.is_dir():
        for old in folder.iterdir():
            # hidden files are partials of writers that may still be running (two loader workers building
            # one case's missing cache at once): removing one made the other's rename fail
            if not old.name.startswith((f"{key}.", ".")):
                old.unlink(missing_ok=True)
    for path, array in ((image_path, checked_image(image, case_dir)), (mask_path, mask.astype(np.uint8))):
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.save(f, np.ascontiguousarray(array))


def read_cache(cache_root: Path, case_dir: Path, prep: str) -> tuple[np.ndarray, np.ndarray]:
    """The case's ``(image, mask)`` as read-only memory maps, building the cache from the NIfTI files once."""
    key = cache_key(case_dir, prep)
    image_path, mask_path = cache_files(cache_root, case_dir.name, key)
    if not (image_path.is_file() and mask_path.is_file()):
        case = load_case(case_dir)
        write_cache(cache_root, case_dir, prep, case.image, case.mask)
    return np.load(image_path, mmap_mode="r"), np.load(mask_path, mmap_mode="r")


def remove_cache(cache_root: Path, case_id: str) -> None:
    """Drop a case's arrays (its prepared folder was removed or is being rewritten)."""
    shutil.rmtree(cache_root / case_id, ignore_errors=True)
