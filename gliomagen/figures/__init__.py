"""Every figure and table of the paper (docs/method.md, "Figures and tables"), regenerated from one run's
outputs (notebook 07).

:data:`ARTIFACTS` lists them with the paper figure they correspond to, the notebook whose outputs they need,
a function that makes them and the run files they are made from. :func:`regenerate` writes them into the run
folder itself: figures to ``<run>/figures/`` (PNG + PDF) and tables to ``<run>/paper_generated/`` (LaTeX +
Markdown), plus ``numbers.tex`` (key numbers as macros for the manuscript) and an ``index.json`` manifest.
Each table records the SHA-256 of its sources, so :func:`gliomagen.figures.export.stale_outputs` can tell a
stale table; every file names its run in a footer and in its metadata. :func:`gliomagen.figures.publish.publish`
copies one complete run to ``figures/<profile>/`` and ``paper/generated/<profile>/``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from matplotlib.figure import Figure

from gliomagen.config import Config
from gliomagen.figures import export
from gliomagen.figures.diagrams import dataset_table, unet_diagram

log = logging.getLogger(__name__)

TableResult = tuple[pd.DataFrame, str]


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


# ----------------------------------------------------------------------------------------- sources
def _cases_csv(cfg: Config) -> list[Path]:
    return [cfg.paths.cases_csv]


def _training_logs(cfg: Config) -> list[Path]:
    return sorted(p for p in cfg.paths.training.glob("*.csv"))


def _previews(cfg: Config) -> list[Path]:
    return sorted(cfg.paths.training.rglob("*.png"))


def _augment_manifest(cfg: Config) -> list[Path]:
    return [cfg.paths.augmented / "manifest.csv"]


def _synthetic_manifest(cfg: Config) -> list[Path]:
    return [cfg.paths.synthetic / "manifest.csv"]


def _sampler_timing(cfg: Config) -> list[Path]:
    return [cfg.paths.metrics / "sampler_timing.csv"]


def _fidelity(cfg: Config) -> list[Path]:
    return [cfg.paths.metrics / "fidelity.json"]


def _segmentation(cfg: Config) -> list[Path]:
    return sorted(cfg.paths.metrics.glob("segmentation*.csv")) + sorted(
        cfg.paths.metrics.glob("segmentation*.json")
    )


def _nothing(cfg: Config) -> list[Path]:
    return []


# ----------------------------------------------------------------------------------------- makers
def _fig_head_label(cfg: Config) -> Figure:
    from gliomagen.data import plots
    from gliomagen.data.prepare import read_cases_table

    table = read_cases_table(cfg)
    first = table[table["split"] == "train"]["source"].iloc[0]
    return plots.plot_head_label(cfg, first)


def _fig_modalities(cfg: Config) -> Figure:
    from gliomagen.data import plots
    from gliomagen.data.prepare import usable_cases

    return plots.plot_cases(cfg, usable_cases(cfg, "train")[:2] + usable_cases(cfg, "val")[:1])


def _tab_run_data(cfg: Config) -> TableResult:
    from gliomagen.data import plots
    from gliomagen.data.prepare import read_cases_table

    frame = plots.overview(read_cases_table(cfg)).reset_index()
    return frame, f"Scans and patients per split and QC outcome in this run ({cfg.profile} profile)."


def _tab_dataset(cfg: Config) -> TableResult:
    return dataset_table(), "The original study's cohort (BraTS 2024 GLI post-treatment), as reported."


def _fig_unet(cfg: Config) -> Figure:
    from gliomagen.diffusion.network import n_mask_channels

    return unet_diagram(cfg, n_mask_channels(cfg))


def _fig_loss_curves(cfg: Config) -> Figure:
    from gliomagen.diffusion import plots

    return plots.loss_curves(cfg)


def _fig_training_progress(cfg: Config) -> Figure:
    from gliomagen.diffusion import plots

    return plots.preview_grid(cfg)


def _with_legend(fig: Figure, cfg: Config) -> Figure:
    """The label legend under a mask figure drawn by a stage module (colours: gliomagen.figures.palette)."""
    from gliomagen.figures.palette import add_label_legend

    add_label_legend(fig, cfg)
    return fig


def _fig_augmentation(cfg: Config) -> Figure:
    from gliomagen.augment.plots import plot_augmentation_examples

    return _with_legend(plot_augmentation_examples(cfg), cfg)


def _tab_augmentation(cfg: Config) -> TableResult:
    from gliomagen.augment import read_manifest
    from gliomagen.augment.stage import summarise

    summary = summarise(read_manifest(cfg), cfg).to_dict()
    rows = [{"quantity": k, "this run": v} for k, v in summary.items() if not isinstance(v, dict | list)]
    return pd.DataFrame(
        rows
    ), f"Mask augmentation outcome ({cfg.profile} profile; paper: 2470 tried, 2124 kept)."


def _fig_diffusion_process(cfg: Config) -> Figure:
    from gliomagen.generate import plot_diffusion_process

    return plot_diffusion_process(cfg)


def _fig_qualitative(cfg: Config) -> Figure:
    from gliomagen.generate import plot_real_vs_synthetic

    return _with_legend(plot_real_vs_synthetic(cfg), cfg)


def _tab_samplers(cfg: Config) -> TableResult:
    frame = pd.read_csv(cfg.paths.metrics / "sampler_timing.csv")
    return frame, f"Seconds per generated volume for each sampler ({cfg.profile} profile, this machine)."


def _fidelity_results(cfg: Config) -> dict:
    from gliomagen.fidelity.evaluate import load_results

    return load_results(cfg)


def _flatten_columns(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    if isinstance(frame.columns, pd.MultiIndex):
        frame.columns = [": ".join(str(c) for c in col if str(c)) for col in frame.columns]
    return frame.reset_index()


def _primary_extractor(results: dict) -> str:
    available = [n for n, s in results.get("extractors", {}).items() if s.get("status") == "ok"]
    return available[0] if available else next(iter(results.get("extractors", {})), "")


def _tab_fidelity(cfg: Config) -> TableResult:
    from gliomagen.fidelity import report

    results = _fidelity_results(cfg)
    extractor = _primary_extractor(results)
    wide = report.fidelity_table(results, extractor)
    sources = list(dict.fromkeys(wide.columns.get_level_values(0)))
    # one row per (modality, source) keeps the paper's three metric columns readable on a page
    table = wide.stack(level=0, future_stack=True).reset_index()
    table.columns = ["modality", "source", *table.columns[2:]]
    table["source"] = pd.Categorical(table["source"], sources, ordered=True)
    modalities = list(dict.fromkeys(table["modality"]))
    table["modality"] = pd.Categorical(table["modality"], modalities, ordered=True)
    table = table.sort_values(["modality", "source"]).astype({"modality": str, "source": str})
    return table, (
        f"Fidelity in the paper's layout (Fig. 11): paper (reported) beside this run ({cfg.profile} profile, "
        f"FID/KID features: {extractor}), with the real-vs-real floor of each corrected metric and the ratio "
        f"synthetic / real-vs-real."
    )


def _tab_fidelity_corrected(cfg: Config) -> TableResult:
    from gliomagen.fidelity import report

    results = _fidelity_results(cfg)
    return _flatten_columns(report.additional_table(results)), (
        f"Metrics the paper did not report, with 95% intervals from a bootstrap over subjects ({cfg.profile}), "
        f"each beside its real-vs-real floor and the ratio synthetic / real-vs-real."
    )


def _fig_fidelity_per_subject(cfg: Config) -> Figure:
    from gliomagen.fidelity import report

    per_subject = pd.read_csv(cfg.paths.metrics / "fidelity_per_subject.csv")
    return report.plot_per_subject(per_subject, title=f"per-subject fidelity ({cfg.profile})")


def _evaluation(cfg: Config):  # noqa: ANN202 -- the segmentation stage's evaluation record
    from gliomagen.segmentation.pipeline import load_evaluation

    return load_evaluation(cfg)


def _tab_segmentation(cfg: Config) -> TableResult:
    from gliomagen.segmentation import plots

    table = plots.paper_side_by_side(cfg, _evaluation(cfg).paper).round(4).reset_index()
    return table, (
        f"Segmentation in the paper's layout (Fig. 13; HD95/ASSD in voxels as the original computed them): "
        f"this run ({cfg.profile}) above the paper's reported values."
    )


def _tab_segmentation_corrected(cfg: Config) -> TableResult:
    from gliomagen.segmentation import plots

    wide = plots.corrected_table(_evaluation(cfg).corrected)
    if wide.empty:
        table = pd.DataFrame(columns=["configuration", "metric"])
    else:
        # one row per (data mix, metric) and one column per region: 8 columns instead of 25 side by side
        metrics = list(dict.fromkeys(wide.columns.get_level_values(0)))
        table = wide.stack(level=0, future_stack=True).reset_index()
        table.columns = ["configuration", "metric", *table.columns[2:]]
        table["metric"] = pd.Categorical(table["metric"], metrics, ordered=True)
        order = {c: i for i, c in enumerate(dict.fromkeys(table["configuration"]))}
        table = table.sort_values(
            ["configuration", "metric"],
            key=lambda col: col.map(order) if col.name == "configuration" else col,
        )
        table["metric"] = table["metric"].astype(str).map(lambda m: CORRECTED_METRIC_NAMES.get(m, m))
    return (
        table,
        f"Corrected segmentation metrics per data mix and BraTS region: Dice, HD95 in mm, BraTS 2024 "
        f"lesion-wise Dice and F1 ({cfg.profile}).",
    )


#: row names of the corrected segmentation table
CORRECTED_METRIC_NAMES = {
    "dice": "Dice",
    "hd95_mm": "HD95 (mm)",
    "lesion_dice_penalised": "lesion-wise Dice",
    "lesion_f1": "lesion-wise F1",
}


def _tab_segmentation_stats(cfg: Config) -> TableResult:
    stats = _evaluation(cfg).stats
    keep = [
        c
        for c in ("configuration", "region", "metric", "mean_diff", "ci_low", "ci_high", "p_wilcoxon")
        if c in stats
    ]
    frame = stats[keep] if not stats.empty else pd.DataFrame(columns=keep)
    if "metric" in frame:
        frame = frame[frame["metric"].isin(["dice", "hd95_mm"])]
    return frame.round(
        4
    ), f"Each data mix minus real-only: mean paired difference, 95% bootstrap CI, Wilcoxon p ({cfg.profile})."


def _fig_boundary(cfg: Config) -> Figure:
    from gliomagen.segmentation import plots

    ev = _evaluation(cfg)
    return plots.plot_distances(ev.paper, ev.corrected_per_case, ev.paper_per_case)


def _fig_confusion(cfg: Config) -> Figure:
    from gliomagen.segmentation import plots

    classes = ["background", *[lab.name for lab in cfg.tumour_labels]]
    return plots.plot_confusions(_evaluation(cfg).confusion, classes)


def _fig_bland_altman(cfg: Config) -> Figure:
    from gliomagen.segmentation import plots

    return plots.plot_bland_altman(_evaluation(cfg).volumes)


def _fig_predictions(cfg: Config) -> Figure:
    from gliomagen.segmentation import plots

    return plots.plot_predictions(cfg)


def _fig_hq_scores(cfg: Config) -> Figure:
    from gliomagen.segmentation import plots

    return plots.plot_hq_scores(pd.read_csv(cfg.paths.metrics / "segmentation_hq_scores.csv"))


# fmt: off -- one line per artifact reads as a table
ARTIFACTS: tuple[Artifact, ...] = (
    Artifact(
        "tab_dataset", "table", "Fig. 2 (institutions / cohort)", "repository data", _tab_dataset, _nothing
    ),
    Artifact(
        "tab_run_data",
        "table",
        "new: this run's cases and QC",
        "01_data_preparation",
        _tab_run_data,
        _cases_csv,
    ),
    Artifact(
        "fig_head_label",
        "figure",
        "Fig. 4 (head label before/after)",
        "01_data_preparation",
        _fig_head_label,
        _cases_csv,
    ),
    Artifact(
        "fig_modalities",
        "figure",
        "new: prepared modalities + mask",
        "01_data_preparation",
        _fig_modalities,
        _cases_csv,
    ),
    Artifact("fig_unet", "figure", "U-Net diagram", "repository data (profile)", _fig_unet, _nothing),
    Artifact(
        "fig_loss_curves",
        "figure",
        "training/validation loss curves",
        "02_training",
        _fig_loss_curves,
        _training_logs,
    ),
    Artifact(
        "fig_training_progress",
        "figure",
        "Fig. 9 (training progress)",
        "02_training",
        _fig_training_progress,
        _previews,
    ),
    Artifact(
        "fig_augmentation",
        "figure",
        "new: augmented masks",
        "03_mask_augmentation",
        _fig_augmentation,
        _augment_manifest,
    ),
    Artifact(
        "tab_augmentation",
        "table",
        "§3 (2470 tried, 2124 kept)",
        "03_mask_augmentation",
        _tab_augmentation,
        _augment_manifest,
    ),
    Artifact(
        "fig_diffusion_process",
        "figure",
        "Fig. 3 (forward/reverse process)",
        "04_generation",
        _fig_diffusion_process,
        _synthetic_manifest,
    ),
    Artifact(
        "fig_qualitative",
        "figure",
        "Figs. 10/12 (real vs synthetic)",
        "04_generation",
        _fig_qualitative,
        _synthetic_manifest,
    ),
    Artifact("tab_samplers", "table", "new: sampler speed", "04_generation", _tab_samplers, _sampler_timing),
    Artifact("tab_fidelity", "table", "Fig. 11 (fidelity table)", "05_fidelity", _tab_fidelity, _fidelity),
    Artifact(
        "tab_fidelity_corrected",
        "table",
        "new: 3D metrics, CIs, FRD",
        "05_fidelity",
        _tab_fidelity_corrected,
        _fidelity,
    ),
    Artifact(
        "fig_fidelity_per_subject",
        "figure",
        "new: per-subject fidelity",
        "05_fidelity",
        _fig_fidelity_per_subject,
        _fidelity,
    ),
    Artifact(
        "tab_segmentation",
        "table",
        "Fig. 13 (segmentation table)",
        "06_segmentation",
        _tab_segmentation,
        _segmentation,
    ),
    Artifact(
        "tab_segmentation_corrected",
        "table",
        "new: mm distances, lesion-wise",
        "06_segmentation",
        _tab_segmentation_corrected,
        _segmentation,
    ),
    Artifact(
        "tab_segmentation_stats",
        "table",
        "new: paired tests vs real-only",
        "06_segmentation",
        _tab_segmentation_stats,
        _segmentation,
    ),
    Artifact(
        "fig_boundary_metrics",
        "figure",
        "Fig. 14 (HD95/ASSD)",
        "06_segmentation",
        _fig_boundary,
        _segmentation,
    ),
    Artifact(
        "fig_predicted_masks",
        "figure",
        "Fig. 15 (predicted masks)",
        "06_segmentation",
        _fig_predictions,
        _segmentation,
    ),
    Artifact(
        "fig_confusion_matrices",
        "figure",
        "confusion matrices",
        "06_segmentation",
        _fig_confusion,
        _segmentation,
    ),
    Artifact(
        "fig_bland_altman",
        "figure",
        "Bland-Altman plots",
        "06_segmentation",
        _fig_bland_altman,
        _segmentation,
    ),
    Artifact(
        "fig_hq_scores", "figure", "new: HQ-subset score", "06_segmentation", _fig_hq_scores, _segmentation
    ),
)
# fmt: on


def artifact_names(kind: str | None = None) -> list[str]:
    return [a.name for a in ARTIFACTS if kind is None or a.kind == kind]


def regenerate(cfg: Config, names: list[str] | None = None) -> pd.DataFrame:
    """Make every artifact (or those named); return one row per artifact with its status and files.

    A failing artifact is recorded with its error and the others carry on; call
    :func:`raise_on_failures` to turn failures into an error.
    """
    from gliomagen.figures.numbers import write_numbers
    from gliomagen.figures.publish import footer_text, provenance, run_figures_dir, run_tables_dir

    fig_dir, tab_dir = run_figures_dir(cfg), run_tables_dir(cfg)
    footer, run = footer_text(cfg), provenance(cfg)
    rows = []
    for art in ARTIFACTS:
        if names is not None and art.name not in names:
            continue
        row = {"name": art.name, "kind": art.kind, "paper": art.paper_ref, "notebook": art.notebook}
        try:
            made = art.make(cfg)
            if art.kind == "figure":
                files = export.save_figure(
                    made,  # type: ignore[arg-type]
                    fig_dir,
                    art.name,
                    cfg.figures.formats,
                    cfg.figures.dpi,
                    footer=footer,
                    provenance=run,
                )
            else:
                frame, caption = made  # type: ignore[misc]
                stamp = export.source_stamp(art.sources(cfg), cfg.paths.root)
                files = export.write_table(frame, tab_dir, art.name, caption, stamp, cfg.hash, footer, run)
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
    entries = manifest.to_dict(orient="records")
    index = fig_dir / "index.json"
    if names is not None and index.is_file():  # a partial remake keeps the other artifacts' entries
        from gliomagen.io import read_json

        made = {e["name"] for e in entries}
        entries = [e for e in read_json(index) if e["name"] not in made] + entries
    export.write_manifest(fig_dir, entries)
    return manifest


def raise_on_failures(manifest: pd.DataFrame) -> None:
    failed = manifest[manifest["status"] != "ok"]
    if not failed.empty:
        lines = "\n".join(f"  - {r.name}: {r.message}" for r in failed.itertuples())
        raise RuntimeError(f"{len(failed)} figure(s)/table(s) could not be made:\n{lines}")


def run_cli(cfg: Config, args: argparse.Namespace) -> None:
    """``gliomagen figures [--no-publish]``: make every figure and table of the run, then publish the run.

    Raises:
        PublishRefused: the run is incomplete (the CLI prints one line and exits 2); its own copies stay in
            the run folder and nothing published changes.
    """
    from gliomagen.figures.publish import publish, run_figures_dir, run_tables_dir

    manifest = regenerate(cfg)
    print(manifest[["name", "kind", "paper", "status"]].to_string(index=False))
    print(f"\nthis run's figures: {run_figures_dir(cfg)}\nthis run's tables:  {run_tables_dir(cfg)}")
    if getattr(args, "no_publish", False):
        print("not published (--no-publish)")
        return
    record = publish(cfg)
    print(
        f"published run {record['run_dir']} (config {record['config_hash']}) to\n"
        f"  {cfg.figures_dir}\n  {cfg.tables_dir}"
    )
