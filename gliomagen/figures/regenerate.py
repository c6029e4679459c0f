"""Make every figure and table of one run (notebook 07, ``gliomagen figures``), each failure recorded."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gliomagen.config import Config
from gliomagen.figures import export
from gliomagen.figures.artifacts import ARTIFACTS
from gliomagen.figures.outputs import FiguresOutputs
from gliomagen.io import read_json
from gliomagen.locks import run_lock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FiguresResult:
    """What :func:`regenerate` made.

    Args:
        manifest: one row per artifact: name, kind, paper, notebook, status (``ok``/``failed``), files, message.
        figures_dir: this run's figures folder.
        tables_dir: this run's tables folder.
    """

    manifest: pd.DataFrame
    figures_dir: Path
    tables_dir: Path

    @property
    def failed(self) -> pd.DataFrame:
        return self.manifest[self.manifest["status"] != "ok"]


def regenerate(cfg: Config, names: list[str] | None = None) -> FiguresResult:
    """Make every artifact (or those named) into the run folder, under the run's ``figures`` lock.

    A failing artifact is recorded with its error and the others carry on; call :func:`raise_on_failures`
    to turn failures into an error.
    """
    outputs = FiguresOutputs(cfg.paths)
    with run_lock(cfg.paths.root, "figures", clean=[outputs.figures_dir, outputs.tables_dir]):
        manifest = _regenerate_locked(cfg, outputs, names)
    return FiguresResult(manifest, outputs.figures_dir, outputs.tables_dir)


def _regenerate_locked(cfg: Config, outputs: FiguresOutputs, names: list[str] | None) -> pd.DataFrame:
    from gliomagen.figures.numbers import write_numbers
    from gliomagen.figures.publish import footer_text, provenance

    fig_dir, tab_dir = outputs.figures_dir, outputs.tables_dir
    footer, run = footer_text(cfg), provenance(cfg)
    rows: list[dict[str, Any]] = []
    for art in ARTIFACTS:
        if names is not None and art.name not in names:
            continue
        row: dict[str, Any] = {
            "name": art.name,
            "kind": art.kind,
            "paper": art.paper_ref,
            "notebook": art.notebook,
        }
        try:
            made = art.make(cfg)
            if isinstance(made, tuple):
                frame, caption = made
                stamp = export.source_stamp(art.sources(cfg), cfg.paths.root)
                files = export.write_table(frame, tab_dir, art.name, caption, stamp, cfg.hash, footer, run)
            else:
                files = export.save_figure(
                    made,
                    fig_dir,
                    art.name,
                    cfg.figures.formats,
                    cfg.figures.dpi,
                    footer=footer,
                    provenance=run,
                )
            row.update(status="ok", files=[str(f) for f in files], message="")
        except Exception as exc:  # noqa: BLE001 -- reported per artifact; raise_on_failures decides
            # one line per artifact; the traceback only with --verbose (the manifest keeps the message)
            log.warning("could not make %s: %s: %s", art.name, type(exc).__name__, exc)
            log.debug("traceback of %s", art.name, exc_info=True)
            row.update(status="failed", files=[], message=f"{type(exc).__name__}: {exc}")
        rows.append(row)
    if names is None:
        numbers_file = write_numbers(cfg)
        rows.append({"name": "numbers", "kind": "table", "paper": "key numbers (macros)", "notebook": "all",
                     "status": "ok", "files": [str(numbers_file)], "message": ""})  # fmt: skip
    manifest = pd.DataFrame(rows)
    entries: list[dict[str, Any]] = [{str(k): v for k, v in e.items()} for e in manifest.to_dict("records")]
    if names is not None and outputs.index.is_file():  # a partial remake keeps the other artifacts' entries
        made_names = {e["name"] for e in entries}
        entries = [e for e in read_json(outputs.index) if e["name"] not in made_names] + entries
    export.write_manifest(fig_dir, entries)
    return manifest


def raise_on_failures(result: FiguresResult | pd.DataFrame) -> None:
    """Raise when an artifact could not be made (the message lists each with its reason)."""
    manifest = result.manifest if isinstance(result, FiguresResult) else result
    failed = manifest[manifest["status"] != "ok"]
    if not failed.empty:
        lines = "\n".join(f"  - {r.name}: {r.message}" for r in failed.itertuples())
        raise RuntimeError(f"{len(failed)} figure(s)/table(s) could not be made:\n{lines}")
