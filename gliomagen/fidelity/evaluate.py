"""The fidelity stage (``gliomagen fidelity``): real validation volumes vs the volumes generated from their masks.

For every validation case with a generated counterpart, per modality:

* MS-SSIM the paper's way (2D, every axial slice, window 11, data range 1; mean ± SD over slices) and
  corrected (empty slices excluded, mean over subjects with a subject-bootstrap interval); 3D MS-SSIM,
  SSIM and PSNR per subject.
* FID and KID on slice features from each configured extractor: the paper's definition, as the original
  computed it (every slice; FID "±" = ``np.std`` of paired per-slice feature distances; KID over 10
  disjoint subsets of one seeded permutation, "±" = their ``np.std``) and corrected (empty slices excluded,
  95% interval from resampling subjects, seeded KID subsets of up to ``kid_subset_size``).
* The Fréchet Radiomics Distance (``frd-score``), which needs no downloaded weights.
* The real-vs-real floor of every corrected metric (``fidelity.real_floor``): two seeded halves of the
  real validation subjects against each other, the same subjects' synthetic value and the ratio, with
  intervals from resampling subject pairs (``variant = "real-vs-real"``).

Definitions and the reasons for each difference: ``docs/metrics.md``.

Outputs (``<run>/metrics/``): ``fidelity.json`` (long table of results + settings + provenance),
``fidelity_per_subject.csv`` and ``fidelity_per_slice.csv``. Features are cached per case in
``metrics/fidelity_features/``; a finished evaluation with the same config and inputs is not recomputed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from gliomagen.bootstrap import Bootstrap, bootstrap_subjects
from gliomagen.cases import case_files, is_complete, load_case
from gliomagen.config import MODALITIES, Config
from gliomagen.fidelity import metrics as M
from gliomagen.fidelity.features import FeatureExtractor, WeightsMissingError, build_extractor, resolve_device
from gliomagen.io import provenance, read_json, write_csv, write_json

log = logging.getLogger(__name__)

PAPER_FID_PM = "np.std (ddof 0) of the paired per-slice feature distances (the paper's FID '±'; not an uncertainty of FID)"
PAPER_KID_PM = "np.std (ddof 0) over the disjoint KID subsets (the paper's KID '±')"


# ----------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Pair:
    """A real validation case and the volume generated from its mask."""

    case_id: str
    real_dir: Path
    fake_dir: Path


def _real_val_dirs(cfg: Config) -> list[Path]:
    try:
        from gliomagen.data.prepare import usable_cases

        if cfg.paths.cases_csv.is_file():
            return usable_cases(cfg, "val")
    except ImportError:
        pass
    root = cfg.paths.prepared / "val"
    return sorted(d for d in root.iterdir() if d.is_dir() and is_complete(d)) if root.is_dir() else []


def find_pairs(cfg: Config) -> tuple[list[Pair], list[dict[str, str]]]:
    """Validation cases with a complete generated counterpart, and the ones skipped (with the reason)."""
    real_dirs = _real_val_dirs(cfg)
    if not real_dirs:
        raise FileNotFoundError(
            f"no prepared validation cases in {cfg.paths.prepared / 'val'}: run `gliomagen prepare` first"
        )
    pairs, skipped = [], []
    for real in real_dirs:
        fake = cfg.paths.synthetic / "val" / real.name
        if is_complete(fake, with_seg=False):
            pairs.append(Pair(real.name, real, fake))
        else:
            skipped.append({"id": real.name, "reason": f"no complete generated volume in {fake}"})
    if not pairs:
        raise FileNotFoundError(
            f"none of the {len(real_dirs)} validation cases has a generated volume in "
            f"{cfg.paths.synthetic / 'val'}: run `gliomagen generate --which val` first"
        )
    return pairs, skipped


def _fingerprint(paths: list[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _pair_files(pair: Pair) -> list[Path]:
    real, fake = case_files(pair.real_dir), case_files(pair.fake_dir)
    return [real[m] for m in MODALITIES] + [fake[m] for m in MODALITIES]


def inputs_fingerprint(pairs: list[Pair]) -> str:
    """Changes whenever a real or generated image file of any pair changes."""
    return _fingerprint([f for pair in pairs for f in _pair_files(pair)])


# ------------------------------------------------------------------------------------------ per subject
@dataclass
class SubjectResult:
    """Everything computed from one pair, per modality."""

    case_id: str
    axis: int = 2
    volume_shape: tuple[int, ...] = ()
    ms_ssim_slices: dict[str, np.ndarray] = field(default_factory=dict)
    nonempty: dict[str, np.ndarray] = field(default_factory=dict)
    volume_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    features: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    frd_slices: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def load_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray, int]:
    """Real and generated images ``(4, X, Y, Z)`` and the axial voxel axis; checks they match.

    Raises:
        ValueError: naming the file and the problem (shape, affine, non-finite values).
    """
    real = load_case(pair.real_dir, with_seg=False)
    fake = load_case(pair.fake_dir, with_seg=False)
    if real.image.shape != fake.image.shape:
        raise ValueError(
            f"{pair.fake_dir}: generated shape {fake.image.shape[1:]} differs from the real {real.image.shape[1:]}"
        )
    if not np.allclose(real.affine, fake.affine, atol=1e-3):
        raise ValueError(f"{pair.fake_dir}: affine differs from the real case's (not the mask's geometry)")
    for case, where in ((real, pair.real_dir), (fake, pair.fake_dir)):
        if not np.isfinite(case.image).all():
            raise ValueError(f"{where}: image holds NaN or infinite values")
    # values outside [0, 1] (generated data) are clipped: every metric assumes data range 1
    return np.clip(real.image, 0, 1), np.clip(fake.image, 0, 1), M.axial_axis(real.affine)


def _frd_selection(nonempty: np.ndarray, quota: int | None, seed: int) -> np.ndarray:
    idx = np.flatnonzero(nonempty)
    if quota is None or len(idx) <= quota:
        return idx
    return np.sort(np.random.default_rng(seed).choice(idx, quota, replace=False))


def evaluate_subject(
    cfg: Config,
    pair: Pair,
    extractors: dict[str, FeatureExtractor],
    index: int,
    frd_quota: int | None,
    cache_dir: Path,
) -> SubjectResult:
    """Structural metrics, slice features and FRD slices of one pair."""
    fc = cfg.fidelity
    real, fake, axis = load_pair(pair)
    res = SubjectResult(pair.case_id, axis, tuple(real.shape[1:]))
    _structural(cfg, real, fake, axis, res)
    for c, modality in enumerate(MODALITIES if fc.frd else ()):
        sel = _frd_selection(res.nonempty[modality], frd_quota, fc.seed + index)
        res.frd_slices[modality] = (M.axial_slices(real[c], axis)[sel], M.axial_slices(fake[c], axis)[sel])
    for name, extractor in extractors.items():
        res.features[name] = _cached_features(pair, extractor, real, fake, axis, cache_dir)
    return res


def _structural(cfg: Config, reference: np.ndarray, other: np.ndarray, axis: int, res: SubjectResult) -> None:
    """Per-slice 2D MS-SSIM, the reference's non-empty slices and the 3D metrics of every modality."""
    fc = cfg.fidelity
    for c, modality in enumerate(MODALITIES):
        rs, fs = M.axial_slices(reference[c], axis), M.axial_slices(other[c], axis)
        res.ms_ssim_slices[modality] = M.ms_ssim(rs, fs, 2, 1.0, fc.ms_ssim_kernel, fc.ms_ssim_scales)[0]
        res.nonempty[modality] = M.nonempty_slices(rs, fc.empty_threshold)
        res.volume_metrics[modality] = {
            "ms_ssim_3d": float(
                M.ms_ssim(reference[c][None], other[c][None], 3, 1.0, fc.ms_ssim_kernel)[0][0]
            ),
            "ssim_3d": M.ssim(reference[c], other[c], 1.0, fc.ms_ssim_kernel),
            "psnr_db": M.psnr(reference[c], other[c], 1.0),
        }


