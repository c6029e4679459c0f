"""Every figure and table of the paper (docs/method.md, "Figures and tables"): the paper figure each
corresponds to, the notebook whose outputs it needs, the function that makes it and the run files it is made
from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from matplotlib.figure import Figure

from gliomagen.config import Config
from gliomagen.figures import makers, sources, tables
from gliomagen.figures.tables import TableResult


@dataclass(frozen=True)
class Artifact:
    """One figure or table of the paper.

    Args:
        name: file stem (``fig_*`` or ``tab_*``).
        kind: ``figure`` or ``table``.
        paper_ref: the original's figure it corresponds to (or what it adds).
        notebook: the notebook whose outputs it is made from.
        make: ``make(cfg)`` returns a matplotlib figure, or ``(frame, caption)`` for a table.
        sources: ``sources(cfg)`` lists the run files it is made from (recorded with their hashes).
    """

    name: str
    kind: Literal["figure", "table"]
    paper_ref: str
    notebook: str
    make: Callable[[Config], Figure | TableResult]
    sources: Callable[[Config], list[Path]]


ARTIFACTS: tuple[Artifact, ...] = (
    Artifact(
        "tab_dataset",
        "table",
        "Fig. 2 (institutions / cohort)",
        "repository data",
        tables.tab_dataset,
        sources.nothing,
    ),
    Artifact(
        "tab_run_data",
        "table",
        "new: this run's cases and QC",
        "01_data_preparation",
        tables.tab_run_data,
        sources.cases_table,
    ),
    Artifact(
        "fig_head_label",
        "figure",
        "Fig. 4 (head label before/after)",
        "01_data_preparation",
        makers.fig_head_label,
        sources.cases_table,
    ),
    Artifact(
        "fig_modalities",
        "figure",
        "new: prepared modalities + mask",
        "01_data_preparation",
        makers.fig_modalities,
        sources.cases_table,
    ),
    Artifact(
        "fig_unet", "figure", "U-Net diagram", "repository data (profile)", makers.fig_unet, sources.nothing
    ),
    Artifact(
        "fig_loss_curves",
        "figure",
        "training/validation loss curves",
        "02_training",
        makers.fig_loss_curves,
        sources.training_logs,
    ),
    Artifact(
        "fig_training_progress",
        "figure",
        "Fig. 9 (training progress)",
        "02_training",
        makers.fig_training_progress,
        sources.previews,
    ),
    Artifact(
        "fig_augmentation",
        "figure",
        "new: augmented masks",
        "03_mask_augmentation",
        makers.fig_augmentation,
        sources.augment_manifest,
    ),
    Artifact(
        "tab_augmentation",
        "table",
        "§3 (2470 tried, 2124 kept)",
        "03_mask_augmentation",
        tables.tab_augmentation,
        sources.augment_manifest,
    ),
    Artifact(
        "fig_diffusion_process",
        "figure",
        "Fig. 3 (forward/reverse process)",
        "04_generation",
        makers.fig_diffusion_process,
        sources.synthetic_manifest,
    ),
    Artifact(
        "fig_qualitative",
        "figure",
        "Figs. 10/12 (real vs synthetic)",
        "04_generation",
        makers.fig_qualitative,
        sources.synthetic_manifest,
    ),
    Artifact(
        "tab_samplers",
        "table",
        "new: sampler speed",
        "04_generation",
        tables.tab_samplers,
        sources.sampler_timing,
    ),
    Artifact(
        "fig_sampler_sweep",
        "figure",
        "new: quality and speed against NFE (issue 18)",
        "04_generation",
        makers.fig_sampler_sweep,
        sources.sampler_sweep,
    ),
    Artifact(
        "tab_sampler_sweep",
        "table",
        "new: sampler sweep with CIs (issue 18)",
        "04_generation",
        tables.tab_sampler_sweep,
        sources.sampler_sweep,
    ),
    Artifact(
        "tab_fidelity",
        "table",
        "Fig. 11 (fidelity table)",
        "05_fidelity",
        tables.tab_fidelity,
        sources.fidelity,
    ),
    Artifact(
        "tab_fidelity_corrected",
        "table",
        "new: 3D metrics, CIs, FRD",
        "05_fidelity",
        tables.tab_fidelity_corrected,
        sources.fidelity,
    ),
    Artifact(
        "fig_fidelity_per_subject",
        "figure",
        "new: per-subject fidelity",
        "05_fidelity",
        makers.fig_fidelity_per_subject,
        sources.fidelity,
    ),
    Artifact(
        "tab_segmentation",
        "table",
        "Fig. 13 (segmentation table)",
        "06_segmentation",
        tables.tab_segmentation,
        sources.segmentation,
    ),
    Artifact(
        "tab_segmentation_corrected",
        "table",
        "new: mm distances, lesion-wise",
        "06_segmentation",
        tables.tab_segmentation_corrected,
        sources.segmentation,
    ),
    Artifact(
        "tab_segmentation_stats",
        "table",
        "new: paired tests vs real-only",
        "06_segmentation",
        tables.tab_segmentation_stats,
        sources.segmentation,
    ),
    Artifact(
        "fig_boundary_metrics",
        "figure",
        "Fig. 14 (HD95/ASSD)",
        "06_segmentation",
        makers.fig_boundary,
        sources.segmentation,
    ),
    Artifact(
        "fig_predicted_masks",
        "figure",
        "Fig. 15 (predicted masks)",
        "06_segmentation",
        makers.fig_predictions,
        sources.segmentation,
    ),
    Artifact(
        "fig_confusion_matrices",
        "figure",
        "confusion matrices",
        "06_segmentation",
        makers.fig_confusion,
        sources.segmentation,
    ),
    Artifact(
        "fig_bland_altman",
        "figure",
        "Bland-Altman plots",
        "06_segmentation",
        makers.fig_bland_altman,
        sources.segmentation,
    ),
    Artifact(
        "fig_hq_scores",
        "figure",
        "new: HQ-subset score",
        "06_segmentation",
        makers.fig_hq_scores,
        sources.segmentation,
    ),
)
# fmt: on


def artifact_names(kind: str | None = None) -> list[str]:
    return [a.name for a in ARTIFACTS if kind is None or a.kind == kind]
