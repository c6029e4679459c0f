"""Real-vs-real rows of the results table: the floor every corrected metric is read against.

The evaluated validation subjects are shuffled (seeded) and split into two halves A and B; pair k is
(A_k, B_k). Paired metrics compare A_k's real volume with B_k's; distribution metrics compare the real
slices of A with those of B. The *synthetic_matched* value replaces B's real data by its generated
counterpart (for paired metrics: the mean of A_k's and B_k's own synthetic-vs-real values), and
``ratio = synthetic_matched / real-vs-real``; the intervals of all three come from one bootstrap that
resamples subject pairs (``variant = "real-vs-real"``; docs/metrics.md, *Real-vs-real floor*).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from gliomagen.cases import load_case
from gliomagen.config import MODALITIES, Config
from gliomagen.fidelity import metrics as M
from gliomagen.fidelity import rows as R
from gliomagen.fidelity.features import FeatureExtractor
from gliomagen.fidelity.pairs import Pair
from gliomagen.fidelity.rows import FLOOR, Row
from gliomagen.fidelity.subjects import SubjectResult, structural
from gliomagen.fidelity.synthetic import VOLUME_METRICS
from gliomagen.runtime import resolve_device

log = logging.getLogger(__name__)

FLOOR_RATIO_NOTE = {
    "FRD": "ratio of the squared distances d^2 (FRD is log d^2)",
}
_FLOOR_WHY = (
    "real subjects of one seeded half vs those of the other (pair k: subject a_k vs b_k); synthetic_matched "
    "replaces the second half's real volumes by their generated counterparts; ratio = synthetic_matched / "
    "real-vs-real; CIs from resampling subject pairs jointly"
)

Halves = tuple[np.ndarray, np.ndarray]


def split_halves(n: int, seed: int) -> Halves:
    """Two disjoint halves of ``n`` subjects after a seeded shuffle; pair ``k`` is ``(a[k], b[k])``.

    With an odd ``n`` one subject sits out (it has no partner).
    """
    perm = np.random.default_rng(seed).permutation(n)
    half = n // 2
    return perm[:half], perm[half : 2 * half]


def halves_of(cfg: Config, n: int) -> Halves:
    """The run's real-vs-real halves of ``n`` evaluated subjects (seeded by ``fidelity.seed``)."""
    return split_halves(n, R.seed(cfg, FLOOR, "halves"))


def evaluate_floor_pair(cfg: Config, reference: Pair, other: Pair) -> SubjectResult:
    """The structural metrics of two *real* subjects: ``reference``'s real volume vs ``other``'s.

    Raises:
        ValueError: the two real volumes are on different grids (real-vs-real needs one grid).
    """
    a, b = load_case(reference.real_dir, with_seg=False), load_case(other.real_dir, with_seg=False)
    if a.image.shape != b.image.shape:
        raise ValueError(
            f"{other.real_dir}: shape {a.image.shape[1:]} differs from {reference.real_dir}'s "
            f"{b.image.shape[1:]}; real-vs-real needs one grid"
        )
    axis = M.axial_axis(a.affine)
    res = SubjectResult(f"{reference.case_id}|{other.case_id}", axis, tuple(a.image.shape[1:]))
    structural(cfg, np.clip(a.image, 0, 1), np.clip(b.image, 0, 1), axis, res)
    return res


def _floor_row(
    modality: str,
    metric: str,
    extractor: str,
    boot: M.FloorBootstrap,
    n_pairs: int,
    definition: str,
    **extra: Any,
) -> Row:
    r = R.row(
        modality,
        metric,
        FLOOR,
        extractor,
        value=boot.floor.estimate,
        spread=boot.floor.se if boot.floor.replicates else None,
        spread_kind="bootstrap SE over subject pairs",
        n_subjects=2 * n_pairs,
        n_pairs=n_pairs,
        synthetic_matched=boot.synthetic.estimate,
        ratio=boot.ratio.estimate,
        definition=definition,
        **extra,
    )
    if boot.floor.replicates:
        r.update(ci_low=boot.floor.low, ci_high=boot.floor.high)
    if boot.synthetic.replicates:
        r.update(synthetic_matched_ci_low=boot.synthetic.low, synthetic_matched_ci_high=boot.synthetic.high)
    r["ratio_replicates"] = boot.ratio.replicates  # resamples with a positive floor (KID can be <= 0)
    if boot.ratio.replicates:
        r.update(ratio_ci_low=boot.ratio.low, ratio_ci_high=boot.ratio.high)
    return r


