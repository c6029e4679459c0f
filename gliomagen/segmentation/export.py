"""nnU-Net v2 raw datasets for the training-data configurations (real, synthetic and mixes).

Layout written per configuration (``<run>/nnunet/raw/Dataset<id>_GG_<name>/``)::

    imagesTr/<case>_0000.nii.gz .. <case>_0003.nii.gz   channels in MODALITIES order: t1n, t1c, t2w, t2f
    labelsTr/<case>.nii.gz                              labels in nnU-Net values (see nnunet_labels)
    imagesTs/<val case>_000k.nii.gz                     the real validation scans (evaluation only)
    labelsTs/<val case>.nii.gz                          their ground truth, same label values
    dataset.json                                        written by nnunetv2's generate_dataset_json
    gliomagen_export.json                               what was exported (written last: completion marker)

Rules (the fixes listed in docs/flaws.md):
- real cases are chosen by **patient** (all timepoints of a patient together), seeded;
- synthetic volumes come only from ``<run>/synthetic/train/`` and a guard refuses any whose source mask,
  or whose patient, belongs to the validation split (:func:`assert_no_validation_leak`);
- the ``all`` pool is taken in augmentation-round order (round 1 first: the paper's "1062 synthetic" is one
  round of augmented masks), the ``hq`` pool in the order of the measured score (see ``hq.py``).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from gliomagen.cases import case_files, is_complete, parse_case_id
from gliomagen.config import MODALITIES, Config, SegConfiguration
from gliomagen.io import atomic_path, read_json, write_json, write_nifti

log = logging.getLogger(__name__)

FILE_ENDING = ".nii.gz"
EXPORT_MARKER = "gliomagen_export.json"


class ValidationLeakError(RuntimeError):
    """A training case (real or synthetic) comes from a validation case or a validation patient."""


class ExportError(RuntimeError):
    """The inputs needed to build a dataset are missing or inconsistent."""


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


# ---------------------------------------------------------------------------------------------- inputs
def patient_of(case_id: str) -> str:
    """Patient id of a real case (``BraTS-GLI-00012-001`` -> ``00012``); other ids are their own patient."""
    try:
        return parse_case_id(case_id)[0]
    except ValueError:
        return case_id


def real_case_dirs(cfg: Config, split: str) -> list[Path]:
    """Usable prepared case folders of a split, sorted by id.

    Uses ``gliomagen.data.prepare.usable_cases`` (the data stage's own rule); if that stage is not
    importable, falls back to ``cases.csv`` (split and ``qc_status != invalid``) or the folder listing.
    """
    try:
        from gliomagen.data.prepare import usable_cases
    except ImportError:
        return _fallback_case_dirs(cfg, split)
    return list(usable_cases(cfg, split))


def _fallback_case_dirs(cfg: Config, split: str) -> list[Path]:
    root = cfg.paths.prepared / split
    if cfg.paths.cases_csv.is_file():
        table = pd.read_csv(cfg.paths.cases_csv, dtype=str)
        rows = table[table["split"] == split]
        if "qc_status" in rows:
            rows = rows[rows["qc_status"] != "invalid"]
        dirs = [root / i for i in rows["id"]]
    else:
        dirs = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    return sorted((d for d in dirs if is_complete(d)), key=lambda d: d.name)


def case_patients(cfg: Config, case_ids: list[str]) -> dict[str, str]:
    """Patient of each real case, from ``cases.csv`` when it has a ``patient`` column, else from the id."""
    known: dict[str, str] = {}
    if cfg.paths.cases_csv.is_file():
        table = pd.read_csv(cfg.paths.cases_csv, dtype=str)
        if {"id", "patient"} <= set(table.columns):
            known = dict(zip(table["id"], table["patient"], strict=True))
    return {c: known.get(c, patient_of(c)) for c in case_ids}


def _source_from_aug_id(aug_id: str) -> tuple[str, int]:
    """``BraTS-GLI-00012-001-a2`` -> (``BraTS-GLI-00012-001``, 2)."""
    stem, sep, rnd = aug_id.rpartition("-a")
    if not sep or not rnd.isdigit():
        raise ExportError(
            f"synthetic id {aug_id!r} does not end in -a<round> (expected <source id>-a<round>)"
        )
    return stem, int(rnd)


def synthetic_pool(cfg: Config) -> pd.DataFrame:
    """Every complete synthetic *training* volume with its source mask, patient and augmentation round.

    Only ``<run>/synthetic/train/`` is read: volumes generated from validation masks live in
    ``synthetic/val/`` and are never a training candidate. The source is taken from the synthetic manifest
    or the augmentation manifest when they name it, and must agree with the id (``<source>-a<round>``).

    Returns:
        DataFrame with columns ``id, source_id, patient, round, path`` sorted by (round, id).
    """
    root = cfg.paths.synthetic / "train"
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and is_complete(p)) if root.is_dir() else []
    declared = _declared_sources(cfg)
    rows = []
    for d in dirs:
        source, rnd = _source_from_aug_id(d.name)
        if d.name in declared and declared[d.name] != source:
            raise ExportError(
                f"{d}: manifest says source mask {declared[d.name]!r}, the id says {source!r}; "
                "refusing to guess which validation guard applies"
            )
        rows.append(
            {"id": d.name, "source_id": source, "patient": patient_of(source), "round": rnd, "path": d}
        )
    frame = pd.DataFrame(rows, columns=["id", "source_id", "patient", "round", "path"])
    return frame.sort_values(["round", "id"], kind="stable").reset_index(drop=True)


def _declared_sources(cfg: Config) -> dict[str, str]:
    """id -> source mask id as written by the generation and augmentation manifests (when present)."""
    declared: dict[str, str] = {}
    aug = cfg.paths.augmented / "manifest.csv"
    if aug.is_file():
        table = pd.read_csv(aug, dtype=str)
        if {"aug_id", "source_id"} <= set(table.columns):
            declared.update(zip(table["aug_id"], table["source_id"], strict=True))
    syn = cfg.paths.synthetic / "manifest.csv"
    if syn.is_file():
        table = pd.read_csv(syn, dtype=str)
        source_col = next(
            (c for c in ("source_id", "source_mask_id", "mask_id", "source") if c in table), None
        )
        if "id" in table and source_col is not None:
            rows = table if "split" not in table else table[table["split"] == "train"]
            declared.update(zip(rows["id"], rows[source_col], strict=True))
    return declared


# ------------------------------------------------------------------------------------------- selection
def select_real(case_ids: list[str], patients: dict[str, str], fraction: float, seed: int) -> list[str]:
    """Whole patients in a seeded order until at least ``round(fraction * n)`` scans are chosen.

    Args:
        case_ids: the real training scans.
        patients: case id -> patient id.
        fraction: share of scans wanted (0 = none, 1 = all).
        seed: shuffles the patient order.
    """
    if fraction >= 1.0:
        return sorted(case_ids)
    target = round(fraction * len(case_ids))
    by_patient: dict[str, list[str]] = {}
    for c in sorted(case_ids):
        by_patient.setdefault(patients[c], []).append(c)
    order = sorted(by_patient)
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for idx in rng.permutation(len(order)):
        if len(chosen) >= target:
            break
        chosen.extend(by_patient[order[idx]])
    return sorted(chosen)


def select_synthetic(ordered_ids: list[str], n: int, label: str) -> list[str]:
    """The first ``n`` of an ordered pool; warns (and takes all) when the pool is smaller."""
    if n > len(ordered_ids):
        log.warning(
            "%s: %d synthetic volumes requested, only %d available; using all", label, n, len(ordered_ids)
        )
    return list(ordered_ids[:n])


# -------------------------------------------------------------------------------------------------- plan
@dataclass
class DatasetPlan:
    """What one configuration trains on.

    Args:
        name: configuration name.
        dataset_id: nnU-Net dataset id.
        real_ids: real training scans.
        synthetic_ids: synthetic training volumes.
        requested_synthetic: how many the profile asked for.
        real_dirs / synthetic_dirs: where the cases are (not serialised).
    """

    name: str
    dataset_id: int
    real_ids: list[str]
    synthetic_ids: list[str]
    requested_synthetic: int
    real_dirs: dict[str, Path] = field(default_factory=dict, repr=False)
    synthetic_dirs: dict[str, Path] = field(default_factory=dict, repr=False)

    @property
    def dataset_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_GG_{self.name}"

    @property
    def training_ids(self) -> list[str]:
        return [*self.real_ids, *self.synthetic_ids]

    def summary(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("real_dirs")
        d.pop("synthetic_dirs")
        d.update(
            dataset_name=self.dataset_name, n_real=len(self.real_ids), n_synthetic=len(self.synthetic_ids)
        )
        return d


def dataset_id_of(cfg: Config, name: str) -> int:
    names = [c.name for c in cfg.segment.configurations]
    if name not in names:
        raise ExportError(f"no segmentation configuration named {name!r}; known: {names}")
    return cfg.segment.dataset_id_start + names.index(name)


def plan_configuration(
    cfg: Config,
    conf: SegConfiguration,
    hq_ranking: list[str] | None = None,
) -> DatasetPlan:
    """Choose the real and synthetic training cases of one configuration.

    Args:
        cfg: run configuration.
        conf: the configuration (data mix).
        hq_ranking: synthetic ids best first (required when ``conf.synthetic_pool == "hq"``).

    Raises:
        ExportError: an input is missing (e.g. the HQ ranking has not been computed yet).
        ValidationLeakError: a chosen case is derived from validation data.
    """
    train_dirs = {d.name: d for d in real_case_dirs(cfg, "train")}
    patients = case_patients(cfg, list(train_dirs))
    real_ids = select_real(list(train_dirs), patients, conf.real_fraction, cfg.segment.seed)
    synthetic_ids: list[str] = []
    pool = synthetic_pool(cfg) if conf.synthetic > 0 else pd.DataFrame(columns=["id", "path"])
    if conf.synthetic > 0:
        if conf.synthetic_pool == "hq":
            if hq_ranking is None:
                raise ExportError(
                    f"configuration {conf.name!r} needs the high-quality ranking; run the real-only "
                    "configuration and the HQ scoring first (gliomagen segment runs them in order)"
                )
            available = set(pool["id"])
            ordered = [i for i in hq_ranking[: cfg.segment.hq_count] if i in available]
        else:
            ordered = list(pool["id"])
        synthetic_ids = select_synthetic(ordered, conf.synthetic, conf.name)
    plan = DatasetPlan(
        name=conf.name,
        dataset_id=dataset_id_of(cfg, conf.name),
        real_ids=real_ids,
        synthetic_ids=synthetic_ids,
        requested_synthetic=conf.synthetic,
        real_dirs={i: train_dirs[i] for i in real_ids},
        synthetic_dirs={r.id: Path(r.path) for r in pool.itertuples() if r.id in set(synthetic_ids)},
    )
    if not plan.training_ids:
        raise ExportError(
            f"configuration {conf.name!r} has no training cases (no prepared or synthetic data?)"
        )
    check_plan(cfg, plan, pool)
    return plan


def check_plan(cfg: Config, plan: DatasetPlan, pool: pd.DataFrame) -> None:
    """Run the validation-leak guard for a plan against the run's validation split."""
    val_ids = [d.name for d in real_case_dirs(cfg, "val")]
    if cfg.paths.cases_csv.is_file():
        table = pd.read_csv(cfg.paths.cases_csv, dtype=str)
        val_ids = sorted(set(val_ids) | set(table.loc[table["split"] == "val", "id"]))
    chosen = pool[pool["id"].isin(plan.synthetic_ids)] if len(pool) else pool
    assert_no_validation_leak(
        real_ids=plan.real_ids,
        synthetic=chosen,
        val_ids=val_ids,
        patients=case_patients(cfg, [*plan.real_ids, *val_ids]),
    )


def assert_no_validation_leak(
    real_ids: list[str],
    synthetic: pd.DataFrame,
    val_ids: list[str],
    patients: dict[str, str],
) -> None:
    """Refuse training data that is, or is derived from, a validation scan or a validation patient.

    Args:
        real_ids: real training scans.
        synthetic: chosen synthetic volumes (columns ``id``, ``source_id``).
        val_ids: the validation scans.
        patients: case id -> patient for real and validation scans.

    Raises:
        ValidationLeakError: naming every offending case.
    """
    val_set = set(val_ids)
    val_patients = {patients.get(v, patient_of(v)) for v in val_ids}
    problems = [f"real scan {r} is a validation scan" for r in real_ids if r in val_set]
    problems += [
        f"real scan {r} belongs to validation patient {patients.get(r, patient_of(r))}"
        for r in real_ids
        if r not in val_set and patients.get(r, patient_of(r)) in val_patients
    ]
    for row in synthetic.itertuples():
        source_patient = patients.get(row.source_id, patient_of(row.source_id))
        if row.id in val_set or row.source_id in val_set:
            problems.append(f"synthetic volume {row.id} was generated from validation mask {row.source_id}")
        elif source_patient in val_patients:
            problems.append(f"synthetic volume {row.id} comes from validation patient {source_patient}")
    if problems:
        raise ValidationLeakError(
            "validation data would enter nnU-Net training:\n  - "
            + "\n  - ".join(problems[:20])
            + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        )


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
    img = nib.load(str(files["seg"]))
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
        except (ExportError, OSError, nib.filebasedimages.ImageFileError) as exc:
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
