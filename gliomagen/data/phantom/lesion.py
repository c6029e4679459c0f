"""The phantom's lesions: irregular post-treatment glioma with the BraTS labels (1 NETC, 2 SNFH, 3 ET, 4 RC).

A patient's lesion (:class:`LesionPlan`: site and base shape) is shared by its timepoints, each of which varies
it a little (:func:`lesion_labels`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gliomagen.data.phantom.anatomy import smooth_field

#: BraTS source labels of the phantom lesions
NETC, SNFH, ET, RC = 1, 2, 3, 4
MIN_LABEL_ML = 1.0  # smaller lesion fragments are merged into a neighbouring label


@dataclass
class LesionPlan:
    """A patient's lesion: site and base shape (mm); timepoints vary it a little."""

    centre: list[float]
    centre_voxel: list[int]
    axes: list[float]
    core_mm: float
    rim_mm: float
    oedema_mm: float
    cavity_offset: list[float]
    cavity_fraction: float
    has_cavity: bool
    seed: int


def plan_lesion(rng: np.random.Generator, anatomy: dict[str, np.ndarray]) -> LesionPlan:
    """Pick a supratentorial white-matter site off the midline and the lesion's base size."""
    world = anatomy["world"]
    ok = (anatomy["wm"] > 0.6) & (np.abs(world[0]) > 20) & (world[2] > 0) & (world[2] < 50)
    candidates = np.argwhere(ok)
    if len(candidates) == 0:
        candidates = np.argwhere(anatomy["wm"] > 0.5)
    pick = candidates[rng.integers(len(candidates))]
    centre = world[(slice(None), *pick)]
    core = float(rng.uniform(9, 20))
    return LesionPlan(
        centre=[float(c) for c in centre],
        centre_voxel=[int(i) for i in pick],
        axes=[float(a) for a in rng.uniform(0.8, 1.25, 3)],
        core_mm=core,
        rim_mm=float(rng.uniform(3.5, 6.5)),
        oedema_mm=float(core + rng.uniform(5, 16)),
        cavity_offset=[float(o) for o in rng.uniform(-0.3, 0.3, 3) * core],
        cavity_fraction=float(rng.uniform(0.55, 0.9)),
        has_cavity=bool(rng.random() < 0.7),
        seed=int(rng.integers(2**31)),
    )


@functools.lru_cache(maxsize=1)
def _base_fields(plan_json: str, shape: tuple[int, ...], spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """The patient's lesion shape noise, shared by all its timepoints (cached: same for every timepoint)."""
    base = np.random.default_rng(json.loads(plan_json)["seed"])
    return smooth_field(base, shape, spacing, 12.0), smooth_field(base, shape, spacing, 20.0)


def lesion_labels(
    plan: LesionPlan, anatomy: dict[str, np.ndarray], spacing: float, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """BraTS label map (0..4) of one timepoint and the parameters that made it."""
    box = lesion_box(plan, anatomy["brain"].shape, spacing)  # work near the lesion only (fast)
    shape = anatomy["brain"][box].shape
    wobble_base, spread = _base_fields(json.dumps(asdict(plan)), shape, spacing)
    wobble = wobble_base + 0.35 * smooth_field(rng, shape, spacing, 12.0)
    patches = smooth_field(rng, shape, spacing, 8.0)
    growth = float(rng.uniform(0.85, 1.15))
    core, rim = plan.core_mm * growth, plan.rim_mm * float(rng.uniform(0.85, 1.15))
    oedema = plan.oedema_mm * growth * float(rng.uniform(0.9, 1.1))
    has = {
        "ET": bool(rng.random() < 0.85),
        "NETC": bool(rng.random() < 0.85),
        "RC": plan.has_cavity,
    }
    if not has["NETC"]:
        has["RC"] = True  # the core is then all cavity
    d = (
        anatomy["world"][(slice(None), *box)] - np.asarray(plan.centre, np.float32)[:, None, None, None]
    ) / np.asarray(plan.axes, np.float32)[:, None, None, None]
    r = np.sqrt((d**2).sum(0)) / (1 + 0.22 * wobble)
    r_oed = np.sqrt((d**2).sum(0)) / (1 + 0.3 * spread)
    cav_d = d - np.asarray(plan.cavity_offset, np.float32)[:, None, None, None]
    r_cav = np.sqrt((cav_d**2).sum(0)) / (1 + 0.22 * wobble)
    brain = anatomy["brain"][box] > 0.5
    tissue = anatomy["wm"][box] + 0.4 * anatomy["gm"][box] > 0.35

    labels = np.zeros(shape, np.uint8)
    labels[(r_oed < oedema) & tissue & brain] = SNFH
    inner = r < core - rim
    labels[(r < core) & brain] = ET if has["ET"] else NETC
    if has["ET"]:  # an incomplete, patchy enhancing rim; the rest of the rim is non-enhancing
        labels[(r < core) & (r >= core - rim) & (patches < -0.6) & brain] = NETC
    labels[inner & brain] = NETC
    if has["RC"]:
        cavity = r_cav < (core - rim) * (plan.cavity_fraction if has["NETC"] else 1.5)
        labels[cavity & inner & brain] = RC
    _merge_small_labels(labels, MIN_LABEL_ML * 1000 / spacing**3)
    for name, value in (("ET", ET), ("NETC", NETC), ("RC", RC)):
        has[name] = bool((labels == value).any())
    full = np.zeros(anatomy["brain"].shape, np.uint8)
    full[box] = labels
    info = {
        "growth": growth,
        "core_mm": core,
        "rim_mm": rim,
        "oedema_mm": oedema,
        **{f"has_{k}": v for k, v in has.items()},
    }
    return full, info


def _merge_small_labels(labels: np.ndarray, min_voxels: float) -> None:
    """Relabel (in place) a tumour label with fewer than ``min_voxels`` voxels: RC/ET become NETC, NETC
    becomes SNFH -- tiny fragments are an artefact of the thresholded fields, not a lesion feature."""
    for value, into in ((RC, NETC), (ET, NETC), (NETC, SNFH)):
        region = labels == value
        if 0 < region.sum() < min_voxels:
            labels[region] = into


def lesion_box(plan: LesionPlan, shape: tuple[int, ...], spacing: float) -> tuple[slice, ...]:
    """Voxel box that holds the lesion at any timepoint (largest growth, shape noise up to 3 sigma)."""
    half_mm = plan.oedema_mm * 1.15 * 1.1 * max(plan.axes) * (1 + 0.3 * 3)
    half = int(np.ceil(half_mm / spacing))
    return tuple(
        slice(max(0, c - half), min(n, c + half + 1)) for c, n in zip(plan.centre_voxel, shape, strict=True)
    )
