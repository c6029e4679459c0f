"""Deliberately malformed phantom cases (``faults=True``) that exercise validation and QC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gliomagen.cases import case_files
from gliomagen.config import MODALITIES
from gliomagen.data.geometry import plan_geometry, sampled_input_indices
from gliomagen.data.phantom.lesion import ET, NETC, SNFH
from gliomagen.io import write_nifti

FAULT_PATIENT_START = 90001

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


def apply_fault(
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


def write_fault(
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