def _means_of(floor: np.ndarray, synthetic: np.ndarray) -> Callable[[np.ndarray], tuple[float, float]]:
    """The joint bootstrap statistic: the means over the resampled pairs of both arrays."""
    return lambda idx: (R.nanmean(floor[idx]), R.nanmean(synthetic[idx]))


def floor_structural_rows(
    cfg: Config,
    subjects: list[SubjectResult],
    floor_pairs: list[SubjectResult],
    halves: Halves,
    modality: str,
) -> list[Row]:
    """Real-vs-real 2D MS-SSIM and 3D metrics of one modality, with the synthetic values of the same subjects.

    A pair's real-vs-real value compares ``a_k``'s real volume with ``b_k``'s; its synthetic value is the
    mean of the two subjects' own synthetic-vs-real values (the paired metrics need no matched design).
    """
    fc = cfg.fidelity
    a, b = halves
    n_pairs = len(floor_pairs)
    rows = []
    synthetic = R.subject_ms_ssim(cfg, subjects, modality)
    floor = R.subject_ms_ssim(cfg, floor_pairs, modality)  # slices kept: non-empty in the reference a_k
    matched = np.asarray([R.nanmean(synthetic[[i, j]]) for i, j in zip(a, b, strict=True)])
    values = {"MS-SSIM 2D": (floor, matched)}
    for key, metric in VOLUME_METRICS:
        per = np.asarray([s.volume_metrics[modality][key] for s in subjects], np.float64)
        per = np.where(np.isfinite(per), per, np.nan)
        fl = np.asarray([p.volume_metrics[modality][key] for p in floor_pairs], np.float64)
        values[metric] = (
            np.where(np.isfinite(fl), fl, np.nan),
            np.asarray([R.nanmean(per[[i, j]]) for i, j in zip(a, b, strict=True)]),
        )
    for metric, (fl, syn) in values.items():
        boot = M.bootstrap_floor(
            _means_of(fl, syn),
            n_pairs,
            fc.bootstrap,
            R.seed(cfg, modality, metric, FLOOR),
            fc.confidence,
        )
        what = "non-empty axial slices of the reference" if metric == "MS-SSIM 2D" else "whole volume"
        rows.append(_floor_row(modality, metric, "", boot, n_pairs, f"{what}; {_FLOOR_WHY}"))
    return rows


