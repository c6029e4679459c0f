"""nnU-Net v2 raw datasets for the training-data configurations (real, synthetic and mixes).

Layout written per configuration (``<run>/nnunet/raw/Dataset<id>_GG_<name>/``)::

    imagesTr/<case>_0000.nii.gz .. <case>_0003.nii.gz   channels in MODALITIES order: t1n, t1c, t2w, t2f
    labelsTr/<case>.nii.gz                              labels in nnU-Net values (see nnunet_labels)
    imagesTs/<val case>_000k.nii.gz                     the real validation scans (evaluation only)
    labelsTs/<val case>.nii.gz                          their ground truth, same label values
    dataset.json                                        written by nnunetv2's generate_dataset_json
    gliomagen_export.json                               what was exported (written last: completion marker)

Which cases a configuration holds is decided in :mod:`gliomagen.segmentation.selection`.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from gliomagen.cases import case_files, patient_of
from gliomagen.config import MODALITIES, Config
from gliomagen.io import atomic_path, load_nifti, read_json, write_json, write_nifti
from gliomagen.segmentation.selection import (
    DatasetPlan,
    ExportError,
    ValidationLeakError,
    assert_no_validation_leak,
    case_patients,
    plan_configuration,
    real_case_dirs,
    select_real,
    select_synthetic,
    synthetic_pool,
)

log = logging.getLogger(__name__)

#: the case selection is re-exported under its import path before the split (``selection`` is its home)
__all__ = [
    "DatasetPlan",
    "EXPORT_MARKER",
    "ExportError",
    "FILE_ENDING",
    "ValidationLeakError",
    "assert_no_validation_leak",
    "case_patients",
    "dataset_dir",
    "export_dataset",
    "export_images",
    "inverse_label_lut",
    "label_lut",
    "nnunet_labels",
    "patient_of",
    "plan_configuration",
    "real_case_dirs",
    "select_real",
    "select_synthetic",
    "synthetic_pool",
]

FILE_ENDING = ".nii.gz"
EXPORT_MARKER = "gliomagen_export.json"


# --------------------------------------------------------------------------------------------- labels
def nnunet_labels(cfg: Config) -> dict[str, int]:
    """Label name -> consecutive nnU-Net value (nnU-Net requires 0..K-1).

    With ``segment.include_head`` (the paper) every prepared label is kept; without it the non-tumour
    foreground labels (the head) become background and the tumour labels move down to stay consecutive.
    """
    kept = [lab for lab in sorted(cfg.data.labels, key=lambda lab: lab.value)]
    if not cfg.segment.include_head:
        kept = [lab for lab in kept if lab.value == 0 or lab.tumour]
    return {lab.name: i for i, lab in enumerate(kept)}


def label_lut(cfg: Config) -> np.ndarray:
    """Lookup table prepared value -> nnU-Net value (256 entries; dropped labels map to 0)."""
    lut = np.zeros(256, dtype=np.uint8)
    mapping = nnunet_labels(cfg)
    for lab in cfg.data.labels:
        lut[lab.value] = mapping.get(lab.name, 0)
    return lut


def inverse_label_lut(cfg: Config) -> np.ndarray:
    """Lookup table nnU-Net value -> prepared value (for reading predictions back)."""
    lut = np.zeros(256, dtype=np.uint8)
    by_name = {lab.name: lab.value for lab in cfg.data.labels}
    for name, value in nnunet_labels(cfg).items():
        lut[value] = by_name[name]
    return lut


# ------------------------------------------------------------------------------------------------ write
def dataset_dir(cfg: Config, plan: DatasetPlan) -> Path:
    return cfg.paths.nnunet / "raw" / plan.dataset_name


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no extra disk for thousands of volumes), copying across filesystems."""
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def _write_case(
    case_dir: Path, case_id: str, images: Path, labels: Path | None, lut: np.ndarray, cfg_hash: str
) -> None:
    files = case_files(case_dir)
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise ExportError(f"{case_dir}: missing {', '.join(missing)}")
    for channel, modality in enumerate(MODALITIES):
        _link_or_copy(files[modality], images / f"{case_id}_{channel:04d}{FILE_ENDING}")
    if labels is None:
        return
    img = load_nifti(files["seg"])
    mask = np.asarray(img.dataobj)
    if not np.issubdtype(mask.dtype, np.integer) and not np.all(np.equal(np.mod(mask, 1), 0)):
        raise ExportError(f"{files['seg']}: mask has non-integer values")
    values = np.unique(mask).astype(int)
    if values.min() < 0 or values.max() > 255:
        raise ExportError(f"{files['seg']}: label values {values.tolist()} outside 0..255")
    write_nifti(
        labels / f"{case_id}{FILE_ENDING}", lut[mask.astype(np.uint8)], img.affine, cfg_hash, np.uint8
    )


