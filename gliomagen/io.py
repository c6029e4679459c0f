"""Atomic, provenance-stamped writes of NIfTI volumes, JSON, CSV and torch objects.

Every writer goes through a temporary file in the destination folder followed by ``os.replace``, so an
interrupted run never leaves a half-written file under a final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from gliomagen import __version__
from gliomagen.locks import partial_name

# read once at import: os.umask can only be read by setting it, which races with other threads
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it is renamed onto ``path`` only if the block succeeds.

    The temporary file is hidden and names its writer (``.<stem>.partial-<host>-<pid>-<random><suffix>``,
    keeping the suffix because writers such as nibabel pick the format from it): if the process is killed
    mid-write, the next run of the stage removes it (:func:`gliomagen.locks.remove_partials`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = partial_name(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; give outputs the usual permissions (0666 less the umask)
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_csv(path: str | Path, frame: Any) -> Path:
    """Write a pandas DataFrame atomically (no index)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def provenance(config_hash: str, **extra: Any) -> dict[str, Any]:
    """The metadata stamped on every output: package version and config hash, plus anything given."""
    return {"gliomagen_version": __version__, "config_hash": config_hash, **extra}


def write_nifti(
    path: str | Path,
    data: np.ndarray,
    affine: np.ndarray,
    config_hash: str | None = None,
    dtype: type | np.dtype | None = None,
) -> Path:
    """Write a NIfTI volume atomically with a correct qform/sform and the config hash in ``descrip``.

    Args:
        path: destination ``.nii.gz``.
        data: the array (cast to ``dtype`` if given).
        affine: 4x4 voxel-to-world (RAS+ mm) matrix, stored as both sform and qform.
        config_hash: stored in the header's ``descrip`` field (80 characters at most).
        dtype: on-disk data type (e.g. ``np.float32`` for images, ``np.uint8`` for masks).
    """
    arr = np.asarray(data if dtype is None else data.astype(dtype, copy=False))
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.set_sform(img.affine, code=1)
    img.set_qform(img.affine, code=1)
    img.header.set_data_dtype(arr.dtype)
    if config_hash is not None:
        img.header["descrip"] = f"gliomagen {__version__} cfg={config_hash}"[:79].encode()
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def load_nifti(path: str | Path) -> nib.Nifti1Image:
    """A NIfTI-1/2 image (header read now, voxels lazily through ``.dataobj``).

    Raises:
        ValueError: the file is another image format that nibabel reads (e.g. MGH, ANALYZE).
    """
    img = nib.load(str(path))
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ValueError(f"{path}: not a NIfTI image ({type(img).__name__})")
    return img


def nifti_config_hash(path: str | Path) -> str | None:
    """The config hash stamped by :func:`write_nifti`, or ``None``."""
    descrip = bytes(load_nifti(path).header["descrip"].tobytes()).split(b"\x00")[0].decode(errors="replace")
    for token in descrip.split():
        if token.startswith("cfg="):
            return token[4:]
    return None
