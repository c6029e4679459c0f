"""One run's figures and tables, and their published copy.

Notebook 07 (``gliomagen figures``) writes every figure and table into the run folder itself,
``<run>/figures/`` and ``<run>/paper_generated/``, so two runs can never write into each other's outputs.
:func:`publish` then copies one complete run into ``figures/<profile>/`` and ``paper/generated/<profile>/``
(the folders the manuscript and the README point to), replacing the previous publication as a whole, and
records which run it was in ``PUBLISHED.json``. A run whose stages are incomplete (a figure or table could
not be made, a stage's outputs are missing, a table's sources changed since it was written) is refused and
nothing published changes.

Every generated file carries its own provenance (profile, config hash, run folder): a comment line in a
table, a text chunk in a PNG, the Subject field of a PDF. :func:`include_provenance` reads it back so that
the paper check (:mod:`gliomagen.paper`) can verify that every include comes from one run.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path

from gliomagen.config import Config
from gliomagen.errors import InputError
from gliomagen.figures.export import PROVENANCE_KEY, read_stamp, stale_outputs
from gliomagen.figures.outputs import FiguresOutputs
from gliomagen.io import file_sha256, read_json, write_json

#: the record of what was published, in both published folders
PUBLISHED = "PUBLISHED.json"


class PublishRefused(InputError):
    """A run that cannot be published (incomplete stages, failed artifacts, stale tables); the CLI prints it
    as one line and exits 2."""


def provenance(cfg: Config) -> dict[str, str]:
    """Which run a generated file comes from: profile, config hash, run folder, data kind."""
    return {
        "profile": cfg.profile,
        "config_hash": cfg.hash,
        "run_dir": str(cfg.paths.root.resolve()),
        "data": "phantom" if cfg.data.phantom is not None else "BraTS",
    }


def footer_text(cfg: Config) -> str:
    """The one-line footer on every figure and table: profile, config hash, run folder, data kind."""
    text = f"profile {cfg.profile} · config {cfg.hash} · run {cfg.paths.root.name}"
    if cfg.data.phantom is not None:
        text += " · phantom, not patient data"
    return text


def run_key(record: dict[str, object]) -> tuple[str, str]:
    """What identifies a run in a provenance record: its config hash and its folder."""
    return str(record.get("config_hash")), str(record.get("run_dir"))


# ------------------------------------------------------------------------------------- reading provenance
def _png_provenance(path: Path) -> dict[str, object] | None:
    from PIL import Image

    with Image.open(path) as image:
        raw = image.info.get(PROVENANCE_KEY)
    return json.loads(raw) if raw else None


_PDF_SUBJECT = re.compile(rb"/Subject\s*\((.*?)(?<!\\)\)", re.S)


def _pdf_provenance(path: Path) -> dict[str, object] | None:
    # matplotlib writes the document information dictionary uncompressed; strings escape ( ) and \
    match = _PDF_SUBJECT.search(path.read_bytes())
    if match is None:
        return None
    text = re.sub(rb"\\([()\\])", rb"\1", match.group(1)).decode("latin-1")
    if PROVENANCE_KEY not in text:
        return None
    return json.loads(text.split(PROVENANCE_KEY, 1)[1].strip(" :"))


def include_provenance(path: Path) -> dict[str, object] | None:
    """The provenance recorded inside a generated table (.tex/.md), PNG or PDF; ``None`` if it has none."""
    if not path.is_file():
        return None
    suffix = path.suffix.lower()
    if suffix == ".png":
        return _png_provenance(path)
    if suffix == ".pdf":
        return _pdf_provenance(path)
    stamp = read_stamp(path)
    run = stamp.get("run") if stamp else None
    return dict(run) if isinstance(run, dict) else stamp


# ------------------------------------------------------------------------------------- completeness
def incomplete(cfg: Config) -> list[str]:
    """Why this run's own outputs may not be published (empty when it is complete).

    Checks every stage's required outputs, the artifact manifest written by
    :func:`gliomagen.figures.regenerate.regenerate` (every figure and table made) and the source hashes of every table.
    """
    from gliomagen.figures.artifacts import ARTIFACTS
    from gliomagen.stages import PIPELINE, missing_outputs

    problems = [
        f"stage {stage!r} is incomplete: {', '.join(missing)}"
        for stage in PIPELINE
        if (missing := missing_outputs(cfg, stage))
    ]
    index = FiguresOutputs(cfg.paths).index
    if not index.is_file():
        problems.append(f"{index} is missing: make the figures first (gliomagen figures)")
    else:
        entries = {e["name"]: e for e in read_json(index)}
        for art in ARTIFACTS:
            entry = entries.get(art.name)
            if entry is None:
                problems.append(f"{art.name} was not made")
            elif entry["status"] != "ok":
                problems.append(f"{art.name} could not be made: {entry['message']}")
    problems += stale_outputs(FiguresOutputs(cfg.paths).tables_dir, cfg.paths.root)
    return problems


# ------------------------------------------------------------------------------------- publishing
def _replace_folder(source: Path, target: Path, record: dict[str, object]) -> None:
    """Replace ``target`` by a copy of ``source`` plus ``PUBLISHED.json``, never leaving a half copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.publishing-", dir=target.parent))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        files = {p.name: file_sha256(p) for p in sorted(staging.iterdir()) if p.is_file()}
        write_json(staging / PUBLISHED, {**record, "files": files})
        old = target.with_name(f".{target.name}.previous")
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def publish(cfg: Config) -> dict[str, object]:
    """Copy this run's figures and tables to the published folders (``cfg.figures_dir``, ``cfg.tables_dir``).

    Raises:
        PublishRefused: the run is incomplete; nothing published is touched.
    """
    problems = incomplete(cfg)
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise PublishRefused(
            f"run {cfg.paths.root} is incomplete, so {cfg.figures_dir} and {cfg.tables_dir} were left as they "
            f"were: {shown}"
        )
    record: dict[str, object] = {
        **provenance(cfg),
        "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _replace_folder(FiguresOutputs(cfg.paths).figures_dir, cfg.figures_dir, record)
    _replace_folder(FiguresOutputs(cfg.paths).tables_dir, cfg.tables_dir, record)
    return record


def published_record(folder: Path) -> dict[str, object] | None:
    """The ``PUBLISHED.json`` of a published folder, or ``None``."""
    path = folder / PUBLISHED
    return read_json(path) if path.is_file() else None
