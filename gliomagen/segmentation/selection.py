"""Which cases each training-data configuration trains on (patient-level, leak-guarded).

Rules (the fixes listed in docs/flaws.md):
- real cases are chosen by **patient** (all timepoints of a patient together), seeded;
- synthetic volumes come only from ``<run>/synthetic/train/`` and a guard refuses any whose source mask,
  or whose patient, belongs to the validation split (:func:`assert_no_validation_leak`);
- the ``all`` pool is taken in augmentation-round order (round 1 first: the paper's "1062 synthetic" is one
  round of augmented masks), the ``hq`` pool in the order of the measured score (see ``hq.py``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gliomagen.augment.outputs import AugmentationOutputs
from gliomagen.cases import is_complete, patient_of
from gliomagen.config import Config, SegConfiguration
from gliomagen.data.outputs import PrepareOutputs, read_cases_table, usable_cases
from gliomagen.generation.outputs import GenerationOutputs

log = logging.getLogger(__name__)


class ValidationLeakError(RuntimeError):
    """A training case (real or synthetic) comes from a validation case or a validation patient."""


class ExportError(RuntimeError):
    """The inputs needed to build a dataset are missing or inconsistent."""


def real_case_dirs(cfg: Config, split: str) -> list[Path]:
    """Usable prepared case folders of a split, sorted by id (the data stage's own rule)."""
    return list(usable_cases(cfg, split))


def case_patients(cfg: Config, case_ids: list[str]) -> dict[str, str]:
    """Patient of each real case, from ``cases.csv`` when it has a ``patient`` column, else from the id."""
    known: dict[str, str] = {}
    if PrepareOutputs(cfg.paths).cases_csv.is_file():
        table = read_cases_table(cfg)
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
    aug = AugmentationOutputs(cfg.paths).manifest
    if aug.is_file():
        table = pd.read_csv(aug, dtype=str)
        if {"aug_id", "source_id"} <= set(table.columns):
            declared.update(zip(table["aug_id"], table["source_id"], strict=True))
    syn = GenerationOutputs(cfg.paths).manifest
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
        synthetic_dirs={
            str(r.id): Path(str(r.path)) for r in pool.itertuples() if r.id in set(synthetic_ids)
        },
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
    if PrepareOutputs(cfg.paths).cases_csv.is_file():
        table = read_cases_table(cfg)
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
        source_id = str(row.source_id)
        source_patient = patients.get(source_id, patient_of(source_id))
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
