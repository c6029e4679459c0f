"""Tables of the fidelity evaluation for notebook 05 (and notebook 07); the figures are in
:mod:`gliomagen.fidelity.plots`.

Every table names the profile and the extractor of each number and keeps the paper's reported values in
their own, labelled columns (``gliomagen.reference.PAPER_FIDELITY``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from gliomagen.config import MODALITIES
from gliomagen.fidelity.outputs import FidelityResults, as_results

# Transitional (issue 14): gliomagen/figures still imports the figure from here; it moves to
# gliomagen.fidelity.plots, after which this import goes.
from gliomagen.fidelity.plots import plot_per_subject  # noqa: F401
from gliomagen.reference import PAPER_FIDELITY

ROWS: tuple[str, ...] = (*MODALITIES, "mean")
#: table column -> (metric name in fidelity.json, key in PAPER_FIDELITY, digits)
COLUMNS: dict[str, tuple[str, str, int]] = {
    "MS-SSIM ↑": ("MS-SSIM 2D", "ms_ssim", 4),
    "FID ↓": ("FID", "fid", 4),
    "KID ↓": ("KID", "kid", 4),
}


def _fmt(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    magnitude = abs(float(value))
    if magnitude != 0 and (magnitude >= 1e5 or magnitude < 10 ** -(digits - 1)):
        return f"{float(value):.{digits - 1}e}"
    return f"{float(value):.{digits}f}"


def _cell(row: pd.Series | None, digits: int, style: str, key: str = "value") -> str:
    """One table cell of ``row``'s ``key`` (``value`` or ``ratio``) in ``style``: ``value`` (number only),
    ``pm`` (number ± spread) or ``ci`` (number [interval])."""
    if row is None:
        return "–"
    if row["status"] != "ok":
        return str(row["status"])
    value = row.get(key)
    if style == "value":
        return _fmt(value, digits)
    low_key, high_key = ("ci_low", "ci_high") if key == "value" else (f"{key}_ci_low", f"{key}_ci_high")
    low = row.get(low_key)
    if style == "pm" or low is None or pd.isna(low):
        spread = row.get("spread") if key == "value" else None
        shown = "" if spread is None or pd.isna(spread) else f" ± {_fmt(spread, digits)}"
        return f"{_fmt(value, digits)}{shown}"
    return f"{_fmt(value, digits)} [{_fmt(low, digits)}, {_fmt(row.get(high_key), digits)}]"


def _lookup(
    frame: pd.DataFrame, modality: str, metric: str, variant: str, extractor: str
) -> pd.Series | None:
    hit = frame[
        frame["modality"].eq(modality)
        & frame["metric"].eq(metric)
        & frame["variant"].eq(variant)
        & (frame["extractor"].eq(extractor) | frame["extractor"].eq(""))
    ]
    return None if hit.empty else hit.iloc[0]


def fidelity_table(results: FidelityResults | Mapping[str, Any], extractor: str) -> pd.DataFrame:
    """The paper's Fig. 11 layout with the paper's numbers beside ours, for one FID/KID extractor.

    Column groups: ``paper (reported)``; ``<profile>: paper definition`` (mean ± the original's spread, as
    the original computed it: ``np.std`` over slices for MS-SSIM, of the paired per-slice feature distances
    for FID, over the 10 disjoint subsets for KID); ``<profile>: corrected`` (estimate [95% CI from
    resampling subjects], empty slices excluded); ``<profile>: real-vs-real`` (the same corrected metric
    between two halves of the real validation subjects: the floor a generator is measured against) and
    ``<profile>: synthetic / real-vs-real`` (ratio of the matched synthetic value to that floor, with its
    interval). The *mean* row is mean ± SD over modalities (the ratio row: mean of the ratios).
    """
    results = as_results(results)
    frame = results.frame()
    profile = results.profile
    header = {
        "paper": "paper (reported, inception-torchvision)",
        "ours_paper": f"{profile}: paper definition ({extractor})",
        "ours_corrected": f"{profile}: corrected ({extractor})",
        "floor": f"{profile}: real-vs-real ({extractor})",
        "ratio": f"{profile}: synthetic / real-vs-real ({extractor})",
    }
    groups = (
        ("ours_paper", "paper", "pm", "value"),
        ("ours_corrected", "corrected", "ci", "value"),
        ("floor", "real-vs-real", "ci", "value"),
        ("ratio", "real-vs-real", "ci", "ratio"),
    )
    table: dict[tuple[str, str], list[str]] = {}
    for column, (metric, key, digits) in COLUMNS.items():
        table[(header["paper"], column)] = [
            f"{PAPER_FIDELITY[m][key][0]} ± {PAPER_FIDELITY[m][key][1]}" for m in ROWS
        ]
        for group, variant, style, field in groups:
            table[(header[group], column)] = [
                _cell(
                    _lookup(frame, m, metric, variant, extractor),
                    digits if field == "value" else 3,
                    style if m != "mean" else ("pm" if field == "value" else "value"),
                    field,
                )
                for m in ROWS
            ]
    out = pd.DataFrame(table, index=list(ROWS))
    out.columns = pd.MultiIndex.from_tuples(list(table))
    out.index.name = "modality"
    return out


ADDITIONAL: dict[str, tuple[str, str, int]] = {
    "MS-SSIM 3D ↑": ("MS-SSIM 3D", "", 4),
    "SSIM 3D ↑": ("SSIM 3D", "", 4),
    "PSNR 3D (dB) ↑": ("PSNR 3D (dB)", "", 2),
    "FRD v1 ↓ (log d²)": ("FRD", "frd-score v1 (pyradiomics)", 3),
}
#: row label of each source in :func:`additional_table` -> (variant, field of the row)
ADDITIONAL_SOURCES: dict[str, tuple[str, str]] = {
    "synthetic vs real": ("corrected", "value"),
    "real-vs-real": ("real-vs-real", "value"),
    "synthetic / real-vs-real": ("real-vs-real", "ratio"),
}


def additional_table(results: FidelityResults | Mapping[str, Any]) -> pd.DataFrame:
    """Metrics the paper did not report: 3D MS-SSIM, SSIM, PSNR (subject CI) and FRD, per modality, each
    beside its real-vs-real floor and the ratio synthetic / real-vs-real (same subjects; for FRD the ratio
    of the squared distances, as FRD itself is a log). Rows: (modality, source)."""
    frame = as_results(results).frame()
    index: list[tuple[str, str]] = []
    data: dict[str, list[str]] = {column: [] for column in ADDITIONAL}
    for m in ROWS:
        for source, (variant, field) in ADDITIONAL_SOURCES.items():
            index.append((m, source))
            for column, (metric, extractor, digits) in ADDITIONAL.items():
                # FRD has no interval (one distance per modality); ratios get 3 decimals
                style = "value" if metric == "FRD" or m == "mean" and field == "ratio" else "ci"
                if m == "mean" and field == "value":
                    style = "pm"
                row = _lookup(frame, m, metric, variant, extractor)
                data[column].append(_cell(row, digits if field == "value" else 3, style, field))
    out = pd.DataFrame(data, index=pd.MultiIndex.from_tuples(index, names=["modality", "source"]))
    return out


def extractor_summary(results: FidelityResults | Mapping[str, Any]) -> pd.DataFrame:
    """Which extractor produced numbers, and why the others did not."""
    rows = []
    for name, state in as_results(results).extractors.items():
        rows.append(
            {
                "extractor": name,
                "status": state["status"],
                "about": state.get("description", state.get("message", "")),
            }
        )
    return pd.DataFrame(rows)
