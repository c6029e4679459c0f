"""Synthetic vs real rows of the results table: each metric in its paper and corrected definitions.

* MS-SSIM the paper's way (2D, every axial slice, window 11, data range 1; mean ± SD over slices) and
  corrected (empty slices excluded, mean over subjects with a subject-bootstrap interval); 3D MS-SSIM,
  SSIM and PSNR per subject.
* FID and KID on slice features from each configured extractor: the paper's definition, as the original
  computed it (every slice; FID "±" = ``np.std`` of paired per-slice feature distances; KID over 10
  disjoint subsets of one seeded permutation, "±" = their ``np.std``) and corrected (empty slices excluded,
  95% interval from resampling subjects, seeded KID subsets of up to ``kid_subset_size``).
* The Fréchet Radiomics Distance (``frd-score``), which needs no downloaded weights.

Definitions and the reasons for each difference: ``docs/metrics.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gliomagen.bootstrap import bootstrap_subjects
from gliomagen.config import Config
from gliomagen.fidelity import metrics as M
from gliomagen.fidelity import rows as R
from gliomagen.fidelity.features import FeatureExtractor
from gliomagen.fidelity.rows import Row
from gliomagen.fidelity.subjects import SubjectResult
from gliomagen.runtime import resolve_device

PAPER_FID_PM = "np.std (ddof 0) of the paired per-slice feature distances (the paper's FID '±'; not an uncertainty of FID)"
PAPER_KID_PM = "np.std (ddof 0) over the disjoint KID subsets (the paper's KID '±')"
#: the volume metrics of a subject: key in SubjectResult.volume_metrics -> metric name in the table
VOLUME_METRICS: tuple[tuple[str, str], ...] = (
    ("ms_ssim_3d", "MS-SSIM 3D"),
    ("ssim_3d", "SSIM 3D"),
    ("psnr_db", "PSNR 3D (dB)"),
)


def structural_rows(cfg: Config, subjects: list[SubjectResult], modality: str) -> list[Row]:
    """MS-SSIM (paper and corrected), 3D MS-SSIM, SSIM and PSNR rows for one modality."""
    fc = cfg.fidelity
    n = len(subjects)
    all_slices = np.concatenate([s.ms_ssim_slices[modality] for s in subjects])
    paper_mean, paper_sd = M.mean_sd(all_slices, ddof=0)  # the original printed np.std (ddof 0)
    rows = [
        R.row(
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
    keep = [R.kept_slices(cfg, s, modality) for s in subjects]
    per_subject = R.subject_ms_ssim(cfg, subjects, modality)
    boot = bootstrap_subjects(
        R.mean_of(per_subject),
        n,
        fc.bootstrap,
        R.seed(cfg, modality, "msssim"),
        fc.confidence,
    )
    rows.append(
        R.with_ci(
            R.row(
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
    for key, metric in VOLUME_METRICS:
        values = np.asarray([s.volume_metrics[modality][key] for s in subjects], np.float64)
        finite = np.where(np.isfinite(values), values, np.nan)
        boot = bootstrap_subjects(
            R.mean_of(finite),
            n,
            fc.bootstrap,
            R.seed(cfg, modality, key),
            fc.confidence,
        )
        rows.append(
            R.with_ci(
                R.row(
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


def feature_rows(
    cfg: Config, subjects: list[SubjectResult], modality: str, extractor: FeatureExtractor
) -> list[Row]:
    """FID and KID rows (paper and corrected) of one extractor and modality."""
    fc = cfg.fidelity
    device = str(resolve_device(cfg.runtime.device))
    name, n = extractor.name, len(subjects)
    rows = []
    every = [np.ones_like(s.nonempty[modality]) for s in subjects]
    chosen = [s.nonempty[modality] for s in subjects] if fc.exclude_empty_slices else every
    for variant, masks in (("paper", every), ("corrected", chosen)):
        real, fake, owner = R.gather(subjects, name, modality, masks)
        note = ""
        if extractor.standardise:
            real, fake, kept = M.standardise_jointly(real, fake)
            note = f"; {kept} features z-scored with the pooled real+generated statistics"
        common: dict[str, Any] = {"n_subjects": n, "n_slices": int(len(real))}
        if variant == "paper":
            dists = M.paired_feature_distances(real, fake)
            rows.append(
                R.row(
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
            rows.append(paper_kid_row(cfg, modality, name, real, fake, device, note, common))
            continue
        rows += _corrected_feature_rows(
            cfg, modality, name, real, fake, R.by_subjects(owner, n), note, common
        )
    return rows


def _corrected_feature_rows(
    cfg: Config,
    modality: str,
    name: str,
    real: np.ndarray,
    fake: np.ndarray,
    groups: list[np.ndarray],
    note: str,
    common: dict[str, Any],
) -> list[Row]:
    """Corrected FID and KID: the kept slices pooled, intervals from resampling subjects (``groups``)."""
    fc = cfg.fidelity
    device = str(resolve_device(cfg.runtime.device))
    size = min(fc.kid_subset_size, len(real))
    kid_seed = R.seed(cfg, modality, name, "kid")  # the same subsets seed for every resample

    def fid_stat(idx: np.ndarray) -> float:
        take = R.resampled(groups, idx)
        return M.fid(real[take], fake[take], device) if len(take) > 1 else float("nan")

    def kid_stat(idx: np.ndarray) -> float:
        take = R.resampled(groups, idx)
        if len(take) < 2:
            return float("nan")
        return float(M.kid_subsets(real[take], fake[take], fc.kid_subsets, size, kid_seed, device).mean())

    what = "non-empty axial slices" if fc.exclude_empty_slices else "every axial slice"
    rows = []
    for metric, stat in (("FID", fid_stat), ("KID", kid_stat)):
        boot = bootstrap_subjects(
            stat, len(groups), fc.bootstrap, R.seed(cfg, modality, name, metric), fc.confidence
        )
        rows.append(
            R.with_ci(
                R.row(
                    modality,
                    metric,
                    "corrected",
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


def paper_kid_row(
    cfg: Config,
    modality: str,
    name: str,
    real: np.ndarray,
    fake: np.ndarray,
    device: str,
    note: str,
    common: dict[str, Any],
) -> Row:
    """The original's KID: disjoint subsets of a seeded permutation, mean ± np.std (ddof 0)."""
    fc = cfg.fidelity
    size = min(len(real), len(fake)) // fc.kid_subsets
    definition = (
        f"every axial slice; one seeded permutation cut into {fc.kid_subsets} disjoint subsets of "
        f"N//{fc.kid_subsets} = {size}; mean ± np.std over subsets{note}"
    )
    # np.random.RandomState (the original's generator) takes seeds below 2**32
    kid_seed = R.seed(cfg, modality, name, "kid") % 2**32
    try:
        values = M.kid_disjoint_subsets(real, fake, fc.kid_subsets, kid_seed, device)
    except ValueError as exc:  # too few slices for the subsets (tiny runs)
        return R.row(modality, "KID", "paper", name, status=f"failed: {exc}", definition=definition, **common)
    return R.row(
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


def frd_row(cfg: Config, subjects: list[SubjectResult], modality: str) -> Row:
    """The Fréchet Radiomics Distance row of one modality (frd-score v1, real slices as reference)."""
    from gliomagen.fidelity.frd import frechet_radiomics_distance

    real = np.concatenate([s.frd_slices[modality][0] for s in subjects])
    fake = np.concatenate([s.frd_slices[modality][1] for s in subjects])
    result = frechet_radiomics_distance(real, fake, workers=cfg.runtime.workers)
    return R.row(
        modality,
        "FRD",
        "corrected",
        R.FRD_EXTRACTOR,
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
