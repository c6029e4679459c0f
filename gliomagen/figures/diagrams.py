"""Figures that are drawn from data in the repository rather than from a run: the denoiser U-Net diagram
(from the profile's model section) and the dataset composition table (from :mod:`gliomagen.reference`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

from gliomagen.config import MODALITIES, Config
from gliomagen.reference import PAPER_FACTS


def level_shapes(cfg: Config) -> list[tuple[int, tuple[int, int, int]]]:
    """(channels, spatial shape) at each U-Net level: the input grid halves after every level but the last."""
    shape: tuple[int, int, int] = cfg.data.target_shape
    levels = []
    for level, channels in enumerate(cfg.model.channels):
        levels.append((channels, shape))
        if level < len(cfg.model.channels) - 1:
            shape = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
    return levels


def unet_diagram(cfg: Config, mask_channels: int) -> Figure:
    """Block diagram of the conditional denoiser (MONAI ``DiffusionModelUNet``) for a profile.

    The axes are in inches (one data unit = one inch of the figure), so every box is sized for its text
    at the chosen font size, and every arrow starts and ends on a box edge, never over text.

    Args:
        cfg: the run configuration (model channels, res-blocks, target shape).
        mask_channels: number of one-hot mask channels concatenated to the noisy image.
    """
    import textwrap

    levels = level_shapes(cfg)
    n = len(levels)
    box_w, box_h, step, font = 1.95, 0.62, 0.95, 7.5
    enc_x, gap = 0.35, 2.3
    dec_x = enc_x + box_w + gap
    width = dec_x + box_w + 0.35
    # title, input/output row, the levels, the middle block, the caption
    top = 0.35 + box_h + 0.75 + (n - 1) * step + box_h + 0.45 + box_h + 0.6
    fig = plt.figure(figsize=(width, top))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, top)
    ax.set_axis_off()

    def block(
        x: float, y: float, text: str, colour: str, w: float = box_w
    ) -> tuple[float, float, float, float]:
        ax.add_patch(Rectangle((x, y), w, box_h, facecolor=colour, edgecolor="black", lw=0.8))
        ax.text(x + w / 2, y + box_h / 2, text, ha="center", va="center", fontsize=font, linespacing=1.25)
        return x, y, w, box_h

    def arrow(
        a: tuple[float, float], b: tuple[float, float], colour: str = "black", style: str = "-|>"
    ) -> None:
        ax.add_patch(
            FancyArrowPatch(
                a, b, arrowstyle=style, mutation_scale=8, color=colour, lw=0.9, shrinkA=0, shrinkB=0
            )
        )

    res = cfg.model.num_res_blocks
    y_io = top - 0.35 - box_h
    n_in = len(MODALITIES) + mask_channels
    inp = block(
        enc_x,
        y_io,
        f"input: {n_in} channels\n{len(MODALITIES)} noisy contrasts\n+ {mask_channels} one-hot mask",
        "#eeeeee",
    )
    out = block(dec_x, y_io, f"output: {len(MODALITIES)} channels\npredicted noise ε", "#eeeeee")
    enc, dec = [], []
    for level, (channels, shape) in enumerate(levels):
        y = y_io - 0.75 - box_h - level * step
        grid = "×".join(str(s) for s in shape)
        enc.append(block(enc_x, y, f"{res}× ResBlock\n{channels} ch\n{grid}", "#cfe2f3"))
        dec.append(block(dec_x, y, f"{res + 1}× ResBlock\n{channels} ch\n{grid}", "#d9ead3"))
        # skip connection: encoder right edge -> decoder left edge
        arrow((enc_x + box_w, y + box_h / 2), (dec_x, y + box_h / 2), "#888888")
    for a, b in zip(enc, enc[1:], strict=False):  # downsample: bottom edge -> top edge of the next level
        arrow((a[0] + box_w / 2, a[1]), (b[0] + box_w / 2, b[1] + box_h))
    for a, b in zip(dec[1:], dec, strict=False):  # upsample
        arrow((a[0] + box_w / 2, a[1] + box_h), (b[0] + box_w / 2, b[1]))
    arrow((inp[0] + box_w / 2, inp[1]), (enc[0][0] + box_w / 2, enc[0][1] + box_h))
    arrow((dec[0][0] + box_w / 2, dec[0][1] + box_h), (out[0] + box_w / 2, out[1]))
    c_last, _ = levels[-1]
    mid_w = 2.3
    mid_x = (enc_x + dec_x + box_w) / 2 - mid_w / 2
    mid_y = enc[-1][1] - 0.45 - box_h
    block(mid_x, mid_y, f"middle: ResBlock + attention\n(1 head) + ResBlock\n{c_last} ch", "#fce5cd", w=mid_w)
    arrow((enc_x + box_w / 2, enc[-1][1]), (mid_x, mid_y + box_h / 2))
    arrow((mid_x + mid_w, mid_y + box_h / 2), (dec_x + box_w / 2, dec[-1][1]))
    ax.text(
        (enc_x + dec_x + box_w) / 2, enc[0][1] + box_h / 2 + 0.12, "skip connections (grey)", ha="center",
        va="bottom", fontsize=font - 1, color="#666666",
    )  # fmt: skip
    caption = (
        f"GroupNorm({cfg.model.norm_num_groups}); sinusoidal time embedding → MLP, added in every ResBlock; "
        f"encoder halves the grid after each level, decoder doubles it; input grid "
        f"{'×'.join(map(str, cfg.data.target_shape))}."
    )
    ax.text(
        enc_x,
        mid_y - 0.15,
        textwrap.fill(caption, width=int(width * 13)),
        ha="left",
        va="top",
        fontsize=font - 0.5,
    )
    ax.text(width / 2, top - 0.12, f"Conditional denoiser ({cfg.profile} profile): MONAI DiffusionModelUNet, "
            "concat conditioning", ha="center", va="top", fontsize=9)  # fmt: skip
    return fig


def dataset_table() -> pd.DataFrame:
    """Dataset composition as reported for the original (BraTS 2024 GLI post-treatment; docs/method.md)."""
    rows = [
        ("BraTS 2024 GLI post-treatment, all cases (7 institutions)", 2200),
        ("labelled training scans used by the paper", 1350),
        ("paper split: training scans", 1300),
        ("paper split: validation scans", 50),
        ("removed by eye (head-mask holes)", int(PAPER_FACTS["excluded_by_eye"])),
        ("final training scans", int(PAPER_FACTS["train_scans"])),
        ("final validation scans", int(PAPER_FACTS["val_scans"])),
        ("augmented masks tried", int(PAPER_FACTS["augment_tried"])),
        ("augmented masks kept = synthetic volumes", int(PAPER_FACTS["augment_kept"])),
    ]
    return pd.DataFrame(rows, columns=["cohort (paper, reported)", "scans"])
