"""Figures of notebook 08: the organiser's preview of the kit (with the truth) and the scores."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from gliomagen.reader_study.build import KitResult
from gliomagen.reader_study.outputs import KIND_NAMES
from gliomagen.reader_study.score import ALL_READERS, ScoreResult


def preview(result: KitResult, n: int = 10, columns: int = 5) -> Figure:
    """Organiser's view of the first ``n`` panels with their truth (never show this to readers)."""
    import matplotlib.pyplot as plt

    key = pd.read_csv(result.key_path, dtype={"panel_id": str}).head(n)
    rows = math.ceil(len(key) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (_, row) in zip(axes.ravel(), key.iterrows(), strict=False):
        first = row["images"].split()[0]  # the 4-modality panels show their T1 native image here
        ax.imshow(np.asarray(Image.open(result.kit_dir / "img" / first)), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{KIND_NAMES[row['kind']]}, {row['location']}\n{row['truth']}", fontsize=8)
    fig.tight_layout()
    return fig


def plot_scores(result: ScoreResult) -> Figure:
    """Two panels: detection accuracy with CIs per stratum and reader; realism rating distributions."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    det = result.detection
    strata = list(dict.fromkeys(det["stratum"]))
    readers = list(dict.fromkeys(det["reader"]))
    width = 0.8 / len(readers)
    for i, reader in enumerate(readers):
        part = det[det["reader"] == reader].set_index("stratum").loc[strata]
        x = np.arange(len(strata)) + (i - (len(readers) - 1) / 2) * width
        err = np.vstack([part["accuracy"] - part["accuracy_low"], part["accuracy_high"] - part["accuracy"]])
        ax1.bar(
            x,
            part["accuracy"],
            width,
            yerr=err,
            capsize=2,
            label=reader,
            color="0.35" if reader == ALL_READERS else None,
        )
    ax1.axhline(0.5, color="k", ls="--", lw=1, label="chance")
    ax1.set(
        xticks=np.arange(len(strata)),
        xticklabels=strata,
        ylim=(0, 1.05),
        ylabel="accuracy (95% CI)",
        title="Telling real from synthetic",
    )
    ax1.legend(fontsize=8, ncol=2, loc="lower right")
    levels = np.arange(1, 6)
    for offset, label in ((-0.2, "real"), (0.2, "synthetic")):
        r = result.readings.loc[result.readings["truth"] == label, "rating"].astype(int)
        share = np.array([(r == v).mean() if len(r) else 0 for v in levels])
        ax2.bar(levels + offset, share, 0.4, label=f"{label} (mean {r.mean():.2f})")
    ax2.set(
        xticks=levels,
        xlabel="realism rating (1 artificial .. 5 real)",
        ylabel="share of ratings",
        title="Realism ratings",
    )
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig
