"""Mask augmentation (``gliomagen augment``): new label maps from the training masks.

The paper's recipe (docs/method.md), per training mask and round:

1. flip left-right with probability ``augment.flip_p``. The left-right axis is read from the affine
   (``nibabel.orientations.aff2axcodes``), never assumed to be an array index; the array is mirrored about
   the volume centre and the affine is kept, so the lesion moves to the other hemisphere in world space;
2. scale isotropically by ``s ~ U(scale_range)`` about the volume centre with nearest-neighbour
   interpolation (optionally composed with a small rotation about the centre and a smooth elastic
   deformation; all in one resampling so labels are interpolated once);
3. retry step 2 (up to ``max_retries`` attempts) until no non-background voxel lies on the volume border,
   i.e. the head is inside the volume; otherwise discard;
4. discard if any label of the source mask vanished.

Optionally (off in the paper profile) the lesion is first translated to another place inside the head.

Every (source, round) draws from its own random stream, ``SeedSequence([seed, hash(source), round])``, so
results do not depend on order, worker count or ``--limit``. Outputs:
``<run>/augmented_masks/<aug_id>/<aug_id>-seg.nii.gz`` with ``aug_id = <source id>-a<round>`` and
``<run>/augmented_masks/manifest.csv`` (one row per try, accepted or discarded with the reason).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm.auto import tqdm

from gliomagen.cases import load_mask, parse_case_id
from gliomagen.config import Config
from gliomagen.io import provenance, write_csv, write_json, write_nifti

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    "aug_id",
    "source_id",
    "patient",
    "round",
    "flipped",
    "scale",
    "attempts",
    "status",
    "reason",
    "lr_axis",
    "rotation_deg_x",
    "rotation_deg_y",
    "rotation_deg_z",
    "elastic",
    "move_mm_x",
    "move_mm_y",
    "move_mm_z",
    "changed_voxels",
    "augment_hash",
]
PAPER_COUNTS = {"tried": 2470, "accepted": 2124, "discarded": 346}
#: bump when the augmentation code changes its output, so resumed runs recompute instead of mixing versions
ALGORITHM_VERSION = 2


# --------------------------------------------------------------------------------------------- geometry
def lr_axis(affine: np.ndarray) -> int:
    """The array axis that runs left-right in world space, read from the affine.

    Args:
        affine: 4x4 voxel-to-world (RAS+) matrix.
    """
    codes = nib.orientations.aff2axcodes(np.asarray(affine))
    for axis, code in enumerate(codes):
        if code in ("L", "R"):
            return axis
    raise ValueError(f"no left-right axis in affine with axis codes {codes}")


def flip_lr(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Mirror ``mask`` left-right about the volume centre; the affine stays the same.

    With the affine kept, a voxel at world x = c + d (c = the world x of the volume centre) moves to
    c - d: the lesion changes hemisphere.
    """
    return np.ascontiguousarray(np.flip(mask, axis=lr_axis(affine)))


