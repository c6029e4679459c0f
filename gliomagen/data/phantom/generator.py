"""Writing the phantom dataset (:func:`make_phantom`): one task per patient, resumable, under a lock."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gliomagen.cases import case_files
from gliomagen.config import MODALITIES, PhantomConfig
from gliomagen.data.parallel import parallel_map
from gliomagen.data.phantom.anatomy import grid_affine, load_template, patient_anatomy
from gliomagen.data.phantom.contrast import render
from gliomagen.data.phantom.faults import FAULT_PATIENT_START, FAULTS, apply_fault, write_fault
from gliomagen.data.phantom.lesion import lesion_labels, plan_lesion
from gliomagen.io import write_json, write_nifti, write_text
from gliomagen.locks import run_lock

log = logging.getLogger(__name__)

#: bump when the generator's output changes, so that stale phantoms are noticed (and replaced by prepare)
GENERATOR_VERSION = 1
#: files of the phantom folder beside the case folders: its settings, what was made, a note for people
SETTINGS = "phantom.json"
MANIFEST = "manifest.json"
README = "README.txt"


@dataclass(frozen=True)
class PhantomSummary:
    """What :func:`make_phantom` wrote.

    Args:
        out_dir: the dataset folder.
        cases: every case id of the phantom (sorted).
        faults: case id -> fault name of the malformed cases written now.
        skipped: cases that were already there.
        seconds: wall time.
    """

    out_dir: Path
    cases: list[str]
    faults: dict[str, str] = field(default_factory=dict)
    skipped: int = 0
    seconds: float = 0.0


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
    affine = grid_affine(shape, spacing)
    rng = np.random.default_rng([task["seed"], task["patient"]])
    probs = _timepoint_probs(task["max_timepoints"])
    n_tp = int(rng.choice(np.arange(1, task["max_timepoints"] + 1), p=probs))
    pending = [tp for tp in range(n_tp) if not _done(Path(task["out"]) / case_id(task["patient"], tp))]
    if not pending:
        return [{"id": case_id(task["patient"], tp), "skipped": True} for tp in range(n_tp)]
    anatomy = patient_anatomy(rng, shape, affine)
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
    affine = grid_affine(shape, spacing)
    rng = np.random.default_rng([task["seed"], FAULT_PATIENT_START])
    anatomy = patient_anatomy(rng, shape, affine)
    plan = plan_lesion(rng, anatomy)
    labels, info = lesion_labels(plan, anatomy, spacing, rng)
    images = render(anatomy, labels, rng, spacing)
    out = []
    for cid, fault in zip(ids, task["faults"], strict=True):
        bad_images, bad_labels, affines = apply_fault(fault, dict(images), labels, affine, task)
        write_fault(Path(task["out"]) / cid, fault, bad_images, bad_labels, affine, affines)
        out.append({"id": cid, "patient": cid.split("-")[2], "timepoint": "000",
                    "lesion": {**asdict(plan), **info}, "fault": fault})  # fmt: skip
    return out


def _timepoint_probs(max_tp: int) -> np.ndarray:
    p = 0.5 ** np.arange(max_tp)
    probs: np.ndarray = p / p.sum()
    return probs


def _done(case_dir: Path) -> bool:
    """A case is written once its segmentation exists (written last, also for fault cases)."""
    return case_files(case_dir)["seg"].is_file()


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
        gliomagen.locks.LockHeld: another process is writing this phantom.
    """
    start = time.perf_counter()
    out = Path(out_dir)
    # the lock lives beside the dataset folder (the run folder for <run>/raw), never inside it
    out.parent.mkdir(parents=True, exist_ok=True)
    with run_lock(out.parent, f"phantom-{out.name}", clean=[out]):
        return _make_phantom_locked(out, phantom, workers, target_shape, progress, replace, start)


def _make_phantom_locked(
    out: Path,
    phantom: PhantomConfig,
    workers: int,
    target_shape: tuple[int, int, int],
    progress: bool,
    replace: bool,
    start: float,
) -> PhantomSummary:
    settings = {
        "kind": "gliomagen-phantom",
        "generator_version": GENERATOR_VERSION,
        **phantom.model_dump(mode="json"),
        "target_shape": list(target_shape),
    }
    _check_settings(out, settings, replace)
    if _complete(out, settings):
        cases = sorted(c["id"] for c in json.loads((out / MANIFEST).read_text())["cases"])
        return PhantomSummary(out, cases, skipped=len(cases), seconds=time.perf_counter() - start)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / SETTINGS, settings)
    write_text(out / README, _README)
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
        manifest_path = out / MANIFEST
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


def is_phantom(folder: Path) -> bool:
    """Whether ``folder`` holds a phantom written by :func:`make_phantom` (never user data)."""
    return (Path(folder) / SETTINGS).is_file()


def _complete(out: Path, settings: dict[str, Any]) -> bool:
    """Whether ``out`` already holds every case of a phantom with these settings."""
    manifest = out / MANIFEST
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
    path = out / SETTINGS
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
    manifest = out / MANIFEST
    listed = json.loads(manifest.read_text())["cases"] if manifest.is_file() else []
    for case in listed:  # only folders this generator wrote
        shutil.rmtree(out / case["id"], ignore_errors=True)
    for name in (MANIFEST, SETTINGS):
        (out / name).unlink(missing_ok=True)


_README = """\
GliomaGen PHANTOM dataset -- synthetic, NOT patient data.

Laid out like BraTS 2024 post-treatment glioma (BraTS-GLI-<patient>-<timepoint>/...-{t1n,t1c,t2w,t2f,seg}.nii.gz)
so that the whole pipeline can run without BraTS access. Anatomy: nilearn's bundled MNI152 2009 template
(T1, GM, WM) under a random per-patient deformation; contrasts, lesions (labels 1 NETC, 2 SNFH, 3 ET,
4 RC), bias field and noise are simulated. Patients 90001+ (if present) are deliberately malformed cases
that exercise validation and QC; manifest.json lists what was done to each. Settings: phantom.json.
"""
