"""``gliomagen sample``: the four modalities for one mask file, written in the mask's own geometry.

``gliomagen sample --mask M.nii.gz [--checkpoint C] [--sampler dpmpp --steps 20] [--seed S] --out DIR``

1. **Validate** the mask: a readable 3D NIfTI with a usable affine, integer values from the profile's
   prepared label vocabulary (``data.labels``, head label included: a prepared or augmented mask, not a raw
   BraTS segmentation), not empty, and a head that surrounds the lesion. Every problem is one clear line
   and exit code 2.
2. **Resample** it to the model grid with the data stage's geometry (:mod:`gliomagen.data.geometry`: the
   isotropic factor ``min(target / source)``, centred pad/crop, correct affine; nearest neighbour). The
   head must fit the model's field of view. For weights that expect another array orientation (the
   original's: ``RAS``), the mask is first reoriented to it (axis permutation/flips, exact).
3. **Generate** with the checkpoint's EMA weights (``load_for_sampling``: the same loader and the same
   config checks as ``gliomagen generate``).
4. **Write** ``DIR/<name>-{t1n,t1c,t2w,t2f}.nii.gz`` resampled back (trilinear, by world coordinates) onto
   the mask's native grid with its affine, ``DIR/<name>-seg.nii.gz`` (the input mask, unchanged) and
   ``DIR/<name>-provenance.json``. Values are in [0, 1]; voxels of the native grid outside the model grid's
   field of view are 0.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from gliomagen.config import MODALITIES, Config
from gliomagen.errors import InputError
from gliomagen.io import file_sha256, load_nifti, provenance, write_json, write_nifti

log = logging.getLogger(__name__)


class MaskError(InputError, ValueError):
    """The mask given to ``gliomagen sample`` cannot be used; the message names the file and the problem."""


@dataclass
class NativeMask:
    """A validated mask in its own geometry.

    Args:
        path: the file.
        data: uint8 label map ``(X, Y, Z)``.
        affine: its voxel-to-world matrix.
        name: output stem (file name without ``.nii[.gz]`` and a trailing ``-seg``/``_seg``).
    """

    path: Path
    data: np.ndarray
    affine: np.ndarray
    name: str


def mask_name(path: Path) -> str:
    """``BraTS-GLI-00001-000-seg.nii.gz`` -> ``BraTS-GLI-00001-000``."""
    stem = re.sub(r"\.nii(\.gz)?$", "", path.name)
    return re.sub(r"[-_]seg$", "", stem) or stem


def read_mask(path: str | Path, cfg: Config) -> NativeMask:
    """Load and validate a mask for ``gliomagen sample``.

    Raises:
        MaskError: missing/unreadable file, not 3D, bad affine, non-integer or unknown values, empty mask,
            no head around the lesion.
    """
    path = Path(path)
    if not path.is_file():
        raise MaskError(f"{path}: mask file does not exist")
    try:
        img = load_nifti(path)
        raw = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel/gzip errors do not always name the file
        raise MaskError(f"{path}: cannot read the mask ({type(exc).__name__}: {exc})") from None
    if raw.ndim != 3:
        raise MaskError(
            f"{path}: the mask must be a 3D label map, got a {raw.ndim}D array of shape {raw.shape}"
        )
    affine = np.asarray(img.affine, np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-8:
        raise MaskError(f"{path}: the affine is not a usable voxel-to-world matrix:\n{affine}")
    values = np.unique(raw)
    if not np.all(np.isfinite(values)) or not np.allclose(values, np.round(values)):
        raise MaskError(f"{path}: the mask holds non-integer values (a label map has integer labels)")
    values = np.round(values).astype(np.int64)
    known = sorted(lab.value for lab in cfg.data.labels)
    unknown = sorted(set(values.tolist()) - set(known))
    if unknown:
        raise MaskError(
            f"{path}: label values {unknown} are not in the profile's label map {known} (data.labels; "
            "a prepared mask: 0 background, 1 head, 2.. tumour labels)"
        )
    data = np.round(raw).astype(np.uint8)
    if not data.any():
        raise MaskError(f"{path}: the mask is empty (no non-background voxel)")
    check_head(data, cfg, path)
    return NativeMask(path, data, affine, mask_name(path))


def check_head(mask: np.ndarray, cfg: Config, path: Path) -> None:
    """The head label must be present, be the largest label, and surround the tumour labels.

    A raw BraTS segmentation (tumour labels only, values 1..4) passes the vocabulary check but would be
    read with its NETC as "head": it fails here because its lesion borders the background directly.
    """
    try:
        head = cfg.label("head").value
    except KeyError:
        return  # a label map without a head label: nothing to check
    counts = np.bincount(mask.ravel(), minlength=256)
    if counts[head] == 0:
        raise MaskError(
            f"{path}: the mask does not cover a head (no voxel of the head label {head}); sample needs a "
            "prepared or augmented mask (head label plus tumour labels), not a tumour-only segmentation"
        )
    tumour = np.isin(mask, [lab.value for lab in cfg.tumour_labels])
    if counts[head] < tumour.sum():
        raise MaskError(
            f"{path}: the mask does not cover a head: the head label {head} ({counts[head]} voxels) is "
            f"smaller than the lesion ({int(tumour.sum())} voxels)"
        )
    if tumour.any():
        shell = ndi.binary_dilation(tumour) & ~tumour
        outside = float((mask[shell] == 0).mean()) if shell.any() else 0.0
        if outside > 0.5:
            raise MaskError(
                f"{path}: the mask does not cover a head: {outside:.0%} of the lesion's surface touches the "
                "background instead of the head label"
            )


def model_grid(
    mask: np.ndarray, affine: np.ndarray, cfg: Config, orientation: str | None, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """The mask on the model grid (``data.target_shape``), in the orientation the weights expect.

    Returns:
        ``(mask, affine)`` of the model grid.

    Raises:
        MaskError: the head does not fit the model's field of view.
    """
    from gliomagen.data.geometry import plan_geometry, resample_mask
    from gliomagen.diffusion.orientation import to_orientation

    if orientation is not None:
        mask, affine = to_orientation(mask, affine, orientation)
    geom = plan_geometry(mask.shape, affine, cfg.data.target_shape)
    grid = resample_mask(mask, geom)
    if not grid.any():
        raise MaskError(f"{path}: nothing of the mask is left on the model grid {cfg.data.target_shape}")
    faces = [np.take(grid, idx, axis=a) for a in range(3) for idx in (0, -1)]
    if any(f.any() for f in faces):
        raise MaskError(
            f"{path}: the head does not fit the model's field of view ({cfg.data.target_shape} voxels of "
            f"{geom.out_spacing[0]:.2f} mm): non-background voxels reach its border"
        )
    lost = sorted(set(np.unique(mask).tolist()) - set(np.unique(grid).tolist()))
    if lost:
        log.warning("%s: labels %s disappear at the model grid's resolution", path, lost)
    return grid, geom.out_affine


def to_native(images: np.ndarray, grid_affine: np.ndarray, native: NativeMask) -> np.ndarray:
    """Resample ``(C, X', Y', Z')`` images from the model grid onto the mask's native grid (trilinear).

    Each native voxel takes the value at its own world position in the model grid (so any axis order,
    flip or voxel size of the native grid is handled); outside the model grid's field of view: 0.
    """
    m = np.linalg.inv(grid_affine) @ native.affine  # native voxel -> model-grid voxel
    out = [
        ndi.affine_transform(
            c, m[:3, :3], offset=m[:3, 3], output_shape=native.data.shape, order=1, mode="constant", cval=0.0
        )
        for c in images
    ]
    return np.clip(np.stack(out), 0.0, 1.0).astype(np.float32)


def sample_mask(
    cfg: Config,
    mask_path: str | Path,
    out_dir: str | Path,
    checkpoint: str | Path | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int | None = None,
    setup: Any = None,
) -> dict[str, Any]:
    """Generate the four modalities for one mask and write them in the mask's geometry.

    Args:
        cfg: run configuration (label map, target shape, model, sampler defaults).
        mask_path: the mask file.
        out_dir: output folder.
        checkpoint: checkpoint file (default ``generate.checkpoint``).
        sampler: sampler name (default ``generate.sampler``).
        steps: sampling steps (default ``generate.steps``; all T for ``ddpm``).
        seed: noise seed (default: derived from ``generate.seed`` and the mask's name).
        setup: a ready :class:`gliomagen.generation.SamplingSetup` (tests; default: load the checkpoint).

    Returns:
        the provenance record (also written as ``<name>-provenance.json``).
    """
    from gliomagen.generation.jobs import volume_seed
    from gliomagen.generation.sampling import load_setup, sample_batch

    native = read_mask(mask_path, cfg)
    if setup is None:
        if checkpoint is not None:
            # sections are frozen after loading: derive a config with this checkpoint
            cfg = cfg.model_copy(
                update={"generate": cfg.generate.model_copy(update={"checkpoint": str(checkpoint)})}
            )
        setup = load_setup(cfg, sampler, steps)
    orientation = getattr(setup, "input_orientation", None)
    grid, grid_affine = model_grid(native.data, native.affine, cfg, orientation, native.path)
    seed = volume_seed(cfg.generate.seed, native.name) if seed is None else int(seed)
    t0 = time.perf_counter()
    images, outside = sample_batch(setup, grid[None], [seed])
    seconds = time.perf_counter() - t0
    volumes = to_native(images[0], grid_affine, native)
    out = Path(out_dir)
    for channel, modality in enumerate(MODALITIES):
        write_nifti(
            out / f"{native.name}-{modality}.nii.gz", volumes[channel], native.affine, cfg.hash, np.float32
        )
    write_nifti(out / f"{native.name}-seg.nii.gz", native.data, native.affine, cfg.hash, np.uint8)
    record = provenance(
        cfg.hash,
        mask=str(native.path),
        mask_sha256=file_sha256(native.path),
        mask_shape=list(native.data.shape),
        outputs=[f"{native.name}-{m}.nii.gz" for m in (*MODALITIES, "seg")],
        checkpoint=setup.checkpoint,
        checkpoint_sha256=setup.checkpoint_sha256,
        checkpoint_step=setup.checkpoint_step,
        input_orientation=orientation,
        model_grid_shape=list(grid.shape),
        model_grid_affine=np.round(grid_affine, 6).tolist(),
        sampler=setup.sampler_name,
        steps=setup.steps,
        seed=seed,
        clip_range=list(cfg.generate.clip_range),
        clamped_fraction=outside,
        seconds=round(seconds, 3),
        device=str(setup.device),
    )
    write_json(out / f"{native.name}-provenance.json", record)
    return record


def run_cli(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    """``gliomagen sample --mask M [--checkpoint C] [--sampler S --steps N] [--seed S] --out DIR``."""
    record = sample_mask(
        cfg,
        args.mask,
        args.out,
        checkpoint=args.checkpoint,
        sampler=args.sampler,
        steps=args.steps,
        seed=args.seed,
    )
    print(
        f"sampled {record['sampler']}-{record['steps']} (seed {record['seed']}) from {args.mask} in "
        f"{record['seconds']:.1f} s -> {Path(args.out) / record['outputs'][0]} and 4 more files"
    )
    return record
