"""Fidelity math against independent references: scipy, closed forms, direct sums, pytorch_msssim."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pytorch_msssim import ms_ssim as reference_ms_ssim
from scipy import linalg

from gliomagen.bootstrap import bootstrap_subjects
from gliomagen.fidelity import metrics as M


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID the textbook way: scipy's matrix square root of the covariance product."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_scipy_sqrtm() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 12))
    b = rng.normal(loc=0.3, scale=1.5, size=(250, 12)) @ rng.normal(size=(12, 12)) * 0.4
    assert M.fid(a, b) == pytest.approx(_scipy_fid(a, b), rel=1e-8)
    c = rng.normal(size=(80, 12))
    assert M.fid_against(a, [b, c]) == pytest.approx([_scipy_fid(a, b), _scipy_fid(a, c)], rel=1e-8)


def test_frechet_distance_closed_form_for_two_gaussians() -> None:
    # diagonal covariances: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert M.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, abs=1e-10)
    # a scaled full covariance: S2 = c^2 S1 gives Tr(S1) (1 - c)^2
    rng = np.random.default_rng(1)
    root = rng.normal(size=(5, 5))
    s1 = root @ root.T
    assert M.frechet_distance(np.zeros(5), s1, np.zeros(5), 9 * s1) == pytest.approx(
        4 * np.trace(s1), rel=1e-9
    )


@pytest.mark.parametrize("n, d", [(200, 16), (10, 40)])  # also fewer samples than dimensions
def test_fid_of_a_set_with_itself_is_zero(n: int, d: int) -> None:
    x = np.random.default_rng(2).normal(size=(n, d))
    assert M.fid(x, x) == pytest.approx(0.0, abs=1e-7)


def _direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic kernel, written as explicit double sums."""
    d = x.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (a @ b / d + 1) ** 3

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_kid_matches_direct_computation() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(15, 6)), rng.normal(loc=0.5, size=(15, 6))
    # a subset as large as the set takes every row (in some order, which MMD ignores)
    values = M.kid_subsets(x, y, subsets=3, subset_size=15, seed=0)
    assert values == pytest.approx([_direct_mmd2(x, y)] * 3, rel=1e-10)


def test_kid_subsets_are_seeded() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(60, 5)), rng.normal(size=(60, 5))
    first = M.kid_subsets(x, y, subsets=10, subset_size=20, seed=7)
    assert np.array_equal(first, M.kid_subsets(x, y, subsets=10, subset_size=20, seed=7))
    assert not np.array_equal(first, M.kid_subsets(x, y, subsets=10, subset_size=20, seed=8))
    assert len(first) == 10


def _original_kid_protocol(x: np.ndarray, y: np.ndarray, subsets: int) -> tuple[float, float]:
    """The original's KID '±' protocol, written out independently: global-RNG permutations of both sets,
    consecutive disjoint blocks of min(N, M) // subsets rows, explicit double-sum MMD, mean and np.std."""
    size = min(len(x), len(y)) // subsets
    px, py = np.random.permutation(len(x)), np.random.permutation(len(y))
    vals = [
        _direct_mmd2(x[px[i * size : (i + 1) * size]], y[py[i * size : (i + 1) * size]])
        for i in range(subsets)
    ]
    return float(np.mean(vals)), float(np.std(vals))


def test_paper_kid_is_the_originals_disjoint_subset_protocol() -> None:
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(53, 4)), rng.normal(loc=0.2, size=(47, 4))  # N//10 = 4, leftovers unused
    np.random.seed(123)
    mean, sd = _original_kid_protocol(x, y, 10)
    ours = M.kid_disjoint_subsets(x, y, subsets=10, seed=123)
    assert len(ours) == 10
    assert ours.mean() == pytest.approx(mean, rel=1e-10)
    assert ours.std(ddof=0) == pytest.approx(sd, rel=1e-10)
    assert ours.std(ddof=1) != pytest.approx(sd, rel=1e-3)  # the old sample SD would not match
    # disjoint subsets are not the overlapping draws of the corrected protocol
    assert not np.allclose(ours, M.kid_subsets(x, y, subsets=10, subset_size=4, seed=123))
    with pytest.raises(ValueError, match="disjoint subsets needs at least 20 rows"):
        M.kid_disjoint_subsets(x[:15], y, subsets=10, seed=0)


def test_mean_sd_paper_mode_is_numpy_std() -> None:
    values = [0.2, 0.5, 0.9, 0.4]
    assert M.mean_sd(values, ddof=0) == (pytest.approx(np.mean(values)), pytest.approx(np.std(values)))
    assert M.mean_sd(values)[1] == pytest.approx(np.std(values, ddof=1))
    assert M.mean_sd([0.3], ddof=0) == (0.3, 0.0)