def export_dataset(cfg: Config, plan: DatasetPlan) -> bool:
    """Write the nnU-Net raw dataset of ``plan`` into :func:`dataset_dir` (skipped when an identical export
    is complete).

    A case that cannot be read is reported and left out; the others still export.

    Returns:
        ``True`` when the dataset was (re)written, ``False`` when the existing export was kept.
    """
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    out = dataset_dir(cfg, plan)
    val_dirs = real_case_dirs(cfg, "val")
    record = {
        **plan.summary(),
        "val_ids": [d.name for d in val_dirs],
        "labels": nnunet_labels(cfg),
        "channels": list(MODALITIES),
    }
    marker = out / EXPORT_MARKER
    if marker.is_file():
        old = read_json(marker)
        if {k: old.get(k) for k in record} == record:
            log.info("%s: export up to date, skipped", plan.dataset_name)
            return False
        log.info("%s: export changed, rewriting", plan.dataset_name)
        shutil.rmtree(out)
    lut = label_lut(cfg)
    skipped: dict[str, str] = {}
    jobs = [(i, plan.real_dirs[i], "Tr") for i in plan.real_ids]
    jobs += [(i, plan.synthetic_dirs[i], "Tr") for i in plan.synthetic_ids]
    jobs += [(d.name, d, "Ts") for d in val_dirs]
    for case_id, case_dir, part in jobs:
        try:
            _write_case(case_dir, case_id, out / f"images{part}", out / f"labels{part}", lut, cfg.hash)
        except (ExportError, OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
            log.error("%s: case %s left out: %s", plan.dataset_name, case_id, exc)
            skipped[case_id] = str(exc)
    n_train = len(plan.training_ids) - len([i for i in skipped if i in set(plan.training_ids)])
    if n_train == 0:
        raise ExportError(f"{plan.dataset_name}: no training case could be exported: {skipped}")
    generate_dataset_json(
        str(out),
        channel_names={str(i): m for i, m in enumerate(MODALITIES)},
        labels=nnunet_labels(cfg),
        num_training_cases=n_train,
        file_ending=FILE_ENDING,
        dataset_name=plan.dataset_name,
        description=f"GliomaGen configuration {plan.name}: {len(plan.real_ids)} real + "
        f"{len(plan.synthetic_ids)} synthetic scans (config {cfg.hash})",
        reference="GliomaGen reproducible artifact",
        license="BraTS 2024 data terms (real data); phantom/synthetic otherwise",
    )
    write_json(marker, {**record, "skipped": skipped, "config_hash": cfg.hash})
    return True


def export_images(case_dirs: dict[str, Path], out: Path) -> dict[str, str]:
    """Write ``<out>/<case>_000k.nii.gz`` for cases to be predicted (e.g. the synthetic pool for HQ scoring).

    Returns:
        case id -> error for the cases that could not be written (the others are written).
    """
    lut = np.arange(256, dtype=np.uint8)
    skipped: dict[str, str] = {}
    for case_id, case_dir in case_dirs.items():
        if all((out / f"{case_id}_{k:04d}{FILE_ENDING}").is_file() for k in range(len(MODALITIES))):
            continue
        try:
            _write_case(case_dir, case_id, out, None, lut, "")
        except (ExportError, OSError) as exc:
            log.error("%s: left out of %s: %s", case_id, out, exc)
            skipped[case_id] = str(exc)
    return skipped
