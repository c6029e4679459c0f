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
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from gliomagen import __version__
from gliomagen.cases import modality_path
from gliomagen.config import MODALITIES, Config, ReaderStudyConfig
from gliomagen.data.outputs import PrepareOutputs
from gliomagen.hashing import content_hash
from gliomagen.io import provenance, read_json, write_csv, write_json
from gliomagen.locks import run_lock
from gliomagen.reader_study.design import Panel, design_panels, random_ids
from gliomagen.reader_study.outputs import (
    IMAGE_DIR,
    KEY_COLUMNS,
    KIND_NAMES,
    MODALITY_NAMES,
    PAGE_DATA,
    KitFiles,
    ReaderStudyOutputs,
)
from gliomagen.reader_study.pairs import (
    CasePair,
    EligibleCase,
    check_pair,
    find_pairs,
    load_image,
    real_validation_dirs,
    to_ras,
)
from gliomagen.reader_study.render import render_case

log = logging.getLogger(__name__)

KIT_FORMAT = 1
WEB_DIR = Path(__file__).resolve().parent / "web"
WEB_FILES = ("index.html", "app.js", "style.css")


class KitError(RuntimeError):
    """The kit cannot be built (no usable case pairs, or an existing kit with answers would be replaced)."""


@dataclass(frozen=True)
class KitResult:
    """What :func:`build_kit` made (or found up to date).

    Args:
        kit_id: the kit's id (a hash of everything a reader sees).
        kit_dir: the folder given to readers.
        key_path: the organiser's answer key.
        manifest_path: the organiser's manifest (cases, counts, skipped cases, settings, provenance).
        panels: panels in the kit.
        skipped_cases: ``{"case_id", "reason"}`` for every case not used.
        rebuilt: whether the kit was (re)built now, rather than found up to date.
    """

    kit_id: str
    kit_dir: Path
    key_path: Path
    manifest_path: Path
    panels: int
    skipped_cases: list[dict[str, str]]
    rebuilt: bool


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
    return content_hash(payload, length=64)


def _page_data(panels: list[Panel], rs: ReaderStudyConfig, img_dir: Path) -> dict[str, Any]:
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
                {"src": f"{IMAGE_DIR}/{name}", "label": MODALITY_NAMES[m]}
                for m, name in zip(MODALITIES if p.kind == "all" else (p.kind,), p.images, strict=True)
            ],
        }
        for p in panels
    ]
    # a running digest over the JSON and every image's digest (not hashing.content_hash, which takes one
    # JSON payload): kept so that the ids of kits already given to readers stay what they were
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


def _existing_answers(files: KitFiles) -> list[Path]:
    answers = files.answers
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
    files = KitFiles(study_dir)
    kit_dir, key_path, manifest_path = files.kit, files.key, files.manifest
    pairs, skipped = find_pairs(real_dirs, synthetic_root)
    fingerprint = _fingerprint(pairs, rs, tumour_values)
    old = read_json(manifest_path) if manifest_path.is_file() else None
    if old and old.get("fingerprint") == fingerprint and key_path.is_file() and files.page_data.is_file():
        log.info("reader-study kit %s is up to date (%s)", old["kit_id"], kit_dir)
        return KitResult(
            old["kit_id"], kit_dir, key_path, manifest_path, old["panels"], old["skipped_cases"], False
        )
    if old and _existing_answers(files):
        if not force:
            raise KitError(
                f"{study_dir}: kit {old['kit_id']} already has answers in {files.answers}, and its "
                "inputs or settings changed. Rebuilding would orphan those answers; score them first, or "
                "rebuild with --force (the old kit, key and answers are archived), or use another --run-dir."
            )
        _archive(files, old["kit_id"])

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
    image_ids = iter(random_ids(rng, sum(4 if p.kind == "all" else 1 for p in panels)))
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
    files.answers.mkdir(parents=True, exist_ok=True)
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


