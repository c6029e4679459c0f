"""Fréchet Radiomics Distance (Konz, Osuala et al. 2026) with the ``frd-score`` package, on 2D slices.

``frd-score`` (FRD v1: ~464 pyradiomics features of the Original, LoG and wavelet images, z-scored with the
reference set, Fréchet distance, then ``log``) reads image files, so the slices are written as 2D NIfTI
files (1-pixel spacing, as its PNG inputs have) into a temporary folder. It needs no downloaded weights,
which makes it the published distribution distance the offline smoke profile can always report.

We use ``frd-score``'s own feature extraction and normalisation (``get_feature_extractor`` and
``compute_statistics_of_paths``, the pipeline behind ``compute_frd``) and compute the Fréchet distance of
its moments with our eigen-decomposition (:func:`gliomagen.fidelity.metrics.frechet_distance`): with fewer
slices than its ~460 features the covariances are singular and the library's ``scipy.linalg.sqrtm`` of
their product is inaccurate (two identical 6-slice sets gave ``d^2 = 1.9`` instead of 0). The library's
own value is kept beside ours (``frd_library``).

FRD is ``log(d^2)`` (frd-score's convention); for identical feature statistics ``d^2 = 0`` and the log is
undefined (the library returns ``-inf``): we report ``frd = None`` with ``d2 = 0`` and a note instead of a
non-JSON ``-Infinity``. Caveat seen here: FRD v1 z-scores with the reference set's SD, so features that are
nearly constant (e.g. wavelet means of small, flat slices) turn float32 rounding into O(1) differences;
two copies of the same 4 small noise slices gave ``d^2 = 26``. Read small-sample FRD values with care.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from unittest import mock

import nibabel as nib
import numpy as np

from gliomagen.fidelity.metrics import frechet_distance

INSTALL_HINT = (
    "frd-score needs pyradiomics, which has no wheel for Python 3.11; install with\n"
    "  pip install versioneer numpy && pip install --no-build-isolation pyradiomics==3.0.1 && "
    "pip install frd-score"
)


class FRDUnavailable(ImportError):
    """``frd-score`` or ``pyradiomics`` is not installed."""


@dataclass(frozen=True)
class FRDResult:
    """One Fréchet Radiomics Distance.

    Args:
        frd: ``log(d^2)`` (FRD v1); ``None`` when ``d^2 = 0``.
        d2: squared Fréchet distance of the standardised radiomics features (stable eigen-decomposition).
        frd_library: ``log(d^2)`` as ``frd-score``'s ``scipy.linalg.sqrtm`` computes it (``None`` if not finite).
        n_real: slices in the reference (real) set.
        n_fake: slices in the generated set.
        n_features: radiomics features left after frd-score's filtering.
        note: why ``frd`` is ``None``, if it is.
    """

    frd: float | None
    d2: float
    frd_library: float | None
    n_real: int
    n_fake: int
    n_features: int
    note: str = ""


def _write_slices(folder: Path, slices: np.ndarray) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, sl in enumerate(np.asarray(slices, np.float32)):
        path = folder / f"slice_{i:05d}.nii.gz"
        nib.save(nib.Nifti1Image(np.clip(sl, 0.0, 1.0), np.eye(4)), str(path))
        paths.append(str(path))
    return paths


def _import_frd() -> ModuleType:
    """``frd_score.frd``, imported without its side effect on matplotlib.

    ``frd_score`` (1.0.1) calls ``matplotlib.use("Agg")`` when it is imported (for its optional t-SNE plots,
    which we do not use). In a notebook that switches the inline backend off for the rest of the kernel,
    and switching back afterwards does not bring the inline figures back. So ``matplotlib.use`` is a no-op
    while (and only while) the module is imported; once imported, Python's module cache means it never
    runs again. ``tests/test_fidelity_frd.py`` checks both that frd_score still does it and that we stop it.
    """
    import matplotlib

    try:
        with mock.patch.object(matplotlib, "use", lambda *args, **kwargs: None):
            import radiomics  # noqa: F401
            from frd_score import frd as frd_lib
    except ImportError as exc:
        raise FRDUnavailable(INSTALL_HINT) from exc
    return frd_lib


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """frd-score prints and logs a warning for every constant feature; keep notebooks readable."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _log_or_none(d2: float) -> float | None:
    return math.log(d2) if d2 > 0 and math.isfinite(d2) else None


