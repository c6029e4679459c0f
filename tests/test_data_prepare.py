"""The phantom and the whole data stage end to end (gliomagen.data.phantom, gliomagen.data.prepare)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from gliomagen.cases import load_case
from gliomagen.config import PhantomConfig, load_config
from gliomagen.data.phantom import FAULTS, grid_affine, make_phantom
from gliomagen.data.prepare import prepare, prepared_case_dirs, read_cases_table

OVERRIDES = ["data.phantom.patients=4", "data.phantom.faults=true", "data.workers=1", "data.split.n_val=2"]
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


@pytest.mark.slow
def test_prepare_reports_every_fault_and_splits_by_patient(tmp_path: Path) -> None:
    cfg = load_config("smoke", OVERRIDES, run_dir=tmp_path / "run")
    summary = prepare(cfg, progress=False)  # generates the phantom into <run>/raw first
    table = read_cases_table(cfg)
    faults = table[table["patient"].str.startswith("9")].set_index("id")
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
    good = table[~table["patient"].str.startswith("9")]
    assert (good["qc_status"] == "ok").all(), good[["id", "qc_reason"]]
    assert set(good.groupby("patient")["split"].nunique()) == {1}  # no patient on both sides
    assert 1 <= summary.val <= 2 and summary.patients_on_both_sides == []  # never more than n_val

    val = prepared_case_dirs(cfg, "val")
    assert [d.name for d in val] == sorted(table.loc[table["split"] == "val", "id"])
    case = load_case(val[0])
    assert case.image.dtype == np.float32 and case.mask.dtype == np.uint8
    assert case.image.shape == (4, 32, 40, 32) and case.image.min() >= 0 and case.image.max() <= 1
    assert set(np.unique(case.mask)) <= {lab.value for lab in cfg.data.labels}
    raw = nib.load(tmp_path / "run" / "raw" / val[0].name / f"{val[0].name}-seg.nii.gz")
    # the grid centres coincide in world space
    centre_raw = raw.affine @ np.r_[(np.array(raw.shape) - 1) / 2, 1]
    centre_out = case.affine @ np.r_[(np.array(case.mask.shape) - 1) / 2, 1]
    np.testing.assert_allclose(centre_raw, centre_out, atol=1e-6)

    again = prepare(cfg, progress=False)  # re-running skips every case
    assert again.prepared_now == 0 and again.skipped == len(table)
    assert read_cases_table(cfg).equals(table)
    report = (cfg.paths.prepared / "qc_report.md").read_text()
    assert all(i in report for i in faults.index)
    assert isinstance(pd.read_csv(cfg.paths.cases_csv), pd.DataFrame)

    # the paper-compatible split reads validation ids from a file; cases are not prepared again
    listing = tmp_path / "val_ids.txt"
    two_timepoints = good.groupby("patient")["id"].apply(list).loc[lambda s: s.str.len() > 1]
    leaky = two_timepoints.iloc[0][0] if len(two_timepoints) else good["id"].iloc[0]
    listing.write_text(f"{leaky}\nBraTS-GLI-90001-000\n")
    paper = load_config(
        "smoke",
        [*OVERRIDES, "data.split.method=paper", f"data.split.val_ids_file={listing}"],
        run_dir=tmp_path / "run",
    )
    result = prepare(paper, progress=False)
    assert result.prepared_now == 0 and result.val == 1
    assert result.missing_val_ids == ["BraTS-GLI-90001-000"]  # invalid scans are never used
    assert [d.name for d in prepared_case_dirs(paper, "val")] == [leaky]
    if len(two_timepoints):
        assert result.patients_on_both_sides == [leaky.split("-")[2]]  # the paper's leak, reported
