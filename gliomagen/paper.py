"""Build the manuscript in ``paper/`` for a profile (``gliomagen paper``, ``make paper``).

The manuscript ``paper/main.tex`` includes tables and number macros from ``paper/generated/<profile>/`` and
figures from ``figures/<profile>/``: the published copy of one run, written by ``gliomagen figures``
(notebook 07) with :func:`gliomagen.figures.publish.publish`. Building always checks, before LaTeX runs:

- every included file exists and every macro used is defined;
- every included file comes from the same run (the profile, config hash and run folder recorded inside each
  table, PNG and PDF) and is the file that was published (its SHA-256 against ``PUBLISHED.json``);
- where that run's folder is still on disk, no table's source files changed since the table was written.

The PDF is produced only where a LaTeX toolchain (``latexmk`` or ``pdflatex``) is installed -- otherwise the
command says so and exits 0 after the check.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gliomagen.config import Config
from gliomagen.figures.outputs import NUMBERS
from gliomagen.paths import PAPER_DIR

INPUT = re.compile(r"\\input\{([^}]+)\}")
GRAPHIC = re.compile(r"\\includegraphics(?:\[[^\]]*\])?\{([^}]+)\}")
MACRO_USE = re.compile(r"\\(R[A-Z][A-Za-z]+)")  # generated macros all start with R (for "result")
MACRO_DEF = re.compile(r"\\newcommand\{\\([A-Za-z]+)\}")


def check_manuscript(tex: Path, profile: str, tables_dir: Path, figures_dir: Path) -> list[str]:
    """Problems that would stop the PDF build: missing included files, undefined result macros, and
    includes that do not all come from one published run (see the module docstring)."""
    text = tex.read_text()
    problems: list[str] = []
    includes: list[Path] = []
    for raw in INPUT.findall(text):
        if "\\gendir" in raw:
            target = tables_dir / (raw.split("/", 1)[1] if "/" in raw else raw)
            target = target if target.suffix else target.with_suffix(".tex")
            if not target.exists():
                problems.append(f"missing table/macros file {target}")
            else:
                includes.append(target)
    for raw in GRAPHIC.findall(text):
        if "\\figdir" in raw:
            name = raw.split("/", 1)[1]
            candidates = (
                [figures_dir / name]
                if Path(name).suffix
                else [figures_dir / f"{name}.pdf", figures_dir / f"{name}.png"]
            )
            present = [c for c in candidates if c.exists()]
            if not present:
                problems.append(f"missing figure {candidates[0]}")
            includes += present
    numbers = tables_dir / NUMBERS
    defined = set(MACRO_DEF.findall(numbers.read_text())) if numbers.exists() else set()
    for macro in sorted(set(MACRO_USE.findall(text)) - defined):
        problems.append(f"macro \\{macro} is used in {tex.name} but not defined in {numbers}")
    return problems + provenance_problems(list(dict.fromkeys(includes)), tables_dir, figures_dir)


def provenance_problems(includes: list[Path], tables_dir: Path, figures_dir: Path) -> list[str]:
    """Why the included files are not one published run (empty when they are).

    Args:
        includes: the generated files the manuscript includes.
        tables_dir: the published tables folder (``paper/generated/<profile>``).
        figures_dir: the published figures folder (``figures/<profile>``).
    """
    from gliomagen.figures.export import stale_outputs
    from gliomagen.figures.publish import include_provenance, published_record, run_key
    from gliomagen.io import file_sha256

    problems: list[str] = []
    runs: dict[tuple[str, str], list[str]] = {}
    for path in includes:
        record = include_provenance(path)
        if not record or not record.get("config_hash") or not record.get("run_dir"):
            problems.append(f"{path} records no run (not written by `gliomagen figures`)")
            continue
        runs.setdefault(run_key(record), []).append(path.name)
    if len(runs) > 1:
        described = "; ".join(
            f"config {h}, run {d}: {', '.join(sorted(names)[:4])}{' ...' if len(names) > 4 else ''}"
            for (h, d), names in sorted(runs.items())
        )
        problems.append(f"the includes come from {len(runs)} different runs ({described})")
    published: dict[Path, dict[str, object]] = {}
    for folder in (tables_dir, figures_dir):
        record = published_record(folder)
        if record is None:
            problems.append(f"{folder} has no PUBLISHED.json: publish one run with `gliomagen figures`")
        else:
            published[folder] = record
    keys = {run_key(r) for r in published.values()}
    if len(keys) > 1:
        problems.append(f"{tables_dir} and {figures_dir} were published from different runs")
    for path in includes:
        record = published.get(path.parent)
        if record is None:
            continue
        files = record.get("files")
        digest = files.get(path.name) if isinstance(files, dict) else None
        if digest is None:
            problems.append(f"{path} was not part of the published run")
        elif digest != file_sha256(path):
            problems.append(f"{path} changed after the run was published")
    if len(runs) == 1:
        _, run_dir = next(iter(runs))
        root = Path(run_dir)
        if root.is_dir():  # the run folder may be gone (a published copy travels without its run)
            problems += [f"{tables_dir}: {p}" for p in stale_outputs(tables_dir, root)]
    return problems


@dataclass(frozen=True)
class PaperResult:
    """What :func:`build_paper` found and made.

    Args:
        problems: why the manuscript cannot be built (empty when every include resolves to one run).
        run: the published run's record (``PUBLISHED.json``), empty when there is none.
        pdf: the PDF written, ``None`` when there were problems or no LaTeX toolchain.
        latex: the LaTeX program used, ``None`` when none is installed.
        latex_log: the end of LaTeX's output when it failed (empty otherwise).
    """

    problems: tuple[str, ...]
    run: dict[str, object]
    pdf: Path | None = None
    latex: str | None = None
    latex_log: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems and not self.latex_log


def build_paper(cfg: Config) -> PaperResult:
    """Check the manuscript's includes for ``cfg``'s profile and, where LaTeX exists, build the PDF."""
    from gliomagen.figures.publish import published_record

    tex = PAPER_DIR / "main.tex"
    problems = tuple(check_manuscript(tex, cfg.profile, cfg.tables_dir, cfg.figures_dir))
    record = published_record(cfg.tables_dir) or {}
    latex = shutil.which("latexmk") or shutil.which("pdflatex")
    if problems or latex is None:
        return PaperResult(problems, record, latex=latex)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "paper"
        shutil.copytree(PAPER_DIR, work, ignore=shutil.ignore_patterns("*.pdf"))
        (work / "profile.tex").write_text(
            f"\\newcommand{{\\gendir}}{{{cfg.tables_dir}}}\n\\newcommand{{\\figdir}}{{{cfg.figures_dir}}}\n"
        )
        cmd = (
            [latex, "-pdf", "-interaction=nonstopmode", "-halt-on-error", "main.tex"]
            if latex.endswith("latexmk")
            else [latex, "-interaction=nonstopmode", "-halt-on-error", "main.tex"]
        )
        for _ in range(1 if latex.endswith("latexmk") else 2):
            run = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
            if run.returncode != 0:
                return PaperResult(problems, record, latex=latex, latex_log=run.stdout[-3000:] or "failed")
        out = PAPER_DIR / f"gliomagen-{cfg.profile}.pdf"
        shutil.copy(work / "main.pdf", out)
    return PaperResult(problems, record, pdf=out, latex=latex)


def report(result: PaperResult, profile: str) -> int:
    """Print what :func:`build_paper` found (problems to stderr); the exit code (0 ok, 1 not built)."""
    if result.problems:
        print(
            "paper: cannot build; publish one complete run first (make reproduce, or gliomagen figures on a "
            "finished run) -- problems:",
            file=sys.stderr,
        )
        for p in result.problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(
        f"paper: every included table, figure and macro exists for profile {profile!r} and comes from one "
        f"published run ({result.run.get('run_dir')}, config {result.run.get('config_hash')})"
    )
    if result.latex is None:
        print(
            "paper: no LaTeX toolchain here (latexmk/pdflatex not found), so no PDF was built. Install one "
            "(Debian: apt-get install texlive-latex-recommended texlive-latex-extra; the Docker image has it) "
            "and run `make paper` again."
        )
        return 0
    if result.latex_log:
        print(result.latex_log, file=sys.stderr)
        print(f"paper: {Path(result.latex).name} failed (log above)", file=sys.stderr)
        return 1
    print(f"paper: wrote {result.pdf}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``gliomagen paper`` takes only the common options (``--profile``, ``--set``)."""


def run_cli(cfg: Config, args: argparse.Namespace) -> PaperResult:
    """Entry point of ``gliomagen paper``: check, then build where LaTeX exists.

    Raises:
        SystemExit: with code 1 when the manuscript cannot be built (the problems are printed).
    """
    result = build_paper(cfg)
    code = report(result, cfg.profile)
    if code:
        raise SystemExit(code)
    return result
