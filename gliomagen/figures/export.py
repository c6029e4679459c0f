"""Writing figures (PNG + PDF), tables (LaTeX + Markdown) and number macros, each stamped with its sources.

Every generated file records the config hash and the SHA-256 of the run outputs it was made from, so a
test (and :func:`stale_outputs`) can tell when a table no longer matches the run's metrics.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from gliomagen.figures.outputs import INDEX, NUMBERS
from gliomagen.io import atomic_path, file_sha256, write_json, write_text

SOURCES_TAG = "gliomagen-sources:"
#: key under which a figure's provenance is stored (PNG text chunk; JSON inside the PDF Subject field)
PROVENANCE_KEY = "gliomagen-provenance"


def source_stamp(sources: Iterable[Path], root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of the run outputs a figure or table was made from."""
    return {str(Path(p).resolve().relative_to(root.resolve())): file_sha256(p) for p in sources}


def add_footer(fig: Figure, text: str) -> None:
    """A small grey line under everything drawn (legends below the axes included); ``bbox_inches="tight"``
    keeps it in the saved file."""
    if not hasattr(fig.canvas, "get_renderer"):  # a figure closed in pyplot has lost its Agg canvas
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]  # Agg canvases have one (made above)
    bottom = fig.get_tightbbox(renderer).y0 / fig.get_figheight()  # figure fraction
    fig.text(0.5, min(bottom, 0.0) - 0.01, text, ha="center", va="top", fontsize=7, color="0.35")


def _metadata(fmt: str, provenance: dict[str, str] | None) -> dict[str, str] | None:
    if provenance is None:
        return None
    payload = json.dumps(provenance, sort_keys=True)
    if fmt == "png":
        return {PROVENANCE_KEY: payload}
    if fmt == "pdf":
        return {"Subject": f"{PROVENANCE_KEY}: {payload}"}
    return None  # svg: the footer names the run


def save_figure(
    fig: Figure,
    out_dir: Path,
    name: str,
    formats: Iterable[str] = ("png", "pdf"),
    dpi: int = 150,
    footer: str | None = None,
    provenance: dict[str, str] | None = None,
) -> list[Path]:
    """Save ``fig`` as ``<out_dir>/<name>.<fmt>`` for each format (atomically) and close it.

    Args:
        fig: the figure.
        out_dir: destination folder.
        name: file stem.
        formats: file formats.
        dpi: resolution of raster formats.
        footer: a line drawn under the figure (which run it comes from).
        provenance: recorded inside the PNG (text chunk) and PDF (Subject field) for the paper check.
    """
    if footer:
        add_footer(fig, footer)
    written = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight", metadata=_metadata(fmt, provenance))
        written.append(path)
    plt.close(fig)
    return written


#: characters pdflatex (utf8 input, no extra packages) cannot typeset, and their LaTeX; applied after escaping
LATEX_SYMBOLS = (
    ("±", r"$\pm$"),
    ("≥", r"$\geq$"),
    ("≤", r"$\leq$"),
    ("²", r"$^2$"),
    ("³", r"$^3$"),
    ("↑", r"$\uparrow$"),
    ("↓", r"$\downarrow$"),
    ("−∞", r"$-\infty$"),
    ("∞", r"$\infty$"),
    ("–", "--"),
    ("·", r"$\cdot$"),
    ("×", r"$\times$"),
    ("\u2009", r"\,"),  # thin space (thousands separator of the number macros)
)


def _latex_symbols(text: str) -> str:
    for char, latex in LATEX_SYMBOLS:
        text = text.replace(char, latex)
    return text


def latex_text(text: object) -> str:
    r"""Any text as LaTeX: pandas' escaping of the ten special characters (``& % $ # _ { } ~ ^ \``), then
    the symbols of :data:`LATEX_SYMBOLS` (captions, notes and macro values, which are not table cells)."""
    styler = pd.DataFrame([[str(text)]]).style.format(escape="latex").hide(axis="index").hide(axis="columns")
    body = styler.to_latex().split("\n", 1)[1].rsplit("\n\\end{tabular}", 1)[0]
    return _latex_symbols(body.removesuffix(" \\\\"))


def format_value(value: object) -> str:
    """A table cell as text: integers as they are, floats to a precision that suits their size, NaN as "–".

    Run outputs hold raw floats (``2525.491823399989`` seconds); a reader needs three or four significant
    digits, not sixteen.
    """
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v == int(v) and abs(v) < 1e6:
            return str(int(v))
        size = abs(v)
        if size >= 100:
            return f"{v:.1f}"
        if size >= 1:
            return f"{v:.2f}"
        if size >= 0.001:
            return f"{v:.4f}"
        return f"{v:.2e}"
    return str(value)


