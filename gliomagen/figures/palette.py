"""One colour per label for every figure, and the legend that goes with every mask overlay.

The colours follow the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies);
labels are looked up by name, so a profile that renames or adds labels still gets a stable colour.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from gliomagen.config import Config

#: label name -> colour, the same in every figure of the project
LABEL_COLOURS: dict[str, str] = {
    "head": "#8c8c8c",
    "NETC": "#D55E00",  # vermillion
    "SNFH": "#009E73",  # bluish green
    "ET": "#F0E442",  # yellow
    "RC": "#0072B2",  # blue
    # BraTS evaluation regions (composites of the labels above)
    "TC": "#CC79A7",  # reddish purple
    "WT": "#56B4E9",  # sky blue
}
#: for labels a profile adds that are not listed above
SPARE_COLOURS = ("#E69F00", "#000000", "#999933", "#882255")


def label_colour(name: str, index: int = 0) -> str:
    """The colour of a label (or BraTS region) by name; unknown names get a spare colour by index."""
    return LABEL_COLOURS.get(name, SPARE_COLOURS[index % len(SPARE_COLOURS)])


def label_cmap(cfg: Config, head_alpha: float = 0.35) -> tuple[ListedColormap, int]:
    """A colormap indexed by label value (background transparent, head faint) and the largest value.

    Use with ``imshow(mask, cmap=cmap, vmin=0, vmax=top, interpolation="nearest")``.
    """
    top = max(lab.value for lab in cfg.data.labels)
    colours: list[tuple[float, float, float, float]] = [(0.0, 0.0, 0.0, 0.0)] * (top + 1)
    for i, lab in enumerate(cfg.data.labels):
        if lab.value:
            alpha = head_alpha if not lab.tumour else 1.0
            colours[lab.value] = (*to_rgb(label_colour(lab.name, i)), alpha)
    return ListedColormap(colours), top


def mask_rgb(mask2d: np.ndarray, cfg: Config) -> np.ndarray:
    """Colour image of a 2D mask: background black, every label in its colour."""
    rgb = np.zeros((*mask2d.shape, 3))
    for i, lab in enumerate(cfg.data.labels):
        if lab.value:
            rgb[mask2d == lab.value] = to_rgb(label_colour(lab.name, i))
    return rgb


def legend_handles(cfg: Config, names: Sequence[str] | None = None) -> list[Patch]:
    """One patch per label (all non-background labels, or those named)."""
    labels = [lab for lab in cfg.data.labels if lab.value and (names is None or lab.name in names)]
    return [
        Patch(facecolor=label_colour(lab.name, i), edgecolor="0.3", label=lab.name)
        for i, lab in enumerate(labels)
    ]


def add_label_legend(target: Figure | Axes, cfg: Config, names: Sequence[str] | None = None) -> None:
    """The label legend: below a figure (one row), or beside an axes."""
    handles = legend_handles(cfg, names)
    if isinstance(target, Figure):
        target.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=len(handles),
            fontsize=8,
            frameon=False,
            title="mask labels",
            title_fontsize=8,
        )
    else:
        target.legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False
        )