def rotation_matrix(degrees: Sequence[float]) -> np.ndarray:
    """World-space rotation ``Rz @ Ry @ Rx`` for angles (degrees) about the world x, y, z axes."""
    ax, ay, az = np.deg2rad(np.asarray(degrees, dtype=float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def elastic_field(
    shape: Sequence[int], affine: np.ndarray, sigma_mm: float, magnitude_mm: float, seed: int
) -> np.ndarray:
    """A smooth random displacement field in voxel units, shape ``(3, *shape)``.

    Gaussian-smoothed white noise (the classic elastic deformation), scaled so that each world
    component has standard deviation ``magnitude_mm``; converted to voxel units through the affine.
    """
    rng = np.random.default_rng(seed)
    linear = np.asarray(affine)[:3, :3]
    spacing = np.sqrt((linear**2).sum(axis=0))
    sigma_vox = sigma_mm / spacing
    world = np.empty((3, *shape), dtype=np.float32)
    for c in range(3):
        smooth = ndimage.gaussian_filter(rng.standard_normal(tuple(shape)).astype(np.float32), sigma_vox)
        world[c] = smooth * (magnitude_mm / max(float(smooth.std()), 1e-12))
    return np.einsum("ij,j...->i...", np.linalg.inv(linear), world).astype(np.float32)


def resample_about_centre(
    mask: np.ndarray,
    affine: np.ndarray,
    scale: float,
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    displacement: np.ndarray | None = None,
) -> np.ndarray:
    """Scale (and rotate, deform) a label map about the volume centre, nearest neighbour, one resampling.

    The forward map is ``x -> s R x`` in world coordinates about the centre; in voxel coordinates it is
    ``F = A^-1 (s R) A`` (``A`` the affine's linear part), so anisotropic voxels are handled. Each output
    voxel ``o`` reads input ``F^-1 (o - c) + c (+ displacement(o))``. ``scale > 1`` enlarges the lesion.

    Args:
        mask: integer label map.
        affine: 4x4 voxel-to-world matrix.
        scale: isotropic scale factor.
        rotation_deg: rotation angles about the world x, y, z axes.
        displacement: optional ``(3, *mask.shape)`` field in voxel units (see :func:`elastic_field`).
    """
    linear = np.asarray(affine, dtype=float)[:3, :3]
    forward = np.linalg.inv(linear) @ (scale * rotation_matrix(rotation_deg)) @ linear
    inverse = np.linalg.inv(forward)
    centre = (np.asarray(mask.shape, dtype=float) - 1) / 2
    offset = centre - inverse @ centre
    if displacement is None:
        return ndimage.affine_transform(mask, inverse, offset=offset, order=0, mode="constant", cval=0)
    grid = np.indices(mask.shape, dtype=np.float32)
    coords = np.einsum("ij,j...->i...", inverse.astype(np.float32), grid) + offset[:, None, None, None]
    coords += displacement
    return ndimage.map_coordinates(mask, coords, order=0, mode="constant", cval=0).astype(mask.dtype)


def touches_border(mask: np.ndarray) -> bool:
    """Whether any non-background voxel lies on a face of the volume (the head is not inside)."""
    return any(mask.take(0, axis=axis).any() or mask.take(-1, axis=axis).any() for axis in range(mask.ndim))


def move_lesion(
    mask: np.ndarray,
    affine: np.ndarray,
    tumour_values: Sequence[int],
    head_value: int,
    max_mm: float,
    rng: np.random.Generator,
    tries: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Translate the lesion to another place inside the head.

    The anatomical constraint: every moved lesion voxel must land on a voxel that was inside the head in
    the source (non-background), so the lesion never leaves the head; the vacated place becomes head.
    Random shifts up to ``max_mm`` per world axis are tried; if none fits, the mask is returned unmoved.

    Returns:
        the new mask and the applied world shift in mm (zeros if not moved).
    """
    lesion = np.isin(mask, list(tumour_values))
    if not lesion.any() or max_mm <= 0:
        return mask, np.zeros(3)
    inside = mask != 0
    linear = np.asarray(affine, dtype=float)[:3, :3]
    for _ in range(tries):
        shift_mm = rng.uniform(-max_mm, max_mm, size=3)
        shift_vox = np.rint(np.linalg.solve(linear, shift_mm)).astype(int)
        if not shift_vox.any():
            continue
        moved = ndimage.shift(np.where(lesion, mask, 0), shift_vox, order=0, mode="constant", cval=0)
        moved_lesion = moved != 0
        if moved_lesion.sum() != lesion.sum() or not inside[moved_lesion].all():
            continue
        out = np.where(lesion, np.uint8(head_value), mask).astype(mask.dtype)
        out[moved_lesion] = moved[moved_lesion]
        return out, linear @ shift_vox
    return mask, np.zeros(3)


# ------------------------------------------------------------------------------------------- one mask
@dataclass
class AugmentResult:
    """The outcome of one (source, round) try."""

    aug_id: str
    source_id: str
    patient: str
    round: int
    flipped: bool
    scale: float
    attempts: int
    status: str
    reason: str
    lr_axis: int = -1
    rotation_deg_x: float = 0.0
    rotation_deg_y: float = 0.0
    rotation_deg_z: float = 0.0
    elastic: bool = False
    move_mm_x: float = 0.0
    move_mm_y: float = 0.0
    move_mm_z: float = 0.0
    changed_voxels: int = 0
    augment_hash: str = ""
    voxels: dict[str, int] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        row = {k: v for k, v in asdict(self).items() if k != "voxels"}
        row.update(self.voxels)
        return row


def stable_int(text: str) -> int:
    """A 64-bit integer from a string that, unlike ``hash()``, is the same in every process."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def aug_id_for(source_id: str, round_: int) -> str:
    return f"{source_id}-a{round_}"


def augment_hash(cfg: Config) -> str:
    """Hash of everything that defines the augmented masks (the augment section and the label map)."""
    payload = {
        "algorithm": ALGORITHM_VERSION,
        "augment": cfg.augment.model_dump(mode="json", exclude={"workers"}),
        "labels": [lab.model_dump(mode="json") for lab in cfg.data.labels],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _label_counts(mask: np.ndarray, names: dict[int, str], suffix: str) -> dict[str, int]:
    counts = np.bincount(mask.ravel(), minlength=max(names) + 1)
    return {f"voxels_{names[v]}_{suffix}": int(counts[v]) for v in sorted(names) if v != 0}


def augment_mask(
    mask: np.ndarray, affine: np.ndarray, source_id: str, round_: int, cfg: Config
) -> tuple[np.ndarray | None, AugmentResult]:
    """Augment one mask for one round (pure function of its inputs and the config).

    Args:
        mask: source label map (uint8, values from ``cfg.data.labels``).
        affine: its 4x4 affine (kept for the output).
        source_id: the source case id (seeds the random stream).
        round_: round number, 1-based.
        cfg: run configuration.

    Returns:
        the augmented mask (``None`` when discarded) and the manifest record.
    """
    a = cfg.augment
    names = {lab.value: lab.name for lab in cfg.data.labels}
    flip_rng, scale_rng, rot_rng, elastic_rng, move_rng = (
        np.random.default_rng(s)
        for s in np.random.SeedSequence([a.seed, stable_int(source_id), round_]).spawn(5)
    )
    try:
        patient = parse_case_id(source_id)[0]
    except ValueError:
        patient = source_id
    result = AugmentResult(
        aug_id=aug_id_for(source_id, round_),
        source_id=source_id,
        patient=patient,
        round=round_,
        flipped=False,
        scale=1.0,
        attempts=0,
        status="discarded",
        reason="",
        lr_axis=lr_axis(affine),
        elastic=a.elastic,
        augment_hash=augment_hash(cfg),
    )
    result.voxels = _label_counts(mask, names, "source")
    base = mask
    if a.move_lesion:
        tumour = [lab.value for lab in cfg.tumour_labels]
        head = cfg.label("head").value
        base, shift = move_lesion(base, affine, tumour, head, a.move_max_mm, move_rng)
        result.move_mm_x, result.move_mm_y, result.move_mm_z = (round(float(v), 3) for v in shift)
    # The flip is drawn once: mirroring about the centre maps border voxels to border voxels, so
    # redrawing it could never bring the head inside the volume.
    result.flipped = bool(flip_rng.random() < a.flip_p)
    if result.flipped:
        base = flip_lr(base, affine)
    out = None
    for attempt in range(1, a.max_retries + 1):
        scale = float(scale_rng.uniform(*a.scale_range))
        angles = rot_rng.uniform(-a.rotation_deg, a.rotation_deg, 3) if a.rotation_deg > 0 else np.zeros(3)
        field_ = None
        if a.elastic and a.elastic_magnitude_mm > 0:
            seed = int(elastic_rng.integers(2**63))
            field_ = elastic_field(mask.shape, affine, a.elastic_sigma_mm, a.elastic_magnitude_mm, seed)
        candidate = resample_about_centre(base, affine, scale, angles, field_)
        result.attempts, result.scale = attempt, round(scale, 6)
        result.rotation_deg_x, result.rotation_deg_y, result.rotation_deg_z = (
            round(float(v), 4) for v in angles
        )
        if not touches_border(candidate):
            out = candidate
            break
    if out is None:
        result.reason = (
            f"head_outside_volume: a non-background voxel on the border in all {a.max_retries} attempts"
        )
        return None, result
    # voxels the resampling changed (at low resolution a 2 % scale can be below half a voxel: 0 changes)
    result.changed_voxels = int((out != base).sum())
    lost = sorted(set(np.unique(mask).tolist()) - set(np.unique(out).tolist()) - {0})
    result.voxels.update(_label_counts(out, names, "aug"))
    if lost:
        result.reason = "label_lost: " + ", ".join(names[v] for v in lost)
        return None, result
    result.status = "accepted"
    return out, result


# ------------------------------------------------------------------------------------------ the stage
def training_mask_dirs(cfg: Config) -> list[Path]:
    """The usable training case folders (from the data stage's QC; sorted by id)."""
    try:
        from gliomagen.data.prepare import usable_cases
    except ModuleNotFoundError:  # data stage not installed: fall back to the prepared layout itself
        root = cfg.paths.prepared / "train"
        return (
            sorted(p for p in root.iterdir() if (p / f"{p.name}-seg.nii.gz").is_file())
            if root.is_dir()
            else []
        )
    return list(usable_cases(cfg, "train"))


def _check_mask(mask: np.ndarray, path: Path, cfg: Config) -> None:
    if mask.ndim != 3:
        raise ValueError(f"{path}: expected a 3D mask, got shape {mask.shape}")
    known = {lab.value for lab in cfg.data.labels}
    unknown = sorted(set(np.unique(mask).tolist()) - known)
    if unknown:
        raise ValueError(f"{path}: label values {unknown} are not in data.labels {sorted(known)}")


def _mask_path(root: Path, aug_id: str) -> Path:
    return root / aug_id / f"{aug_id}-seg.nii.gz"


def augment_source(case_dir: Path, rounds: Iterable[int], cfg: Config) -> list[dict[str, Any]]:
    """All requested rounds of one source mask; writes accepted masks; never raises on bad input."""
    case_dir = Path(case_dir)
    source_id = case_dir.name
    rounds = list(rounds)
    root = cfg.paths.augmented
    seg = case_dir / f"{source_id}-seg.nii.gz"
    try:
        mask, affine = load_mask(case_dir)
        _check_mask(mask, seg, cfg)
    except Exception as exc:  # noqa: BLE001 -- one unreadable mask must not stop the others
        reason = f"unreadable_source: {exc}" if str(seg) in str(exc) else f"unreadable_source: {seg}: {exc}"
        log.error(reason)
        return [
            AugmentResult(
                aug_id_for(source_id, r),
                source_id,
                source_id,
                r,
                False,
                1.0,
                0,
                "discarded",
                reason,
                augment_hash=augment_hash(cfg),
            ).row()
            for r in rounds
        ]
    rows = []
    for r in rounds:
        out, result = augment_mask(mask, affine, source_id, r, cfg)
        path = _mask_path(root, result.aug_id)
        if out is not None:
            write_nifti(path, out, affine, cfg.hash, np.uint8)
        elif path.exists():  # a stale accepted mask from an earlier configuration
            path.unlink()
        rows.append(result.row())
    return rows


def read_manifest(cfg: Config) -> pd.DataFrame:
    """The augmentation manifest (empty frame with the manifest columns if there is none yet)."""
    path = cfg.paths.augmented / "manifest.csv"
    if not path.is_file():
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    text_columns = ["aug_id", "source_id", "patient", "status", "reason", "augment_hash"]
    frame = pd.read_csv(path, dtype=dict.fromkeys(text_columns, str), keep_default_na=False)
    frame["flipped"] = frame["flipped"].astype(str).str.lower().isin(["true", "1"])
    return frame


def _done(row: pd.Series, current_hash: str, root: Path) -> bool:
    if row.get("augment_hash") != current_hash:
        return False
    if row["status"] == "accepted":
        return _mask_path(root, row["aug_id"]).is_file()
    return not str(row["reason"]).startswith("unreadable_source")  # retry unreadable sources


def _write_manifest(cfg: Config, rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows.values()))
    if frame.empty:
        frame = pd.DataFrame(columns=MANIFEST_COLUMNS)
    extra = sorted(c for c in frame.columns if c not in MANIFEST_COLUMNS)
    frame = frame.reindex(columns=MANIFEST_COLUMNS + extra).sort_values(["source_id", "round"])
    write_csv(cfg.paths.augmented / "manifest.csv", frame)
    return frame


def max_scale_shift(cfg: Config) -> float:
    """Largest displacement (voxels) that the scale range causes at the edge of the target grid.

    Below 0.5 voxel, nearest-neighbour scaling cannot change any voxel: the recipe then reduces to the flip.
    """
    half = max(cfg.data.target_shape) / 2
    lo, hi = cfg.augment.scale_range
    return float(half * max(abs(1 - 1 / lo), abs(1 - 1 / hi)))


def summarise(frame: pd.DataFrame, cfg: Config) -> dict[str, Any]:
    """Counts tried/accepted/discarded, reasons, and the paper's numbers beside them."""
    discarded = frame[frame["status"] != "accepted"]
    reasons = discarded["reason"].astype(str).str.split(":").str[0].value_counts().to_dict()
    tried = len(frame)
    return {
        "tried": tried,
        "accepted": int((frame["status"] == "accepted").sum()),
        "discarded": len(discarded),
        "acceptance_rate": float((frame["status"] == "accepted").mean()) if tried else float("nan"),
        "discard_reasons": {str(k): int(v) for k, v in reasons.items()},
        "sources": int(frame["source_id"].nunique()) if tried else 0,
        "flipped": int(frame["flipped"].astype(bool).sum()) if tried else 0,
        "mean_attempts": float(frame["attempts"].astype(float).mean()) if tried else float("nan"),
        "unchanged_by_resampling": int((pd.to_numeric(frame["changed_voxels"], errors="coerce") == 0).sum()),
        "max_scale_shift_voxels": max_scale_shift(cfg),
        "paper": {**PAPER_COUNTS, "acceptance_rate": PAPER_COUNTS["accepted"] / PAPER_COUNTS["tried"]},
        "provenance": provenance(cfg.hash, augment_hash=augment_hash(cfg)),
    }


def augment(cfg: Config, limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Augment every usable training mask ``cfg.augment.rounds`` times; resumable.

    Tries that are already in the manifest with the same augmentation settings (and, if accepted, whose
    mask file exists) are skipped. Rows of sources no longer in the training set are dropped.

    Args:
        cfg: run configuration.
        limit: only the first ``limit`` training masks (sorted by id).
        progress: show a tqdm bar.

    Returns:
        the summary (also written to ``<run>/metrics/augmentation_summary.json``).
    """
    sources = training_mask_dirs(cfg)
    if not sources:
        raise FileNotFoundError(
            f"no training masks under {cfg.paths.prepared / 'train'}; run `gliomagen prepare` first"
        )
    all_ids = {p.name for p in sources}
    if limit is not None:
        sources = sources[:limit]
    current = augment_hash(cfg)
    root = cfg.paths.augmented
    old = read_manifest(cfg)
    rows: dict[str, dict[str, Any]] = {
        r["aug_id"]: r.to_dict()
        for _, r in old.iterrows()
        if r["source_id"] in all_ids and _done(r, current, root)
    }
    rounds = range(1, cfg.augment.rounds + 1)
    todo = [(p, [r for r in rounds if aug_id_for(p.name, r) not in rows]) for p in sources]
    todo = [(p, rs) for p, rs in todo if rs]
    log.info(
        "augmenting %d of %d training masks (%d already done)",
        len(todo),
        len(sources),
        len(sources) - len(todo),
    )
    bar = tqdm(total=len(todo), desc="augment", unit="mask", disable=not progress)
    flush_every = max(1, len(todo) // 20)
    for done, new_rows in enumerate(_run(todo, cfg), start=1):
        rows.update({r["aug_id"]: r for r in new_rows})
        bar.update()
        if done % flush_every == 0:  # an interrupted run keeps most of its work
            _write_manifest(cfg, rows)
    bar.close()
    frame = _write_manifest(cfg, rows)
    summary = summarise(frame, cfg)
    write_json(cfg.paths.metrics / "augmentation_summary.json", summary)
    log.info(
        "augmentation: %d tried, %d accepted, %d discarded %s",
        summary["tried"],
        summary["accepted"],
        summary["discarded"],
        summary["discard_reasons"],
    )
    return summary


def _run(todo: list[tuple[Path, list[int]]], cfg: Config) -> Iterable[list[dict[str, Any]]]:
    if cfg.augment.workers <= 1 or len(todo) <= 1:
        for path, rounds in todo:
            yield augment_source(path, rounds, cfg)
        return
    with ProcessPoolExecutor(max_workers=cfg.augment.workers) as pool:
        futures = [pool.submit(augment_source, p, rs, cfg) for p, rs in todo]
        for future in futures:
            yield future.result()


def run_cli(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    """``gliomagen augment [--limit N]``."""
    summary = augment(cfg, limit=getattr(args, "limit", None))
    print(
        f"augmented masks: {summary['tried']} tried, {summary['accepted']} accepted, "
        f"{summary['discarded']} discarded {summary['discard_reasons']} -> {cfg.paths.augmented}"
    )
    return summary


# -------------------------------------------------------------------------------------------- figures
def _lesion_slice(mask: np.ndarray, tumour_values: Sequence[int], axis: int = 2) -> int:
    lesion = np.isin(mask, list(tumour_values))
    if not lesion.any():
        return mask.shape[axis] // 2
    return int(round(np.argwhere(lesion)[:, axis].mean()))


def plot_augmentation_examples(cfg: Config, aug_ids: Sequence[str] | None = None, n: int = 4) -> Any:
    """Before/after figure: source T2-FLAIR with its mask, the augmented mask, and both lesion outlines.

    Args:
        cfg: run configuration.
        aug_ids: which augmented masks (default: the first ``n`` accepted, flipped ones first).
        n: number of rows when ``aug_ids`` is not given.
    """
    import matplotlib.pyplot as plt

    from gliomagen.figures.palette import label_cmap

    frame = read_manifest(cfg)
    accepted = frame[frame["status"] == "accepted"]
    if aug_ids is None:
        aug_ids = list(accepted.sort_values("flipped", ascending=False)["aug_id"][:n])
    if not aug_ids:
        raise ValueError(f"no accepted augmented masks in {cfg.paths.augmented / 'manifest.csv'}")
    tumour = [lab.value for lab in cfg.tumour_labels]
    values = [lab.value for lab in cfg.data.labels]
    cmap, _ = label_cmap(cfg)  # the project's label colours (gliomagen/figures/palette.py)
    fig, axes = plt.subplots(len(aug_ids), 3, figsize=(9, 3 * len(aug_ids)), squeeze=False)
    by_id = frame.set_index("aug_id")
    sources = {p.name: p for p in training_mask_dirs(cfg)}
    for row_axes, aug_id in zip(axes, aug_ids, strict=True):
        info = by_id.loc[aug_id]
        src_dir = sources.get(info["source_id"], cfg.paths.prepared / "train" / info["source_id"])
        src, _ = load_mask(src_dir)
        aug = np.asarray(nib.load(str(_mask_path(cfg.paths.augmented, aug_id))).dataobj).astype(np.uint8)
        k = _lesion_slice(src, tumour)
        flair_path = src_dir / f"{src_dir.name}-t2f.nii.gz"
        flair = (
            np.asarray(nib.load(str(flair_path)).dataobj, dtype=np.float32) if flair_path.is_file() else None
        )
        ax0, ax1, ax2 = row_axes
        if flair is not None:
            ax0.imshow(flair[:, :, k].T, cmap="gray", origin="lower")
        ax0.imshow(
            np.ma.masked_where(~np.isin(src, tumour), src)[:, :, k].T,
            cmap=cmap,
            vmin=0,
            vmax=max(values),
            alpha=0.6,
            origin="lower",
            interpolation="nearest",
        )
        ax0.set_title(f"{info['source_id']}\nsource (T2-FLAIR + lesion)", fontsize=8)
        ax1.imshow(
            aug[:, :, k].T, cmap=cmap, vmin=0, vmax=max(values), origin="lower", interpolation="nearest"
        )
        ax1.set_title(f"{aug_id}\nflip={bool(info['flipped'])} scale={float(info['scale']):.3f}", fontsize=8)
        ax2.imshow((src[:, :, k] > 0).T, cmap="gray", origin="lower", alpha=0.5)
        ax2.contour(np.isin(src, tumour)[:, :, k].T, levels=[0.5], colors="cyan", linewidths=1)
        ax2.contour(np.isin(aug, tumour)[:, :, k].T, levels=[0.5], colors="red", linewidths=1)
        ax2.set_title("lesion outline: source (cyan), augmented (red)", fontsize=8)
        for ax in row_axes:
            ax.set_axis_off()
    fig.suptitle(
        f"Mask augmentation (axial slice through the source lesion; array axis {int(info['lr_axis'])} is left-right)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def plot_label_volume_changes(cfg: Config) -> Any:
    """Label volume after / before per accepted mask against the scale factor (expected about s^3)."""
    import matplotlib.pyplot as plt

    frame = read_manifest(cfg)
    accepted = frame[frame["status"] == "accepted"]
    labels = [lab.name for lab in cfg.data.labels if lab.value != 0]
    fig, ax = plt.subplots(figsize=(6, 4))
    scale = accepted["scale"].astype(float)
    for name in labels:
        before, after = accepted.get(f"voxels_{name}_source"), accepted.get(f"voxels_{name}_aug")
        if before is None or after is None:
            continue
        ok = before.astype(float) > 0
        ax.scatter(scale[ok], after[ok].astype(float) / before[ok].astype(float), s=12, label=name, alpha=0.7)
    if len(scale):
        s = np.linspace(scale.min(), scale.max(), 50)
        ax.plot(s, s**3, "k--", lw=1, label="s³ (ideal)")
    ax.set_xlabel("scale factor s")
    ax.set_ylabel("label volume after / before")
    ax.set_title("Label-volume change of accepted augmented masks")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_augmentation_parameters(cfg: Config) -> Any:
    """Drawn scale factors by outcome, attempts per try, and the discard reasons."""
    import matplotlib.pyplot as plt

    frame = read_manifest(cfg)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    lo, hi = cfg.augment.scale_range
    bins = np.linspace(lo, hi, 11) if hi > lo else 5
    for status, colour in [("accepted", "#4c72b0"), ("discarded", "#dd8452")]:
        part = frame[frame["status"] == status]
        axes[0].hist(
            part["scale"].astype(float), bins=bins, alpha=0.7, label=f"{status} ({len(part)})", color=colour
        )
    axes[0].set_xlabel("scale factor (last attempt)")
    axes[0].set_ylabel("tries")
    axes[0].legend(fontsize=7)
    attempts = frame["attempts"].astype(int)
    axes[1].hist(attempts, bins=np.arange(0.5, max(attempts.max(), 1) + 1.5), color="#55a868")
    axes[1].set_xlabel("attempts until the head was inside")
    reasons = (
        frame.loc[frame["status"] != "accepted", "reason"].astype(str).str.split(":").str[0].value_counts()
    )
    axes[2].barh(list(reasons.index) or ["none"], list(reasons.values) or [0], color="#c44e52")
    axes[2].set_xlabel("discarded tries")
    axes[2].set_title("discard reasons", fontsize=9)
    fig.suptitle(
        f"Augmentation parameters ({int(frame['flipped'].sum())} of {len(frame)} tries flipped)", fontsize=9
    )
    fig.tight_layout()
    return fig
