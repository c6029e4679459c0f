"""Discover BraTS case folders and validate every file of a case before it is prepared.

A case is valid when all five files exist (``.nii.gz``, or ``.nii``) and are readable 3D NIfTI volumes with
the same shape and a usable affine (finite, invertible, positive voxel sizes), the images hold numbers
that stay finite in float32 and are not constant, and the segmentation holds only integer values that the
profile's label map knows. Every problem becomes one message that names the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from gliomagen.cases import raw_case_files as case_files
from gliomagen.config import MODALITIES, LabelSpec
from gliomagen.data.geometry import voxel_spacing
from gliomagen.errors import InputError

#: any BraTS task (GLI, MEN, MET, PED, SSA, ...): BraTS-<task>-<5-digit patient>-<3-digit timepoint>
CASE_PATTERN = re.compile(r"^BraTS-(?P<task>[A-Za-z]+)-(?P<patient>\d{5})-(?P<timepoint>\d{3})$")
AFFINE_TOLERANCE_MM = 1e-3


class RawDataError(InputError, FileNotFoundError):
    """The raw data folder is missing or holds no BraTS case folder."""


class DuplicateCaseError(InputError, ValueError):
    """The same case id appears in more than one folder of the raw data."""


class _FileProblem(ValueError):
    """A readable file that cannot be used (the message says why; the caller adds the file name)."""


class CaseError(ValueError):
    """A case cannot be prepared; ``problems`` lists one message per bad file."""

    def __init__(self, case_id: str, problems: list[str]) -> None:
        super().__init__(f"{case_id}: " + "; ".join(problems))
        self.case_id = case_id
        self.problems = problems


@dataclass(frozen=True)
class RawCase:
    """One discovered case folder.

    Args:
        case_id: folder name, e.g. ``BraTS-GLI-00012-001``.
        path: the folder.
        patient: patient part of the id (``00012``); scans of one patient share it.
        timepoint: timepoint part (``001``).
    """

    case_id: str
    path: Path
    patient: str
    timepoint: str


@dataclass
class RawScan:
    """A validated case in memory: images (float32) by modality, the raw segmentation, the geometry."""

    case: RawCase
    images: dict[str, np.ndarray]
    seg: np.ndarray
    affine: np.ndarray


def discover_cases(raw_dir: str | Path) -> tuple[list[RawCase], list[str]]:
    """Case folders in ``raw_dir`` (or one level below, as BraTS zips unpack), sorted by id.

    Returns:
        the cases and a list of skipped folder names that are not BraTS case ids.

    Raises:
        RawDataError: ``raw_dir`` does not exist or holds no case folder.
        DuplicateCaseError: a case id is found in two folders (which one to use would be a guess).
    """
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise RawDataError(f"raw data folder {raw} does not exist")
    folders = [p for p in raw.iterdir() if p.is_dir()]
    if not any(CASE_PATTERN.match(p.name) for p in folders):
        folders = [q for p in folders for q in p.iterdir() if q.is_dir()]
    cases, skipped = [], []
    for folder in sorted(folders, key=lambda p: p.name):
        m = CASE_PATTERN.match(folder.name)
        if m is None:
            if not folder.name.startswith("."):
                skipped.append(folder.name)
            continue
        cases.append(RawCase(folder.name, folder, m.group("patient"), m.group("timepoint")))
    seen: dict[str, list[Path]] = {}
    for c in cases:
        seen.setdefault(c.case_id, []).append(c.path)
    duplicates = {i: paths for i, paths in seen.items() if len(paths) > 1}
    if duplicates:
        where = "; ".join(
            f"{i} in {', '.join(str(p.parent) for p in paths)}" for i, paths in duplicates.items()
        )
        raise DuplicateCaseError(
            f"{raw}: {len(duplicates)} case id(s) found in more than one folder ({where}); keep one copy of each"
        )
    if not cases:
        raise RawDataError(
            f"{raw} holds no BraTS case folder (expected BraTS-<task>-<5 digits>-<3 digits>/ folders, "
            "directly or one level down)"
        )
    return cases, skipped


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    if not isinstance(img, nib.spatialimages.SpatialImage):
        raise _FileProblem(f"not a volume image ({type(img).__name__})")
    data = np.asarray(img.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise _FileProblem(f"expected a 3D volume, got shape {data.shape}")
    affine = np.asarray(img.affine, dtype=np.float64)
    problem = affine_problem(affine)
    if problem:
        raise _FileProblem(problem)
    return data, affine


def affine_problem(affine: np.ndarray) -> str | None:
    """Why a voxel-to-world matrix cannot be used for resampling (``None`` if it can).

    A NaN/infinite entry, a zero voxel size or a singular matrix makes every later geometry step fail or
    produce garbage, so such a file is refused here, with its name, instead of crashing a worker later.
    """
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        return f"affine is not a finite 4x4 matrix ({np.array2string(affine, precision=3, separator=',')})"
    sizes = np.asarray(voxel_spacing(affine))
    if np.any(sizes <= 1e-6):
        return f"affine has a zero voxel size (voxel sizes {np.round(sizes, 6).tolist()} mm)"
    if abs(np.linalg.det(affine[:3, :3])) <= 1e-9 * float(np.prod(sizes)):
        return "affine is singular (its voxel axes are not independent)"
    return None


def load_raw_case(case: RawCase, labels: list[LabelSpec]) -> RawScan:
    """Read and validate the five files of ``case``.

    Args:
        case: the discovered folder.
        labels: the profile's label map (the segmentation may only hold their ``source`` values).

    Raises:
        CaseError: every problem found, each naming the file.
    """
    problems: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    affines: dict[str, np.ndarray] = {}
    for name, path in case_files(case.path).items():
        if not path.is_file():
            problems.append(f"{path.name}: file is missing")
            continue
        try:
            arrays[name], affines[name] = _read(path)
        except (EOFError, OSError) as exc:  # zlib errors and short reads both end up here
            problems.append(f"{path.name}: unreadable or truncated gzip/NIfTI ({type(exc).__name__}: {exc})")
        except _FileProblem as exc:  # our own checks of shape and affine: the message says what is wrong
            problems.append(f"{path.name}: {exc}")
        except Exception as exc:  # noqa: BLE001 -- any reader failure is reported, never raised
            problems.append(f"{path.name}: cannot be read as NIfTI ({type(exc).__name__}: {exc})")
    problems += _geometry_problems(case, arrays, affines)
    problems += _content_problems(case, arrays, labels)
    if problems:
        raise CaseError(case.case_id, problems)
    images = {m: arrays[m].astype(np.float32) for m in MODALITIES}
    return RawScan(case, images, arrays["seg"].astype(np.int64), affines["seg"])


def _geometry_problems(
    case: RawCase, arrays: dict[str, np.ndarray], affines: dict[str, np.ndarray]
) -> list[str]:
    """Shape and affine of every file against the reference (the segmentation, else the first image)."""
    if not arrays:
        return []
    ref = "seg" if "seg" in arrays else next(iter(arrays))
    ref_file = case_files(case.path)[ref].name
    problems = []
    for name in arrays:
        if name == ref:
            continue
        file = case_files(case.path)[name].name
        if arrays[name].shape != arrays[ref].shape:
            problems.append(f"{file}: shape {arrays[name].shape} differs from {ref_file} {arrays[ref].shape}")
        diff = float(np.abs(affines[name] - affines[ref]).max())
        if diff > AFFINE_TOLERANCE_MM:
            problems.append(f"{file}: affine differs from {ref_file} (max difference {diff:.3g})")
    return problems


def _content_problems(case: RawCase, arrays: dict[str, np.ndarray], labels: list[LabelSpec]) -> list[str]:
    problems = []
    files = case_files(case.path)
    for name in MODALITIES:
        if name not in arrays:
            continue
        data = arrays[name]
        if not np.issubdtype(data.dtype, np.number):
            problems.append(f"{files[name].name}: data type {data.dtype} is not numeric")
            continue
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        # the images are used as float32: a finite float64 beyond 3.4e38 becomes infinite in the cast
        with np.errstate(over="ignore"):
            bad_cast = int(data.size - np.count_nonzero(np.isfinite(data.astype(np.float32)))) - bad
        if bad:
            problems.append(f"{files[name].name}: {bad} NaN/infinite voxel(s)")
        if bad_cast:
            problems.append(
                f"{files[name].name}: {bad_cast} voxel(s) beyond the float32 range (|value| > 3.4e38) "
                "become infinite when cast to float32"
            )
        if bad or bad_cast:
            continue
        if float(data.max()) == float(data.min()):
            problems.append(f"{files[name].name}: image is constant (every voxel = {float(data.min()):g})")
    if "seg" in arrays:
        seg = arrays["seg"]
        if np.issubdtype(seg.dtype, np.floating) and not np.all(np.isfinite(seg) & (seg == np.round(seg))):
            problems.append(f"{files['seg'].name}: segmentation holds non-integer values")
            return problems
        known = sorted(lab.source for lab in labels if lab.source is not None)
        values = [int(v) for v in np.unique(seg)]
        unknown = [v for v in values if v not in known]
        if unknown:
            problems.append(
                f"{files['seg'].name}: unknown label value(s) {unknown} (the profile's data.labels know {known})"
            )
    return problems
