"""Fidelity metrics on paired real/generated volumes: (MS-)SSIM, PSNR, FID, KID and subject bootstrap.

Structural metrics come from MONAI (``MultiScaleSSIMMetric``, ``SSIMMetric``, ``PSNRMetric``). The
distribution distances are computed here from feature matrices, in float64 torch (so a GPU speeds up the
bootstrap), because the library versions either bundle their own feature network (torchmetrics) or give
no access to the pieces the paper-compatible and corrected variants need (per-subset KID values, paired
per-slice distances, resampled subjects). Each is a few lines of textbook math and is tested against an
independent reference (scipy ``sqrtm``, the closed form for Gaussians, a direct double sum for KID).

Slightly over 400 lines on purpose: every formula behind a number (the paper-mode ones that are compared
with the original's code included) is in this one module, and nothing else is.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics.regression import MultiScaleSSIMMetric, PSNRMetric, RegressionMetric, SSIMMetric

from gliomagen.bootstrap import Bootstrap, summarise_replicates
from gliomagen.data.geometry import world_axis

log = logging.getLogger(__name__)

#: The standard MS-SSIM scale weights (Wang et al. 2003), finest scale first.
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


# ---------------------------------------------------------------------------------------------- slices
def axial_axis(affine: np.ndarray) -> int:
    """The voxel axis that runs inferior-superior according to ``affine`` (axial slices are across it)."""
    return world_axis(affine, "inferior-superior")


def axial_slices(volume: np.ndarray, axis: int) -> np.ndarray:
    """``volume`` as a stack of 2D slices ``(n_slices, H, W)`` across ``axis``."""
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    return np.ascontiguousarray(np.moveaxis(volume, axis, 0))


def nonempty_slices(slices: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Boolean per slice: ``True`` when some voxel exceeds ``threshold`` (padding slices are ``False``)."""
    return slices.reshape(len(slices), -1).max(axis=1) > threshold


# ------------------------------------------------------------------------------------- (MS-)SSIM, PSNR
def ms_ssim_scales_that_fit(shape: Sequence[int], kernel_size: int, max_scales: int = 5) -> int:
    """How many MS-SSIM scales images of ``shape`` (spatial sides) allow with a ``kernel_size`` window.

    Two conditions: after ``scales - 1`` halvings every side still holds the window (the valid
    convolution needs it), and MONAI's own check ``side // (scales - 1) ** 2 > kernel_size - 1`` passes
    (it is looser than the first for fewer than 5 scales, so it alone would let 2 scales of 16 pixels crash).
    """
    for scales in range(max_scales, 0, -1):
        monai_div = max(1, scales - 1) ** 2
        if all(
            side // 2 ** (scales - 1) >= kernel_size and side // monai_div > kernel_size - 1 for side in shape
        ):
            return scales
    raise ValueError(f"images of shape {tuple(shape)} are smaller than the {kernel_size}-voxel SSIM window")


def ms_ssim_weights(scales: int) -> tuple[float, ...]:
    """MS-SSIM scale weights for ``scales`` scales.

    All 5 scales: the standard weights exactly as published and as ``pytorch_msssim`` (the original's
    library) uses them, i.e. *not* renormalised although they sum to 1.0001. Fewer scales (images too small
    for 5): the first ``scales`` weights renormalised to sum to one, so that the value stays in [0, 1] and
    comparable across sizes; this is our choice (the original never had fewer than 5) and is logged.
    """
    if not 1 <= scales <= len(MS_SSIM_WEIGHTS):
        raise ValueError(f"scales must be 1..{len(MS_SSIM_WEIGHTS)}, got {scales}")
    if scales == len(MS_SSIM_WEIGHTS):
        return MS_SSIM_WEIGHTS
    return _renormalised_weights(scales)


@functools.cache
def _renormalised_weights(scales: int) -> tuple[float, ...]:
    w = np.asarray(MS_SSIM_WEIGHTS[:scales])
    out = tuple(float(x) for x in w / w.sum())
    # cached: logged once per process and scale count, not once per subject
    log.info("MS-SSIM with %d of 5 scales: first %d standard weights renormalised to %s", scales, scales, out)
    return out


