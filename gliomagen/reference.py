"""The original paper's reported numbers (GliomaGen poster, Figs. 11 and 13), for side-by-side tables.

These are *reported* values, never results of this artifact; every table that shows them labels them as
"paper (reported)". The "±" of the fidelity table is the original's own spread (docs/flaws.md, "Fidelity"):
for MS-SSIM the SD over slices, for FID/KID the spread of paired per-slice feature distances.
"""

from __future__ import annotations

import pandas as pd

#: Fig. 11 -- per modality: (mean, the original's "±") for MS-SSIM, FID, KID.
PAPER_FIDELITY: dict[str, dict[str, tuple[float, float]]] = {
    "t1n": {"ms_ssim": (0.7005, 0.2585), "fid": (58.4627, 3.8681), "kid": (0.0305, 0.0011)},
    "t1c": {"ms_ssim": (0.7647, 0.2106), "fid": (55.2028, 3.7446), "kid": (0.0293, 0.0019)},
    "t2w": {"ms_ssim": (0.6513, 0.2881), "fid": (54.9974, 3.2271), "kid": (0.0291, 0.0010)},
    "t2f": {"ms_ssim": (0.7842, 0.1551), "fid": (70.4296, 4.1727), "kid": (0.0370, 0.0018)},
    "mean": {"ms_ssim": (0.7252, 0.06), "fid": (59.7731, 6.5), "kid": (0.0315, 0.003)},
}

#: Fig. 13 (+ Fig. 14 for HD95/ASSD, in voxels as the original computed them), one row per data mix.
#: Keys of each row follow the paper's column order.
PAPER_SEGMENTATION_COLUMNS: tuple[str, ...] = (
    "kappa",
    "accuracy",
    "f1_NETC",
    "f1_SNFH",
    "f1_ET",
    "f1_RC",
    "avg_dice",
    "pearson_r",
    "hd95",
    "assd",
)
PAPER_SEGMENTATION: dict[str, tuple[float, ...]] = {
    "real + 1062 synthetic": (0.7958, 0.8969, 0.7291, 0.9403, 0.8915, 0.9407, 0.8116, 0.9919, 3.78, 1.71),
    "real + 598 high-quality synthetic": (
        0.7913,
        0.8945,
        0.7352,
        0.9394,
        0.8898,
        0.9383,
        0.8085,
        0.9938,
        4.00,
        1.83,
    ),
    "real only (1235)": (0.8071, 0.9033, 0.7199, 0.9447, 0.8951, 0.9424, 0.8167, 0.9923, 3.35, 1.43),
    "real + 2124 synthetic": (0.7931, 0.8953, 0.6998, 0.9408, 0.8858, 0.9363, 0.7840, 0.9913, 4.01, 1.70),
    "598 high-quality synthetic only": (
        0.4159,
        0.6367,
        0.4457,
        0.7759,
        0.7636,
        0.7024,
        0.5592,
        0.9295,
        12.37,
        5.98,
    ),
    "617 real + 598 HQ synthetic": (
        0.7942,
        0.8965,
        0.6962,
        0.9429,
        0.8865,
        0.9316,
        0.8042,
        0.9922,
        4.99,
        1.75,
    ),
}

#: The paper's six data mixes in the order of our profiles' ``segment.configurations``.
PAPER_MIX_ORDER: tuple[str, ...] = (
    "real only (1235)",
    "real + 1062 synthetic",
    "real + 2124 synthetic",
    "real + 598 high-quality synthetic",
    "598 high-quality synthetic only",
    "617 real + 598 HQ synthetic",
)

#: Dataset and training facts quoted in tables (docs/method.md).
PAPER_FACTS: dict[str, float] = {
    "train_scans": 1235,
    "val_scans": 48,
    "excluded_by_eye": 67,
    "augment_tried": 2470,
    "augment_kept": 2124,
    "model_parameters": 57_566_020,
    "train_steps": 245_000,
    "train_hours_a100": 127,
    "generation_seconds_per_volume": 81,
}


def paper_fidelity_table() -> pd.DataFrame:
    """Fig. 11 as a tidy frame: modality, metric, mean, spread."""
    rows = [
        {"modality": mod, "metric": metric, "mean": mean, "spread": spread}
        for mod, metrics in PAPER_FIDELITY.items()
        for metric, (mean, spread) in metrics.items()
    ]
    return pd.DataFrame(rows)


def paper_segmentation_table() -> pd.DataFrame:
    """Fig. 13/14 as a frame indexed by the paper's data-mix names, in the order of our configurations."""
    frame = pd.DataFrame.from_dict(
        PAPER_SEGMENTATION, orient="index", columns=list(PAPER_SEGMENTATION_COLUMNS)
    )
    return frame.loc[list(PAPER_MIX_ORDER)]