def test_five_scale_weights_are_pytorch_msssims_unnormalised() -> None:
    # pytorch_msssim's default weights (weights=None) give bit-identical values to ours passed explicitly
    rng = np.random.default_rng(12)
    real = torch.from_numpy(rng.random((2, 1, 176, 176)))
    fake = (real + 0.3 * torch.from_numpy(rng.standard_normal(real.shape))).clamp(0, 1)
    default = reference_ms_ssim(fake, real, data_range=1.0, size_average=False)
    explicit = reference_ms_ssim(
        fake, real, data_range=1.0, size_average=False, weights=list(M.ms_ssim_weights(5))
    )
    assert torch.equal(default, explicit)
    assert sum(M.ms_ssim_weights(5)) == pytest.approx(1.0001)
    w = np.asarray(M.MS_SSIM_WEIGHTS)
    renormalised = reference_ms_ssim(
        fake, real, data_range=1.0, size_average=False, weights=list(w / w.sum())
    )
    assert not torch.allclose(default, renormalised, rtol=0, atol=1e-9)  # the test can tell the two apart


def test_ms_ssim_passes_the_unnormalised_weights_to_monai() -> None:
    from monai.metrics import MultiScaleSSIMMetric

    rng = np.random.default_rng(13)
    real = rng.random((2, 176, 176)).astype(np.float32)
    fake = np.clip(real + 0.3 * rng.standard_normal(real.shape), 0, 1).astype(np.float32)
    ours, scales = M.ms_ssim(real, fake)
    a, b = torch.from_numpy(fake)[:, None], torch.from_numpy(real)[:, None]

    def monai(weights: tuple[float, ...]) -> np.ndarray:
        metric = MultiScaleSSIMMetric(2, data_range=1.0, kernel_size=11, weights=weights, reduction="none")
        return metric(a, b).double().numpy().ravel()

    w = np.asarray(M.MS_SSIM_WEIGHTS)
    assert scales == 5 and np.array_equal(ours, monai(M.MS_SSIM_WEIGHTS))
    assert not np.array_equal(ours, monai(tuple(w / w.sum())))


def test_ms_ssim_2d_matches_pytorch_msssim_at_five_scales() -> None:
    rng = np.random.default_rng(5)
    real = rng.random((3, 176, 176)).astype(np.float32)
    fake = np.clip(real + 0.15 * rng.standard_normal(real.shape), 0, 1).astype(np.float32)
    ours, scales = M.ms_ssim(real, fake, spatial_dims=2, data_range=1.0, kernel_size=11)
    ref = reference_ms_ssim(
        torch.from_numpy(fake)[:, None],
        torch.from_numpy(real)[:, None],
        data_range=1.0,
        win_size=11,
        size_average=False,
    )
    assert scales == 5
    # same formula and weights; float32 on both sides (MONAI casts to float32), separable (theirs) vs full
    # 2D (MONAI) Gaussian convolution: the values agree to ~1e-5, below the paper's 4 printed decimals
    assert ours == pytest.approx(ref.double().numpy().ravel(), abs=3e-5)


def test_ms_ssim_2d_with_fewer_scales_matches_a_composition_of_pytorch_msssim() -> None:
    # pytorch_msssim refuses images under 161 pixels; compose its single-scale pieces by hand instead
    ssim_module = importlib.import_module("pytorch_msssim.ssim")
    rng = np.random.default_rng(6)
    real = rng.random((4, 32, 40)).astype(np.float32)
    fake = np.clip(real + 0.1 * rng.standard_normal(real.shape), 0, 1).astype(np.float32)
    ours, scales = M.ms_ssim(real, fake)
    assert scales == 2
    w = M.ms_ssim_weights(2)
    x, y = torch.from_numpy(fake)[:, None], torch.from_numpy(real)[:, None]
    win = ssim_module._fspecial_gauss_1d(11, 1.5).repeat(1, 1, 1, 1)
    _, cs0 = ssim_module._ssim(x, y, 1.0, win, size_average=False)
    ssim1, _ = ssim_module._ssim(F.avg_pool2d(x, 2), F.avg_pool2d(y, 2), 1.0, win, size_average=False)
    expected = torch.relu(cs0) ** w[0] * torch.relu(ssim1) ** w[1]
    assert ours == pytest.approx(expected.double().numpy().ravel(), abs=1e-5)
    assert sum(w) == pytest.approx(1.0)  # fewer than 5 scales: the first weights renormalised (our rule)
    assert w == pytest.approx((0.0448 / 0.3304, 0.2856 / 0.3304))


def test_empty_slices_score_one_which_is_why_they_are_excluded() -> None:
    empty = np.zeros((2, 32, 32), np.float32)
    assert M.ms_ssim(empty, empty)[0] == pytest.approx([1.0, 1.0])
    slices = np.zeros((3, 8, 8))
    slices[1, 4, 4] = 0.2
    assert M.nonempty_slices(slices).tolist() == [False, True, False]
    assert M.nonempty_slices(slices, threshold=0.5).tolist() == [False, False, False]


