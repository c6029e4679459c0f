"""The pipeline's stages: what each one writes, which stages it needs, and the contract every stage keeps.

Each stage package has an ``outputs`` module with a subclass of :class:`StageOutputs` (paths built from the
run folder) and the readers of those files; other stages and the notebooks go through it, never through a
literal file name. ``markers`` are the outputs that show the stage has run (what ``gliomagen <stage>`` checks
before it starts a stage that needs them); ``declared`` is every file the stage promises after a complete
run (what the end-to-end test checks after the smoke run).

:data:`PIPELINE` lists the stages in order with their outputs class and direct needs;
:func:`first_missing_stage` is what the CLI checks before it starts a stage.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gliomagen.paths import RunPaths

if TYPE_CHECKING:
    from gliomagen.config import Config


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


@dataclass(frozen=True)
class PipelineStage:
    """One stage of the pipeline as the CLI and the publisher see it.

    Args:
        name: the CLI verb.
        outputs: ``module:Class`` of the stage's :class:`StageOutputs` (imported on use).
        needs: the stages whose outputs it reads (direct needs only).
    """

    name: str
    outputs: str
    needs: tuple[str, ...] = ()

    def outputs_of(self, paths: RunPaths) -> StageOutputs:
        """The stage's outputs in the run folder ``paths``."""
        module_name, class_name = self.outputs.split(":")
        cls: type[StageOutputs] = getattr(importlib.import_module(module_name), class_name)
        return cls(paths)


#: the stages whose outputs a run is made of, in pipeline order
PIPELINE: dict[str, PipelineStage] = {
    stage.name: stage
    for stage in (
        PipelineStage("prepare", "gliomagen.data.outputs:PrepareOutputs"),
        PipelineStage("train", "gliomagen.diffusion.outputs:TrainingOutputs", ("prepare",)),
        PipelineStage("augment", "gliomagen.augment.outputs:AugmentationOutputs", ("prepare",)),
        PipelineStage("generate", "gliomagen.generation.outputs:GenerationOutputs", ("train", "augment")),
        PipelineStage("fidelity", "gliomagen.fidelity.outputs:FidelityOutputs", ("prepare", "generate")),
        PipelineStage(
            "segment", "gliomagen.segmentation.outputs:SegmentationOutputs", ("prepare", "generate")
        ),
    )
}
#: stages outside :data:`PIPELINE` that need some of its stages before they can start
NEEDS: dict[str, tuple[str, ...]] = {
    **{name: stage.needs for name, stage in PIPELINE.items()},
    "sweep-samplers": ("prepare", "train"),
    # the kit reads prepared/val and synthetic/val; the stage itself names a missing synthetic volume
    "reader-study": ("prepare",),
}


def exists(pattern: Path) -> bool:
    """Whether ``pattern`` names an existing file, or matches one when it holds glob characters (in any part)."""
    parts = pattern.parts
    first = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), None)
    if first is None:
        return pattern.is_file()
    anchor = Path(*parts[:first])
    return any(p.is_file() for p in anchor.glob(str(Path(*parts[first:]))))


def missing_outputs(cfg: Config, stage: str) -> list[str]:
    """The markers of ``stage`` that do not exist in the run folder (a glob pattern must match a file)."""
    return [str(p) for p in PIPELINE[stage].outputs_of(cfg.paths).markers() if not exists(p)]


def first_missing_stage(cfg: Config, stage: str, needs: tuple[str, ...] | None = None) -> str | None:
    """The earliest stage that ``stage`` needs and that has not run, or ``None`` when it can start.

    A need whose outputs exist is satisfied, however they were made (e.g. validation volumes generated from
    imported weights need no training in this run); a missing need is traced down its own needs, so the
    stage named is the first one to run.

    Args:
        cfg: run configuration (the run folder).
        stage: the CLI verb about to run.
        needs: its direct needs when they differ from :data:`NEEDS` (``generate --which val`` needs no
            augmented masks).
    """
    order = list(PIPELINE)
    for need in sorted(NEEDS.get(stage, ()) if needs is None else needs, key=order.index):
        if missing_outputs(cfg, need):
            return first_missing_stage(cfg, need) or need
    return None