def _per_image(metric: RegressionMetric, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The metric of each image pair as a flat tensor (MONAI's return type also allows lists)."""
    out = metric(y_pred, y)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{type(metric).__name__} returned {type(out).__name__}, not a tensor")
    return out.reshape(-1)


def _as_batch(x: np.ndarray, spatial_dims: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    return t.reshape(-1, 1, *t.shape[-spatial_dims:])


def ms_ssim(
    real: np.ndarray,
    fake: np.ndarray,
    spatial_dims: int = 2,
    data_range: float = 1.0,
    kernel_size: int = 11,
    scales: int | None = None,
    batch_size: int = 256,
) -> tuple[np.ndarray, int]:
    """MS-SSIM of each pair of images (MONAI ``MultiScaleSSIMMetric``, Gaussian window, sigma 1.5).

    Args:
        real: ``(N, H, W)`` slices (or ``(N, X, Y, Z)`` volumes with ``spatial_dims=3``), or one image.
        fake: same shape as ``real``.
        spatial_dims: 2 for slices (the paper's definition), 3 for volumes.
        data_range: intensity range (1 for images in [0, 1]).
        kernel_size: window size (paper: 11).
        scales: number of scales; ``None`` = as many of the standard 5 as the image size allows.
        batch_size: images per MONAI call.

    Returns:
        (per-pair MS-SSIM as float64 array, number of scales used).
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and generated shapes differ: {real.shape} vs {fake.shape}")
    a, b = _as_batch(real, spatial_dims), _as_batch(fake, spatial_dims)
    fit = ms_ssim_scales_that_fit(a.shape[2:], kernel_size)
    scales = fit if scales is None else scales
    if scales > fit:
        raise ValueError(f"{scales} MS-SSIM scales do not fit images of shape {tuple(a.shape[2:])}")
    metric = MultiScaleSSIMMetric(
        spatial_dims=spatial_dims,
        data_range=data_range,
        kernel_size=kernel_size,
        weights=ms_ssim_weights(scales),
        reduction="none",
    )
    out = [
        _per_image(metric, b[i : i + batch_size], a[i : i + batch_size]) for i in range(0, len(a), batch_size)
    ]
    return torch.cat(out).double().numpy(), scales


def ssim(real: np.ndarray, fake: np.ndarray, data_range: float = 1.0, kernel_size: int = 11) -> float:
    """SSIM of one pair of 2D or 3D images (MONAI ``SSIMMetric``, Gaussian window, sigma 1.5)."""
    if real.shape != fake.shape:
        raise ValueError(f"real and generated shapes differ: {real.shape} vs {fake.shape}")
    dims = real.ndim
    metric = SSIMMetric(spatial_dims=dims, data_range=data_range, win_size=kernel_size, reduction="none")
    return float(_per_image(metric, _as_batch(fake, dims), _as_batch(real, dims))[0])


def psnr(real: np.ndarray, fake: np.ndarray, max_val: float = 1.0) -> float:
    """PSNR in dB of one pair of images (MONAI ``PSNRMetric``); ``inf`` for identical images."""
    if real.shape != fake.shape:
        raise ValueError(f"real and generated shapes differ: {real.shape} vs {fake.shape}")
    dims = real.ndim
    metric = PSNRMetric(max_val=max_val, reduction="none")
    return float(_per_image(metric, _as_batch(fake, dims), _as_batch(real, dims))[0])


# ----------------------------------------------------------------------------------------- FID and KID
def _tensor(x: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64, device=device)


def gaussian_moments(
    features: np.ndarray | torch.Tensor, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean vector and unbiased covariance matrix of ``features`` ``(N, D)`` (float64)."""
    f = _tensor(features, device)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need a (N>=2, D) feature matrix, got shape {tuple(f.shape)}")
    mu = f.mean(dim=0)
    centred = f - mu
    return mu, centred.T @ centred / (len(f) - 1)


def _sqrt_psd(sigma: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a positive semi-definite matrix (negative rounding eigenvalues -> 0)."""
    evals, evecs = torch.linalg.eigh((sigma + sigma.T) / 2)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def frechet_distance(
    mu1: torch.Tensor | np.ndarray,
    sigma1: torch.Tensor | np.ndarray,
    mu2: torch.Tensor | np.ndarray,
    sigma2: torch.Tensor | np.ndarray,
    root1: torch.Tensor | None = None,
) -> float:
    """Fréchet distance of two Gaussians: ``|mu1-mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``.

    ``Tr((S1 S2)^(1/2))`` is computed as the sum of square roots of the eigenvalues of the symmetric
    positive semi-definite ``S1^(1/2) S2 S1^(1/2)`` (same spectrum as ``S1 S2``): two ``eigh`` calls,
    no complex square roots, stable for singular covariances (more dimensions than samples).

    Args:
        mu1: mean of the first Gaussian.
        sigma1: its covariance.
        mu2: mean of the second.
        sigma2: its covariance.
        root1: ``S1^(1/2)`` if already known (one reference against several sets), else computed.
    """
    mu1, mu2 = _tensor(mu1), _tensor(mu2, _tensor(mu1).device)
    s1, s2 = _tensor(sigma1, mu1.device), _tensor(sigma2, mu1.device)
    root1 = _sqrt_psd(s1) if root1 is None else root1
    inner = root1 @ s2 @ root1
    tr_covmean = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu1 - mu2
    value = diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * tr_covmean
    return max(float(value), 0.0)  # rounding can leave -1e-12 for identical sets


def fid(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, device: str = "cpu") -> float:
    """FID-style Fréchet distance between two feature sets ``(N, D)`` and ``(M, D)``."""
    return frechet_distance(*gaussian_moments(real, device), *gaussian_moments(fake, device))


def fid_against(
    reference: np.ndarray | torch.Tensor, others: Sequence[np.ndarray | torch.Tensor], device: str = "cpu"
) -> list[float]:
    """FID of ``reference`` against each of ``others``, with the reference's moments and covariance root
    computed once (the real-vs-real floor compares one real half with real and generated sets)."""
    mu1, s1 = gaussian_moments(reference, device)
    root1 = _sqrt_psd(s1)
    return [frechet_distance(mu1, s1, *gaussian_moments(x, device), root1=root1) for x in others]


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's cubic kernel ``k(x, y) = (x.y / D + 1)^3`` (Bińkowski et al. 2018)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased estimate of the squared MMD with the cubic polynomial kernel (diagonals excluded)."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(term_x + term_y - 2 * kxy.mean())


def kid_subsets(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    subsets: int,
    subset_size: int,
    seed: int,
    device: str = "cpu",
) -> np.ndarray:
    """KID value of each of ``subsets`` seeded random subsets (the torchmetrics / Bińkowski protocol).

    Each subset draws ``min(subset_size, N, M)`` rows without replacement from each set, independently.

    Returns:
        float64 array of the per-subset unbiased MMD^2; KID is its mean.
    """
    x, y = _tensor(real, device), _tensor(fake, device)
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(x)} and {len(y)}")
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        ix = torch.randperm(len(x), generator=gen)[:size].to(x.device)
        iy = torch.randperm(len(y), generator=gen)[:size].to(y.device)
        values.append(mmd2_unbiased(x[ix], y[iy]))
    return np.asarray(values, dtype=np.float64)


def kid_disjoint_subsets(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    subsets: int,
    seed: int,
    device: str = "cpu",
) -> np.ndarray:
    """KID of ``subsets`` disjoint subsets: the original's protocol (paper mode).

    One permutation of the real rows and one of the generated rows (drawn in this order from
    ``np.random.RandomState(seed)``, so the same seed gives what ``np.random.seed(seed)`` gave the
    original), each cut into ``subsets`` consecutive blocks of ``min(N, M) // subsets`` rows; block ``i``
    of the real rows against block ``i`` of the generated rows. Leftover rows are unused. The same cubic
    kernel ``(x.y / D + 1)^3`` and unbiased MMD^2 as :func:`mmd2_unbiased`.

    Returns:
        float64 array of the per-subset values; the original reported their mean and ``np.std`` (ddof 0).
    """
    x, y = _tensor(real, device), _tensor(fake, device)
    size = min(len(x), len(y)) // subsets
    if size < 2:
        raise ValueError(
            f"KID with {subsets} disjoint subsets needs at least {2 * subsets} rows per set, "
            f"got {len(x)} and {len(y)}"
        )
    rng = np.random.RandomState(seed)
    px, py = rng.permutation(len(x)), rng.permutation(len(y))
    values = []
    for i in range(subsets):
        ix = torch.as_tensor(px[i * size : (i + 1) * size], device=x.device)
        iy = torch.as_tensor(py[i * size : (i + 1) * size], device=y.device)
        values.append(mmd2_unbiased(x[ix], y[iy]))
    return np.asarray(values, dtype=np.float64)


def paired_feature_distances(real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    """Euclidean distance between the features of each real slice and its generated counterpart.

    Their SD is what the original printed after the FID "±" (docs/flaws.md): a spread of per-slice feature
    mismatches, not an uncertainty of FID.
    """
    if real.shape != fake.shape:
        raise ValueError(f"paired features need equal shapes, got {real.shape} and {fake.shape}")
    return np.linalg.norm(np.asarray(real, np.float64) - np.asarray(fake, np.float64), axis=1)


def standardise_jointly(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """z-score both feature sets with the mean and SD of the two sets pooled (FRD v0's "joint" choice).

    Hand-crafted features (radiomics) have wildly different scales, so a Fréchet distance on raw values
    measures the largest-valued features only. Pooled statistics keep every z-score bounded even when a
    feature is (nearly) constant in one set, which a reference-only SD would blow up. Features that are
    constant or non-finite in the pooled set carry no information and are dropped. Identical sets stay
    at distance 0.

    Returns:
        (real, fake, number of features kept).
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    pooled = np.concatenate([real, fake])
    finite = np.isfinite(pooled).all(axis=0)
    sd = np.where(finite, np.std(np.where(finite, pooled, 0.0), axis=0), 0.0)
    keep = finite & (sd > 1e-12 * (1 + np.abs(np.where(finite, pooled, 0.0)).max(axis=0)))
    if not keep.any():
        raise ValueError("no feature varies across the slices; cannot standardise")
    mean = pooled[:, keep].mean(axis=0)
    return (real[:, keep] - mean) / sd[keep], (fake[:, keep] - mean) / sd[keep], int(keep.sum())


# -------------------------------------------------------------------------------------------- summary
def mean_sd(values: Sequence[float] | np.ndarray, ddof: int = 1) -> tuple[float, float]:
    """Mean and SD of the finite entries (0 for a single value).

    Args:
        values: numbers; NaN/inf entries are ignored.
        ddof: 1 = sample SD (corrected mode); 0 = ``np.std``'s default, what the original printed after
            its "±" (paper mode).
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=ddof)) if v.size > ddof else 0.0


@dataclass(frozen=True)
class FloorBootstrap:
    """A real-vs-real floor, the synthetic-vs-real value on the same subjects, and their ratio.

    Args:
        floor: the metric between two disjoint sets of real subjects.
        synthetic: the metric with one real set replaced by its generated counterpart.
        ratio: ``synthetic / floor``, bootstrapped jointly (same resamples).
    """

    floor: Bootstrap
    synthetic: Bootstrap
    ratio: Bootstrap


def floor_ratio(synthetic: float, floor: float) -> float:
    """``synthetic / floor``; NaN unless the floor is positive and both are finite.

    KID's unbiased estimate is negative when real-vs-real cannot be told from zero at the sample size, and
    a ratio to a value <= 0 says nothing; bootstrap resamples without a ratio are left out and counted.
    """
    ok = np.isfinite(floor) and np.isfinite(synthetic) and floor > 0
    return synthetic / floor if ok else float("nan")


def bootstrap_floor(
    statistic: Callable[[np.ndarray], tuple[float, float]],
    n_units: int,
    n_boot: int,
    seed: int,
    confidence: float = 0.95,
) -> FloorBootstrap:
    """Joint percentile bootstrap of a (real-vs-real, synthetic-vs-real) pair of values and their ratio.

    Args:
        statistic: maps resampled unit indices (pairs of subjects, with repeats) to
            ``(floor value, synthetic value)`` computed on the same subjects.
        n_units: number of units (subject pairs).
        n_boot: resamples (0 = estimates only).
        seed: seed of the resampling.
        confidence: interval level.
    """
    if n_units < 1:
        raise ValueError("bootstrap needs at least one unit")
    floor, synthetic = statistic(np.arange(n_units))
    rng = np.random.default_rng(seed)
    reps = np.asarray([statistic(rng.integers(0, n_units, n_units)) for _ in range(n_boot)], float)
    reps = reps.reshape(-1, 2)
    ratios = np.asarray([floor_ratio(s, f) for f, s in reps], float)
    return FloorBootstrap(
        summarise_replicates(float(floor), reps[:, 0], confidence),
        summarise_replicates(float(synthetic), reps[:, 1], confidence),
        summarise_replicates(floor_ratio(float(synthetic), float(floor)), ratios, confidence),
    )