def _cached_features(
    pair: Pair,
    extractor: FeatureExtractor,
    real: np.ndarray,
    fake: np.ndarray,
    axis: int,
    cache_dir: Path,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Slice features of all four modalities of one pair, reusing ``<cache>/<extractor>/<id>.npz``."""
    key = _fingerprint(
        _pair_files(pair), extra=f"{extractor.name}|{extractor.description}|{extractor.identity}"
    )
    path = cache_dir / extractor.name / f"{pair.case_id}.npz"
    if path.is_file():
        with np.load(path) as cached:
            if str(cached["key"]) == key:
                return {m: (cached[f"{m}_real"], cached[f"{m}_fake"]) for m in MODALITIES}
    out = {}
    for c, modality in enumerate(MODALITIES):
        stacked = np.concatenate([M.axial_slices(real[c], axis), M.axial_slices(fake[c], axis)])
        feats = extractor.extract(stacked, progress=False)
        n = real.shape[1 + axis]
        out[modality] = (feats[:n], feats[n:])
    arrays = {f"{m}_{k}": v for m, (r, f) in out.items() for k, v in (("real", r), ("fake", f))}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial.npz")
    np.savez(tmp, key=np.asarray(key), **arrays)
    tmp.replace(path)
    return out


# -------------------------------------------------------------------------------------------- aggregate
def _seed(cfg: Config, *labels: str) -> int:
    return cfg.fidelity.seed + zlib.crc32("|".join(labels).encode()) % 100_000


def _row(modality: str, metric: str, variant: str, extractor: str = "", **values: Any) -> dict[str, Any]:
    base = {
        "modality": modality,
        "metric": metric,
        "variant": variant,
        "extractor": extractor,
        "value": None,
        "spread": None,
        "spread_kind": "",
        "ci_low": None,
        "ci_high": None,
        "n_subjects": None,
        "n_slices": None,
        "status": "ok",
        "definition": "",
    }
    base.update(values)
    return base


def _with_ci(row: dict[str, Any], boot: Bootstrap) -> dict[str, Any]:
    if boot.replicates:
        row.update(ci_low=boot.low, ci_high=boot.high)
    return row


def _nanmean(values: np.ndarray) -> float:
    """Mean of the finite entries; ``nan`` (without a warning) when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _kept_slices(cfg: Config, s: SubjectResult, modality: str) -> np.ndarray:
    """The slices the corrected metrics use: the reference's non-empty ones (or all)."""
    return s.nonempty[modality] if cfg.fidelity.exclude_empty_slices else np.ones_like(s.nonempty[modality])


def _subject_ms_ssim(cfg: Config, subjects: list[SubjectResult], modality: str) -> np.ndarray:
    """Corrected 2D MS-SSIM per subject: the mean over its kept slices (NaN when none is kept)."""
    out = []
    for s in subjects:
        k = _kept_slices(cfg, s, modality)
        out.append(s.ms_ssim_slices[modality][k].mean() if k.any() else np.nan)
    return np.asarray(out, np.float64)


def structural_rows(cfg: Config, subjects: list[SubjectResult], modality: str) -> list[dict[str, Any]]:
    """MS-SSIM (paper and corrected), 3D MS-SSIM, SSIM and PSNR rows for one modality."""
    fc = cfg.fidelity
    n = len(subjects)
    all_slices = np.concatenate([s.ms_ssim_slices[modality] for s in subjects])
    paper_mean, paper_sd = M.mean_sd(all_slices, ddof=0)  # the original printed np.std (ddof 0)
    rows = [
        _row(
            modality,
            "MS-SSIM 2D",
            "paper",
            value=paper_mean,
            spread=paper_sd,
            spread_kind="SD over slices (ddof 0)",
            n_subjects=n,
            n_slices=int(all_slices.size),
            definition="every axial slice (empty ones included), mean ± np.std over slices",
        )
    ]
    keep = [_kept_slices(cfg, s, modality) for s in subjects]
    per_subject = _subject_ms_ssim(cfg, subjects, modality)
    boot = bootstrap_subjects(
        lambda idx: float(_nanmean(per_subject[idx])),
        n,
        fc.bootstrap,
        _seed(cfg, modality, "msssim"),
        fc.confidence,
    )
    rows.append(
        _with_ci(
            _row(
                modality,
                "MS-SSIM 2D",
                "corrected",
                value=boot.estimate,
                spread=M.mean_sd(per_subject)[1],
                spread_kind="SD over subjects",
                n_subjects=n,
                n_slices=int(sum(k.sum() for k in keep)),
                definition="non-empty axial slices; mean over subjects of the per-subject mean; subject bootstrap CI"
                if fc.exclude_empty_slices
                else "every axial slice; mean over subjects; subject bootstrap CI",
            ),
            boot,
        )
    )
    for key, metric in (("ms_ssim_3d", "MS-SSIM 3D"), ("ssim_3d", "SSIM 3D"), ("psnr_db", "PSNR 3D (dB)")):
        values = np.asarray([s.volume_metrics[modality][key] for s in subjects], np.float64)
        finite = np.where(np.isfinite(values), values, np.nan)
        boot = bootstrap_subjects(
            lambda idx, v=finite: float(_nanmean(v[idx])),
            n,
            fc.bootstrap,
            _seed(cfg, modality, key),
            fc.confidence,
        )
        rows.append(
            _with_ci(
                _row(
                    modality,
                    metric,
                    "corrected",
                    value=boot.estimate,
                    spread=M.mean_sd(values)[1],
                    spread_kind="SD over subjects",
                    n_subjects=n,
                    definition="whole volume per subject, mean over subjects; subject bootstrap CI",
                ),
                boot,
            )
        )
    return rows


def _gather(
    subjects: list[SubjectResult], name: str, modality: str, masks: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    real = np.concatenate([s.features[name][modality][0][k] for s, k in zip(subjects, masks, strict=True)])
    fake = np.concatenate([s.features[name][modality][1][k] for s, k in zip(subjects, masks, strict=True)])
    owner = np.concatenate([np.full(int(k.sum()), i) for i, k in enumerate(masks)])
    return real.astype(np.float64), fake.astype(np.float64), owner


def _by_subjects(owner: np.ndarray, n: int) -> list[np.ndarray]:
    return [np.flatnonzero(owner == i) for i in range(n)]


def _resampled(groups: list[np.ndarray], idx: np.ndarray) -> np.ndarray:
    return np.concatenate([groups[i] for i in idx])


def feature_rows(
    cfg: Config, subjects: list[SubjectResult], modality: str, extractor: FeatureExtractor
) -> list[dict[str, Any]]:
    """FID and KID rows (paper and corrected) of one extractor and modality."""
    fc = cfg.fidelity
    device = str(resolve_device(fc.device))
    name, n = extractor.name, len(subjects)
    rows = []
    every = [np.ones_like(s.nonempty[modality]) for s in subjects]
    chosen = [s.nonempty[modality] for s in subjects] if fc.exclude_empty_slices else every
    for variant, masks in (("paper", every), ("corrected", chosen)):
        real, fake, owner = _gather(subjects, name, modality, masks)
        note = ""
        if extractor.standardise:
            real, fake, kept = M.standardise_jointly(real, fake)
            note = f"; {kept} features z-scored with the pooled real+generated statistics"
        size = min(fc.kid_subset_size, len(real))
        common = {"n_subjects": n, "n_slices": int(len(real))}
        if variant == "paper":
            dists = M.paired_feature_distances(real, fake)
            rows.append(
                _row(
                    modality,
                    "FID",
                    variant,
                    name,
                    value=M.fid(real, fake, device),
                    spread=float(dists.std(ddof=0)),
                    spread_kind=PAPER_FID_PM,
                    definition=f"every axial slice pooled{note}",
                    **common,
                )
            )
            rows.append(_paper_kid_row(cfg, modality, name, real, fake, device, note, common))
            continue
        groups = _by_subjects(owner, n)

        def fid_stat(idx: np.ndarray, real=real, fake=fake, groups=groups) -> float:
            take = _resampled(groups, idx)
            return M.fid(real[take], fake[take], device) if len(take) > 1 else float("nan")

        def kid_stat(idx: np.ndarray, real=real, fake=fake, groups=groups, size=size) -> float:
            take = _resampled(groups, idx)
            if len(take) < 2:
                return float("nan")
            seed = _seed(cfg, modality, name, "kid")
            return float(M.kid_subsets(real[take], fake[take], fc.kid_subsets, size, seed, device).mean())

        what = "non-empty axial slices" if fc.exclude_empty_slices else "every axial slice"
        for metric, stat in (("FID", fid_stat), ("KID", kid_stat)):
            boot = bootstrap_subjects(
                stat, n, fc.bootstrap, _seed(cfg, modality, name, metric), fc.confidence
            )
            rows.append(
                _with_ci(
                    _row(
                        modality,
                        metric,
                        variant,
                        name,
                        value=boot.estimate,
                        spread=boot.se,
                        spread_kind="bootstrap SE over subjects",
                        definition=f"{what}; {int(fc.confidence * 100)}% CI from resampling subjects"
                        + (f"; {fc.kid_subsets} seeded subsets of {size}" if metric == "KID" else "")
                        + note,
                        **common,
                    ),
                    boot,
                )
            )
    return rows


def _paper_kid_row(
    cfg: Config,
    modality: str,
    name: str,
    real: np.ndarray,
    fake: np.ndarray,
    device: str,
    note: str,
    common: dict[str, Any],
) -> dict[str, Any]:
    """The original's KID: disjoint subsets of a seeded permutation, mean ± np.std (ddof 0)."""
    fc = cfg.fidelity
    size = min(len(real), len(fake)) // fc.kid_subsets
    definition = (
        f"every axial slice; one seeded permutation cut into {fc.kid_subsets} disjoint subsets of "
        f"N//{fc.kid_subsets} = {size}; mean ± np.std over subsets{note}"
    )
    try:
        values = M.kid_disjoint_subsets(real, fake, fc.kid_subsets, _seed(cfg, modality, name, "kid"), device)
    except ValueError as exc:  # too few slices for the subsets (tiny runs)
        return _row(modality, "KID", "paper", name, status=f"failed: {exc}", definition=definition, **common)
    return _row(
        modality,
        "KID",
        "paper",
        name,
        value=float(values.mean()),
        spread=float(values.std(ddof=0)),
        spread_kind=PAPER_KID_PM,
        definition=definition,
        **common,
    )


def frd_row(cfg: Config, subjects: list[SubjectResult], modality: str) -> dict[str, Any]:
    """The Fréchet Radiomics Distance row of one modality (frd-score v1, real slices as reference)."""
    from gliomagen.fidelity.frd import frechet_radiomics_distance

    real = np.concatenate([s.frd_slices[modality][0] for s in subjects])
    fake = np.concatenate([s.frd_slices[modality][1] for s in subjects])
    result = frechet_radiomics_distance(real, fake, workers=cfg.fidelity.workers)
    return _row(
        modality,
        "FRD",
        "corrected",
        "frd-score v1 (pyradiomics)",
        value=result.frd,
        n_subjects=len(subjects),
        n_slices=result.n_real,
        frd_d2=result.d2,
        frd_library=result.frd_library,
        frd_features=result.n_features,
        definition="Fréchet Radiomics Distance v1, log of the squared distance of frd-score's standardised "
        "features (stable eigen-decomposition; frd_library = the library's own sqrtm value), non-empty axial "
        "slices"
        + (f", at most about {cfg.fidelity.frd_max_slices} per set" if cfg.fidelity.frd_max_slices else "")
        + (f"; {result.note}" if result.note else ""),
    )


# ------------------------------------------------------------------------------------ real-vs-real floor
FLOOR = "real-vs-real"
FLOOR_RATIO_NOTE = {
    "FRD": "ratio of the squared distances d^2 (FRD is log d^2)",
}


def split_halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of ``n`` subjects after a seeded shuffle; pair ``k`` is ``(a[k], b[k])``.

    With an odd ``n`` one subject sits out (it has no partner).
    """
    perm = np.random.default_rng(seed).permutation(n)
    half = n // 2
    return perm[:half], perm[half : 2 * half]


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
    _structural(cfg, np.clip(a.image, 0, 1), np.clip(b.image, 0, 1), axis, res)
    return res


def _floor_row(
    modality: str,
    metric: str,
    extractor: str,
    boot: M.FloorBootstrap,
    n_pairs: int,
    definition: str,
    **extra: Any,
) -> dict[str, Any]:
    row = _row(
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
        row.update(ci_low=boot.floor.low, ci_high=boot.floor.high)
    if boot.synthetic.replicates:
        row.update(synthetic_matched_ci_low=boot.synthetic.low, synthetic_matched_ci_high=boot.synthetic.high)
    row["ratio_replicates"] = boot.ratio.replicates  # resamples with a positive floor (KID can be <= 0)
    if boot.ratio.replicates:
        row.update(ratio_ci_low=boot.ratio.low, ratio_ci_high=boot.ratio.high)
    return row


_FLOOR_WHY = (
    "real subjects of one seeded half vs those of the other (pair k: subject a_k vs b_k); synthetic_matched "
    "replaces the second half's real volumes by their generated counterparts; ratio = synthetic_matched / "
    "real-vs-real; CIs from resampling subject pairs jointly"
)


def floor_structural_rows(
    cfg: Config,
    subjects: list[SubjectResult],
    floor_pairs: list[SubjectResult],
    halves: tuple[np.ndarray, np.ndarray],
    modality: str,
) -> list[dict[str, Any]]:
    """Real-vs-real 2D MS-SSIM and 3D metrics of one modality, with the synthetic values of the same subjects.

    A pair's real-vs-real value compares ``a_k``'s real volume with ``b_k``'s; its synthetic value is the
    mean of the two subjects' own synthetic-vs-real values (the paired metrics need no matched design).
    """
    fc = cfg.fidelity
    a, b = halves
    n_pairs = len(floor_pairs)
    rows = []
    synthetic = _subject_ms_ssim(cfg, subjects, modality)
    floor = _subject_ms_ssim(cfg, floor_pairs, modality)  # slices kept: non-empty in the reference a_k
    matched = np.asarray([_nanmean(synthetic[[i, j]]) for i, j in zip(a, b, strict=True)])
    values = {"MS-SSIM 2D": (floor, matched)}
    for key, metric in (("ms_ssim_3d", "MS-SSIM 3D"), ("ssim_3d", "SSIM 3D"), ("psnr_db", "PSNR 3D (dB)")):
        per = np.asarray([s.volume_metrics[modality][key] for s in subjects], np.float64)
        per = np.where(np.isfinite(per), per, np.nan)
        fl = np.asarray([p.volume_metrics[modality][key] for p in floor_pairs], np.float64)
        values[metric] = (
            np.where(np.isfinite(fl), fl, np.nan),
            np.asarray([_nanmean(per[[i, j]]) for i, j in zip(a, b, strict=True)]),
        )
    for metric, (fl, syn) in values.items():
        boot = M.bootstrap_floor(
            lambda idx, fl=fl, syn=syn: (_nanmean(fl[idx]), _nanmean(syn[idx])),
            n_pairs,
            fc.bootstrap,
            _seed(cfg, modality, metric, FLOOR),
            fc.confidence,
        )
        what = "non-empty axial slices of the reference" if metric == "MS-SSIM 2D" else "whole volume"
        rows.append(_floor_row(modality, metric, "", boot, n_pairs, f"{what}; {_FLOOR_WHY}"))
    return rows


def floor_feature_rows(
    cfg: Config,
    subjects: list[SubjectResult],
    halves: tuple[np.ndarray, np.ndarray],
    modality: str,
    extractor: FeatureExtractor,
) -> list[dict[str, Any]]:
    """Real-vs-real FID and KID of one extractor and modality (corrected definitions), and the matched
    synthetic value: first half's real slices vs the second half's generated slices."""
    fc = cfg.fidelity
    device = str(resolve_device(fc.device))
    name = extractor.name
    a, b = halves
    masks = [_kept_slices(cfg, s, modality) for s in subjects]
    real_a, _, owner_a = _gather([subjects[i] for i in a], name, modality, [masks[i] for i in a])
    real_b, fake_b, owner_b = _gather([subjects[i] for i in b], name, modality, [masks[i] for i in b])
    note = ""
    ref_floor, ref_syn = real_a, real_a
    if extractor.standardise:  # each comparison z-scored with its own pooled statistics, as in feature_rows
        ref_floor, real_b, _ = M.standardise_jointly(real_a, real_b)
        ref_syn, fake_b, kept = M.standardise_jointly(real_a, fake_b)
        note = f"; features z-scored with the pooled statistics of each comparison ({kept} kept)"
    groups_a, groups_b = _by_subjects(owner_a, len(a)), _by_subjects(owner_b, len(b))
    size = min(fc.kid_subset_size, len(real_a), len(real_b))
    kid_seed = _seed(cfg, modality, name, "kid", FLOOR)

    def take(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _resampled(groups_a, idx), _resampled(groups_b, idx)

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
            stat, len(a), fc.bootstrap, _seed(cfg, modality, name, metric, FLOOR), fc.confidence
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


def floor_frd_row(
    cfg: Config, subjects: list[SubjectResult], halves: tuple[np.ndarray, np.ndarray], modality: str
) -> dict[str, Any]:
    """Real-vs-real FRD of one modality (the FRD slices of the first half vs the second half's real and
    generated ones, standardised alike). One value each, no interval: frd-score extracts features per call."""
    from gliomagen.fidelity.frd import frechet_radiomics_distances

    a, b = halves
    real_a = np.concatenate([subjects[i].frd_slices[modality][0] for i in a])
    real_b = np.concatenate([subjects[i].frd_slices[modality][0] for i in b])
    fake_b = np.concatenate([subjects[i].frd_slices[modality][1] for i in b])
    # one frd-score call: both distances in the first half's standardised feature space
    floor, synthetic = frechet_radiomics_distances(real_a, [real_b, fake_b], workers=cfg.fidelity.workers)
    return _row(
        modality,
        "FRD",
        FLOOR,
        "frd-score v1 (pyradiomics)",
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
) -> list[dict[str, Any]]:
    """Every real-vs-real row (all modalities, metrics and extractors), or one status row per metric."""
    fc = cfg.fidelity
    by_id = {p.case_id: p for p in pairs}
    halves = split_halves(len(subjects), _seed(cfg, FLOOR, "halves"))
    metrics = [("MS-SSIM 2D", ""), ("MS-SSIM 3D", ""), ("SSIM 3D", ""), ("PSNR 3D (dB)", "")]
    metrics += [(m, e) for e in extractors for m in ("FID", "KID")]
    if len(halves[0]) == 0:
        state = "not available: needs at least 2 evaluated validation subjects"
        return [_row(mod, m, FLOOR, e, status=state) for mod in MODALITIES for m, e in metrics]
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
        return [_row(mod, m, FLOOR, e, status=f"failed: {exc}") for mod in MODALITIES for m, e in metrics]
    rows: list[dict[str, Any]] = []
    for modality in MODALITIES:
        rows += floor_structural_rows(cfg, subjects, floor_pairs, halves, modality)
        for extractor in extractors.values():
            rows += floor_feature_rows(cfg, subjects, halves, modality, extractor)
        if fc.frd:
            rows.append(_guarded(lambda m=modality: floor_frd_row(cfg, subjects, halves, m), modality, FLOOR))
    return rows


def mean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paper's "mean" row: mean over modalities ± SD over modalities, per metric/variant/extractor;
    real-vs-real rows also average the matched synthetic value and the ratio over the modalities.

    The SD has ddof 1. The paper's printed mean rows follow no single rule (from its own modality rows:
    MS-SSIM ± 0.06 is the ddof-1 SD 0.061, KID ± 0.003 the ddof-0 SD 0.0032, FID ± 6.5 neither 7.28 nor
    6.30), so no choice reproduces all three; docs/metrics.md says so.
    """
    frame = pd.DataFrame(rows)
    out = []
    for (metric, variant, extractor), group in frame.groupby(["metric", "variant", "extractor"], sort=False):
        values = pd.to_numeric(group["value"], errors="coerce").to_numpy(dtype=float)
        ok = group["status"].eq("ok").all() and np.isfinite(values).all() and len(values) == len(MODALITIES)
        mean, sd = M.mean_sd(values) if ok else (None, None)
        extra = {}
        if variant == FLOOR:
            for key in ("synthetic_matched", "ratio"):
                col = pd.to_numeric(group.get(key, pd.Series(dtype=float)), errors="coerce").to_numpy(float)
                fine = ok and col.size == len(MODALITIES) and np.isfinite(col).all()
                extra[key] = float(col.mean()) if fine else None
        out.append(
            _row(
                "mean",
                metric,
                variant,
                extractor,
                value=mean,
                spread=sd,
                spread_kind="SD over modalities",
                n_subjects=group["n_subjects"].iloc[0],
                status=group["status"].iloc[0],
                definition="mean over the four modalities ± SD over modalities (the paper's mean row)",
                **extra,
            )
        )
    return out


# ------------------------------------------------------------------------------------------- evaluate
def _load_extractors(cfg: Config) -> tuple[dict[str, FeatureExtractor], dict[str, dict[str, str]]]:
    fc = cfg.fidelity
    ready, status = {}, {}
    for name in fc.extractors:
        try:
            ready[name] = build_extractor(name, fc.batch_size, fc.device, fc.weights_dir, fc.workers)
            status[name] = {"status": "ok", "description": ready[name].description}
        except WeightsMissingError as exc:
            log.warning("%s", exc)
            status[name] = {"status": "not available: weights missing", "message": str(exc)}
        except ImportError as exc:
            log.warning("extractor %s unavailable: %s", name, exc)
            status[name] = {"status": "not available: missing package", "message": str(exc)}
    return ready, status


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become ``None`` (JSON has no NaN/Infinity)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _unavailable_rows(name: str, state: str, floor: bool = True) -> list[dict[str, Any]]:
    return [
        _row(m, metric, variant, name, status=state)
        for m in MODALITIES
        for metric in ("FID", "KID")
        for variant in ("paper", "corrected", *((FLOOR,) if floor else ()))
    ]


def _subject_tables(subjects: list[SubjectResult]) -> tuple[pd.DataFrame, pd.DataFrame]:
    per_subject, per_slice = [], []
    for s in subjects:
        for m in MODALITIES:
            values, keep = s.ms_ssim_slices[m], s.nonempty[m]
            per_subject.append(
                {
                    "id": s.case_id,
                    "modality": m,
                    "n_slices": int(values.size),
                    "n_nonempty": int(keep.sum()),
                    "ms_ssim_2d_all_mean": float(values.mean()),
                    "ms_ssim_2d_all_sd": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                    "ms_ssim_2d_nonempty_mean": float(values[keep].mean()) if keep.any() else float("nan"),
                    **s.volume_metrics[m],
                }
            )
            per_slice += [
                {"id": s.case_id, "modality": m, "slice": i, "empty": not bool(k), "ms_ssim": float(v)}
                for i, (v, k) in enumerate(zip(values, keep, strict=True))
            ]
    return pd.DataFrame(per_subject), pd.DataFrame(per_slice)


def output_paths(cfg: Config) -> dict[str, Path]:
    """Where the stage writes: ``json``, ``per_subject`` and ``per_slice`` under ``<run>/metrics``."""
    root = cfg.paths.metrics
    return {
        "json": root / "fidelity.json",
        "per_subject": root / "fidelity_per_subject.csv",
        "per_slice": root / "fidelity_per_slice.csv",
    }


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Temporarily use ``threads`` torch CPU threads (``None``: leave the setting alone)."""
    if threads is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def evaluate(cfg: Config, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run the fidelity evaluation and write its outputs; returns the content of ``fidelity.json``.

    Args:
        cfg: run configuration (section ``fidelity``).
        force: recompute even if ``fidelity.json`` matches the config and the inputs.
        progress: show tqdm progress bars.
    """
    with torch_threads(cfg.fidelity.threads):
        return _evaluate(cfg, force, progress)


def _evaluate(cfg: Config, force: bool, progress: bool) -> dict[str, Any]:
    fc = cfg.fidelity
    pairs, skipped = find_pairs(cfg)
    fingerprint = inputs_fingerprint(pairs)
    out = output_paths(cfg)
    if not force and out["json"].is_file():
        previous = read_json(out["json"])
        prov = previous.get("provenance", {})
        if prov.get("config_hash") == cfg.hash and prov.get("inputs") == fingerprint:
            log.info("fidelity results in %s are up to date; skipping (force=True recomputes)", out["json"])
            return previous
    extractors, extractor_status = _load_extractors(cfg)
    frd_quota = math.ceil(fc.frd_max_slices / len(pairs)) if fc.frd_max_slices else None
    subjects: list[SubjectResult] = []
    for index, pair in enumerate(tqdm(pairs, desc="fidelity", unit="case", disable=not progress)):
        try:
            subjects.append(
                evaluate_subject(
                    cfg, pair, extractors, index, frd_quota, out["json"].parent / "fidelity_features"
                )
            )
        except (ValueError, OSError) as exc:  # one bad case never stops the others
            log.error("skipping %s: %s", pair.case_id, exc)
            skipped.append({"id": pair.case_id, "reason": str(exc)})
    if not subjects:
        raise RuntimeError(f"no validation pair could be evaluated; problems: {skipped}")
    rows = _aggregate(cfg, subjects, pairs, extractors, extractor_status, progress)
    per_subject, per_slice = _subject_tables(subjects)
    results = _clean(
        {
            "provenance": provenance(cfg.hash, inputs=fingerprint, profile=cfg.profile),
            "subjects": [s.case_id for s in subjects],
            "skipped": skipped,
            "extractors": extractor_status,
            "settings": _settings(cfg, subjects),
            "results": rows,
        }
    )
    write_csv(out["per_subject"], per_subject)
    write_csv(out["per_slice"], per_slice)
    write_json(out["json"], results)  # written last: its presence marks a finished evaluation
    return results


def _aggregate(
    cfg: Config,
    subjects: list[SubjectResult],
    pairs: list[Pair],
    extractors: dict[str, FeatureExtractor],
    extractor_status: dict[str, dict[str, str]],
    progress: bool,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for modality in tqdm(MODALITIES, desc="aggregate", unit="modality", disable=not progress, leave=False):
        rows += structural_rows(cfg, subjects, modality)
        for extractor in extractors.values():
            rows += feature_rows(cfg, subjects, modality, extractor)
        if cfg.fidelity.frd:
            rows.append(_guarded(lambda m=modality: frd_row(cfg, subjects, m), modality, "corrected"))
    if cfg.fidelity.real_floor:
        rows += floor_rows(cfg, subjects, pairs, extractors, progress)
    for name, state in extractor_status.items():
        if state["status"] != "ok":
            rows += _unavailable_rows(name, state["status"], cfg.fidelity.real_floor)
    return rows + mean_rows(rows)


def _guarded(compute: Callable[[], dict[str, Any]], modality: str, variant: str) -> dict[str, Any]:
    """An FRD row, or a status row when frd-score is missing or fails (the other metrics go on)."""
    from gliomagen.fidelity.frd import FRDUnavailable

    try:
        return compute()
    except FRDUnavailable as exc:
        return _row(modality, "FRD", variant, "frd-score v1 (pyradiomics)", status=f"not available: {exc}")
    except (ValueError, RuntimeError) as exc:
        log.error("FRD (%s) failed for %s: %s", variant, modality, exc)
        return _row(modality, "FRD", variant, "frd-score v1 (pyradiomics)", status=f"failed: {exc}")


def _settings(cfg: Config, subjects: list[SubjectResult]) -> dict[str, Any]:
    fc = cfg.fidelity
    first = subjects[0]
    volume_shape = first.volume_shape
    slice_shape = tuple(s for i, s in enumerate(volume_shape) if i != first.axis)
    return {
        "profile": cfg.profile,
        "axial_voxel_axis": first.axis,
        "slice_shape": list(slice_shape),
        "volume_shape": list(volume_shape),
        "slices_per_subject": int(volume_shape[first.axis]),
        "ms_ssim_kernel": fc.ms_ssim_kernel,
        "ms_ssim_scales_2d": fc.ms_ssim_scales or M.ms_ssim_scales_that_fit(slice_shape, fc.ms_ssim_kernel),
        "ms_ssim_scales_3d": M.ms_ssim_scales_that_fit(volume_shape, fc.ms_ssim_kernel),
        "exclude_empty_slices": fc.exclude_empty_slices,
        "empty_threshold": fc.empty_threshold,
        "bootstrap": fc.bootstrap,
        "confidence": fc.confidence,
        "kid_subsets": fc.kid_subsets,
        "kid_subset_size": fc.kid_subset_size,
        "frd_max_slices": fc.frd_max_slices,
        "real_floor": fc.real_floor,
        "real_floor_halves": [
            [subjects[i].case_id for i in half]
            for half in split_halves(len(subjects), _seed(cfg, FLOOR, "halves"))
        ]
        if fc.real_floor
        else None,
        "seed": fc.seed,
    }


# ------------------------------------------------------------------------------------------------- CLI
def load_results(cfg: Config) -> dict[str, Any]:
    """The content of ``<run>/metrics/fidelity.json`` (raises with a hint when it does not exist)."""
    path = output_paths(cfg)["json"]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: run `gliomagen fidelity --profile {cfg.profile}` first"
        )
    return read_json(path)


def results_frame(results: dict[str, Any]) -> pd.DataFrame:
    """The long results table of ``fidelity.json`` as a DataFrame."""
    return pd.DataFrame(results["results"])


def run_cli(cfg: Config, args: argparse.Namespace) -> None:
    """Entry point of ``gliomagen fidelity``."""
    try:
        results = evaluate(cfg, force=bool(getattr(args, "force", False)))
    except FileNotFoundError as exc:  # missing inputs: a one-line message, not a traceback
        raise SystemExit(f"gliomagen fidelity: {exc}") from None
    frame = results_frame(results)
    shown = frame[frame["modality"].eq("mean")][
        ["metric", "variant", "extractor", "value", "ci_low", "ci_high", "status"]
    ]
    print(shown.to_string(index=False))
    print(f"results: {output_paths(cfg)['json']}")
