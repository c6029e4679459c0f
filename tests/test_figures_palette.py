"""One colour per label in every figure, a legend on every mask overlay, correct process-figure times."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from gliomagen.config import load_config  # noqa: E402
from gliomagen.diffusion.plots import mask_rgb as diffusion_mask_rgb  # noqa: E402
from gliomagen.diffusion.plots import process_figure, state_times  # noqa: E402
from gliomagen.figures.palette import LABEL_COLOURS, add_label_legend, label_cmap, mask_rgb  # noqa: E402
from gliomagen.paths import PROJECT_ROOT  # noqa: E402


def test_every_label_has_one_colour_everywhere() -> None:
    cfg = load_config("smoke")
    mask = np.array([[0, 1, 2], [3, 4, 5]])
    rgb = mask_rgb(mask, cfg)
    assert np.array_equal(diffusion_mask_rgb(mask, cfg), rgb)  # the training/generation figures use it
    cmap, top = label_cmap(cfg)
    assert top == 5
    for lab in cfg.data.labels:
        if lab.value:
            assert tuple(rgb[mask == lab.value][0]) == to_rgb(LABEL_COLOURS[lab.name])
            assert cmap(lab.value)[:3] == to_rgb(LABEL_COLOURS[lab.name])
    assert cmap(0)[3] == 0  # background transparent in overlays
    assert len({LABEL_COLOURS[n] for n in ("NETC", "SNFH", "ET", "RC")}) == 4


def test_no_module_keeps_its_own_label_colours() -> None:
    palette = PROJECT_ROOT / "gliomagen" / "figures" / "palette.py"
    modules = [p for p in PROJECT_ROOT.glob("gliomagen/**/*.py") if p != palette]
    assert len(modules) > 40
    for path in modules:
        text = path.read_text()
        assert not re.search(r"LABEL_COLOURS\s*=|ListedColormap\(|get_cmap\(\"tab10\"\)", text), path


def test_legend_lists_every_label() -> None:
    cfg = load_config("smoke")
    fig, ax = plt.subplots()
    add_label_legend(fig, cfg)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["head", "NETC", "SNFH", "ET", "RC"]
    plt.close(fig)


def test_state_after_the_last_step_is_t0() -> None:
    # DDIM-10 of T=1000: timesteps 999, 899, ..., 99; the state after step i stands for the next timestep
    timesteps = list(range(999, 0, -100))
    assert state_times(timesteps, [0, 4, 9]) == [899, 499, 0]


def test_process_figure_rows_share_their_times() -> None:
    cfg = load_config("smoke")
    plane = np.zeros((8, 8))
    fig = process_figure({0: plane, 499: plane, 899: plane}, [(899, plane), (499, plane), (0, plane)],
                         np.zeros((8, 8), int), cfg, "ddim, 10 steps", "t")  # fmt: skip
    top = [ax.get_title() for ax in fig.axes[1:4]]
    bottom = [ax.get_title() for ax in fig.axes[5:8]]
    assert top == ["t = 0", "t = 499", "t = 899"]
    assert bottom == ["t = 0: final sample", "t = 499", "t = 899"]
    assert not any("99)" in t or "after step" in t for t in top + bottom)


def test_hq_figure_says_when_the_subset_is_arbitrary() -> None:
    from gliomagen.segmentation.plots import plot_hq_scores

    tied = pd.DataFrame({"score": [0.0] * 6, "hq": [True] * 3 + [False] * 3})
    fig = plot_hq_scores(tied)
    assert "arbitrary" in fig.axes[0].get_title() and "all 6 scores tie" in fig.axes[0].get_title()
    ranked = pd.DataFrame({"score": [0.9, 0.8, 0.2, 0.1], "hq": [True, True, False, False]})
    assert "arbitrary" not in plot_hq_scores(ranked).axes[0].get_title()
    plt.close("all")


def test_bland_altman_names_the_region_and_shares_axes() -> None:
    from gliomagen.segmentation.plots import plot_bland_altman

    volumes = pd.DataFrame({"configuration": ["a"] * 3 + ["b"] * 3, "gt_ml": [1.0, 2.0, 3.0] * 2,
                            "pred_ml": [1.123456, 2.2, 2.9, 5.0, 6.0, 7.0]})  # fmt: skip
    fig = plot_bland_altman(volumes)
    assert "total tumour volume" in fig._suptitle.get_text().replace("\n", " ")  # type: ignore[union-attr]
    a, b = fig.axes[:2]
    assert a.get_ylim() == b.get_ylim()  # compared panels share the y-axis
    # differences 0.123456, 0.2, -0.1: bias 0.07449, SD 0.15588, limits bias -/+ 1.96 SD = -0.2310, +0.3800;
    # one precision per panel (3 significant digits of the largest), not 0.0744853333
    assert "bias +0.074 ml, limits -0.231 to +0.380" in a.get_title(), a.get_title()
    plt.close(fig)
