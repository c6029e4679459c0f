"""Writing figures (PNG + PDF), tables (LaTeX + Markdown) and number macros, each stamped with its sources.

Every generated file records the config hash and the SHA-256 of the run outputs it was made from, so a
test (and :func:`stale_outputs`) can tell when a table no longer matches the run's metrics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from gliomagen.io import atomic_path, file_sha256, write_json, write_text  # noqa: E402

SOURCES_TAG = "gliomagen-sources:"


def source_stamp(sources: Iterable[Path], root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of the run outputs a figure or table was made from."""
    return {str(Path(p).resolve().relative_to(root.resolve())): file_sha256(p) for p in sources}


def save_figure(
    fig: plt.Figure, out_dir: Path, name: str, formats: Iterable[str] = ("png", "pdf"), dpi: int = 150
) -> list[Path]:
    """Save ``fig`` as ``<out_dir>/<name>.<fmt>`` for each format (atomically) and close it."""
    written = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        written.append(path)
    plt.close(fig)
    return written


def _latex_escape(text: str) -> str:
    escaped = re.sub(r"([&%$#_{}])", r"\\\1", str(text))
    for char, latex in (
        ("±", r"$\pm$"),
        ("≥", r"$\geq$"),
        ("²", r"$^2$"),
        ("↑", r"$\uparrow$"),
        ("↓", r"$\downarrow$"),
    ):
        escaped = escaped.replace(char, latex)
    return escaped


def table_to_latex(frame: pd.DataFrame, caption: str, label: str) -> str:
    columns = list(frame.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering\small",
        rf"\caption{{{_latex_escape(caption)}}}",
        rf"\label{{tab:{label}}}",
        # shrink a table wider than the text to fit; never enlarge a narrow one
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        r"\begin{tabular}{" + "l" * len(columns) + "}",
        r"\hline",
        " & ".join(_latex_escape(c) for c in columns) + r" \\",
        r"\hline",
    ]
    for _, row in frame.iterrows():
        lines.append(" & ".join(_latex_escape(v) for v in row.tolist()) + r" \\")
    lines += [r"\hline", r"\end{tabular}}", r"\end{table}", ""]
    return "\n".join(lines)


def write_table(
    frame: pd.DataFrame,
    out_dir: Path,
    name: str,
    caption: str,
    stamp: dict[str, str],
    config_hash: str,
) -> list[Path]:
    """Write ``<name>.tex`` and ``<name>.md`` with a provenance comment naming the sources and their hashes."""
    meta = json.dumps({"config_hash": config_hash, "sources": stamp}, sort_keys=True)
    tex = f"% {SOURCES_TAG} {meta}\n" + table_to_latex(frame, caption, name)
    md = f"<!-- {SOURCES_TAG} {meta} -->\n\n**{caption}**\n\n{frame.to_markdown(index=False)}\n"
    return [write_text(out_dir / f"{name}.tex", tex), write_text(out_dir / f"{name}.md", md)]


def write_macros(numbers: dict[str, str], out_dir: Path, stamp: dict[str, str], config_hash: str) -> Path:
    """Key numbers as LaTeX macros (``\\newcommand{\\FidMeanFID}{59.77}``) in ``numbers.tex``."""
    meta = json.dumps({"config_hash": config_hash, "sources": stamp}, sort_keys=True)
    lines = [f"% {SOURCES_TAG} {meta}"]
    for key, value in sorted(numbers.items()):
        if not re.fullmatch(r"[A-Za-z]+", key):
            raise ValueError(f"LaTeX macro names must be letters only, got {key!r}")
        lines.append(rf"\newcommand{{\{key}}}{{{_latex_escape(value)}}}")
    return write_text(out_dir / "numbers.tex", "\n".join(lines) + "\n")


def read_stamp(path: Path) -> dict[str, object] | None:
    """The provenance recorded in a generated table/macro file, or ``None``."""
    first = path.read_text().splitlines()[0] if path.exists() else ""
    if SOURCES_TAG not in first:
        return None
    payload = first.split(SOURCES_TAG, 1)[1].strip().removesuffix("-->").strip()
    return json.loads(payload)


def stale_outputs(out_dir: Path, run_root: Path) -> list[str]:
    """Generated files whose recorded sources changed (or vanished) since they were written."""
    problems = []
    for path in sorted(out_dir.glob("*.tex")) + sorted(out_dir.glob("*.md")):
        stamp = read_stamp(path)
        if stamp is None:
            problems.append(f"{path.name}: no provenance header")
            continue
        for rel, digest in stamp["sources"].items():  # type: ignore[union-attr]
            src = run_root / rel
            if not src.exists():
                problems.append(f"{path.name}: source {rel} is missing")
            elif file_sha256(src) != digest:
                problems.append(f"{path.name}: source {rel} changed since the table was written")
    return problems


def write_manifest(out_dir: Path, entries: list[dict[str, object]]) -> Path:
    return write_json(out_dir / "index.json", entries)
