"""The built-in BraTS-layout phantom: a *synthetic* dataset, not patient data.

Students and CI have no BraTS access, so the smoke profile runs on folders laid out exactly like BraTS 2024
post-treatment glioma (``BraTS-GLI-<patient>-<timepoint>/<id>-{t1n,t1c,t2w,t2f,seg}.nii.gz``):

* **Anatomy** is real: nilearn's bundled MNI152 2009 template (T1, grey- and white-matter probability
  maps; CSF = brain mask - GM - WM), warped per patient by a small random affine and a smooth random
  displacement field, sampled onto a BraTS-like LAS grid (the MNI152 182x218x182 1 mm grid, or the same
  field of view on a coarser grid).
* **Contrasts** come from per-tissue intensities: t1n WM > GM > CSF; t1c as t1n plus an enhancing rim;
  t2w CSF > GM > WM; t2f (FLAIR) with CSF suppressed and oedema bright; then a smooth bias field, Rician
  noise, skull-stripped background (0) and an integer scale per scan, as in real data.
* **Lesions** are irregular post-treatment glioma with the BraTS labels 1 NETC, 2 SNFH, 3 ET, 4 RC
  (resection cavity, fluid-like on every contrast); size, place and shape vary; some scans lack a label.
  Patients have 1..``max_timepoints`` scans sharing anatomy and lesion site; the lesion changes a little.
* ``faults=True`` appends malformed cases (see :data:`FAULTS`) that exercise validation and QC.

Everything is deterministic for a seed (each patient has its own random stream, so the result does not
depend on the number of workers).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from gliomagen.cases import case_files
from gliomagen.config import MODALITIES, Config, ConfigError, PhantomConfig
from gliomagen.data.geometry import plan_geometry, sampled_input_indices
from gliomagen.data.parallel import parallel_map
from gliomagen.io import write_json, write_nifti, write_text

log = logging.getLogger(__name__)

BRATS_GRID: tuple[int, int, int] = (182, 218, 182)
#: world (RAS mm) centre of the MNI152 182x218x182 grid; every phantom grid is centred here
GRID_CENTRE = np.array([-0.5, -17.5, 18.5])
FAULT_PATIENT_START = 90001
#: bump when the generator's output changes, so that stale phantoms are noticed (and replaced by prepare)
GENERATOR_VERSION = 1
BRAINSTEM_CUT_MM = -62.0  # world z below which the phantom has no brain
MIN_LABEL_ML = 1.0  # smaller lesion fragments are merged into a neighbouring label

#: BraTS source labels of the phantom lesions
NETC, SNFH, ET, RC = 1, 2, 3, 4

#: relative intensities: normal tissue (CSF, GM, WM) and lesion labels (NETC, SNFH, ET, RC) per modality
TISSUE = {
    "t1n": (0.25, 0.55, 0.80),
    "t1c": (0.25, 0.57, 0.80),
    "t2w": (1.00, 0.58, 0.42),
    "t2f": (0.10, 0.62, 0.48),
}
LESION = {
    "t1n": {NETC: 0.40, SNFH: 0.62, ET: 0.55, RC: 0.20},
    "t1c": {NETC: 0.42, SNFH: 0.64, ET: 1.05, RC: 0.20},
    "t2w": {NETC: 0.80, SNFH: 0.78, ET: 0.62, RC: 0.98},
    "t2f": {NETC: 0.70, SNFH: 0.95, ET: 0.72, RC: 0.16},
}

#: malformed cases added by ``faults=True``: name -> what prepare must report
FAULTS: dict[str, str] = {
    "missing_modality": "the t2w file is missing",
    "shape_mismatch": "t1c has one slice fewer than the other files",
    "affine_mismatch": "t2w has its origin shifted by 3 mm",
    "nan_values": "t2f contains NaN voxels",
    "unknown_label": "the segmentation contains the label value 7",
    "truncated_gzip": "t1n.nii.gz is cut in the middle of the gzip stream",
    "empty_segmentation": "the segmentation has no tumour label",
    "label_lost": "ET is a single voxel that resampling to the target grid skips",
    "head_touches_border": "the head is shifted against the top of the volume",
    "head_holes": "a 20 mm wide channel through the head (a skull-stripping failure)",
}


@dataclass
class PhantomSummary:
    """What :func:`make_phantom` wrote."""

    out_dir: Path
    cases: list[str]
    faults: dict[str, str] = field(default_factory=dict)
    skipped: int = 0
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------ grid
def grid_affine(shape: tuple[int, int, int], spacing: float) -> np.ndarray:
    """LAS voxel-to-world matrix like BraTS/MNI152 (x flipped), centred on the MNI152 grid centre.

    For 182x218x182 at 1 mm this is exactly the FSL MNI152 1 mm affine (origin 90, -126, -72).
    """
    aff = np.diag([-spacing, spacing, spacing, 1.0])
    half = spacing * (np.asarray(shape, float) - 1) / 2
    aff[:3, 3] = GRID_CENTRE + np.array([half[0], -half[1], -half[2]])
    return aff


@functools.lru_cache(maxsize=1)
def load_template() -> dict[str, np.ndarray]:
    """The MNI152 T1, GM, WM and brain mask bundled with nilearn (1 mm, RAS) and their affine."""
    from nilearn import datasets  # imported here: nilearn's import takes seconds

    t1 = datasets.load_mni152_template(resolution=1)
    maps = {
        "t1": t1,
        "gm": datasets.load_mni152_gm_template(resolution=1),
        "wm": datasets.load_mni152_wm_template(resolution=1),
        "brain": datasets.load_mni152_brain_mask(resolution=1),
    }
    out = {name: np.asarray(img.get_fdata(), np.float32) for name, img in maps.items()}
    out["affine"] = np.asarray(t1.affine, float)
    return out


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], spacing: float, scale_mm: float
) -> np.ndarray:
    """A smooth random field with unit standard deviation and correlation length ~``scale_mm``.

    Random values on a coarse grid (one node per ``scale_mm``) are smoothed and upsampled with a cubic
    B-spline, applied separably (one small matrix per axis): cheap at any resolution, and the same
    field of view gives the same field for the same seed whatever the voxel size.
    """
    extent = np.asarray(shape) * spacing
    coarse_shape = tuple(int(np.ceil(e / scale_mm)) + 3 for e in extent)
    coarse = ndi.gaussian_filter(rng.standard_normal(coarse_shape), 0.7, mode="wrap").astype(np.float32)
    out = coarse
    for axis, n in enumerate(shape):
        weights = _spline_matrix(coarse_shape[axis], n, spacing / scale_mm)
        out = np.moveaxis(np.tensordot(weights, out, axes=([1], [axis])), 0, axis)
    out = out.astype(np.float32)
    return (out - out.mean()) / (out.std() + 1e-8)


@functools.lru_cache(maxsize=64)
def _spline_matrix(n_coarse: int, n_fine: int, step: float) -> np.ndarray:
    """(n_fine, n_coarse) cubic-spline interpolation weights at positions ``1 + i * step``."""
    positions = (1.0 + np.arange(n_fine) * step)[None, :]
    columns = [
        ndi.map_coordinates(np.eye(n_coarse)[k], positions, order=3, mode="nearest") for k in range(n_coarse)
    ]
    return np.stack(columns, axis=1).astype(np.float32)


# -------------------------------------------------------------------------------------- anatomy
def patient_anatomy(
    rng: np.random.Generator, shape: tuple[int, int, int], affine: np.ndarray
) -> dict[str, np.ndarray]:
    """Tissue maps of one patient: the template under a random affine and smooth deformation.

    Returns float32 maps ``t1``, ``gm``, ``wm``, ``csf``, ``brain`` on the phantom grid and the world
    coordinates ``world`` (3, X, Y, Z) of its voxels.
    """
    tpl = load_template()
    spacing = float(abs(affine[0, 0]))
    ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    world = np.einsum("ij,j...->i...", affine[:3, :3].astype(np.float32), ijk) + affine[
        :3, 3, None, None, None
    ].astype(np.float32)
    # random global shape: per-axis scale, small rotation, shift
    angles = np.deg2rad(rng.uniform(-4, 4, 3))
    scale = rng.uniform(0.93, 1.07, 3)
    rot = _rotation(angles) @ np.diag(1 / scale)
    shift = rng.uniform(-3, 3, 3)
    centred = world - GRID_CENTRE[:, None, None, None].astype(np.float32)
    src = np.einsum("ij,j...->i...", rot.astype(np.float32), centred) + (GRID_CENTRE + shift)[
        :, None, None, None
    ].astype(np.float32)
    for axis in range(3):  # smooth non-linear part, ~4 mm
        src[axis] += 4.0 * smooth_field(rng, shape, spacing, 30.0)
    inv = np.linalg.inv(tpl["affine"]).astype(np.float32)
    vox = np.einsum("ij,j...->i...", inv[:3, :3], src) + inv[:3, 3, None, None, None]
    # sample the brain mask everywhere, the other maps only where there is brain (a quarter of the grid)
    maps = {"brain": ndi.map_coordinates(tpl["brain"], vox, order=1, mode="constant").astype(np.float32)}
    inside = maps["brain"] > 0
    points = vox[:, inside]
    for name in ("t1", "gm", "wm"):
        maps[name] = np.zeros(shape, np.float32)
        maps[name][inside] = ndi.map_coordinates(tpl[name], points, order=1, mode="constant")
    # skull stripping cuts the brainstem near the foramen magnum: keep the head off the bottom face
    keep = world[2] > BRAINSTEM_CUT_MM
    for name in ("t1", "gm", "wm", "brain"):
        maps[name] *= keep
    maps["csf"] = np.clip(maps["brain"] - maps["gm"] - maps["wm"], 0, 1)
    maps["world"] = world
    return maps


def _rotation(angles: np.ndarray) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


# --------------------------------------------------------------------------------------- lesion
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


# ------------------------------------------------------------------------------------- contrast
def render(
    anatomy: dict[str, np.ndarray], labels: np.ndarray, rng: np.random.Generator, spacing: float
) -> dict[str, np.ndarray]:
    """Four modalities (integer-valued float arrays) from tissue maps and the lesion labels.

    Everything is computed inside the brain's bounding box (about half the grid); outside is 0, as in
    skull-stripped BraTS volumes.
    """
    idx = np.argwhere(anatomy["brain"] > 0)
    box = tuple(slice(max(0, lo - 2), hi + 3) for lo, hi in zip(idx.min(0), idx.max(0), strict=True))
    a = {k: anatomy[k][box] for k in ("brain", "csf", "gm", "wm", "t1")}
    brain_soft = ndi.gaussian_filter(a["brain"], 0.5 / spacing)
    outside = a["brain"] <= 0.5
    soft = _soft_labels(labels[box], 0.7 / spacing)
    keep = 1 - np.clip(sum(soft.values()), 0, 1)
    # real T1 texture (template minus its tissue model) adds anatomical detail to every contrast
    t1_model = TISSUE["t1n"][0] * a["csf"] + TISSUE["t1n"][1] * a["gm"] + TISSUE["t1n"][2] * a["wm"]
    texture = np.clip(a["t1"] * 0.9 - t1_model, -0.15, 0.15)
    images = {}
    for modality in MODALITIES:
        csf, gm, wm = TISSUE[modality]
        img = csf * a["csf"] + gm * a["gm"] + wm * a["wm"]
        img += (1.0 if modality in ("t1n", "t1c") else -0.6) * texture
        img *= keep
        for k, value in LESION[modality].items():
            img += value * soft[k]
        img *= np.exp(0.1 * smooth_field(rng, img.shape, spacing, 60.0))  # bias field
        sigma = rng.uniform(0.015, 0.03)
        real = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(img.shape, dtype=np.float32)
        img = np.sqrt(real * real + imag * imag) * brain_soft  # Rician magnitude noise
        img[outside] = 0  # skull-stripped, like BraTS
        full = np.zeros(labels.shape, np.float32)
        full[box] = np.round(img * rng.uniform(600, 3000))
        images[modality] = full
    return images


def _soft_labels(labels: np.ndarray, sigma: float) -> dict[int, np.ndarray]:
    """Partial-volume (Gaussian-blurred) one-hot maps of the lesion labels, computed near the lesion only."""
    soft = {k: np.zeros(labels.shape, np.float32) for k in (NETC, SNFH, ET, RC)}
    if not labels.any():
        return soft
    idx = np.argwhere(labels > 0)
    pad = int(np.ceil(4 * sigma)) + 1
    box = tuple(slice(max(0, lo - pad), hi + pad + 1) for lo, hi in zip(idx.min(0), idx.max(0), strict=True))
    for k in soft:
        soft[k][box] = ndi.gaussian_filter((labels[box] == k).astype(np.float32), sigma)
    return soft


# --------------------------------------------------------------------------------------- writing
def case_id(patient: int, timepoint: int) -> str:
    return f"BraTS-GLI-{patient:05d}-{timepoint:03d}"


def _write_scan(
    case_dir: Path, images: dict[str, np.ndarray], labels: np.ndarray, affine: np.ndarray
) -> None:
    files = case_files(case_dir)
    for modality in MODALITIES:
        write_nifti(files[modality], images[modality], affine, dtype=np.int16)
    write_nifti(files["seg"], labels, affine, dtype=np.uint8)  # last: a folder with a seg is complete


def _patient_task(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Generate and write every timepoint of one patient (runs in a worker process)."""
    if task.get("faults"):
        return _fault_task(task)
    shape, spacing = tuple(task["shape"]), float(task["spacing"])
    affine = grid_affine(shape, spacing)  # type: ignore[arg-type]
    rng = np.random.default_rng([task["seed"], task["patient"]])
    probs = _timepoint_probs(task["max_timepoints"])
    n_tp = int(rng.choice(np.arange(1, task["max_timepoints"] + 1), p=probs))
    pending = [tp for tp in range(n_tp) if not _done(Path(task["out"]) / case_id(task["patient"], tp))]
    if not pending:
        return [{"id": case_id(task["patient"], tp), "skipped": True} for tp in range(n_tp)]
    anatomy = patient_anatomy(rng, shape, affine)  # type: ignore[arg-type]
    plan = plan_lesion(rng, anatomy)
    out: list[dict[str, Any]] = []
    for tp in range(n_tp):
        cid = case_id(task["patient"], tp)
        if tp not in pending:
            out.append({"id": cid, "skipped": True})
            continue
        tp_rng = np.random.default_rng([task["seed"], task["patient"], tp + 1])
        labels, info = lesion_labels(plan, anatomy, spacing, tp_rng)
        _write_scan(Path(task["out"]) / cid, render(anatomy, labels, tp_rng, spacing), labels, affine)
        out.append({"id": cid, "patient": f"{task['patient']:05d}", "timepoint": f"{tp:03d}",
                    "lesion": {**asdict(plan), **info}, "fault": None})  # fmt: skip
    return out