def frechet_radiomics_distance(real: np.ndarray, fake: np.ndarray, workers: int = 1) -> FRDResult:
    """FRD v1 between two stacks of 2D slices ``(N, H, W)`` in [0, 1]; the real set is the reference.

    Args:
        real: reference slices.
        fake: generated slices.
        workers: pyradiomics processes inside ``frd-score``.

    Raises:
        FRDUnavailable: ``frd-score``/``pyradiomics`` missing (the message says how to install them).
    """
    return frechet_radiomics_distances(real, [fake], workers)[0]


def frechet_radiomics_distances(
    reference: np.ndarray, others: list[np.ndarray], workers: int = 1
) -> list[FRDResult]:
    """FRD v1 of ``reference`` against each stack in ``others``, in one ``frd-score`` call.

    All sets are standardised with the reference's statistics (FRD v1's rule) and share frd-score's feature
    filtering, so the distances live in one feature space and their ratio is meaningful (the real-vs-real
    floor compares one real half with the other real half and with generated slices). The reference's
    features are extracted once.

    Args:
        reference: reference slices (real).
        others: stacks of slices to compare with it.
        workers: pyradiomics processes inside ``frd-score``.

    Raises:
        FRDUnavailable: ``frd-score``/``pyradiomics`` missing (the message says how to install them).
    """
    frd_lib = _import_frd()
    if len(reference) < 2 or any(len(x) < 2 for x in others):
        sizes = [len(reference), *(len(x) for x in others)]
        raise ValueError(f"FRD needs at least 2 slices per set, got {sizes}")
    norm_type, norm_range, features, image_types, norm_ref = frd_lib._resolve_defaults(
        frd_lib.FRD_VERSION_V1, None, None, None, None
    )
    with tempfile.TemporaryDirectory(prefix="gliomagen-frd-") as tmp, _quiet():
        files = [_write_slices(Path(tmp) / "set0", reference)]
        files += [_write_slices(Path(tmp) / f"set{k + 1}", x) for k, x in enumerate(others)]
        extractor = frd_lib.get_feature_extractor(
            frd_version=frd_lib.FRD_VERSION_V1, features=features, image_dim=2, image_types=image_types
        )
        mu, sigma, _, names = frd_lib.compute_statistics_of_paths(
            files,
            norm_type,
            norm_range,
            extractor,
            norm_ref=norm_ref,
            num_workers=workers,
            frd_version=frd_lib.FRD_VERSION_V1,
        )
        library = [
            float(frd_lib.calculate_frechet_distance(mu[0], sigma[0], m, c))
            for m, c in zip(mu[1:], sigma[1:], strict=True)
        ]
    return [
        frd_from_moments(mu[0], sigma[0], m, c, lib, len(reference), len(x), len(names))
        for m, c, lib, x in zip(mu[1:], sigma[1:], library, others, strict=True)
    ]


def frd_from_moments(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    library_d2: float,
    n_real: int,
    n_fake: int,
    n_features: int,
) -> FRDResult:
    """FRD from the moments of the standardised features (``d^2 = 0`` gives ``frd = None`` and a note).

    Args:
        mu1: mean of the reference (real) features.
        sigma1: their covariance.
        mu2: mean of the generated features.
        sigma2: their covariance.
        library_d2: frd-score's own squared distance, kept for comparison.
        n_real: reference slices.
        n_fake: generated slices.
        n_features: features used.
    """
    d2 = frechet_distance(mu1, np.atleast_2d(sigma1), mu2, np.atleast_2d(sigma2))
    scale = float(np.trace(np.atleast_2d(sigma1)) + np.trace(np.atleast_2d(sigma2))) or 1.0
    library = _log_or_none(library_d2)
    if d2 <= 1e-9 * scale:  # rounding of an exact zero
        note = "identical feature statistics: d^2 = 0, log undefined"
        return FRDResult(None, 0.0, library, n_real, n_fake, n_features, note)
    return FRDResult(math.log(d2), d2, library, n_real, n_fake, n_features)
