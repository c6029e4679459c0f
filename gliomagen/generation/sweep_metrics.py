"""The sampler sweep's metrics beyond MS-SSIM: the re-segmentation Dice and a distribution distance.

**Re-segmentation Dice** (per volume). The run's real-only nnU-Net model segments each sweep volume and the
mean Dice over the tumour labels present is taken against the conditioning mask
(:func:`gliomagen.segmentation.hq.agreement_score`, the HQ scoring's rule). The value is stored in the
volume's record with the identity of the model (the content hash of its ``.pth`` files), so a rerun after
``gliomagen segment`` (notebook 06) re-segments exactly the volumes that have no Dice for the current model
and regenerates nothing; a volume regenerated since (its record rewritten) is re-segmented, its old nnU-Net
input and prediction removed first. Without a trained real-only model the column is left empty and the
reason is kept.

**Radiomics FID with its real-vs-real floor** (per sampler and NFE). The fidelity stage's design
(:mod:`gliomagen.fidelity.floor`, docs/metrics.md *Real-vs-real floor*) on the sweep's subjects: the
subjects are split into the same seeded halves A and B (:func:`gliomagen.fidelity.floor.halves_of`); the
floor is the FID of A's real slices against B's real slices, the synthetic value the FID of A's real slices
against B's *generated* slices of this grid cell, both on the ``radiomics`` extractor's features
(:mod:`gliomagen.fidelity.features`, no downloaded weights), z-scored with each comparison's pooled statistics
(:func:`gliomagen.fidelity.metrics.standardise_jointly`), per modality, then averaged over the four
modalities (the paper's mean row). Per modality the values are those of
:func:`gliomagen.fidelity.floor.floor_feature_rows` (a test holds them equal); the mean over modalities is
bootstrapped jointly with :func:`gliomagen.fidelity.metrics.bootstrap_floor` (resampling subject pairs, the
same resamples in every cell). With one subject pair (2 or 3 sweep masks, as in smoke) no interval is possible
and none is reported: the status column says so. The slices are the real volume's non-empty axial slices,
a seeded sample of ``sweep.distance_slices`` per modality when set, the same indices in each generated
volume. Features are cached next to each volume, keyed by its files, so a rerun extracts nothing new.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gliomagen.cases import Case, case_files, load_case, load_mask
from gliomagen.config import MODALITIES, Config
from gliomagen.generation.outputs import GenerationOutputs
from gliomagen.io import atomic_path, file_sha256, load_nifti, write_json

log = logging.getLogger(__name__)

Record = dict[str, Any]
Features = dict[str, np.ndarray]  # per modality, (slices, D)

#: the extractor of the sweep's distance (offline: needs no downloaded weights)
DISTANCE_EXTRACTOR = "radiomics"
#: the sweep table's columns of the distance (``rad_fid``: synthetic, ``_floor``: real-vs-real, ``_ratio``)
DISTANCE_COLUMNS = ("rad_fid", "rad_fid_floor", "rad_fid_ratio")


# ---------------------------------------------------------------------------------- re-segmentation
def real_only_configuration(cfg: Config) -> Any:
    """The segmentation configuration trained on all real data and nothing else, or ``None``."""
    return next((c for c in cfg.segment.configurations if c.synthetic == 0 and c.real_fraction == 1.0), None)


def model_identity(model_dir: Path) -> str:
    """Content hash of a trained nnU-Net model (its ``.pth`` files): Dice values of another model are redone."""
    files = sorted(model_dir.rglob("*.pth"))
    return file_sha256(files[0]) if len(files) == 1 else "|".join(file_sha256(f) for f in files)


def _uid(record: Record) -> str:
    return f"{record['sampler']}-{int(record['nfe']):04d}-{record['case_id']}"


def _blank(records: list[Record], status: str) -> str:
    """No Dice to show (values of a model that is gone are not shown either); the records on disk keep theirs."""
    for r in records:
        r["reseg_dice"] = math.nan
    return status


def fill_resegmentation(cfg: Config, out: GenerationOutputs, records: list[Record]) -> tuple[str, int]:
    """Give every per-volume record its re-segmentation Dice for the current real-only model.

    Only records without a Dice of the current model are re-segmented (one nnU-Net prediction job for all of
    them); their record files are rewritten with ``reseg_dice`` and ``reseg_model``. ``records`` are updated in
    place.

    Args:
        cfg: run configuration.
        out: the generation stage's outputs.
        records: the sweep's per-volume records (as read from their files).

    Returns:
        ``"available"`` or why the Dice is not available, and how many volumes were re-segmented now.
    """
    if not cfg.sweep.resegment:
        return _blank(records, "off (sweep.resegment)"), 0
    conf = real_only_configuration(cfg)
    if conf is None:
        return _blank(records, "not available: no real-only configuration in segment.configurations"), 0
    try:
        from gliomagen.segmentation import export, nnunet

        plan = export.plan_configuration(cfg, conf)
        if not nnunet.is_trained(cfg, plan):
            why = f"not available: the real-only nnU-Net model ({conf.name}) is not trained in this run"
            return _blank(records, why), 0
        model = model_identity(nnunet.model_dir(cfg, plan))
        todo = [r for r in records if r.get("reseg_model") != model]
        if todo:
            _resegment(cfg, out, plan, todo, model)
        for r in records:  # a record of a failed score keeps None on disk; NaN in the table
            r["reseg_dice"] = math.nan if r.get("reseg_dice") is None else float(r["reseg_dice"])
        return "available", len(todo)
    except Exception as exc:  # noqa: BLE001 -- the sweep's other metrics stand without it; the reason is kept
        log.error("re-segmentation Dice not available: %s", exc)
        return _blank(records, f"not available: {type(exc).__name__}: {exc}"), 0


def _resegment(cfg: Config, out: GenerationOutputs, plan: Any, todo: list[Record], model: str) -> None:
    """Predict the ``todo`` volumes with the real-only model, score them and rewrite their records."""
    from gliomagen.segmentation import export, nnunet
    from gliomagen.segmentation.hq import agreement_score

    inputs, preds = out.sweep_resegmentation / "input", out.sweep_resegmentation / "pred"
    inputs.mkdir(parents=True, exist_ok=True)
    dirs = {_uid(r): out.sweep_volume_dir(r["sampler"], int(r["nfe"]), r["case_id"]) for r in todo}
    for uid in dirs:  # an input or prediction of an earlier volume under this name is stale
        for stale in [*inputs.glob(f"{uid}_*{export.FILE_ENDING}"), preds / f"{uid}{export.FILE_ENDING}"]:
            stale.unlink(missing_ok=True)
    skipped = export.export_images(dirs, inputs)
    if skipped:
        raise ValueError(f"could not export sweep volumes for nnU-Net: {skipped}")
    # its own job name: the segmentation stage's job file and timing record of this model stay untouched
    nnunet.run_job(
        cfg, {**nnunet.make_job(cfg, plan, [(inputs, preds)], train=False), "name": f"{plan.name}_sweep"}
    )
    lut = export.inverse_label_lut(cfg)
    for r in todo:
        uid = _uid(r)
        pred = lut[np.asarray(load_nifti(preds / f"{uid}{export.FILE_ENDING}").dataobj).astype(np.uint8)]
        score = agreement_score(load_mask(dirs[uid])[0], pred, cfg)["score"]
        r["reseg_dice"] = float(score) if np.isfinite(score) else None
        r["reseg_model"] = model
        write_json(out.sweep_record(r["sampler"], int(r["nfe"]), r["case_id"]), r)


# ------------------------------------------------------------------------------------------ distance
def distance_selection(cfg: Config, real: Case) -> dict[str, np.ndarray]:
    """Per modality, the axial slice indices of the distance: the real volume's non-empty slices (the
    corrected metrics' rule), a seeded sample of ``sweep.distance_slices`` when set."""
    from gliomagen.fidelity import metrics as M
    from gliomagen.fidelity.subjects import frd_selection
    from gliomagen.hashing import stable_seed

    fc = cfg.fidelity
    axis = M.axial_axis(real.affine)
    out = {}
    for c, modality in enumerate(MODALITIES):
        slices = M.axial_slices(np.clip(real.image[c], 0, 1), axis)
        keep = (
            M.nonempty_slices(slices, fc.empty_threshold)
            if fc.exclude_empty_slices
            else np.ones(len(slices), bool)
        )
        seed = stable_seed(fc.seed, "sampler-sweep", real.case_id, modality)
        out[modality] = frd_selection(keep, cfg.sweep.distance_slices, seed)
    return out