def _fault_task(task: dict[str, Any]) -> list[dict[str, Any]]:
    """One good scan, corrupted once per fault: each fault is its own patient (90001, 90002, ...)."""
    ids = [case_id(FAULT_PATIENT_START + i, 0) for i in range(len(task["faults"]))]
    if all(_done(Path(task["out"]) / cid) for cid in ids):
        return [{"id": cid, "skipped": True} for cid in ids]
    shape, spacing = tuple(task["shape"]), float(task["spacing"])
    affine = grid_affine(shape, spacing)  # type: ignore[arg-type]
    rng = np.random.default_rng([task["seed"], FAULT_PATIENT_START])
    anatomy = patient_anatomy(rng, shape, affine)  # type: ignore[arg-type]
    plan = plan_lesion(rng, anatomy)
    labels, info = lesion_labels(plan, anatomy, spacing, rng)
    images = render(anatomy, labels, rng, spacing)
    out = []
    for cid, fault in zip(ids, task["faults"], strict=True):
        bad_images, bad_labels, affines = _apply_fault(fault, dict(images), labels, affine, task)
        _write_fault(Path(task["out"]) / cid, fault, bad_images, bad_labels, affine, affines)
        out.append({"id": cid, "patient": cid.split("-")[2], "timepoint": "000",
                    "lesion": {**asdict(plan), **info}, "fault": fault})  # fmt: skip
    return out