def test_scales_that_fit_follow_monai() -> None:
    assert M.ms_ssim_scales_that_fit((192, 192), 11) == 5
    assert M.ms_ssim_scales_that_fit((32, 40), 11) == 2
    assert M.ms_ssim_scales_that_fit((16, 16), 11) == 1  # MONAI's check alone would allow 2, then crash
    assert M.ms_ssim(np.ones((1, 16, 16)), np.ones((1, 16, 16)))[1] == 1
    assert M.ms_ssim_scales_that_fit((192, 192, 144), 11) == 4  # the paper volume needs 4 in 3D
    with pytest.raises(ValueError, match="smaller than"):
        M.ms_ssim_scales_that_fit((8, 8), 11)
    with pytest.raises(ValueError, match="do not fit"):
        M.ms_ssim(np.zeros((1, 32, 40)), np.zeros((1, 32, 40)), scales=5)


def test_psnr_and_ssim_against_hand_values() -> None:
    real = np.zeros((16, 16, 16), np.float32)
    fake = np.full_like(real, 0.1)
    assert M.psnr(real, fake) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01 -> 10 log10(1 / 0.01)
    assert M.psnr(real, real) == float("inf")
    x = np.random.default_rng(7).random((16, 16, 16)).astype(np.float32)
    assert M.ssim(x, x) == pytest.approx(1.0, abs=1e-5)


def test_paired_feature_distances_and_joint_standardisation() -> None:
    real = np.array([[0.0, 0.0], [1.0, 1.0]])
    fake = np.array([[3.0, 4.0], [1.0, 1.0]])
    assert M.paired_feature_distances(real, fake).tolist() == [5.0, 0.0]
    a = np.column_stack([np.arange(6.0), np.full(6, 3.0), 1e6 * np.arange(6.0)])
    za, zb, kept = M.standardise_jointly(a, a)
    assert kept == 2  # the constant column is dropped
    assert np.allclose(za.mean(0), 0) and np.allclose(za.std(0), 1)
    assert M.fid(za, zb) == pytest.approx(0.0, abs=1e-9)


def test_axial_axis_from_the_affine() -> None:
    assert M.axial_axis(np.diag([-1.0, 1.0, 1.0, 1.0])) == 2
    permuted = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], float)  # voxel j -> S
    assert M.axial_axis(permuted) == 1
    assert M.axial_slices(np.zeros((2, 3, 4)), 1).shape == (3, 2, 4)


def test_bootstrap_is_reproducible_for_a_seed() -> None:
    values = np.random.default_rng(8).normal(size=12)

    def stat(idx: np.ndarray) -> float:
        return float(values[idx].mean())

    first = bootstrap_subjects(stat, 12, 300, seed=3)
    assert first == bootstrap_subjects(stat, 12, 300, seed=3)
    assert first != bootstrap_subjects(stat, 12, 300, seed=4)
    assert first.estimate == pytest.approx(values.mean())
    assert first.low < first.estimate < first.high
    assert first.replicates == 300
    # the bootstrap SE of a mean is close to SD / sqrt(n)
    assert first.se == pytest.approx(values.std(ddof=0) / np.sqrt(12), rel=0.25)
    none = bootstrap_subjects(stat, 12, 0, seed=3)
    assert np.isnan(none.low) and none.replicates == 0


def test_mean_sd_uses_the_sample_sd() -> None:
    mean, sd = M.mean_sd([0.7005, 0.7647, 0.6513, 0.7842])  # the paper's MS-SSIM mean row: 0.7252 ± 0.06
    assert mean == pytest.approx(0.7252, abs=1e-4)
    assert sd == pytest.approx(0.06, abs=0.001)


def test_floor_bootstrap_is_joint_and_seeded() -> None:
    rng = np.random.default_rng(14)
    floor, synth = rng.normal(10, 1, 8), rng.normal(20, 1, 8)

    def stat(idx: np.ndarray) -> tuple[float, float]:
        return float(floor[idx].mean()), float(synth[idx].mean())

    out = M.bootstrap_floor(stat, 8, 300, seed=1)
    assert out == M.bootstrap_floor(stat, 8, 300, seed=1)
    assert out.floor.estimate == pytest.approx(floor.mean()) and out.synthetic.estimate == pytest.approx(
        synth.mean()
    )
    assert out.ratio.estimate == pytest.approx(synth.mean() / floor.mean())
    assert out.ratio.low < out.ratio.estimate < out.ratio.high and out.ratio.replicates == 300
    # the same resamples drive all three: replaying the generator reproduces the ratio interval
    gen = np.random.default_rng(1)
    reps = [stat(gen.integers(0, 8, 8)) for _ in range(300)]
    ratios = [s / f for f, s in reps]
    assert out.ratio.low == pytest.approx(np.quantile(ratios, 0.025))
    # a floor <= 0 (KID's unbiased estimate can be negative) has no ratio
    assert np.isnan(M.floor_ratio(0.5, -0.1)) and np.isnan(M.floor_ratio(0.5, 0.0))
    assert M.floor_ratio(0.5, 0.25) == 2.0