def cached_features(
    path: Path, folder: Path, selection: dict[str, np.ndarray], extractor: Any, volume: Case | None = None
) -> Features:
    """The extractor's features of the selected axial slices of the volume in ``folder`` (per modality),
    reused from ``path`` while the volume's files, the selection and the extractor are unchanged."""
    from gliomagen.fidelity import metrics as M
    from gliomagen.fidelity.pairs import fingerprint

    files = case_files(folder)
    picked = ";".join(f"{m}:{','.join(map(str, selection[m]))}" for m in MODALITIES)
    key = fingerprint(
        [files[m] for m in MODALITIES], extra=f"{extractor.name}|{extractor.description}|{picked}"
    )
    if path.is_file():
        with np.load(path) as cached:
            if str(cached["key"]) == key:
                return {m: cached[m] for m in MODALITIES}
    volume = volume or load_case(folder, with_seg=False)
    axis = M.axial_axis(volume.affine)
    feats = {
        m: extractor.extract(
            M.axial_slices(np.clip(volume.image[c], 0, 1), axis)[selection[m]], progress=False
        )
        for c, m in enumerate(MODALITIES)
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        np.savez(tmp, key=np.asarray(key), **feats)
    return feats


def _subjects(real: list[Features], fake: list[Features]) -> list[Any]:
    """The fidelity stage's per-subject records holding only the features (every selected slice kept)."""
    from gliomagen.fidelity.subjects import SubjectResult

    return [
        SubjectResult(
            f"subject-{k}",
            nonempty={m: np.ones(len(r[m]), bool) for m in MODALITIES},
            features={DISTANCE_EXTRACTOR: {m: (r[m], f[m]) for m in MODALITIES}},
        )
        for k, (r, f) in enumerate(zip(real, fake, strict=True))
    ]


def floor_statistic(
    cfg: Config, subjects: list[Any], halves: tuple[np.ndarray, np.ndarray]
) -> Callable[[np.ndarray], tuple[float, float]]:
    """The joint bootstrap statistic: resampled subject pairs -> (floor, synthetic) FID, mean over modalities.

    Per modality the same comparison as :func:`gliomagen.fidelity.floor.floor_feature_rows` (standardised
    extractor): each comparison z-scored once with its own pooled statistics, then the resampled subjects'
    slices compared.
    """
    from gliomagen.fidelity import metrics as M
    from gliomagen.fidelity import rows as R

    a, b = halves
    parts = []
    for modality in MODALITIES:
        masks = [R.kept_slices(cfg, s, modality) for s in subjects]
        real_a, _, owner_a = R.gather(
            [subjects[i] for i in a], DISTANCE_EXTRACTOR, modality, [masks[i] for i in a]
        )
        real_b, fake_b, owner_b = R.gather(
            [subjects[i] for i in b], DISTANCE_EXTRACTOR, modality, [masks[i] for i in b]
        )
        ref_floor, real_b, _ = M.standardise_jointly(real_a, real_b)
        ref_syn, fake_b, _ = M.standardise_jointly(real_a, fake_b)
        parts.append(
            (
                ref_floor,
                real_b,
                ref_syn,
                fake_b,
                R.by_subjects(owner_a, len(a)),
                R.by_subjects(owner_b, len(b)),
            )
        )

    def statistic(idx: np.ndarray) -> tuple[float, float]:
        floors, synthetic = [], []
        for ref_floor, rb, ref_syn, fb, groups_a, groups_b in parts:
            ia, ib = R.resampled(groups_a, idx), R.resampled(groups_b, idx)
            if len(ia) < 2 or len(ib) < 2:
                return float("nan"), float("nan")
            floors.append(M.fid(ref_floor[ia], rb[ib]))
            synthetic.append(M.fid(ref_syn[ia], fb[ib]))
        return float(np.mean(floors)), float(np.mean(synthetic))

    return statistic


def cell_distance(cfg: Config, real: list[Features], fake: list[Features]) -> dict[str, Any]:
    """Radiomics FID of one grid cell (synthetic), its real-vs-real floor and their ratio, with intervals
    over subject pairs when there are at least 2 pairs (``NaN`` otherwise; ``distance`` says why).

    Args:
        cfg: run configuration (``fidelity.seed``, ``bootstrap``, ``confidence``).
        real: per subject (sorted by id), the real volume's features per modality.
        fake: per subject, the cell's generated volume's features of the same slices.
    """
    from gliomagen.fidelity import metrics as M
    from gliomagen.fidelity import rows as R
    from gliomagen.fidelity.floor import halves_of

    fc = cfg.fidelity
    subjects = _subjects(real, fake)
    halves = halves_of(cfg, len(subjects))
    n_pairs = len(halves[0])
    if n_pairs < 1:
        return {"distance": "not available: needs at least 2 sweep subjects", "distance_pairs": 0}
    n_boot = fc.bootstrap if n_pairs >= 2 else 0
    boot = M.bootstrap_floor(
        floor_statistic(cfg, subjects, halves),
        n_pairs,
        n_boot,
        R.seed(cfg, "sampler-sweep", DISTANCE_EXTRACTOR, "FID", R.FLOOR),  # one seed: same resamples per cell
        fc.confidence,
    )
    row: dict[str, Any] = {"distance_pairs": n_pairs}
    for col, b in zip(DISTANCE_COLUMNS, (boot.synthetic, boot.floor, boot.ratio), strict=True):
        row.update({col: b.estimate, f"{col}_low": b.low, f"{col}_high": b.high})
    if n_boot:
        row["distance"] = f"ok: {n_pairs} subject pairs, {fc.confidence:.0%} bootstrap CI over pairs"
    else:
        why = (
            "the bootstrap over subject pairs needs >= 2 pairs, i.e. >= 4 sweep masks"
            if n_pairs < 2
            else ("fidelity.bootstrap = 0")
        )
        row["distance"] = f"ok: {n_pairs} subject pair{'s' if n_pairs > 1 else ''}; no CI ({why})"
    return row


def sweep_distances(
    cfg: Config,
    out: GenerationOutputs,
    cells: list[tuple[str, int]],
    cases: list[Case],
    real_dirs: list[Path],
) -> tuple[dict[tuple[str, int], dict[str, Any]], str]:
    """Per grid cell the columns of :func:`cell_distance`, and ``"available"`` or why not.

    Args:
        cfg: run configuration.
        out: the generation stage's outputs.
        cells: the ``(sampler, nfe)`` grid cells (all volumes generated).
        cases: the sweep's real validation cases (sorted by id).
        real_dirs: their folders, in the same order.
    """
    from gliomagen.fidelity.features import build_extractor

    try:
        extractor = build_extractor(DISTANCE_EXTRACTOR, workers=cfg.runtime.workers)
    except ImportError as exc:
        log.warning("sweep distance not available: %s", exc)
        return {}, f"not available: {exc}"
    try:
        selections = {c.case_id: distance_selection(cfg, c) for c in cases}
        real = [
            cached_features(out.sweep_real_features(c.case_id), d, selections[c.case_id], extractor, c)
            for c, d in zip(cases, real_dirs, strict=True)
        ]
        result = {}
        for name, nfe in cells:
            fake = [
                cached_features(
                    out.sweep_features(name, nfe, c.case_id),
                    out.sweep_volume_dir(name, nfe, c.case_id),
                    selections[c.case_id],
                    extractor,
                )
                for c in cases
            ]
            result[(name, nfe)] = cell_distance(cfg, real, fake)
        return result, "available"
    except Exception as exc:  # noqa: BLE001 -- the sweep's other metrics stand without it; the reason is kept
        log.error("sweep distance failed: %s", exc)
        return {}, f"failed: {type(exc).__name__}: {exc}"
