"""The contract every pipeline stage keeps: it declares the files it writes, and only it spells their names.

Each stage package has an ``outputs`` module with a subclass of :class:`StageOutputs` (paths built from the
run folder) and the readers of those files; other stages and the notebooks go through it, never through a
literal file name. ``markers`` are the outputs that show the stage has run (what ``gliomagen <stage>`` checks
before it starts a stage that needs them); ``declared`` is every file the stage promises after a complete
run (what the architecture test checks after the smoke run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gliomagen.paths import RunPaths


@dataclass(frozen=True)
class StageOutputs:
    """The files one stage writes into a run folder.

    Args:
        paths: the run's folders (``cfg.paths``).
    """

    paths: RunPaths

    def markers(self) -> list[Path]:
        """Outputs (glob patterns allowed) that show the stage has run."""
        raise NotImplementedError

    def declared(self) -> list[Path]:
        """Every file (glob patterns allowed) a complete run of the stage leaves; defaults to the markers."""
        return self.markers()