def format_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Every cell through :func:`format_value` (strings kept)."""
    return frame.astype(object).map(format_value)


#: a table with more columns than this is set sideways on its own page instead of being shrunk to 2 pt
WIDE_COLUMNS = 9


def table_to_latex(frame: pd.DataFrame, caption: str, label: str, note: str = "") -> str:
    """A LaTeX table through pandas' ``Styler.to_latex``: booktabs rules, formatted numbers, every cell and
    header escaped (``escape="latex"``), a footnote line naming the run.

    A table with more than :data:`WIDE_COLUMNS` columns goes into a ``sidewaystable`` (package ``rotating``)
    so that it stays legible; narrower tables shrink to the text width only if they must.
    """
    wide = len(frame.columns) > WIDE_COLUMNS
    env = "sidewaystable" if wide else "table"
    width = r"\textheight" if wide else r"\linewidth"
    data = frame.copy()
    data.columns = [str(c) for c in data.columns]
    styler = (
        data.style.hide(axis="index")
        .format(lambda v: _latex_symbols(format_value(v)), escape="latex")
        .format_index(lambda v: _latex_symbols(str(v)), escape="latex", axis="columns")
    )
    latex = styler.to_latex(
        column_format="l" * len(data.columns),
        hrules=True,
        environment=env,
        position=None if wide else "t",
        position_float="centering",
        caption=latex_text(caption),
        label=f"tab:{label}",
    )
    # shrink a table wider than the page to fit; never enlarge a narrow one
    begin, end = r"\begin{tabular}", r"\end{tabular}"
    resize = rf"\resizebox{{\ifdim\width>{width}{width}\else\width\fi}}{{!}}{{%"
    latex = latex.replace(r"\centering", r"\centering\small", 1)
    latex = latex.replace(begin, f"{resize}\n{begin}", 1).replace(end, end + "}", 1)
    if note:
        latex = latex.replace(
            rf"\end{{{env}}}",
            rf"\par\smallskip{{\footnotesize\color{{gray}} {latex_text(note)}}}" + "\n" + rf"\end{{{env}}}",
            1,
        )
    return latex


def write_table(
    frame: pd.DataFrame,
    out_dir: Path,
    name: str,
    caption: str,
    stamp: dict[str, str],
    config_hash: str,
    footer: str = "",
    run: dict[str, str] | None = None,
) -> list[Path]:
    """Write ``<name>.tex`` and ``<name>.md`` with a provenance comment naming the sources and their hashes.

    Args:
        frame: the table.
        out_dir: destination folder.
        name: file stem (also the LaTeX label ``tab:<name>``).
        caption: the caption.
        stamp: ``{source path: sha256}`` of the run files the table was made from.
        config_hash: the run's config hash.
        footer: a line under the table naming the run.
        run: provenance of the run (profile, config hash, run folder), read back by the paper check.
    """
    meta = json.dumps({"config_hash": config_hash, "sources": stamp, "run": run or {}}, sort_keys=True)
    tex = f"% {SOURCES_TAG} {meta}\n" + table_to_latex(frame, caption, name, footer)
    md_table = format_frame(frame).to_markdown(index=False)
    md = f"<!-- {SOURCES_TAG} {meta} -->\n\n**{caption}**\n\n{md_table}\n" + (
        f"\n_{footer}_\n" if footer else ""
    )
    return [write_text(out_dir / f"{name}.tex", tex), write_text(out_dir / f"{name}.md", md)]


def write_macros(
    numbers: dict[str, str],
    out_dir: Path,
    stamp: dict[str, str],
    config_hash: str,
    run: dict[str, str] | None = None,
) -> Path:
    """Key numbers as LaTeX macros (``\\newcommand{\\RMeanMSSSIM}{0.72}``) in ``numbers.tex``."""
    meta = json.dumps({"config_hash": config_hash, "sources": stamp, "run": run or {}}, sort_keys=True)
    lines = [f"% {SOURCES_TAG} {meta}"]
    for key, value in sorted(numbers.items()):
        if not re.fullmatch(r"[A-Za-z]+", key):
            raise ValueError(f"LaTeX macro names must be letters only, got {key!r}")
        lines.append(rf"\newcommand{{\{key}}}{{{latex_text(value)}}}")
    return write_text(out_dir / NUMBERS, "\n".join(lines) + "\n")


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
        sources = stamp["sources"]
        for rel, digest in (sources if isinstance(sources, dict) else {}).items():
            src = run_root / rel
            if not src.exists():
                problems.append(f"{path.name}: source {rel} is missing")
            elif file_sha256(src) != digest:
                problems.append(f"{path.name}: source {rel} changed since the table was written")
    return problems


def write_manifest(out_dir: Path, entries: list[dict[str, object]]) -> Path:
    return write_json(out_dir / INDEX, entries)
