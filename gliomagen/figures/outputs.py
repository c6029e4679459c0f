"""What the figures stage writes into a run folder (notebook 07, ``gliomagen figures``).

* ``<run>/figures/``: every figure as PNG and PDF (``cfg.figures.formats``) and ``index.json`` (one entry
  per artifact: status, files, message);
* ``<run>/paper_generated/``: every table as ``.tex`` and ``.md`` and ``numbers.tex`` (the manuscript's
  result macros).

The published copies (``figures/<profile>/``, ``paper/generated/<profile>/`` with ``PUBLISHED.json``) are
:mod:`gliomagen.figures.publish`'s. Only these two modules spell these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gliomagen.config import Config
from gliomagen.stages import StageOutputs

#: sub-folders of a run folder that hold its own figures and tables
RUN_FIGURES = "figures"
RUN_TABLES = "paper_generated"
INDEX = "index.json"
NUMBERS = "numbers.tex"
TABLE_FORMATS = ("tex", "md")


@dataclass(frozen=True)
class FiguresOutputs(StageOutputs):
    """The figures stage's files in a run folder (``FiguresOutputs(cfg.paths)``)."""

    @property
    def figures_dir(self) -> Path:
        return self.paths.root / RUN_FIGURES

    @property
    def tables_dir(self) -> Path:
        return self.paths.root / RUN_TABLES

    @property
    def index(self) -> Path:
        """The artifact manifest written by :func:`gliomagen.figures.regenerate.regenerate`."""
        return self.figures_dir / INDEX

    @property
    def numbers(self) -> Path:
        return self.tables_dir / NUMBERS

    def figure(self, name: str, fmt: str = "png") -> Path:
        return self.figures_dir / f"{name}.{fmt}"

    def table(self, name: str, fmt: str = "md") -> Path:
        return self.tables_dir / f"{name}.{fmt}"

    def markers(self) -> list[Path]:
        return [self.index, self.numbers]

    def declared(self) -> list[Path]:
        """The index, the macros and the artifacts (``fig_*`` as PNG and PDF, ``tab_*`` as LaTeX and Markdown);
        :func:`gliomagen.figures.publish.incomplete` checks every artifact by name against the index."""
        figures = [self.figures_dir / f"fig_*.{fmt}" for fmt in ("png", "pdf")]
        tables = [self.tables_dir / f"tab_*.{fmt}" for fmt in TABLE_FORMATS]
        return [*self.markers(), *figures, *tables]


def run_figures_dir(cfg: Config) -> Path:
    """Where this run's figures are written (``<run>/figures``)."""
    return FiguresOutputs(cfg.paths).figures_dir


def run_tables_dir(cfg: Config) -> Path:
    """Where this run's tables and ``numbers.tex`` are written (``<run>/paper_generated``)."""
    return FiguresOutputs(cfg.paths).tables_dir
