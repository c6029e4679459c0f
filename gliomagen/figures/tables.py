"""The paper's tables, each made from one run's outputs as ``(frame, caption)`` (notebook 07); written as
LaTeX and Markdown by :func:`gliomagen.figures.export.write_table`.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from gliomagen.config import Config
from gliomagen.fidelity.outputs import FidelityResults
from gliomagen.figures.diagrams import dataset_table
from gliomagen.figures.export import format_value

TableResult = tuple[pd.DataFrame, str]


def tab_run_data(cfg: Config) -> TableResult:
    from gliomagen.data import plots
    from gliomagen.data.outputs import read_cases_table

    frame = plots.overview(read_cases_table(cfg)).reset_index()
    return frame, f"Scans and patients per split and QC outcome in this run ({cfg.profile} profile)."


def tab_dataset(cfg: Config) -> TableResult:
    return dataset_table(), "The original study's cohort (BraTS 2024 GLI post-treatment), as reported."


def tab_augmentation(cfg: Config) -> TableResult:
    from gliomagen.augment.outputs import read_manifest
    from gliomagen.augment.stage import summarise

    summary = summarise(read_manifest(cfg), cfg).to_dict()
    rows = [{"quantity": k, "this run": v} for k, v in summary.items() if not isinstance(v, dict | list)]
    return pd.DataFrame(
        rows
    ), f"Mask augmentation outcome ({cfg.profile} profile; paper: 2470 tried, 2124 kept)."


def tab_samplers(cfg: Config) -> TableResult:
    from gliomagen.generation.outputs import GenerationOutputs, read_sampler_timing

    frame = read_sampler_timing(GenerationOutputs(cfg.paths))
    return frame, f"Seconds per generated volume for each sampler ({cfg.profile} profile, this machine)."


def _with_ci(row: Any, m: str) -> str:
    """``value [low, high]`` of one metric of a sweep row (the value alone without an interval; "–" without
    a value)."""
    value = format_value(row[m])
    low, high = row.get(f"{m}_low", math.nan), row.get(f"{m}_high", math.nan)
    if value == "–" or not (math.isfinite(low) and math.isfinite(high)):
        return value
    return f"{value} [{format_value(low)}, {format_value(high)}]"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def tab_sampler_sweep(cfg: Config) -> TableResult:
    """The sampler sweep (issue 18): speed and every metric per sampler and NFE, with intervals where possible."""
    from gliomagen.generation.outputs import GenerationOutputs, read_sweep, read_sweep_recommendation
    from gliomagen.generation.sweep import recommendation_text

    out = GenerationOutputs(cfg.paths)
    sweep, record = read_sweep(out), read_sweep_recommendation(out)
    reference = bool((sweep["sampler"] == "ddpm").any())
    rows = [
        {
            "sampler": r["sampler"],
            "NFE": int(r["nfe"]),
            "s / volume": r["seconds_per_volume"],
            "× DDPM speed": r["speedup_vs_ddpm"] if reference else "no reference",
            "MS-SSIM ↑": _with_ci(r, "ms_ssim"),
            "re-seg Dice ↑": _with_ci(r, "reseg_dice"),
            "radiomics FID ↓": _with_ci(r, "rad_fid"),
            "real-vs-real floor": _with_ci(r, "rad_fid_floor"),
            "FID / floor": _with_ci(r, "rad_fid_ratio"),
        }
        for _, r in sweep.iterrows()
    ]
    n = int(sweep["n_subjects"].max()) if len(sweep) else 0
    distance = str(sweep["distance"].iloc[0]) if len(sweep) else str(record.get("distance", "not recorded"))
    return pd.DataFrame(rows), (
        f"Sampler sweep ({cfg.profile} profile, this machine): {n} validation masks, fixed seeds; mean over "
        f"subjects [95% bootstrap CI over subjects]. {_sentence(recommendation_text(record['recommendation']))}. "
        f"Re-segmentation Dice (real-only nnU-Net): {record.get('resegmentation', 'not recorded')}. "
        f"Radiomics FID (mean over modalities; one half's real slices vs the other half's generated or real "
        f"ones): {distance}."
    )


def _fidelity_results(cfg: Config) -> FidelityResults:
    from gliomagen.fidelity.outputs import read_results

    return read_results(cfg.paths, cfg.profile)


def _flatten_columns(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    if isinstance(frame.columns, pd.MultiIndex):
        frame.columns = [": ".join(str(c) for c in col if str(c)) for col in frame.columns]
    return frame.reset_index()


def tab_fidelity(cfg: Config) -> TableResult:
    from gliomagen.fidelity import report

    results = _fidelity_results(cfg)
    extractor = results.primary_extractor()
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


def tab_fidelity_corrected(cfg: Config) -> TableResult:
    from gliomagen.fidelity import report

    results = _fidelity_results(cfg)
    return _flatten_columns(report.additional_table(results)), (
        f"Metrics the paper did not report, with 95% intervals from a bootstrap over subjects ({cfg.profile}), "
        f"each beside its real-vs-real floor and the ratio synthetic / real-vs-real."
    )


def segmentation_evaluation(cfg: Config) -> Any:
    """The segmentation stage's evaluation record (tables and frames for the segmentation artifacts)."""
    from gliomagen.segmentation.outputs import SegmentationOutputs, load_evaluation

    return load_evaluation(SegmentationOutputs(cfg.paths))


def tab_segmentation(cfg: Config) -> TableResult:
    from gliomagen.segmentation import plots

    table = plots.paper_side_by_side(cfg, segmentation_evaluation(cfg).paper).round(4).reset_index()
    return table, (
        f"Segmentation in the paper's layout (Fig. 13; HD95/ASSD in voxels as the original computed them): "
        f"this run ({cfg.profile}) above the paper's reported values."
    )


def tab_segmentation_corrected(cfg: Config) -> TableResult:
    from gliomagen.segmentation import plots

    wide = plots.corrected_table(segmentation_evaluation(cfg).corrected)
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


def tab_segmentation_stats(cfg: Config) -> TableResult:
    stats = segmentation_evaluation(cfg).stats
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
