"""Validation of raw cases and the automatic QC flags (gliomagen.data.validate, gliomagen.data.qc)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gliomagen.config import QCConfig, load_config
from gliomagen.data.qc import qc_flags
from gliomagen.data.validate import CaseError, RawCase, discover_cases, load_raw_case

LABELS = load_config("smoke").data.labels
SHAPE = (16, 20, 16)


def _write_case(root: Path, case_id: str = "BraTS-GLI-00001-000") -> RawCase:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"))
    head = ((grid - np.array([8, 10, 8])[:, None, None, None]) ** 2).sum(0) < 36
    folder = root / case_id
    folder.mkdir(parents=True)
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    for i, m in enumerate(("t1n", "t1c", "t2w", "t2f")):
        nib.save(
            nib.Nifti1Image((head * (100 + i)).astype(np.int16), affine), folder / f"{case_id}-{m}.nii.gz"
        )
    seg = np.zeros(SHAPE, np.uint8)
    seg[7:9, 9:11, 7:9] = 3
    nib.save(nib.Nifti1Image(seg, affine), folder / f"{case_id}-seg.nii.gz")
    return RawCase(case_id, folder, "00001", "000")


def _rewrite(case: RawCase, modality: str, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path = case.path / f"{case.case_id}-{modality}.nii.gz"
    old = nib.load(path)
    nib.save(nib.Nifti1Image(data, old.affine if affine is None else affine), path)
    return path


def test_valid_case_loads(tmp_path: Path) -> None:
    scan = load_raw_case(_write_case(tmp_path), LABELS)
    assert scan.images["t2f"].dtype == np.float32 and scan.seg.shape == SHAPE
    assert int(scan.seg.max()) == 3


def _problems(case: RawCase) -> list[str]:
    with pytest.raises(CaseError) as info:
        load_raw_case(case, LABELS)
    return info.value.problems


def test_missing_file(tmp_path: Path) -> None:
    case = _write_case(tmp_path)
    (case.path / f"{case.case_id}-t2w.nii.gz").unlink()
    assert _problems(case) == [f"{case.case_id}-t2w.nii.gz: file is missing"]


def test_truncated_gzip(tmp_path: Path) -> None:
    case = _write_case(tmp_path)
    path = case.path / f"{case.case_id}-t1n.nii.gz"
    raw = gzip.compress(nib.load(path).to_bytes())
    path.write_bytes(raw[: len(raw) // 2])
    (problem,) = _problems(case)
    assert problem.startswith(f"{case.case_id}-t1n.nii.gz: unreadable or truncated")


def test_garbage_file(tmp_path: Path) -> None:
    case = _write_case(tmp_path)
    (case.path / f"{case.case_id}-t1c.nii.gz").write_bytes(b"not a nifti")
    (problem,) = _problems(case)
    assert problem.startswith(f"{case.case_id}-t1c.nii.gz:")


def test_shape_and_affine_mismatch(tmp_path: Path) -> None:
    case = _write_case(tmp_path)
    _rewrite(case, "t1c", np.ones((16, 20, 15), np.int16))
    shifted = np.diag([-2.0, 2.0, 2.0, 1.0])
    shifted[:3, 3] = 3
    _rewrite(case, "t2w", np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE), shifted)
    problems = _problems(case)
    assert any(p.startswith(f"{case.case_id}-t1c.nii.gz: shape (16, 20, 15) differs") for p in problems)
    assert any(p.startswith(f"{case.case_id}-t2w.nii.gz: affine differs") and "3" in p for p in problems)


def test_nan_and_constant_images(tmp_path: Path) -> None:
    case = _write_case(tmp_path)
    data = np.ones(SHAPE, np.float32)
    data[0, 0, :3] = np.nan
    _rewrite(case, "t2f", data)
    _rewrite(case, "t1n", np.zeros(SHAPE, np.float32))
    problems = _problems(case)
    assert f"{case.case_id}-t2f.nii.gz: 3 NaN/infinite voxel(s)" in problems
    assert any(p.startswith(f"{case.case_id}-t1n.nii.gz: image is constant") for p in problems)


def test_unknown_label(tmp_path: Path) -> None:
    case = _write_case(tmp_path)
    seg = np.zeros(SHAPE, np.uint8)
    seg[0, 0, 0] = 7
    _rewrite(case, "seg", seg)
    (problem,) = _problems(case)
    assert "seg.nii.gz: unknown label value(s) [7]" in problem


def test_discover_cases(tmp_path: Path) -> None:
    _write_case(tmp_path / "unpacked", "BraTS-GLI-00002-001")
    (tmp_path / "unpacked" / "notes").mkdir()
    cases, skipped = discover_cases(tmp_path)  # one level down, as a BraTS zip unpacks
    assert [(c.case_id, c.patient, c.timepoint) for c in cases] == [("BraTS-GLI-00002-001", "00002", "001")]
    assert skipped == ["notes"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_cases(tmp_path / "nope")


# -------------------------------------------------------------------------------------------- QC
def _mask() -> np.ndarray:
    mask = np.zeros((12, 12, 12), np.uint8)
    mask[2:10, 2:10, 2:10] = 1  # head
    mask[5:7, 5:7, 5:7] = 3  # SNFH
    return mask


NATIVE = {"background": 0, "head": 512, "NETC": 0, "SNFH": 8, "ET": 0, "RC": 0}


def _flags(native: dict[str, int], mask: np.ndarray, **qc: float) -> dict[str, str]:
    return dict(qc_flags(native, mask, LABELS, QCConfig(**qc), "x-seg.nii.gz", voxel_ml=1.0))


def test_qc_clean_case() -> None:
    assert _flags(NATIVE, _mask()) == {}


def test_qc_empty_and_lost() -> None:
    assert "empty_mask" in _flags({**NATIVE, "SNFH": 0}, _mask())
    flags = _flags({**NATIVE, "ET": 2}, _mask())
    assert flags["label_lost"].startswith("label_lost: ET (2 raw voxels) in x-seg.nii.gz vanished")


def test_qc_border() -> None:
    mask = _mask()
    mask[2:10, 2:10, 11] = 1
    assert "(z+: 64 voxels)" in _flags(NATIVE, mask)["head_touches_border"]
    assert "head_touches_border" not in _flags(NATIVE, mask, max_border_voxels=64)


def test_qc_holes() -> None:
    mask = _mask()
    mask[3:5, 3:5, :] = 0  # a channel through every axial slice, open at both ends in 3D
    flags = _flags(NATIVE, mask, max_hole_ml=10)
    assert flags["head_holes"].startswith("head_holes: 32.0 ml")  # 2 x 2 x 8 slices of 1 ml voxels
    assert "head_holes" not in _flags(NATIVE, mask, max_hole_ml=32)


# ----------------------------------------------------------------------------------- issue 13 hardening
@pytest.mark.parametrize(
    ("affine", "problem"),
    [
        (np.diag([0.0, 2.0, 2.0, 1.0]), "affine has a zero voxel size"),
        (np.diag([np.nan, 2.0, 2.0, 1.0]), "affine is not a finite 4x4 matrix"),
        (np.array([[2.0, 2, 0, 0], [0, 0, 2, 0], [2, 2, 0, 0], [0, 0, 0, 1]]), "affine is singular"),
    ],
)
def test_degenerate_affine_names_the_file(tmp_path: Path, affine: np.ndarray, problem: str) -> None:
    case = _write_case(tmp_path)
    path = case.path / f"{case.case_id}-t1c.nii.gz"
    # what a broken converter writes: the sform rows patched in the stored header (nibabel refuses to
    # write such an affine itself), the qform unset
    raw = bytearray(gzip.decompress(path.read_bytes()))
    header = np.frombuffer(raw[:348], dtype=nib.nifti1.header_dtype).copy()
    header["qform_code"], header["sform_code"] = 0, 1
    header["srow_x"], header["srow_y"], header["srow_z"] = affine[0], affine[1], affine[2]
    raw[:348] = header.tobytes()
    path.write_bytes(gzip.compress(bytes(raw)))
    assert any(p.startswith(f"{case.case_id}-t1c.nii.gz: {problem}") for p in _problems(case)), _problems(
        case
    )


def test_uncompressed_nii_is_accepted(tmp_path: Path) -> None:
    case = _write_case(tmp_path)
    gz = case.path / f"{case.case_id}-t1n.nii.gz"
    nib.save(nib.load(gz), case.path / f"{case.case_id}-t1n.nii")
    gz.unlink()
    ref = load_raw_case(_write_case(tmp_path / "ref"), LABELS)
    scan = load_raw_case(case, LABELS)
    np.testing.assert_array_equal(scan.images["t1n"], ref.images["t1n"])
    (case.path / f"{case.case_id}-t1n.nii").unlink()
    assert _problems(case) == [f"{case.case_id}-t1n.nii.gz: file is missing"]


def test_values_beyond_float32_are_refused_after_the_cast(tmp_path: Path) -> None:
    case = _write_case(tmp_path)
    data = np.asarray(nib.load(case.path / f"{case.case_id}-t2w.nii.gz").dataobj).astype(np.float64)
    data[8, 10, 8] = 1e39  # finite in float64, infinite in float32
    _rewrite(case, "t2w", data)
    (problem,) = _problems(case)
    assert problem.startswith(f"{case.case_id}-t2w.nii.gz: 1 voxel(s) beyond the float32 range")


def test_duplicate_ids_and_empty_raw_dir_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gliomagen.cli import main
    from gliomagen.data.validate import DuplicateCaseError, RawDataError

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RawDataError, match="holds no BraTS case folder"):
        discover_cases(empty)
    assert main(["prepare", "--run-dir", str(tmp_path / "run"), "--raw-dir", str(empty)]) == 2
    assert f"{empty} holds no BraTS case folder" in capsys.readouterr().err
    for batch in ("batch1", "batch2"):
        _write_case(tmp_path / "raw" / batch, "BraTS-GLI-00003-000")
    with pytest.raises(DuplicateCaseError, match="BraTS-GLI-00003-000 in .*batch1, .*batch2"):
        discover_cases(tmp_path / "raw")
    assert main(["prepare", "--run-dir", str(tmp_path / "run"), "--raw-dir", str(tmp_path / "raw")]) == 2
    err = capsys.readouterr().err
    assert "found in more than one folder" in err and "Traceback" not in err


def test_outliers_are_found_in_float64_and_flagged() -> None:
    from gliomagen.data.qc import find_outliers, outlier_message

    rng = np.random.default_rng(0)
    image = np.zeros((20, 20, 20))
    image[4:16, 4:16, 4:16] = rng.uniform(100, 400, (12, 12, 12))
    assert find_outliers(image, 10.0) is None
    image[10, 10, 10] = 1e30
    found = find_outliers(image, 10.0)
    assert found is not None and found.count == 1 and found.extreme == 1e30
    assert found.inlier_max == image[image < 1e30].max()
    text = outlier_message("x-t1c.nii.gz", found, True, 10.0)
    assert text.startswith("intensity_outlier: x-t1c.nii.gz: 1 voxel(s) outside") and "clipped" in text
