"""Per-subject fidelity measurements: what the aggregate rows are computed from.

For one pair (real validation volume, volume generated from its mask), per modality: the 2D MS-SSIM of
every axial slice, which real slices are non-empty, the 3D MS-SSIM, SSIM and PSNR, the slice features of
each extractor (cached per case) and the slices that go to FRD.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gliomagen.config import MODALITIES, Config
from gliomagen.fidelity import metrics as M
from gliomagen.fidelity.features import FeatureExtractor
from gliomagen.fidelity.outputs import FidelityOutputs
from gliomagen.fidelity.pairs import Pair, fingerprint, load_pair, pair_files
from gliomagen.io import atomic_path

#: per modality, (real features, generated features), each ``(slices, D)``
PairFeatures = dict[str, tuple[np.ndarray, np.ndarray]]


@dataclass
class SubjectResult:
    """Everything computed from one pair (or, for the real-vs-real floor, two real subjects), per modality."""

    case_id: str
    axis: int = 2
    volume_shape: tuple[int, ...] = ()
    ms_ssim_slices: dict[str, np.ndarray] = field(default_factory=dict)
    nonempty: dict[str, np.ndarray] = field(default_factory=dict)
    volume_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    features: dict[str, PairFeatures] = field(default_factory=dict)
    frd_slices: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def frd_selection(nonempty: np.ndarray, quota: int | None, seed: int) -> np.ndarray:
    """Indices of the non-empty slices that go to FRD: all, or a seeded sample of ``quota``."""
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
) -> SubjectResult:
    """Structural metrics, slice features and FRD slices of one pair.

    Args:
        cfg: run configuration (``fidelity`` section).
        pair: the pair.
        extractors: the feature extractors that are available.
        index: the pair's position (seeds its FRD slice sample).
        frd_quota: FRD slices per subject (``None``: every non-empty one).
    """
    fc = cfg.fidelity
    real, fake, axis = load_pair(pair)
    res = SubjectResult(pair.case_id, axis, tuple(real.shape[1:]))
    structural(cfg, real, fake, axis, res)
    for c, modality in enumerate(MODALITIES if fc.frd else ()):
        sel = frd_selection(res.nonempty[modality], frd_quota, fc.seed + index)
        res.frd_slices[modality] = (M.axial_slices(real[c], axis)[sel], M.axial_slices(fake[c], axis)[sel])
    cache = FidelityOutputs(cfg.paths)
    for name, extractor in extractors.items():
        res.features[name] = cached_features(
            pair, extractor, real, fake, axis, cache.features_file(extractor.name, pair.case_id)
        )
    return res


def structural(cfg: Config, reference: np.ndarray, other: np.ndarray, axis: int, res: SubjectResult) -> None:
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


def cached_features(
    pair: Pair,
    extractor: FeatureExtractor,
    real: np.ndarray,
    fake: np.ndarray,
    axis: int,
    path: Path,
) -> PairFeatures:
    """Slice features of all four modalities of one pair, reusing ``path`` while the inputs and the
    extractor are unchanged (the file stores the key it was computed for)."""
    key = fingerprint(
        pair_files(pair), extra=f"{extractor.name}|{extractor.description}|{extractor.identity}"
    )
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
    arrays: dict[str, Any] = {
        f"{m}_{k}": v for m, (r, f) in out.items() for k, v in (("real", r), ("fake", f))
    }
    with atomic_path(path) as tmp:
        np.savez(tmp, key=np.asarray(key), **arrays)
    return out
