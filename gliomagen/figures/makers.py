"""The paper's figures, each made from one run's outputs by the plotting code of the stage that wrote them
(notebook 07); :data:`gliomagen.figures.artifacts.ARTIFACTS` lists them.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from gliomagen.config import Config
from gliomagen.figures.diagrams import unet_diagram
from gliomagen.figures.palette import add_label_legend
from gliomagen.figures.tables import segmentation_evaluation


def fig_head_label(cfg: Config) -> Figure:
    from gliomagen.data import plots
    from gliomagen.data.outputs import read_cases_table

    table = read_cases_table(cfg)
    first = table[table["split"] == "train"]["source"].iloc[0]
    return plots.plot_head_label(cfg, first)


def fig_modalities(cfg: Config) -> Figure:
    from gliomagen.data import plots
    from gliomagen.data.outputs import usable_cases

    return plots.plot_cases(cfg, usable_cases(cfg, "train")[:2] + usable_cases(cfg, "val")[:1])


def fig_unet(cfg: Config) -> Figure:
    from gliomagen.diffusion.network import n_mask_channels

    return unet_diagram(cfg, n_mask_channels(cfg))


def fig_loss_curves(cfg: Config) -> Figure:
    from gliomagen.diffusion import plots

    return plots.loss_curves(cfg)


def fig_training_progress(cfg: Config) -> Figure:
    from gliomagen.diffusion import plots

    return plots.preview_grid(cfg)


def _with_legend(fig: Figure, cfg: Config) -> Figure:
    """The label legend under a mask figure drawn by a stage module (colours: gliomagen.figures.palette)."""

    add_label_legend(fig, cfg)
    return fig


def fig_augmentation(cfg: Config) -> Figure:
    from gliomagen.augment.plots import plot_augmentation_examples

    return _with_legend(plot_augmentation_examples(cfg), cfg)


def fig_diffusion_process(cfg: Config) -> Figure:
    from gliomagen.generation.plots import plot_diffusion_process

    return plot_diffusion_process(cfg)


def fig_qualitative(cfg: Config) -> Figure:
    from gliomagen.generation.plots import plot_real_vs_synthetic

    return _with_legend(plot_real_vs_synthetic(cfg), cfg)


def fig_sampler_sweep(cfg: Config) -> Figure:
    from gliomagen.generation.outputs import GenerationOutputs, read_sweep, read_sweep_recommendation
    from gliomagen.generation.plots import plot_sweep
    from gliomagen.generation.sweep import recommendation_text

    out = GenerationOutputs(cfg.paths)
    record = read_sweep_recommendation(out)
    return plot_sweep(read_sweep(out), recommendation_text(record["recommendation"]))


def fig_fidelity_per_subject(cfg: Config) -> Figure:
    from gliomagen.fidelity.outputs import read_per_subject
    from gliomagen.fidelity.plots import plot_per_subject

    per_subject = read_per_subject(cfg.paths, cfg.profile)
    return plot_per_subject(per_subject, title=f"per-subject fidelity ({cfg.profile})")


def fig_boundary(cfg: Config) -> Figure:
    from gliomagen.segmentation import plots

    ev = segmentation_evaluation(cfg)
    return plots.plot_distances(ev.paper, ev.corrected_per_case, ev.paper_per_case)


def fig_confusion(cfg: Config) -> Figure:
    from gliomagen.segmentation import plots

    classes = ["background", *[lab.name for lab in cfg.tumour_labels]]
    return plots.plot_confusions(segmentation_evaluation(cfg).confusion, classes)


def fig_bland_altman(cfg: Config) -> Figure:
    from gliomagen.segmentation import plots

    return plots.plot_bland_altman(segmentation_evaluation(cfg).volumes)


def fig_predictions(cfg: Config) -> Figure:
    from gliomagen.segmentation import plots

    return plots.plot_predictions(cfg)


def fig_hq_scores(cfg: Config) -> Figure:
    from gliomagen.segmentation import plots
    from gliomagen.segmentation.outputs import SegmentationOutputs, read_hq_scores

    return plots.plot_hq_scores(read_hq_scores(SegmentationOutputs(cfg.paths)))