def floor_feature_rows(
    cfg: Config,
    subjects: list[SubjectResult],
    halves: Halves,
    modality: str,
    extractor: FeatureExtractor,
) -> list[Row]:
    """Real-vs-real FID and KID of one extractor and modality (corrected definitions), and the matched
    synthetic value: first half's real slices vs the second half's generated slices."""
    fc = cfg.fidelity
    device = str(resolve_device(cfg.runtime.device))
    name = extractor.name
    a, b = halves
    masks = [R.kept_slices(cfg, s, modality) for s in subjects]
    real_a, _, owner_a = R.gather([subjects[i] for i in a], name, modality, [masks[i] for i in a])
    real_b, fake_b, owner_b = R.gather([subjects[i] for i in b], name, modality, [masks[i] for i in b])
    note = ""
    ref_floor, ref_syn = real_a, real_a
    if extractor.standardise:  # each comparison z-scored with its own pooled statistics, as in feature_rows
        ref_floor, real_b, _ = M.standardise_jointly(real_a, real_b)
        ref_syn, fake_b, kept = M.standardise_jointly(real_a, fake_b)
        note = f"; features z-scored with the pooled statistics of each comparison ({kept} kept)"
    groups_a, groups_b = R.by_subjects(owner_a, len(a)), R.by_subjects(owner_b, len(b))
    size = min(fc.kid_subset_size, len(real_a), len(real_b))
    kid_seed = R.seed(cfg, modality, name, "kid", FLOOR)

    def take(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return R.resampled(groups_a, idx), R.resampled(groups_b, idx)

    def fid_stat(idx: np.ndarray) -> tuple[float, float]:
        ia, ib = take(idx)
        if len(ia) < 2 or len(ib) < 2:
            return float("nan"), float("nan")
        if ref_floor is ref_syn:  # unstandardised features: one reference, its covariance root once
            floor, synthetic = M.fid_against(ref_floor[ia], [real_b[ib], fake_b[ib]], device)
            return floor, synthetic
        return M.fid(ref_floor[ia], real_b[ib], device), M.fid(ref_syn[ia], fake_b[ib], device)

    def kid_stat(idx: np.ndarray) -> tuple[float, float]:
        ia, ib = take(idx)
        if len(ia) < 2 or len(ib) < 2:
            return float("nan"), float("nan")
        return (
            float(M.kid_subsets(ref_floor[ia], real_b[ib], fc.kid_subsets, size, kid_seed, device).mean()),
            float(M.kid_subsets(ref_syn[ia], fake_b[ib], fc.kid_subsets, size, kid_seed, device).mean()),
        )

    what = "non-empty axial slices" if fc.exclude_empty_slices else "every axial slice"
    rows = []
    for metric, stat in (("FID", fid_stat), ("KID", kid_stat)):
        boot = M.bootstrap_floor(
            stat, len(a), fc.bootstrap, R.seed(cfg, modality, name, metric, FLOOR), fc.confidence
        )
        extra = f"; {fc.kid_subsets} seeded subsets of {size}" if metric == "KID" else ""
        rows.append(
            _floor_row(
                modality,
                metric,
                name,
                boot,
                len(a),
                f"{what}{extra}; {_FLOOR_WHY}{note}",
                n_slices=len(real_a),
            )
        )
    return rows


def floor_frd_row(cfg: Config, subjects: list[SubjectResult], halves: Halves, modality: str) -> Row:
    """Real-vs-real FRD of one modality (the FRD slices of the first half vs the second half's real and
    generated ones, standardised alike). One value each, no interval: frd-score extracts features per call."""
    from gliomagen.fidelity.frd import frechet_radiomics_distances

    a, b = halves
    real_a = np.concatenate([subjects[i].frd_slices[modality][0] for i in a])
    real_b = np.concatenate([subjects[i].frd_slices[modality][0] for i in b])
    fake_b = np.concatenate([subjects[i].frd_slices[modality][1] for i in b])
    # one frd-score call: both distances in the first half's standardised feature space
    floor, synthetic = frechet_radiomics_distances(real_a, [real_b, fake_b], workers=cfg.runtime.workers)
    return R.row(
        modality,
        "FRD",
        FLOOR,
        R.FRD_EXTRACTOR,
        value=floor.frd,
        n_subjects=2 * len(a),
        n_pairs=len(a),
        n_slices=floor.n_real,
        frd_d2=floor.d2,
        synthetic_matched=synthetic.frd,
        synthetic_matched_d2=synthetic.d2,
        ratio=M.floor_ratio(synthetic.d2, floor.d2),
        definition=f"FRD v1 of the FRD slices; {_FLOOR_WHY.split('; CIs')[0]}; {FLOOR_RATIO_NOTE['FRD']}; "
        "no interval (frd-score extracts its features anew for every call)",
    )


def floor_rows(
    cfg: Config,
    subjects: list[SubjectResult],
    pairs: list[Pair],
    extractors: dict[str, FeatureExtractor],
    progress: bool,
) -> list[Row]:
    """Every real-vs-real row (all modalities, metrics and extractors), or one status row per metric."""
    by_id = {p.case_id: p for p in pairs}
    halves = halves_of(cfg, len(subjects))
    metrics = [("MS-SSIM 2D", ""), *((metric, "") for _, metric in VOLUME_METRICS)]
    metrics += [(m, e) for e in extractors for m in ("FID", "KID")]
    if len(halves[0]) == 0:
        state = "not available: needs at least 2 evaluated validation subjects"
        return [R.row(mod, m, FLOOR, e, status=state) for mod in MODALITIES for m, e in metrics]
    try:
        floor_pairs = [
            evaluate_floor_pair(cfg, by_id[subjects[i].case_id], by_id[subjects[j].case_id])
            for i, j in tqdm(
                list(zip(*halves, strict=True)),
                desc="real-vs-real",
                unit="pair",
                disable=not progress,
                leave=False,
            )
        ]
    except (ValueError, OSError) as exc:
        log.error("real-vs-real floor not computed: %s", exc)
        return [R.row(mod, m, FLOOR, e, status=f"failed: {exc}") for mod in MODALITIES for m, e in metrics]
    rows: list[Row] = []
    for modality in MODALITIES:
        rows += floor_structural_rows(cfg, subjects, floor_pairs, halves, modality)
        for extractor in extractors.values():
            rows += floor_feature_rows(cfg, subjects, halves, modality, extractor)
        if cfg.fidelity.frd:
            rows.append(R.guarded(partial(floor_frd_row, cfg, subjects, halves, modality), modality, FLOOR))
    return rows
