"""The fidelity stage end to end on tiny BraTS-layout case folders (real vs generated)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from prepared_run import write_prepared_run
from scipy import ndimage as ndi

from gliomagen.cases import Case, write_case
from gliomagen.config import MODALITIES, Config, load_config
from gliomagen.fidelity.evaluate import evaluate, run_fidelity
from gliomagen.fidelity.outputs import FidelityOutputs, FidelityResults, read_results
from gliomagen.fidelity.pairs import find_pairs
from gliomagen.fidelity.report import additional_table, fidelity_table
from gliomagen.locks import LockHeld, lock_path

SHAPE = (16, 16, 12)
AFFINE = np.diag([-4.0, 4.0, 4.0, 1.0])


def _volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    head = (x / 0.8) ** 2 + (y / 0.8) ** 2 + (z / 0.65) ** 2 < 1  # the outer axial slices stay empty
    texture = ndi.gaussian_filter(rng.standard_normal(SHAPE), 1.0)
    image = np.stack([np.clip(head * (0.4 + 0.1 * k + 0.3 * texture), 0, 1) for k in range(4)]).astype(
        np.float32
    )
    mask = head.astype(np.uint8)
    mask[(x - 0.2) ** 2 + y**2 + z**2 < 0.08] = 3
    return image, mask


def make_run(root: Path, n: int = 3, identical: bool = False, seed: int = 0) -> None:
    """``n`` real validation cases (prepared, with their cases.csv) and 'generated' ones (noisy or exact
    copies)."""
    rng = np.random.default_rng(seed)
    real = []
    for i in range(n):
        image, mask = _volume(rng)
        case_id = f"BraTS-GLI-{i:05d}-000"
        real.append(("val", Case(case_id, image, mask, AFFINE)))
        fake = (
            image
            if identical
            else np.clip(image + 0.05 * rng.standard_normal(image.shape) * (mask > 0), 0, 1)
        )
        write_case(root / "synthetic" / "val", Case(case_id, fake.astype(np.float32), mask, AFFINE))
    write_prepared_run(root, real)


@pytest.fixture(autouse=True)
def _no_weights(tmp_path: Path) -> Iterator[None]:
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))  # whatever this machine caches, the Inception weights are absent
    yield
    torch.hub.set_dir(old)


def _cfg(root: Path, *extra: str) -> Config:
    overrides = [
        "fidelity.extractors=[radiomics, inception-fid]",
        "fidelity.bootstrap=25",
        "fidelity.kid_subsets=4",
        "fidelity.kid_subset_size=8",
        "runtime.workers=1",
        "fidelity.frd=false",
        *extra,
    ]
    return load_config("smoke", overrides, run_dir=root)


def _rows(results: FidelityResults) -> pd.DataFrame:
    return results.frame()


def _one(frame: pd.DataFrame, modality: str, metric: str, variant: str, extractor: str = "") -> pd.Series:
    hit = frame[
        frame["modality"].eq(modality)
        & frame["metric"].eq(metric)
        & frame["variant"].eq(variant)
        & frame["extractor"].eq(extractor)
    ]
    assert len(hit) == 1, (modality, metric, variant, extractor)
    return hit.iloc[0]


@pytest.mark.slow
def test_evaluate_writes_tables_names_extractors_and_skips_when_done(tmp_path: Path) -> None:
    make_run(tmp_path)
    cfg = _cfg(tmp_path, "fidelity.frd=true", "fidelity.frd_max_slices=6")
    stage = run_fidelity(cfg, progress=False)
    results = stage.results
    paths = FidelityOutputs(cfg.paths)
    assert stage.outputs == paths and paths.markers() == [paths.results_json]
    for pattern in paths.declared():  # every declared output exists after a complete run
        assert list(pattern.parent.glob(pattern.name)), pattern
    on_disk = json.loads(paths.results_json.read_text())  # strict JSON: no NaN/Infinity tokens
    assert on_disk["provenance"]["config_hash"] == cfg.hash
    assert read_results(cfg.paths) == results and results.to_dict() == on_disk
    assert results.subjects == [f"BraTS-GLI-{i:05d}-000" for i in range(3)]
    assert results.extractors["radiomics"]["status"] == "ok"
    assert results.extractors["inception-fid"]["status"] == "not available: weights missing"
    assert results.settings["ms_ssim_scales_2d"] == 1 and results.settings["axial_voxel_axis"] == 2
    assert len(stage.conditioning) == 3 * len(MODALITIES)

    frame = _rows(results)
    for modality in (*MODALITIES, "mean"):
        paper = _one(frame, modality, "FID", "paper", "radiomics")
        assert paper["status"] == "ok" and paper["value"] > 0 and paper["spread"] > 0
        assert (
            _one(frame, modality, "FID", "paper", "inception-fid")["status"]
            == "not available: weights missing"
        )
    corrected = _one(frame, "t1n", "FID", "corrected", "radiomics")
    assert corrected["ci_low"] <= corrected["value"] <= corrected["ci_high"]
    assert (
        corrected["n_slices"] < _one(frame, "t1n", "FID", "paper", "radiomics")["n_slices"]
    )  # empty ones gone
    frd = _one(frame, "t2f", "FRD", "corrected", "frd-score v1 (pyradiomics)")
    assert frd["status"] == "ok" and np.isfinite(frd["value"])

    per_subject = pd.read_csv(paths.per_subject_csv)
    assert len(per_subject) == 3 * len(MODALITIES)
    # the paper's MS-SSIM is the mean over every slice of every subject
    per_slice = pd.read_csv(paths.per_slice_csv)
    t1n = per_slice[per_slice["modality"].eq("t1n")]
    assert _one(frame, "t1n", "MS-SSIM 2D", "paper")["value"] == pytest.approx(t1n["ms_ssim"].mean())
    # ... ± np.std over the same slices (ddof 0, as the original printed it)
    assert _one(frame, "t1n", "MS-SSIM 2D", "paper")["spread"] == pytest.approx(np.std(t1n["ms_ssim"]))
    assert t1n["empty"].any() and not t1n["empty"].all()

    table = fidelity_table(results, "radiomics")
    assert table.shape == (5, 15) and "paper (reported, inception-torchvision)" in table.columns.levels[0]
    assert table.iloc[0, 0] == "0.7005 ± 0.2585"
    assert "smoke: corrected (radiomics)" in table.columns.levels[0]
    assert "smoke: real-vs-real (radiomics)" in table.columns.levels[0]
    assert "smoke: synthetic / real-vs-real (radiomics)" in table.columns.levels[0]
    extra = additional_table(results)
    assert extra.shape == (15, 4)
    frd_floor = _one(frame, "t2f", "FRD", "real-vs-real", "frd-score v1 (pyradiomics)")
    assert frd_floor["status"] == "ok" and frd_floor["ratio"] > 0

    # a second call with the same config and inputs loads the result instead of recomputing
    stamp = paths.results_json.stat().st_mtime_ns
    assert evaluate(cfg, progress=False).to_dict() == on_disk
    assert paths.results_json.stat().st_mtime_ns == stamp
    # ... and the whole stage reuses the mask-following table written after those results
    written = paths.conditioning_csv.stat().st_mtime_ns
    again = run_fidelity(cfg, progress=False)
    assert paths.conditioning_csv.stat().st_mtime_ns == written
    pd.testing.assert_frame_equal(again.conditioning, stage.conditioning)


def test_identical_volumes_score_perfectly(tmp_path: Path) -> None:
    make_run(tmp_path, n=2, identical=True)
    cfg = _cfg(tmp_path, "fidelity.extractors=[radiomics]")
    frame = _rows(evaluate(cfg, progress=False))
    for modality in MODALITIES:
        assert _one(frame, modality, "MS-SSIM 2D", "corrected")["value"] == pytest.approx(1.0, abs=1e-5)
        assert _one(frame, modality, "FID", "paper", "radiomics")["value"] == pytest.approx(0.0, abs=1e-6)
        assert _one(frame, modality, "FID", "paper", "radiomics")["spread"] == pytest.approx(0.0, abs=1e-9)
        assert _one(frame, modality, "FID", "corrected", "radiomics")["value"] == pytest.approx(0.0, abs=1e-6)
        assert pd.isna(_one(frame, modality, "PSNR 3D (dB)", "corrected")["value"])  # infinite: JSON null
        for metric in ("FID", "KID"):  # generated == real: the matched synthetic comparison is the floor
            row = _one(frame, modality, metric, "real-vs-real", "radiomics")
            assert row["synthetic_matched"] == pytest.approx(row["value"], rel=1e-9) and row["value"] != 0
            # ratio 1, or undefined where the floor is <= 0 (KID's unbiased estimate can be negative)
            assert row["ratio"] == pytest.approx(1.0, rel=1e-9) if row["value"] > 0 else pd.isna(row["ratio"])
        msssim = _one(frame, modality, "MS-SSIM 2D", "real-vs-real")
        assert msssim["synthetic_matched"] == pytest.approx(1.0, abs=1e-5) and msssim["value"] < 0.99


@pytest.mark.slow  # four subjects' radiomics features
def test_real_vs_real_floor_for_every_metric(tmp_path: Path) -> None:
    make_run(tmp_path, n=4)
    cfg = _cfg(tmp_path, "fidelity.extractors=[radiomics]")
    results = evaluate(cfg, progress=False)
    frame = _rows(results)
    halves = results.settings["real_floor_halves"]
    assert len(halves[0]) == len(halves[1]) == 2 and not set(halves[0]) & set(halves[1])
    metrics = [("MS-SSIM 2D", ""), ("MS-SSIM 3D", ""), ("SSIM 3D", ""), ("PSNR 3D (dB)", "")]
    for modality in (*MODALITIES, "mean"):
        for metric, extractor in [*metrics, ("FID", "radiomics"), ("KID", "radiomics")]:
            row = _one(frame, modality, metric, "real-vs-real", extractor)
            assert row["status"] == "ok" and np.isfinite(row["value"]), row
            if modality == "mean":  # mean over modalities; its ratio is the mean of the four ratios
                continue
            # a ratio exists exactly when the floor is positive (KID's floor can be <= 0 on tiny data)
            assert np.isfinite(row["ratio"]) == (row["value"] > 0), row
            assert row["ci_low"] <= row["value"] <= row["ci_high"]
            if row["value"] > 0:
                assert row["ratio_ci_low"] <= row["ratio"] <= row["ratio_ci_high"]
                assert row["ratio"] == pytest.approx(row["synthetic_matched"] / row["value"])

    # the 2D MS-SSIM floor by hand: real a_k vs real b_k, reference's non-empty slices, mean over pairs
    from gliomagen.cases import load_case
    from gliomagen.fidelity import metrics as FM

    prepared = tmp_path / "prepared" / "val"
    values = []
    for a, b in zip(*halves, strict=True):
        ra, rb = load_case(prepared / a, with_seg=False), load_case(prepared / b, with_seg=False)
        sa, sb = FM.axial_slices(ra.image[0], 2), FM.axial_slices(rb.image[0], 2)
        keep = FM.nonempty_slices(sa)
        values.append(FM.ms_ssim(sa[keep], sb[keep])[0].mean())
    assert _one(frame, "t1n", "MS-SSIM 2D", "real-vs-real")["value"] == pytest.approx(
        np.mean(values), rel=1e-6
    )

    # the FID floor by hand from the cached features: first half's real slices vs the second half's
    def feats(ids: list[str], which: str) -> np.ndarray:
        out = []
        for case_id in ids:
            with np.load(FidelityOutputs(cfg.paths).features_file("radiomics", case_id)) as z:
                out.append(z[f"t2w_{which}"].astype(np.float64))
        return np.concatenate(out)

    per_slice = pd.read_csv(FidelityOutputs(cfg.paths).per_slice_csv)
    t2w = per_slice[per_slice["modality"].eq("t2w")]

    def nonempty(ids: list[str]) -> np.ndarray:
        return np.concatenate(
            [~t2w[t2w["id"].eq(i)].sort_values("slice")["empty"].to_numpy(bool) for i in ids]
        )

    ra, rb, fb = feats(halves[0], "real"), feats(halves[1], "real"), feats(halves[1], "fake")
    ra, rb, fb = ra[nonempty(halves[0])], rb[nonempty(halves[1])], fb[nonempty(halves[1])]
    za, zb, _ = FM.standardise_jointly(ra, rb)
    fid_floor = _one(frame, "t2w", "FID", "real-vs-real", "radiomics")
    assert fid_floor["value"] == pytest.approx(FM.fid(za, zb), rel=1e-6)
    za, zf, _ = FM.standardise_jointly(ra, fb)
    assert fid_floor["synthetic_matched"] == pytest.approx(FM.fid(za, zf), rel=1e-6)


def test_bad_and_missing_cases_are_reported_not_fatal(tmp_path: Path) -> None:
    make_run(tmp_path, n=3)
    # case 1: generated volume on another grid; case 2: no generated volume at all
    bad = "BraTS-GLI-00001-000"
    image, mask = _volume(np.random.default_rng(9))
    write_case(
        tmp_path / "synthetic" / "val",
        Case(bad, image[:, :, :, :-1].copy(), mask[:, :, :-1].copy(), AFFINE),
    )
    for path in (tmp_path / "synthetic" / "val" / "BraTS-GLI-00002-000").iterdir():
        path.unlink()
    cfg = _cfg(tmp_path, "fidelity.extractors=[radiomics]")
    pairs, skipped = find_pairs(cfg)
    assert [p.case_id for p in pairs] == ["BraTS-GLI-00000-000", bad]
    assert "no complete generated volume" in skipped[0]["reason"]
    results = evaluate(cfg, progress=False)
    assert results.subjects == ["BraTS-GLI-00000-000"]
    reasons = {s["id"]: s["reason"] for s in results.skipped}
    assert "differs from the real" in reasons[bad] and bad in reasons[bad]


def test_no_generated_volumes_is_a_clear_error(tmp_path: Path) -> None:
    make_run(tmp_path, n=1)
    for path in (tmp_path / "synthetic" / "val" / "BraTS-GLI-00000-000").iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match="gliomagen generate"):
        evaluate(_cfg(tmp_path), progress=False)


def test_no_prepared_cases_says_run_prepare(tmp_path: Path) -> None:
    make_run(tmp_path, n=1)
    (tmp_path / "prepared" / "cases.csv").unlink()  # the data stage's table is what lists usable cases
    with pytest.raises(FileNotFoundError, match="gliomagen prepare"):
        evaluate(_cfg(tmp_path), progress=False)


def test_a_busy_run_folder_is_refused(tmp_path: Path) -> None:
    import fcntl
    import os

    make_run(tmp_path, n=1)
    cfg = _cfg(tmp_path)
    path = lock_path(cfg.paths.root, "fidelity")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another process running the stage holds it
    try:
        with pytest.raises(LockHeld, match="fidelity"):
            run_fidelity(cfg, progress=False)
        assert not FidelityOutputs(cfg.paths).results_json.exists()
    finally:
        os.close(fd)


def test_seeds_are_stable_hashes_and_the_paper_kid_takes_them(tmp_path: Path) -> None:
    from gliomagen.fidelity import metrics as FM
    from gliomagen.fidelity import rows as FR
    from gliomagen.fidelity.synthetic import paper_kid_row
    from gliomagen.hashing import stable_seed

    cfg = _cfg(tmp_path, "fidelity.seed=3")
    seed = FR.seed(cfg, "t1n", "radiomics", "kid")
    assert seed == stable_seed(3, "t1n", "radiomics", "kid") and seed != FR.seed(
        cfg, "t1c", "radiomics", "kid"
    )
    assert seed >= 2**32  # beyond np.random.RandomState's range: the paper KID reduces it
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 5)), rng.normal(size=(40, 5))
    r = paper_kid_row(cfg, "t1n", "radiomics", real, fake, "cpu", "", {})
    expected = FM.kid_disjoint_subsets(real, fake, 4, seed % 2**32)
    assert r["status"] == "ok" and r["value"] == pytest.approx(expected.mean())
