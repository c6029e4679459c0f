"""Patient-level and paper-compatible splits (gliomagen.data.split)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gliomagen.data.split import paper_split, patient_split, patients_on_both_sides, read_val_ids


def _scans() -> tuple[list[str], list[str]]:
    # 12 patients with 1..3 timepoints (24 scans)
    ids, patients = [], []
    for p in range(12):
        for t in range(1 + p % 3):
            ids.append(f"BraTS-GLI-{p:05d}-{t:03d}")
            patients.append(f"{p:05d}")
    return ids, patients


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("n_val", [1, 4, 7])
def test_no_patient_on_both_sides_and_size(seed: int, n_val: int) -> None:
    ids, patients = _scans()
    split = patient_split(ids, patients, n_val, seed)
    assert patients_on_both_sides(split, dict(zip(ids, patients, strict=True))) == []
    n = sum(v == "val" for v in split.values())
    assert n == n_val  # single-scan patients exist, so the target is always reached exactly


def test_split_is_deterministic_and_seeded() -> None:
    ids, patients = _scans()
    assert patient_split(ids, patients, 5, 0) == patient_split(ids, patients, 5, 0)
    assert any(patient_split(ids, patients, 5, 0) != patient_split(ids, patients, 5, s) for s in range(1, 5))


def test_split_errors() -> None:
    ids, patients = _scans()
    with pytest.raises(ValueError, match="nothing left to train on"):
        patient_split(ids, patients, len(ids), 0)
    with pytest.raises(ValueError, match="at least two patients"):
        patient_split(ids[:1], patients[:1], 1, 0)


def test_paper_split_from_file_reports_leaks_and_missing(tmp_path: Path) -> None:
    ids, patients = _scans()
    listing = tmp_path / "val.txt"
    listing.write_text("# paper validation scans\nBraTS-GLI-00002-001\nBraTS-GLI-00099-000\n")
    split, missing = paper_split(ids, read_val_ids(listing))
    assert split["BraTS-GLI-00002-001"] == "val" and split["BraTS-GLI-00002-000"] == "train"
    assert missing == ["BraTS-GLI-00099-000"]
    assert patients_on_both_sides(split, dict(zip(ids, patients, strict=True))) == ["00002"]


def test_read_val_ids_csv(tmp_path: Path) -> None:
    (tmp_path / "v.csv").write_text("id,note\nBraTS-GLI-00001-000,x\n")
    assert read_val_ids(tmp_path / "v.csv") == ["BraTS-GLI-00001-000"]
    (tmp_path / "w.csv").write_text("case\nA\n")
    with pytest.raises(ValueError, match="'id' column"):
        read_val_ids(tmp_path / "w.csv")
    with pytest.raises(FileNotFoundError, match="val_ids_file"):
        read_val_ids(tmp_path / "none.txt")
