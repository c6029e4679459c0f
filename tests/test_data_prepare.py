"""The phantom and the whole data stage end to end (gliomagen.data.phantom, gliomagen.data.prepare)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from gliomagen.cases import load_case
from gliomagen.config import Config, PhantomConfig, load_config
from gliomagen.data.outputs import PrepareOutputs, read_cases_table, usable_cases
from gliomagen.data.phantom import FAULTS, grid_affine, make_phantom
from gliomagen.data.prepare import PrepareSummary, prepare

OVERRIDES = ["data.phantom.patients=4", "data.phantom.faults=true", "runtime.workers=1", "data.split.n_val=2"]
SMALL = {"patients": 2, "max_timepoints": 2, "shape": (46, 55, 46), "spacing": 4.0, "seed": 3}


def _arrays(root: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(root.glob("*/*.nii.gz"))}


def test_phantom_is_deterministic_and_brats_like(tmp_path: Path) -> None:
    make_phantom(tmp_path / "a", PhantomConfig(**SMALL), progress=False)
    make_phantom(tmp_path / "b", PhantomConfig(**SMALL), progress=False)
    make_phantom(tmp_path / "c", PhantomConfig(**{**SMALL, "seed": 4}), progress=False)
    a, b, c = _arrays(tmp_path / "a"), _arrays(tmp_path / "b"), _arrays(tmp_path / "c")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    common = sorted(a.keys() & c.keys())
    assert any(not np.array_equal(a[k], c[k]) for k in common)
    seg_name = next(k for k in a if k.endswith("-seg.nii.gz"))
    assert set(np.unique(a[seg_name])) <= {0, 1, 2, 3, 4} and a[seg_name].max() > 0
    img = nib.load(next((tmp_path / "a").glob("*/*-t2f.nii.gz")))
    np.testing.assert_allclose(img.affine, grid_affine(SMALL["shape"], SMALL["spacing"]))
    assert (tmp_path / "a" / "README.txt").read_text().startswith("GliomaGen PHANTOM")
    with pytest.raises(FileExistsError, match="other settings"):
        make_phantom(tmp_path / "a", PhantomConfig(**{**SMALL, "seed": 4}), progress=False)
    make_phantom(tmp_path / "a", PhantomConfig(**{**SMALL, "seed": 4}), progress=False, replace=True)
    replaced = _arrays(tmp_path / "a")
    assert replaced.keys() == c.keys() and all(np.array_equal(replaced[k], c[k]) for k in c)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="holds no phantom.json"):
        make_phantom(tmp_path / "d", PhantomConfig(**SMALL), progress=False, replace=True)


def test_brats_grid_affine_is_mni152() -> None:
    np.testing.assert_allclose(grid_affine((182, 218, 182), 1.0)[:3, 3], [90, -126, -72])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, PrepareSummary, pd.DataFrame]:
    """One phantom with every fault, prepared once for the tests below (they only read it)."""
    root = tmp_path_factory.mktemp("prepared")
    cfg = load_config("smoke", OVERRIDES, run_dir=root / "run")
    summary = prepare(cfg, progress=False)  # generates the phantom into <run>/raw first
    return cfg, summary, read_cases_table(cfg)


def _faults(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["patient"].str.startswith("9")].set_index("id")


@pytest.mark.slow
def test_every_fault_is_a_qc_row_that_names_the_file(
    prepared: tuple[Config, PrepareSummary, pd.DataFrame],
) -> None:
    _, _, table = prepared
    faults = _faults(table)
    assert len(faults) == len(FAULTS)
    expected = {
        "missing_modality": "t2w.nii.gz: file is missing",
        "shape_mismatch": "t1c.nii.gz: shape (91, 109, 90) differs",
        "affine_mismatch": "t2w.nii.gz: affine differs",
        "nan_values": "t2f.nii.gz: 216 NaN/infinite voxel(s)",
        "unknown_label": "seg.nii.gz: unknown label value(s) [7]",
        "truncated_gzip": "t1n.nii.gz: unreadable or truncated",
        "empty_segmentation": "empty_mask: ",
        "label_lost": "label_lost: ET (1 raw voxels)",
        "head_touches_border": "head_touches_border: ",
        "head_holes": "head_holes: ",
    }
    for (case_id, row), (fault, text) in zip(faults.iterrows(), expected.items(), strict=True):
        assert text in row["qc_reason"], (fault, row["qc_reason"])
        assert row["split"] == "excluded" and row["qc_status"] in {"invalid", "flagged"}
        assert case_id in row["qc_reason"] or fault in {
            "empty_segmentation",
            "head_touches_border",
            "head_holes",
        }


@pytest.mark.slow
def test_the_split_is_by_patient_and_never_exceeds_n_val(
    prepared: tuple[Config, PrepareSummary, pd.DataFrame],
) -> None:
    cfg, summary, table = prepared
    good = table[~table["patient"].str.startswith("9")]
    assert (good["qc_status"] == "ok").all(), good[["id", "qc_reason"]]
    assert set(good.groupby("patient")["split"].nunique()) == {1}  # no patient on both sides
    assert 1 <= summary.val <= 2 and summary.patients_on_both_sides == []  # never more than n_val
    val = usable_cases(cfg, "val")
    assert [d.name for d in val] == sorted(table.loc[table["split"] == "val", "id"])


@pytest.mark.slow
def test_prepared_cases_keep_their_world_position(
    prepared: tuple[Config, PrepareSummary, pd.DataFrame],
) -> None:
    cfg, _, _ = prepared
    val = usable_cases(cfg, "val")
    case = load_case(val[0])
    assert case.image.dtype == np.float32 and case.mask.dtype == np.uint8
    assert case.image.shape == (4, 32, 40, 32) and case.image.min() >= 0 and case.image.max() <= 1
    assert set(np.unique(case.mask)) <= {lab.value for lab in cfg.data.labels}
    raw = nib.load(cfg.raw_dir / val[0].name / f"{val[0].name}-seg.nii.gz")
    # the grid centres coincide in world space
    centre_raw = raw.affine @ np.r_[(np.array(raw.shape) - 1) / 2, 1]
    centre_out = case.affine @ np.r_[(np.array(case.mask.shape) - 1) / 2, 1]
    np.testing.assert_allclose(centre_raw, centre_out, atol=1e-6)


@pytest.mark.slow
def test_rerunning_skips_every_case_and_reports_every_fault(
    prepared: tuple[Config, PrepareSummary, pd.DataFrame],
) -> None:
    cfg, _, table = prepared
    again = prepare(cfg, progress=False)
    assert again.prepared_now == 0 and again.skipped == len(table)
    assert read_cases_table(cfg).equals(table)
    report = PrepareOutputs(cfg.paths).qc_report.read_text()
    assert all(i in report for i in _faults(table).index)


@pytest.mark.slow
def test_the_paper_split_reads_its_ids_and_reports_the_leak(
    prepared: tuple[Config, PrepareSummary, pd.DataFrame], tmp_path: Path
) -> None:
    """The paper-compatible split reads validation ids from a file; cases are not prepared again."""
    cfg, _, table = prepared
    run = tmp_path / "run"
    shutil.copytree(cfg.paths.root, run)
    good = table[~table["patient"].str.startswith("9")]
    listing = tmp_path / "val_ids.txt"
    two_timepoints = good.groupby("patient")["id"].apply(list).loc[lambda s: s.str.len() > 1]
    leaky = two_timepoints.iloc[0][0] if len(two_timepoints) else good["id"].iloc[0]
    listing.write_text(f"{leaky}\nBraTS-GLI-90001-000\n")
    paper = load_config(
        "smoke", [*OVERRIDES, "data.split.method=paper", f"data.split.val_ids_file={listing}"], run_dir=run
    )
    result = prepare(paper, progress=False)
    assert result.prepared_now == 0 and result.val == 1
    assert result.missing_val_ids == ["BraTS-GLI-90001-000"]  # invalid scans are never used
    assert [d.name for d in usable_cases(paper, "val")] == [leaky]
    if len(two_timepoints):
        assert result.patients_on_both_sides == [leaky.split("-")[2]]  # the paper's leak, reported


# ----------------------------------------------------------------------------------- issue 13 hardening
def _raw_case(root: Path, case_id: str, seed: int = 0) -> Path:
    """A small textured case (16x20x16, 2 mm): a head ellipsoid with a lesion, float32 images."""
    rng = np.random.default_rng(seed)
    shape = (16, 20, 16)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).astype(float)
    head = (((grid - np.array([7.5, 9.5, 7.5])[:, None, None, None]) / [6, 7.5, 6][0]) ** 2).sum(0) <= 1
    seg = np.zeros(shape, np.uint8)
    seg[((grid - np.array([7, 9, 7])[:, None, None, None]) ** 2).sum(0) <= 4] = 2
    folder = root / case_id
    folder.mkdir(parents=True)
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    for k, m in enumerate(("t1n", "t1c", "t2w", "t2f")):
        image = np.where(head, 200 + 50 * k + rng.normal(0, 20, shape), 0).astype(np.float32)
        nib.save(nib.Nifti1Image(image, affine), folder / f"{case_id}-{m}.nii.gz")
    nib.save(nib.Nifti1Image(seg, affine), folder / f"{case_id}-seg.nii.gz")
    return folder


def test_bad_scans_in_workers_become_qc_rows_and_outliers_are_clipped(tmp_path: Path) -> None:
    """Workers: a degenerate affine is an invalid row naming the file; a 1e30 voxel is flagged and clipped."""
    raw = tmp_path / "raw"
    for p in range(1, 5):
        _raw_case(raw, f"BraTS-GLI-0000{p}-000", seed=p)
    twin = _raw_case(raw, "BraTS-GLI-00005-000", seed=7)
    spiked = _raw_case(raw, "BraTS-GLI-00006-000", seed=7)  # the twin's data plus one corrupt voxel
    path = spiked / "BraTS-GLI-00006-000-t2f.nii.gz"
    data = np.asarray(nib.load(path).dataobj).copy()
    data[7, 9, 7] = 1e30
    nib.save(nib.Nifti1Image(data, nib.load(path).affine), path)
    broken = _raw_case(raw, "BraTS-GLI-00007-000")
    nib.save(
        nib.Nifti1Image(np.zeros((16, 20, 16), np.float32), np.diag([-2.0, 2, 2, 1])),
        broken / "BraTS-GLI-00007-000-t1c.nii.gz",
    )  # fmt: skip -- constant: invalid
    worker_crash = _raw_case(raw, "BraTS-GLI-00008-000")
    (worker_crash / "BraTS-GLI-00008-000-t2w.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    overrides = [
        "runtime.workers=2",
        "data.split.n_val=1",
        "data.target_shape=[16, 20, 16]",
        "data.qc.exclude=[]",
    ]
    cfg = load_config("smoke", overrides, run_dir=tmp_path / "run")
    summary = prepare(cfg, raw_dir=raw, progress=False)
    table = read_cases_table(cfg).set_index("id")
    assert summary.cases == 8 and summary.invalid == 2
    assert (
        "BraTS-GLI-00007-000-t1c.nii.gz: image is constant" in table.loc["BraTS-GLI-00007-000", "qc_reason"]
    )
    assert "BraTS-GLI-00008-000-t2w.nii.gz: cannot be read" in table.loc["BraTS-GLI-00008-000", "qc_reason"]
    row = table.loc["BraTS-GLI-00006-000"]
    assert row["qc_status"] == "flagged" and row["qc_flags"] == "intensity_outlier"
    assert (
        "BraTS-GLI-00006-000-t2f.nii.gz: 1 voxel(s) outside" in row["qc_reason"]
        and "clipped" in row["qc_reason"]
    )
    a, b = (load_case(cfg.paths.prepared / row_split / i) for i, row_split in (
        ("BraTS-GLI-00005-000", table.loc["BraTS-GLI-00005-000", "split"]),
        ("BraTS-GLI-00006-000", row["split"]),
    ))  # fmt: skip
    assert twin.name == a.case_id
    np.testing.assert_array_equal(a.image[:3], b.image[:3])  # untouched modalities: bit-identical
    # the corrupt voxel became the scan's inlier maximum; everything else equals the clean twin
    changed = np.argwhere(np.abs(a.image[3] - b.image[3]) > 1e-6)
    assert len(changed) <= 27 and np.abs(changed - [7, 9, 7]).max() <= 1, changed
    assert np.median(b.image[3][b.mask > 0]) > 0.3  # not squeezed to ~0 as plain min-max would


def test_degenerate_affine_in_a_worker_is_a_qc_row(tmp_path: Path) -> None:
    import gzip

    raw = tmp_path / "raw"
    for p in range(1, 4):
        _raw_case(raw, f"BraTS-GLI-0000{p}-000", seed=p)
    path = raw / "BraTS-GLI-00003-000" / "BraTS-GLI-00003-000-seg.nii.gz"
    blob = bytearray(gzip.decompress(path.read_bytes()))
    header = np.frombuffer(blob[:348], dtype=nib.nifti1.header_dtype).copy()
    header["qform_code"], header["sform_code"], header["srow_x"] = 0, 1, [0.0, 0.0, 0.0, 0.0]
    blob[:348] = header.tobytes()
    path.write_bytes(gzip.compress(bytes(blob)))
    cfg = load_config("smoke", ["runtime.workers=2", "data.split.n_val=1", "data.target_shape=[16, 20, 16]"],
                      run_dir=tmp_path / "run")  # fmt: skip
    summary = prepare(cfg, raw_dir=raw, progress=False)
    row = read_cases_table(cfg).set_index("id").loc["BraTS-GLI-00003-000"]
    assert summary.cases == 3 and row["qc_status"] == "invalid"
    assert row["qc_reason"].startswith("BraTS-GLI-00003-000-seg.nii.gz: affine has a zero voxel size")


def test_normalise_is_plain_min_max_on_clean_images_and_robust_to_outliers() -> None:
    from gliomagen.data.prepare import normalise

    rng = np.random.default_rng(1)
    image = np.where(rng.random((12, 12, 12)) > 0.3, rng.uniform(50, 900, (12, 12, 12)), 0).astype(np.float32)
    lo, hi = float(image.min()), float(image.max())
    np.testing.assert_array_equal(
        normalise(image, None, 10.0), (image - lo) / (hi - lo)
    )  # the paper's min-max
    spiked = image.copy()
    spiked[6, 6, 6] = 1e30
    keep = np.ones(image.shape, bool)
    keep[6, 6, 6] = False
    assert normalise(spiked, None, None)[keep].max() < 1e-20  # plain min-max: the scan is wiped
    np.testing.assert_array_equal(normalise(spiked, None, 10.0)[keep], normalise(image, None, 10.0)[keep])
    extreme = image.astype(np.float64)
    extreme[0, 0, 0], extreme[1, 1, 1] = -3e38, 3e38  # a range beyond float32: computed in float64
    out = normalise(extreme.astype(np.float32), None, None)
    assert np.all(np.isfinite(out)) and out.min() == 0 and out.max() == 1


def test_a_worker_that_dies_becomes_an_error_result() -> None:
    from gliomagen.data.parallel import parallel_map

    results = parallel_map(
        _die_on_two, [1, 2, 3], 2, "x", progress=False, on_error=lambda t, e: f"{t}: {type(e).__name__}"
    )
    assert results[0] == 1 and results[1] == "2: BrokenProcessPool"


def _die_on_two(task: int) -> int:
    import os

    if task == 2:
        os._exit(1)
    return task


def test_training_cache_is_keyed_by_the_prepare_hash_and_the_files(tmp_path: Path) -> None:
    """The uncompressed arrays equal the prepared NIfTI case; other settings or a rewritten case rebuild them."""
    import os

    from gliomagen.cases import Case, write_case
    from gliomagen.data.cache import cache_key, read_cache

    rng = np.random.default_rng(0)
    image = rng.random((4, 6, 5, 4), dtype=np.float32)
    mask = rng.integers(0, 6, (6, 5, 4)).astype(np.uint8)
    case_dir = Path(write_case(tmp_path / "train", Case("BraTS-GLI-00000-000", image, mask, np.eye(4))))
    cache = tmp_path / "cache"
    cached_image, cached_mask = read_cache(cache, case_dir, "settings-a")  # built from the NIfTI files
    np.testing.assert_array_equal(cached_image, image)
    np.testing.assert_array_equal(cached_mask, mask)
    assert cached_image.dtype == np.float32 and isinstance(cached_image, np.memmap)
    first = cache_key(case_dir, "settings-a")
    assert cache_key(case_dir, "settings-b") != first
    read_cache(cache, case_dir, "settings-b")
    assert (
        sorted(p.name.split(".")[0] for p in cache.rglob("*.npy")) == [cache_key(case_dir, "settings-b")] * 2
    )
    seg = next(case_dir.glob("*-seg.nii.gz"))
    os.utime(seg, ns=(seg.stat().st_atime_ns, seg.stat().st_mtime_ns + 10**9))  # the case was rewritten
    assert cache_key(case_dir, "settings-a") != first
