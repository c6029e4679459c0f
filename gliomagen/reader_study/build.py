"""Build the blinded reader-study kit: balanced, seeded panels of real and synthetic axial slices.

For every validation case that has both a real scan (``<run>/prepared/val/<id>/``) and its synthetic
counterpart generated from the same mask (``<run>/synthetic/val/<id>/``), the builder draws axial slices
through the lesion and away from it and renders them as PNG panels (one modality each, and a panel with all
four). For every location the eligible cases are shuffled and split in half: one half is shown real, the
other synthetic, for every panel kind. So each (panel kind, location) stratum holds exactly as many real as
synthetic panels, and a reader never sees the real and the synthetic version of the same case at the same
location, which would let them compare instead of judge.

What the reader receives (``<run>/reader_study/kit/``) carries no answer information: panel and image names
are random tokens, the panel list is shuffled, PNGs hold pixels only (no text chunks, no timestamps), and
both classes go through exactly the same rendering (RAS reorientation, one percentile window per volume and
modality computed over the head voxels of the shared mask, same upsampling). The key
(``<run>/reader_study/answer_key.csv``) and the manifest stay with the organiser, outside the kit folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from gliomagen import __version__
from gliomagen.cases import case_files, is_complete, load_case, modality_path
from gliomagen.config import MODALITIES, Config, ReaderStudyConfig
from gliomagen.io import provenance, read_json, write_csv, write_json

log = logging.getLogger(__name__)

KIT_FORMAT = 1
WEB_DIR = Path(__file__).resolve().parent / "web"
WEB_FILES = ("index.html", "app.js", "style.css")
MODALITY_NAMES = {"t1n": "T1 native", "t1c": "T1 contrast", "t2w": "T2", "t2f": "T2-FLAIR"}
KIND_NAMES = {**MODALITY_NAMES, "all": "All four sequences"}
KEY_COLUMNS = ["kit_id", "panel_id", "truth", "kind", "location", "case_id", "slice", "images"]


class KitError(RuntimeError):
    """The kit cannot be built (no usable case pairs, or an existing kit with answers would be replaced)."""


@dataclass(frozen=True)
class CasePair:
    """A validation case with its real and synthetic folders."""

    case_id: str
    real: Path
    synthetic: Path


@dataclass
class EligibleCase:
    """A usable pair with its candidate axial slices (indices in RAS orientation) per location."""

    pair: CasePair
    candidates: dict[str, list[int]]


@dataclass
class Panel:
    """One panel of the kit; everything but ``panel_id``, ``kind`` and ``images`` is key-only."""

    panel_id: str
    kind: str
    location: str
    case_id: str
    truth: str
    slice: int
    images: list[str] = field(default_factory=list)


@dataclass
class KitResult:
    """What :func:`build_kit` made (or found up to date)."""

    kit_id: str
    kit_dir: Path
    key_path: Path
    manifest_path: Path
    panels: int
    skipped_cases: list[dict[str, str]]
    rebuilt: bool


# ------------------------------------------------------------------------------------------ inputs
def find_pairs(
    real_dirs: Iterable[Path], synthetic_root: Path
) -> tuple[list[CasePair], list[dict[str, str]]]:
    """Match real case folders with ``<synthetic_root>/<id>/``; report the unmatched ones.

    Args:
        real_dirs: real validation case folders (``<id>/<id>-*.nii.gz``).
        synthetic_root: folder holding the synthetic counterparts under the same ids.

    Returns:
        The pairs sorted by id, and ``{"case_id", "reason"}`` rows for cases that cannot be used.
    """
    pairs, skipped = [], []
    for real in sorted(Path(d) for d in real_dirs):
        synth = Path(synthetic_root) / real.name
        if not is_complete(real):
            missing = [p.name for p in case_files(real).values() if not p.is_file()]
            skipped.append({"case_id": real.name, "reason": f"real case {real} lacks {', '.join(missing)}"})
        elif not is_complete(synth, with_seg=False):
            skipped.append({"case_id": real.name, "reason": f"no complete synthetic volume in {synth}"})
        else:
            pairs.append(CasePair(real.name, real, synth))
    return pairs, skipped


def real_validation_dirs(cfg: Config) -> list[Path]:
    """The usable real validation folders of a run (the data stage's list when it is available)."""
    try:
        from gliomagen.data.prepare import usable_cases
    except ImportError:
        # The data stage is not installed in this checkout: fall back to the folder contract itself.
        val = cfg.paths.prepared / "val"
        return sorted(d for d in val.iterdir() if d.is_dir()) if val.is_dir() else []
    return list(usable_cases(cfg, "val"))


def _to_ras(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient a 3D array to RAS+ so that axis 2 is axial and the display rule is one for all inputs."""
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(("R", "A", "S"))
    )
    ras = nib.orientations.apply_orientation(volume, transform)
    return np.ascontiguousarray(ras), affine @ nib.orientations.inv_ornt_aff(transform, volume.shape)


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def slice_candidates(
    mask: np.ndarray, spacing_z: float, tumour_values: Sequence[int], rs: ReaderStudyConfig
) -> dict[str, list[int]]:
    """Axial slice indices (axis 2 of a RAS mask) through the lesion and away from it.

    Args:
        mask: label map in RAS orientation; 0 is background, anything else is inside the head.
        spacing_z: slice thickness in mm.
        tumour_values: mask values that count as lesion.
        rs: the reader-study settings (thresholds).

    Returns:
        ``{"lesion": [...], "away": [...]}``; a list is empty when no slice qualifies.
    """
    tumour_area = np.isin(mask, list(tumour_values)).sum(axis=(0, 1))
    head_area = (mask != 0).sum(axis=(0, 1))
    out: dict[str, list[int]] = {"lesion": [], "away": []}
    if tumour_area.max() > 0:
        out["lesion"] = np.flatnonzero(tumour_area >= rs.lesion_min_fraction * tumour_area.max()).tolist()
    if head_area.max() == 0:
        return out
    z = np.arange(mask.shape[2])
    tumour_z = np.flatnonzero(tumour_area)
    margin = math.ceil(rs.away_margin_mm / spacing_z - 1e-9) if spacing_z > 0 else 0
    if tumour_z.size:
        distance = np.abs(z[:, None] - tumour_z[None, :]).min(axis=1)
    else:
        distance = np.full(z.shape, np.iinfo(np.int64).max)
    ok = (
        (distance >= max(margin, 1)) & (head_area >= rs.head_min_fraction * head_area.max()) & (head_area > 0)
    )
    out["away"] = np.flatnonzero(ok).tolist()
    return out


def check_pair(pair: CasePair, tumour_values: Sequence[int], rs: ReaderStudyConfig) -> EligibleCase:
    """Check a pair's geometry (headers only) and find its candidate slices from the real mask.

    Raises:
        ValueError: naming the file and the problem (shape or affine mismatch, unreadable file).
    """
    seg_path = modality_path(pair.real, "seg")
    try:
        seg_img = nib.load(str(seg_path))
        mask = np.asarray(seg_img.dataobj)
    except Exception as exc:  # noqa: BLE001 -- any reader failure becomes a named, per-case error
        raise ValueError(f"{seg_path}: cannot read the mask ({exc})") from None
    if mask.ndim != 3:
        raise ValueError(f"{seg_path}: expected a 3D mask, got shape {mask.shape}")
    for folder in (pair.real, pair.synthetic):
        for modality in MODALITIES:
            path = modality_path(folder, modality)
            try:
                header = nib.load(str(path))
            except Exception as exc:  # noqa: BLE001
                raise ValueError(f"{path}: cannot read the volume ({exc})") from None
            if header.shape != mask.shape:
                raise ValueError(f"{path}: shape {header.shape} differs from the mask's {mask.shape}")
            if not np.allclose(header.affine, seg_img.affine, atol=1e-3):
                raise ValueError(f"{path}: affine differs from the real mask's {seg_path.name}")
    synth_seg = modality_path(pair.synthetic, "seg")
    if synth_seg.is_file() and not np.array_equal(np.asarray(nib.load(str(synth_seg)).dataobj), mask):
        # the synthetic volume must come from this very mask, or the pair compares different anatomy
        raise ValueError(f"{synth_seg}: the conditioning mask differs from the real mask {seg_path.name}")
    ras_mask, ras_affine = _to_ras(mask.astype(np.int32), seg_img.affine)
    return EligibleCase(pair, slice_candidates(ras_mask, float(_spacing(ras_affine)[2]), tumour_values, rs))


# ----------------------------------------------------------------------------------------- design
def design_panels(
    cases: list[EligibleCase], rs: ReaderStudyConfig, rng: np.random.Generator
) -> tuple[list[Panel], list[dict[str, str]]]:
    """Assign classes and slices and return the shuffled panels (without image names yet).

    Per location, the eligible cases are shuffled; an odd one out is dropped (so the classes stay exactly
    balanced), the first half is shown real and the second synthetic, in every panel kind.

    Args:
        cases: eligible cases with their slice candidates.
        rs: reader-study settings.
        rng: the seeded generator (its draws define the whole design).

    Returns:
        The panels in presentation order, and ``{"case_id", "reason"}`` rows for dropped cases.
    """
    panels: list[Panel] = []
    dropped: list[dict[str, str]] = []
    for location in rs.locations:
        eligible = [c for c in cases if c.candidates[location]]
        for c in cases:
            if not c.candidates[location]:
                dropped.append({"case_id": c.pair.case_id, "reason": f"no {location} slice qualifies"})
        order = [eligible[i] for i in rng.permutation(len(eligible))]
        if len(order) % 2:
            odd = order.pop()
            dropped.append(
                {"case_id": odd.pair.case_id, "reason": f"{location}: odd one out, dropped to keep balance"}
            )
        half = len(order) // 2
        for rank, case in enumerate(order):
            truth = "real" if rank < half else "synthetic"
            slices = _draw_slices(case.candidates[location], rs.slices_per_location * len(rs.panels), rng)
            for i, z in enumerate(slices):
                kind = rs.panels[i % len(rs.panels)]
                panels.append(Panel("", kind, location, case.pair.case_id, truth, int(z)))
    panels = [panels[i] for i in rng.permutation(len(panels))]
    ids = _random_ids(rng, len(panels))
    for panel, pid in zip(panels, ids, strict=True):
        panel.panel_id = pid
    return panels, dropped


def _draw_slices(candidates: list[int], n: int, rng: np.random.Generator) -> list[int]:
    """``n`` slices, distinct while the candidates last (then the shuffled list is reused in order)."""
    perm = [candidates[i] for i in rng.permutation(len(candidates))]
    return [perm[i % len(perm)] for i in range(n)]


def _random_ids(rng: np.random.Generator, n: int, nbytes: int = 6) -> list[str]:
    """``n`` distinct random hex tokens; they carry no information about the panel behind them."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        token = rng.bytes(nbytes).hex()
        if token not in seen:
            seen.add(token)
            ids.append(token)
    return ids


# --------------------------------------------------------------------------------------- rendering
def window(volume: np.ndarray, head: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """Display window of a volume: percentiles of its head voxels (all voxels if the head is empty)."""
    values = volume[head] if head.any() else volume.ravel()
    lo, hi = np.percentile(values, percentiles)
    if not hi > lo:
        hi = lo + 1e-6
    return float(lo), float(hi)


def render_slice(
    volume: np.ndarray,
    z: int,
    win: tuple[float, float],
    spacing_xy: tuple[float, float],
    image_size: int,
    convention: str,
) -> np.ndarray:
    """One axial slice of a RAS volume as an 8-bit image (anterior up, physical aspect ratio).

    Args:
        volume: RAS+ volume (x right, y anterior, z superior).
        z: axial index.
        win: (low, high) intensity window mapped to 0..255.
        spacing_xy: voxel size along x and y (mm), so that pixels come out square.
        image_size: longer side of the output in pixels (never below the native size).
        convention: ``radiological`` puts the patient's right on the image's left.
    """
    plane = volume[:, :, z].T[::-1, :]  # rows: anterior at the top; columns: x (patient's left->right)
    if convention == "radiological":
        plane = plane[:, ::-1]
    lo, hi = win
    grey = np.round(np.clip((plane - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    width_mm, height_mm = plane.shape[1] * spacing_xy[0], plane.shape[0] * spacing_xy[1]
    scale = max(image_size / max(width_mm, height_mm), 1 / min(spacing_xy))
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    image = Image.fromarray(np.ascontiguousarray(grey))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    return np.asarray(image)


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG with no text, time or physical-size chunks (nothing but pixels).

    Stored without compression (zlib level 0): the file size then depends on the image size only. A
    compressed PNG of a noisier image is larger, and file sizes would let a reader sort the panels by class
    without looking at them.
    """
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(
        buffer, format="PNG", optimize=False, compress_level=0
    )
    return buffer.getvalue()


def _render_case(
    folder: Path, mask_ras: np.ndarray, panels: list[Panel], rs: ReaderStudyConfig
) -> dict[str, bytes]:
    """PNG bytes of every image of ``panels`` (all from this one volume), keyed by image file name."""
    case = load_case(folder, with_seg=False)
    head = mask_ras != 0
    for channel, modality in enumerate(MODALITIES):
        if not np.isfinite(case.image[channel]).all():
            raise ValueError(f"{modality_path(folder, modality)}: contains NaN or infinite values")
    volumes, affine = {}, case.affine
    for channel, modality in enumerate(MODALITIES):
        volumes[modality], ras_affine = _to_ras(case.image[channel], affine)
    spacing = _spacing(ras_affine)
    windows = {m: window(v, head, rs.window_percentiles) for m, v in volumes.items()}
    out: dict[str, bytes] = {}
    for panel in panels:
        modalities = MODALITIES if panel.kind == "all" else (panel.kind,)
        for modality, name in zip(modalities, panel.images, strict=True):
            pixels = render_slice(
                volumes[modality],
                panel.slice,
                windows[modality],
                (float(spacing[0]), float(spacing[1])),
                rs.image_size,
                rs.convention,
            )
            out[name] = png_bytes(pixels)
    return out


# ------------------------------------------------------------------------------------------- build
def _fingerprint(pairs: list[CasePair], rs: ReaderStudyConfig, tumour_values: Sequence[int]) -> str:
    """What the kit depends on: package version, settings, labels and every input file's name, size, mtime."""
    files = []
    for pair in pairs:
        for folder in (pair.real, pair.synthetic):
            for path in sorted(folder.glob("*.nii.gz")):
                st = path.stat()
                files.append([str(path), st.st_size, st.st_mtime_ns])
    payload = {
        "format": KIT_FORMAT,
        "version": __version__,
        "settings": rs.model_dump(mode="json"),
        "tumour_values": list(tumour_values),
        "files": files,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _page_data(panels: list[Panel], rs: ReaderStudyConfig, img_dir: Path) -> dict:
    """The public part of the design: what the page shows. No case ids, classes, locations or slices.

    The kit id hashes this public part and the PNG bytes, so it changes whenever anything a reader sees
    changes, and reveals nothing the kit itself does not show.
    """
    public = [
        {
            "id": p.panel_id,
            "kind": p.kind,
            "label": KIND_NAMES[p.kind],
            "images": [
                {"src": f"img/{name}", "label": MODALITY_NAMES[m]}
                for m, name in zip(MODALITIES if p.kind == "all" else (p.kind,), p.images, strict=True)
            ],
        }
        for p in panels
    ]
    digest = hashlib.sha256(json.dumps(public, sort_keys=True).encode())
    for panel in panels:
        for name in panel.images:
            digest.update(hashlib.sha256((img_dir / name).read_bytes()).digest())
    kit_id = digest.hexdigest()[:12]
    side = "right" if rs.convention == "radiological" else "left"
    return {
        "format": "gliomagen-reader-study-kit",
        "version": KIT_FORMAT,
        "kit_id": kit_id,
        "title": rs.title,
        "convention": f"{rs.convention}: the patient's {side} is on the left of each image",
        "panels": public,
    }


def _existing_answers(study_dir: Path) -> list[Path]:
    answers = study_dir / "answers"
    return sorted(p for p in answers.glob("*") if p.suffix in {".csv", ".json"}) if answers.is_dir() else []


def build_kit(
    real_dirs: Iterable[Path],
    synthetic_root: Path,
    study_dir: Path,
    rs: ReaderStudyConfig,
    tumour_values: Sequence[int],
    config_hash: str = "",
    force: bool = False,
) -> KitResult:
    """Build (or find up to date) the kit in ``<study_dir>/kit`` and the key beside it.

    Args:
        real_dirs: real validation case folders.
        synthetic_root: folder of synthetic counterparts (``<synthetic_root>/<id>/``).
        study_dir: output folder; the readers get ``<study_dir>/kit/`` only.
        rs: reader-study settings.
        tumour_values: mask values that count as lesion (from the profile's label map).
        config_hash: stamped into the manifest.
        force: replace a kit for which answers already exist in ``<study_dir>/answers/`` (the old kit,
            key and answers are moved to ``<study_dir>/archive/<old kit id>/`` first).

    Raises:
        KitError: no usable pair, too few cases for a balanced design, or answers would lose their key.
    """
    study_dir = Path(study_dir)
    kit_dir, key_path, manifest_path = (
        study_dir / "kit",
        study_dir / "answer_key.csv",
        study_dir / "kit_manifest.json",
    )
    pairs, skipped = find_pairs(real_dirs, synthetic_root)
    fingerprint = _fingerprint(pairs, rs, tumour_values)
    old = read_json(manifest_path) if manifest_path.is_file() else None
    if (
        old
        and old.get("fingerprint") == fingerprint
        and key_path.is_file()
        and (kit_dir / "panels.js").is_file()
    ):
        log.info("reader-study kit %s is up to date (%s)", old["kit_id"], kit_dir)
        return KitResult(
            old["kit_id"], kit_dir, key_path, manifest_path, old["panels"], old["skipped_cases"], False
        )
    if old and _existing_answers(study_dir):
        if not force:
            raise KitError(
                f"{study_dir}: kit {old['kit_id']} already has answers in {study_dir / 'answers'}, and its "
                "inputs or settings changed. Rebuilding would orphan those answers; score them first, or "
                "rebuild with --force (the old kit, key and answers are archived), or use another --run-dir."
            )
        _archive(study_dir, old["kit_id"])

    cases = _eligible(pairs, rs, tumour_values, skipped)
    rng = np.random.default_rng(rs.seed)
    if rs.max_cases is not None and len(cases) > rs.max_cases:
        keep = set(rng.choice(len(cases), rs.max_cases, replace=False).tolist())
        reason = f"not drawn: max_cases={rs.max_cases} of {len(cases)} usable cases"
        skipped += [
            {"case_id": c.pair.case_id, "reason": reason} for i, c in enumerate(cases) if i not in keep
        ]
        cases = [c for i, c in enumerate(cases) if i in keep]
    panels, dropped = design_panels(cases, rs, rng)
    skipped += dropped
    if not panels:
        raise KitError(
            f"no panels could be drawn: {len(pairs)} real/synthetic pair(s) found "
            f"(real folders given, synthetic folder {synthetic_root}); a balanced design needs at least two "
            "usable cases per location. Skipped: "
            + ("; ".join(f"{s['case_id']}: {s['reason']}" for s in skipped) or "none")
        )
    image_ids = iter(_random_ids(rng, sum(4 if p.kind == "all" else 1 for p in panels)))
    for panel in panels:
        panel.images = [f"{next(image_ids)}.png" for _ in range(4 if panel.kind == "all" else 1)]

    page = _write_kit(kit_dir, panels, cases, rs)
    key = pd.DataFrame(
        [{**asdict(p), "kit_id": page["kit_id"], "images": " ".join(p.images)} for p in panels]
    )
    write_csv(key_path, key[KEY_COLUMNS])
    manifest = {
        "kit_id": page["kit_id"],
        "fingerprint": fingerprint,
        "panels": len(panels),
        "cases": sorted(c.pair.case_id for c in cases),
        "counts": key.groupby(["kind", "location", "truth"])
        .size()
        .rename("n")
        .reset_index()
        .to_dict("records"),
        "skipped_cases": skipped,
        "settings": rs.model_dump(mode="json"),
        **provenance(config_hash),
    }
    write_json(manifest_path, manifest)
    (study_dir / "answers").mkdir(parents=True, exist_ok=True)
    log.info("reader-study kit %s: %d panels in %s; key %s", page["kit_id"], len(panels), kit_dir, key_path)
    return KitResult(page["kit_id"], kit_dir, key_path, manifest_path, len(panels), skipped, True)


def _eligible(
    pairs: list[CasePair], rs: ReaderStudyConfig, tumour_values: Sequence[int], skipped: list[dict[str, str]]
) -> list[EligibleCase]:
    cases = []
    for pair in tqdm(pairs, desc="reader study: checking cases", unit="case", leave=False):
        try:
            cases.append(check_pair(pair, tumour_values, rs))
        except ValueError as exc:  # one bad case never stops the others; it is listed in the manifest
            log.warning("reader study: skipping %s: %s", pair.case_id, exc)
            skipped.append({"case_id": pair.case_id, "reason": str(exc)})
    return cases


def _write_kit(kit_dir: Path, panels: list[Panel], cases: list[EligibleCase], rs: ReaderStudyConfig) -> dict:
    """Write the PNGs, the page and the panel list into a fresh folder (stale images must not linger).

    Returns:
        The page data (with the kit id).
    """
    by_case = {c.pair.case_id: c for c in cases}
    groups: dict[tuple[str, str], list[Panel]] = {}
    for panel in panels:
        groups.setdefault((panel.case_id, panel.truth), []).append(panel)
    rendered: dict[str, bytes] = {}
    for (case_id, truth), group in tqdm(
        sorted(groups.items()), desc="reader study: rendering", unit="volume"
    ):
        case = by_case[case_id]
        mask = nib.load(str(modality_path(case.pair.real, "seg")))
        mask_ras, _ = _to_ras(np.asarray(mask.dataobj).astype(np.int32), mask.affine)
        folder = case.pair.real if truth == "real" else case.pair.synthetic
        rendered |= _render_case(folder, mask_ras, group, rs)

    tmp_dir = kit_dir.with_name(f".{kit_dir.name}.partial")
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    (tmp_dir / "img").mkdir(parents=True)
    # Written in the shuffled panel order, not per volume, and all with one timestamp (below), so that
    # neither file order nor modification times group the images by case or class.
    for panel in panels:
        for name in panel.images:
            (tmp_dir / "img" / name).write_bytes(rendered[name])
    page = _page_data(panels, rs, tmp_dir / "img")
    for name in WEB_FILES:
        shutil.copyfile(WEB_DIR / name, tmp_dir / name)
    # A script file, not JSON: browsers refuse fetch() on file:// pages, but load <script src> fine.
    (tmp_dir / "panels.js").write_text("window.READER_STUDY = " + json.dumps(page, indent=1) + ";\n")
    (tmp_dir / "README.txt").write_text(_README.format(n=len(panels), kit_id=page["kit_id"]))
    stamp = time.time()
    for path in tmp_dir.rglob("*"):
        os.utime(path, (stamp, stamp))
    # The whole folder appears at once (rename), so a crash never leaves a half-written kit.
    if kit_dir.exists():
        shutil.rmtree(kit_dir)
    tmp_dir.replace(kit_dir)
    return page


def _archive(study_dir: Path, kit_id: str) -> None:
    target = study_dir / "archive" / kit_id
    target.mkdir(parents=True, exist_ok=True)
    for name in ("kit", "answer_key.csv", "kit_manifest.json", "answers"):
        if (study_dir / name).exists():
            shutil.move(str(study_dir / name), str(target / name))
    log.warning("reader study: the previous kit %s and its answers were moved to %s", kit_id, target)


def build(cfg: Config, force: bool = False) -> KitResult:
    """Build the run's kit from ``prepared/val`` and ``synthetic/val`` (see :func:`build_kit`)."""
    real = real_validation_dirs(cfg)
    synthetic = cfg.paths.synthetic / "val"
    if not real or not synthetic.is_dir():
        raise KitError(
            f"the reader study needs real validation cases in {cfg.paths.prepared / 'val'} "
            f"({len(real)} found) and synthetic counterparts in {synthetic} "
            f"({'present' if synthetic.is_dir() else 'missing'}); run the data preparation, training and "
            "generation stages first (notebooks 01-04 or `gliomagen prepare/train/generate`)."
        )
    tumour_values = [lab.value for lab in cfg.tumour_labels]
    return build_kit(
        real, synthetic, cfg.paths.reader_study, cfg.reader_study, tumour_values, cfg.hash, force
    )


_README = """GliomaGen reader study ({n} panels, kit {kit_id})

1. Open index.html in a web browser (double-click it; no internet or installation needed).
2. Enter your name or initials and start. For each panel answer "real" or "synthetic" and give a
   realism rating from 1 (clearly artificial) to 5 (indistinguishable from a real scan).
   Keyboard: R = real, S = synthetic, 1-5 = rating, C = comment, arrow keys = back / next.
3. Your answers are kept in this browser until you export them, even if you close the page.
4. At the end press "Export CSV" (or JSON) and send the downloaded file back to the organiser.
"""


def preview(result: KitResult, n: int = 10, columns: int = 5) -> Any:
    """Organiser's view of the first ``n`` panels with their truth (never show this to readers)."""
    import matplotlib.pyplot as plt

    key = pd.read_csv(result.key_path, dtype={"panel_id": str}).head(n)
    rows = math.ceil(len(key) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, row) in zip(axes.ravel(), key.iterrows(), strict=False):
        first = row["images"].split()[0]  # the 4-modality panels show their T1 native image here
        ax.imshow(np.asarray(Image.open(result.kit_dir / "img" / first)), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{KIND_NAMES[row['kind']]}, {row['location']}\n{row['truth']}", fontsize=8)
    fig.tight_layout()
    return fig