def _timepoint_probs(max_tp: int) -> np.ndarray:
    p = 0.5 ** np.arange(max_tp)
    return p / p.sum()


def _done(case_dir: Path) -> bool:
    """A case is written once its segmentation exists (written last, also for fault cases)."""
    return case_files(case_dir)["seg"].is_file()


# ---------------------------------------------------------------------------------------- faults
def _apply_fault(
    fault: str, images: dict[str, np.ndarray], labels: np.ndarray, affine: np.ndarray, task: dict[str, Any]
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """Corrupt a good scan; returns images, labels and per-file affines to write."""
    affines = {m: affine for m in (*MODALITIES, "seg")}
    if fault == "shape_mismatch":
        images["t1c"] = images["t1c"][:, :, :-1]
    elif fault == "affine_mismatch":
        shifted = affine.copy()
        shifted[:3, 3] += 3.0
        affines["t2w"] = shifted
    elif fault == "nan_values":
        images["t2f"] = images["t2f"].copy()
        c = np.array(images["t2f"].shape) // 2
        images["t2f"][c[0] - 3 : c[0] + 3, c[1] - 3 : c[1] + 3, c[2] - 3 : c[2] + 3] = np.nan
    elif fault == "unknown_label":
        labels = labels.copy()
        labels[labels == SNFH] = 7
    elif fault == "empty_segmentation":
        labels = np.zeros_like(labels)
    elif fault == "label_lost":
        labels = _single_voxel_label(labels, tuple(task["target_shape"]), affine)
    elif fault == "head_touches_border":
        shift = int(round(40 / task["spacing"]))  # 40 mm up: the top of the head leaves the field of view
        images = {m: _shift_up(v, shift) for m, v in images.items()}
        labels = _shift_up(labels, shift)
    elif fault == "head_holes":
        images, labels = _drill_channel(images, labels, float(task["spacing"]))
    return images, labels, affines


def _single_voxel_label(
    labels: np.ndarray, target_shape: tuple[int, int, int], affine: np.ndarray
) -> np.ndarray:
    """Keep ET as one voxel that nearest-neighbour resampling to ``target_shape`` never reads."""
    out = labels.copy()
    out[out == ET] = NETC
    sampled = sampled_input_indices(plan_geometry(labels.shape, affine, target_shape))
    tumour = np.argwhere(out > 0)
    for voxel in tumour[np.argsort(np.abs(tumour - tumour.mean(0)).sum(1))]:
        if all(v not in s for v, s in zip(voxel, sampled, strict=True)):
            out[tuple(voxel)] = ET
            return out
    out[tuple(tumour[0])] = ET  # every voxel is read (upsampling): the label will survive
    return out


def _shift_up(volume: np.ndarray, shift: int) -> np.ndarray:
    out = np.zeros_like(volume)
    out[:, :, shift:] = volume[:, :, :-shift]
    return out


def _drill_channel(
    images: dict[str, np.ndarray], labels: np.ndarray, spacing: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Zero a vertical cylinder (radius 10 mm) through one hemisphere, away from the lesion."""
    shape = labels.shape
    tumour = np.argwhere(labels > 0)
    centre_x = (
        shape[0] // 4 if (len(tumour) == 0 or tumour[:, 0].mean() > shape[0] / 2) else 3 * shape[0] // 4
    )
    xx, yy = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    disk = ((xx - centre_x) ** 2 + (yy - shape[1] // 2) ** 2) * spacing**2 < 10.0**2
    images = {m: np.where(disk[:, :, None], 0, v).astype(v.dtype) for m, v in images.items()}
    labels = np.where(disk[:, :, None], 0, labels).astype(labels.dtype)
    return images, labels


def _write_fault(
    case_dir: Path,
    fault: str,
    images: dict[str, np.ndarray],
    labels: np.ndarray,
    affine: np.ndarray,
    affines: dict[str, np.ndarray],
) -> None:
    files = case_files(case_dir)
    for modality in MODALITIES:
        if fault == "missing_modality" and modality == "t2w":
            files[modality].unlink(missing_ok=True)
            continue
        dtype = np.float32 if fault == "nan_values" and modality == "t2f" else np.int16
        write_nifti(files[modality], images[modality], affines[modality], dtype=dtype)
        if fault == "truncated_gzip" and modality == "t1n":
            data = files["t1n"].read_bytes()
            files["t1n"].write_bytes(data[: len(data) // 2])
    write_nifti(files["seg"], labels, affines["seg"], dtype=np.uint8)  # last: marks the case as written


# ------------------------------------------------------------------------------------------ entry
def make_phantom(
    out_dir: str | Path,
    phantom: PhantomConfig,
    workers: int = 1,
    target_shape: tuple[int, int, int] = (192, 192, 144),
    progress: bool = True,
    replace: bool = False,
) -> PhantomSummary:
    """Write the phantom dataset into ``out_dir`` (finished cases are kept; re-running resumes).

    Args:
        out_dir: destination folder (BraTS layout).
        phantom: size, grid, seed and faults (see :class:`gliomagen.config.PhantomConfig`).
        workers: parallel worker processes (one patient per task).
        target_shape: the preparation target; only places the ``label_lost`` fault's single voxel.
        progress: show a progress bar.
        replace: replace a phantom made with other settings (or an older generator) instead of failing.

    Raises:
        FileExistsError: ``out_dir`` holds other data, or a phantom with other settings and not ``replace``.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    settings = {
        "kind": "gliomagen-phantom",
        "generator_version": GENERATOR_VERSION,
        **phantom.model_dump(mode="json"),
        "target_shape": list(target_shape),
    }
    _check_settings(out, settings, replace)
    if _complete(out, settings):
        cases = sorted(c["id"] for c in json.loads((out / "manifest.json").read_text())["cases"])
        return PhantomSummary(out, cases, skipped=len(cases), seconds=time.perf_counter() - start)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "phantom.json", settings)
    write_text(out / "README.txt", _README)
    tasks = [
        {
            "patient": p,
            "seed": phantom.seed,
            "shape": list(phantom.shape),
            "spacing": phantom.spacing,
            "max_timepoints": phantom.max_timepoints,
            "out": str(out),
            "target_shape": list(target_shape),
        }
        for p in range(1, phantom.patients + 1)
    ]
    if phantom.faults:
        tasks.insert(0, {**tasks[0], "patient": FAULT_PATIENT_START, "faults": list(FAULTS)})
    if workers > 1:
        load_template()  # load once in the parent: forked workers inherit it
    records = [
        r for rs in parallel_map(_patient_task, tasks, workers, "phantom patients", progress) for r in rs
    ]
    made = [r for r in records if not r.get("skipped")]
    if made:
        manifest_path = out / "manifest.json"
        old = json.loads(manifest_path.read_text())["cases"] if manifest_path.is_file() else []
        merged = {r["id"]: r for r in [*old, *made]}
        write_json(manifest_path, {"settings": settings, "cases": [merged[k] for k in sorted(merged)]})
    faults = {r["id"]: r["fault"] for r in made if r.get("fault")}
    summary = PhantomSummary(
        out,
        sorted(r["id"] for r in records),
        faults,
        sum(1 for r in records if r.get("skipped")),
        time.perf_counter() - start,
    )
    log.info(
        "phantom: %d scans in %s (%d already there, %d with faults) in %.1f s",
        len(summary.cases),
        out,
        summary.skipped,
        len(faults),
        summary.seconds,
    )
    return summary


def _complete(out: Path, settings: dict[str, Any]) -> bool:
    """Whether ``out`` already holds every case of a phantom with these settings."""
    manifest = out / "manifest.json"
    if not manifest.is_file():
        return False
    content = json.loads(manifest.read_text())
    expected = settings["patients"] + (len(FAULTS) if settings["faults"] else 0)
    patients = {c["patient"] for c in content["cases"]}
    return (
        content["settings"] == settings
        and len(patients) == expected
        and all(_done(out / c["id"]) for c in content["cases"])
    )


def _check_settings(out: Path, settings: dict[str, Any], replace: bool) -> None:
    """Refuse to mix phantoms; with ``replace`` an old phantom (never other data) is removed first."""
    path = out / "phantom.json"
    if not path.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise FileExistsError(
                f"{out} is not empty and holds no phantom.json: choose another --out folder"
            )
        return
    old = json.loads(path.read_text())
    if old == settings:
        return
    diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
    if not replace:
        raise FileExistsError(
            f"{out} holds a phantom made with other settings {diff} (old, new); delete it or choose another folder"
        )
    log.warning("replacing the phantom in %s (settings changed: %s)", out, diff)
    manifest = out / "manifest.json"
    listed = json.loads(manifest.read_text())["cases"] if manifest.is_file() else []
    for case in listed:  # only folders this generator wrote
        shutil.rmtree(out / case["id"], ignore_errors=True)
    for name in ("manifest.json", "phantom.json"):
        (out / name).unlink(missing_ok=True)


_README = """\
GliomaGen PHANTOM dataset -- synthetic, NOT patient data.

Laid out like BraTS 2024 post-treatment glioma (BraTS-GLI-<patient>-<timepoint>/...-{t1n,t1c,t2w,t2f,seg}.nii.gz)
so that the whole pipeline can run without BraTS access. Anatomy: nilearn's bundled MNI152 2009 template
(T1, GM, WM) under a random per-patient deformation; contrasts, lesions (labels 1 NETC, 2 SNFH, 3 ET,
4 RC), bias field and noise are simulated. Patients 90001+ (if present) are deliberately malformed cases
that exercise validation and QC; manifest.json lists what was done to each. Settings: phantom.json.
"""


def run_cli(cfg: Config, args: argparse.Namespace) -> PhantomSummary:
    """``gliomagen phantom``: options override the profile's ``data.phantom`` section."""
    base = cfg.data.phantom or PhantomConfig()
    updates: dict[str, Any] = {}
    if args.patients is not None:
        updates["patients"] = args.patients
    if args.seed is not None:
        updates["seed"] = args.seed
    if args.faults:
        updates["faults"] = True
    if args.brats_grid:
        updates.update(shape=BRATS_GRID, spacing=1.0)
    phantom = PhantomConfig.model_validate({**base.model_dump(), **updates})
    out = Path(args.out) if args.out else cfg.raw_dir
    try:
        summary = make_phantom(out, phantom, workers=cfg.data.workers, target_shape=cfg.data.target_shape)
    except FileExistsError as exc:
        raise ConfigError(str(exc)) from None
    print(f"phantom: {len(summary.cases)} scans in {summary.out_dir} ({summary.seconds:.1f} s)")
    for cid, fault in summary.faults.items():
        print(f"  fault {cid}: {fault} -- {FAULTS[fault]}")
    return summary
