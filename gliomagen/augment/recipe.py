"""The paper's augmentation recipe for one mask and one round (a pure function of its inputs and the config).

Flip left-right with probability ``augment.flip_p`` (drawn once), then scale about the centre (optionally with
a rotation and an elastic deformation, one resampling) until the head is inside the volume, at most
``augment.max_retries`` attempts; discard when the head never fits or a label vanished. Optionally the lesion
is first moved inside the head. Every (source, round) draws from its own random stream,
``SeedSequence([seed, stable_int(source id), round])``, so results do not depend on order or worker count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from gliomagen.augment.transforms import (
    elastic_field,
    flip_lr,
    move_lesion,
    resample_about_centre,
    touches_border,
)
from gliomagen.cases import parse_case_id
from gliomagen.config import Config
from gliomagen.data.geometry import world_axis
from gliomagen.hashing import content_hash, stable_int

#: bump when the augmentation code changes its output, so resumed runs recompute instead of mixing versions
ALGORITHM_VERSION = 2


@dataclass
class AugmentResult:
    """The outcome of one (source, round) try: one row of the manifest."""

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


def aug_id_for(source_id: str, round_: int) -> str:
    """The id of round ``round_`` of a source mask: ``<source id>-a<round>``."""
    return f"{source_id}-a{round_}"


def augment_hash(cfg: Config) -> str:
    """Hash of everything that defines the augmented masks (the augment section and the label map)."""
    return content_hash(
        {
            "algorithm": ALGORITHM_VERSION,
            "augment": cfg.augment.model_dump(mode="json"),
            "labels": [lab.model_dump(mode="json") for lab in cfg.data.labels],
        }
    )


def label_counts(mask: np.ndarray, names: dict[int, str], suffix: str) -> dict[str, int]:
    """Voxels per non-background label, keyed ``voxels_<name>_<suffix>``."""
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
        lr_axis=world_axis(affine, "left-right"),
        elastic=a.elastic,
        augment_hash=augment_hash(cfg),
    )
    result.voxels = label_counts(mask, names, "source")
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
    result.voxels.update(label_counts(out, names, "aug"))
    if lost:
        result.reason = "label_lost: " + ", ".join(names[v] for v in lost)
        return None, result
    result.status = "accepted"
    return out, result
