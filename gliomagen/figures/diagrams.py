"""Figures that are drawn from data in the repository rather than from a run: the denoiser U-Net diagram
(from the profile's model section) and the dataset composition table (from :mod:`gliomagen.reference`)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

from gliomagen.config import MODALITIES, Config  # noqa: E402
from gliomagen.reference import PAPER_FACTS  # noqa: E402


def level_shapes(cfg: Config) -> list[tuple[int, tuple[int, int, int]]]:
    """(channels, spatial shape) at each U-Net level: the input grid halves after every level but the last."""
    shape = tuple(cfg.data.target_shape)
    levels = []
    for level, channels in enumerate(cfg.model.channels):
        levels.append((channels, shape))  # type: ignore[arg-type]
        if level < len(cfg.model.channels) - 1:
            shape = tuple(s // 2 for s in shape)
    return levels  # type: ignore[return-value]


def unet_diagram(cfg: Config, mask_channels: int) -> plt.Figure:
    """Block diagram of the conditional denoiser (MONAI ``DiffusionModelUNet``) for a profile.

    Args:
        cfg: the run configuration (model channels, res-blocks, target shape).
        mask_channels: number of one-hot mask channels concatenated to the noisy image.
    """
    levels = level_shapes(cfg)
    n = len(levels)
    fig, ax = plt.subplots(figsize=(2.0 * n + 4, 0.9 * n + 3.2))
    ax.set_axis_off()
    width, gap = 1.5, 0.35
    top = n + 1.0

    def block(x: float, y: float, h: float, text: str, color: str) -> None:
        ax.add_patch(Rectangle((x, y), width, h, facecolor=color, edgecolor="black", lw=0.8))
        ax.text(x + width / 2, y + h / 2, text, ha="center", va="center", fontsize=8)

    def arrow(
        a: tuple[float, float], b: tuple[float, float], style: str = "-|>", color: str = "black"
    ) -> None:
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=9, color=color, lw=0.9))

    res = cfg.model.num_res_blocks
    inputs = f"input\n{len(MODALITIES)} noisy + {mask_channels} mask\n= {len(MODALITIES) + mask_channels} ch"
    block(0, top - 0.2, 0.9, inputs, "#eeeeee")
    for level, (channels, shape) in enumerate(levels):
        y = top - 1.3 - level
        enc_x = 2.0
        dec_x = 2.0 + 2 * (width + gap) + 2.2
        grid = "x".join(str(s) for s in shape)
        block(enc_x, y, 0.8, f"{res}x ResBlock\n{channels} ch\n{grid}", "#cfe2f3")
        block(dec_x, y, 0.8, f"{res + 1}x ResBlock\n{channels} ch\n{grid}", "#d9ead3")
        arrow((enc_x + width, y + 0.4), (dec_x, y + 0.4), "-|>", "#888888")
        if level < n - 1:
            arrow((enc_x + width / 2, y), (enc_x + width / 2, y - 0.2))
            arrow((dec_x + width / 2, y - 0.2), (dec_x + width / 2, y))
    y_mid = top - 1.3 - n
    mid_x = 2.0 + width + gap + 1.1
    c_last, shape_last = levels[-1]
    block(mid_x, y_mid, 0.8, f"middle: ResBlock\n+ attention (1 head)\n+ ResBlock, {c_last} ch", "#fce5cd")
    arrow((2.0 + width / 2, y_mid + 1.0), (mid_x, y_mid + 0.4))
    dec_x = 2.0 + 2 * (width + gap) + 2.2
    arrow((mid_x + width, y_mid + 0.4), (dec_x + width / 2, y_mid + 1.0))
    block(dec_x + width + 0.8, top - 1.3, 0.8, f"output\n{len(MODALITIES)} ch (noise ε)", "#eeeeee")
    arrow((dec_x + width, top - 0.9), (dec_x + width + 0.8, top - 0.9))
    arrow((0.75, top - 0.2), (2.0 + width / 2, top - 0.5))
    ax.text(
        0,
        y_mid - 0.6,
        f"GroupNorm({cfg.model.norm_num_groups}), sinusoidal time embedding -> MLP added in every ResBlock; "
        f"grey arrows: skip connections; input grid {'x'.join(map(str, cfg.data.target_shape))}",
        fontsize=8,
    )
    ax.set_xlim(-0.2, dec_x + 2 * width + 1.2)
    ax.set_ylim(y_mid - 0.9, top + 0.9)
    ax.set_title(
        f"Conditional denoiser ({cfg.profile} profile): MONAI DiffusionModelUNet, concat conditioning"
    )
    return fig


def dataset_table() -> pd.DataFrame:
    """Dataset composition as reported for the original (BraTS 2024 GLI post-treatment; PAPER.md §1)."""
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
