"""Every figure and table of the paper (docs/method.md, "Figures and tables"), regenerated from one run's
outputs (notebook 07, ``gliomagen figures``).

:data:`~gliomagen.figures.artifacts.ARTIFACTS` lists them with the paper figure they correspond to, the
notebook whose outputs they need, a function that makes them (:mod:`~gliomagen.figures.makers`,
:mod:`~gliomagen.figures.tables`) and the run files they are made from (:mod:`~gliomagen.figures.sources`).
:func:`~gliomagen.figures.regenerate.regenerate` writes them into the run folder itself
(:mod:`~gliomagen.figures.outputs`): figures as PNG + PDF, tables as LaTeX + Markdown, plus ``numbers.tex``
(key numbers as macros, :mod:`~gliomagen.figures.numbers`) and an ``index.json`` manifest. Each table records
the SHA-256 of its sources, so :func:`gliomagen.figures.export.stale_outputs` can tell a stale table; every
file names its run in a footer and in its metadata. :func:`gliomagen.figures.publish.publish` copies one
complete run to ``figures/<profile>/`` and ``paper/generated/<profile>/``. Shared helpers other stages use:
:mod:`~gliomagen.figures.palette`, :mod:`~gliomagen.figures.slices`, :func:`~gliomagen.figures.export.save_figure`.
"""

from __future__ import annotations

from typing import Any

#: names served from submodules on first use, so that importing a shared helper (palette, slices, export)
#: does not import every stage's plotting code
_LAZY = {
    "ARTIFACTS": "gliomagen.figures.artifacts",
    "Artifact": "gliomagen.figures.artifacts",
    "artifact_names": "gliomagen.figures.artifacts",
    "FiguresResult": "gliomagen.figures.regenerate",
    "raise_on_failures": "gliomagen.figures.regenerate",
    "regenerate": "gliomagen.figures.regenerate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