def _write_kit(
    kit_dir: Path, panels: list[Panel], cases: list[EligibleCase], rs: ReaderStudyConfig
) -> dict[str, Any]:
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
        mask = load_image(modality_path(case.pair.real, "seg"))
        mask_ras, _ = to_ras(np.asarray(mask.dataobj).astype(np.int32), mask.affine)
        folder = case.pair.real if truth == "real" else case.pair.synthetic
        rendered |= render_case(folder, mask_ras, group, rs)

    tmp_dir = kit_dir.with_name(f".{kit_dir.name}.partial")
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    (tmp_dir / IMAGE_DIR).mkdir(parents=True)
    # Written in the shuffled panel order, not per volume, and all with one timestamp (below), so that
    # neither file order nor modification times group the images by case or class.
    for panel in panels:
        for name in panel.images:
            (tmp_dir / IMAGE_DIR / name).write_bytes(rendered[name])
    page = _page_data(panels, rs, tmp_dir / IMAGE_DIR)
    for name in WEB_FILES:
        shutil.copyfile(WEB_DIR / name, tmp_dir / name)
    # A script file, not JSON: browsers refuse fetch() on file:// pages, but load <script src> fine.
    (tmp_dir / PAGE_DATA).write_text("window.READER_STUDY = " + json.dumps(page, indent=1) + ";\n")
    (tmp_dir / "README.txt").write_text(_README.format(n=len(panels), kit_id=page["kit_id"]))
    stamp = time.time()
    for path in tmp_dir.rglob("*"):
        os.utime(path, (stamp, stamp))
    # The whole folder appears at once (rename), so a crash never leaves a half-written kit.
    if kit_dir.exists():
        shutil.rmtree(kit_dir)
    tmp_dir.replace(kit_dir)
    return page


def _archive(files: KitFiles, kit_id: str) -> None:
    target = files.archive(kit_id)
    target.mkdir(parents=True, exist_ok=True)
    for path in (files.kit, files.key, files.manifest, files.answers):
        if path.exists():
            shutil.move(str(path), str(target / path.name))
    log.warning("reader study: the previous kit %s and its answers were moved to %s", kit_id, target)


def build(cfg: Config, force: bool = False) -> KitResult:
    """Build the run's kit from the real validation cases and their synthetic counterparts (see
    :func:`build_kit`), holding the run folder's ``reader-study`` lock.

    Raises:
        KitError: see :func:`build_kit`; also when the run has no validation cases or synthetic volumes.
        gliomagen.locks.LockHeld: another process is building or scoring this run's reader study.
    """
    with run_lock(cfg.paths.root, "reader-study"):
        return _build_locked(cfg, force)


def _build_locked(cfg: Config, force: bool) -> KitResult:
    real = real_validation_dirs(cfg)
    from gliomagen.generation.outputs import GenerationOutputs  # imported here: generation imports torch

    # the synthetic counterparts of validation cases keep the real case's id (GenerationOutputs.volume_dir)
    synthetic = GenerationOutputs(cfg.paths).synthetic / "val"
    if not real or not synthetic.is_dir():
        raise KitError(
            f"the reader study needs real validation cases in {PrepareOutputs(cfg.paths).folder('val')} "
            f"({len(real)} found) and synthetic counterparts in {synthetic} "
            f"({'present' if synthetic.is_dir() else 'missing'}); run the data preparation, training and "
            "generation stages first (notebooks 01-04 or `gliomagen prepare/train/generate`)."
        )
    tumour_values = [lab.value for lab in cfg.tumour_labels]
    study_dir = ReaderStudyOutputs(cfg.paths).files.study_dir
    return build_kit(real, synthetic, study_dir, cfg.reader_study, tumour_values, cfg.hash, force)


_README = """GliomaGen reader study ({n} panels, kit {kit_id})

1. Open index.html in a web browser (double-click it; no internet or installation needed).
2. Enter your name or initials and start. For each panel answer "real" or "synthetic" and give a
   realism rating from 1 (clearly artificial) to 5 (indistinguishable from a real scan).
   Keyboard: R = real, S = synthetic, 1-5 = rating, C = comment, arrow keys = back / next.
3. Your answers are kept in this browser until you export them, even if you close the page.
4. At the end press "Export CSV" (or JSON) and send the downloaded file back to the organiser.
"""
