"""Does a generated volume follow its mask? Three direct measures, per validation case and modality.

Perceptual scores (MS-SSIM, FID) say how alike two images look; they do not say whether the lesion sits
where the conditioning mask puts it. These measures do, on the real validation case and the volume
generated from its mask:

* **lesion contrast** = mean intensity inside the tumour labels / mean intensity in the rest of the head.
  Its *departure from 1* is what the mask asks for (oedema bright in t2w/t2f). The synthetic contrast is
  compared with the real one as ``contrast_error = |c_syn - c_real| / |c_real - 1|`` (0 = same contrast,
  1 = no lesion at all).
* **Pearson r inside the head** between synthetic and real voxels (anatomy and lesion in the right place).
  The *real-vs-real floor* is the r between the real case and another real validation case (same
  template anatomy, another head and lesion): what a generator ignoring the mask's specifics could reach.
* **head / background** = mean intensity inside the head / mean outside it (the background must be dark).

Hand-written because no library defines these mask-conditioned ratios; each is a few lines of NumPy.
The table (per case and modality) is written by :func:`evaluate_conditioning`
(``FidelityOutputs.conditioning_csv``); the figure is :func:`gliomagen.fidelity.plots.plot_mask_following`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from gliomagen.cases import load_case
from gliomagen.config import MODALITIES, Config
from gliomagen.fidelity.outputs import LOCK, FidelityOutputs
from gliomagen.fidelity.pairs import find_pairs
from gliomagen.io import write_csv
from gliomagen.locks import run_lock

log = logging.getLogger(__name__)

#: the goals of the smoke reproduction (issue 17): properties of a pipeline whose samples follow the mask
MAX_CONTRAST_ERROR = 0.3  # for the modalities in CONTRAST_MODALITIES
CONTRAST_MODALITIES = ("t2w", "t2f")  # oedema is bright there, so the lesion must show
MIN_MEDIAN_R = 0.5  # every modality
MIN_HEAD_BACKGROUND = 10.0  # every case and modality

COLUMNS = [
    "case_id",
    "modality",
    "contrast_real",
    "contrast_synthetic",
    "contrast_error",
    "pearson_r",
    "pearson_r_real_floor",
    "head_bg_real",
    "head_bg_synthetic",
]


def lesion_contrast(image: np.ndarray, mask: np.ndarray, tumour_values: list[int]) -> float:
    """Mean of ``image`` inside the tumour labels / mean in the rest of the head (``nan`` without tumour).

    Args:
        image: one modality ``(X, Y, Z)``.
        mask: prepared labels (0 background, head and tumour values).
        tumour_values: the tumour label values.
    """
    tumour = np.isin(mask, tumour_values)
    rest = (mask > 0) & ~tumour
    if not tumour.any() or not rest.any():
        return float("nan")
    denom = float(image[rest].mean())
    return float(image[tumour].mean()) / denom if denom > 0 else float("nan")


def head_background_ratio(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``image`` inside the head (every label > 0) / mean outside (``inf`` for a black background)."""
    head = mask > 0
    if not head.any() or head.all():
        return float("nan")
    bg = float(image[~head].mean())
    return float(image[head].mean()) / bg if bg > 0 else float("inf")


def pearson_in(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    """Pearson correlation of ``a`` and ``b`` over the voxels of ``region`` (``nan`` if either is constant)."""
    x, y = a[region].astype(np.float64), b[region].astype(np.float64)
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def contrast_error(c_syn: float, c_real: float) -> float:
    """``|c_syn - c_real| / |c_real - 1|``: 0 = the real lesion contrast, 1 = no lesion (or its inverse)."""
    depart = abs(c_real - 1.0)
    return abs(c_syn - c_real) / depart if depart > 1e-6 else float("nan")


def case_metrics(
    case_id: str,
    real: np.ndarray,
    synthetic: np.ndarray,
    mask: np.ndarray,
    tumour_values: list[int],
    other_real: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """The conditioning measures of one validation case, one row per modality.

    Args:
        case_id: the case.
        real: real image ``(4, X, Y, Z)`` in MODALITIES order.
        synthetic: image generated from ``mask``, same shape.
        mask: the prepared mask ``(X, Y, Z)``.
        tumour_values: tumour label values.
        other_real: ``(image, mask)`` of another real case, for the real-vs-real floor of Pearson r.
    """
    if real.shape != synthetic.shape or real.shape[1:] != mask.shape:
        raise ValueError(
            f"{case_id}: real {real.shape}, synthetic {synthetic.shape} and mask {mask.shape} disagree"
        )
    head = mask > 0
    rows = []
    for k, modality in enumerate(MODALITIES):
        c_real = lesion_contrast(real[k], mask, tumour_values)
        c_syn = lesion_contrast(synthetic[k], mask, tumour_values)
        floor = float("nan")
        if other_real is not None:
            floor = pearson_in(real[k], other_real[0][k], head & (other_real[1] > 0))
        rows.append(
            {
                "case_id": case_id,
                "modality": modality,
                "contrast_real": c_real,
                "contrast_synthetic": c_syn,
                "contrast_error": contrast_error(c_syn, c_real),
                "pearson_r": pearson_in(real[k], synthetic[k], head),
                "pearson_r_real_floor": floor,
                "head_bg_real": head_background_ratio(real[k], mask),
                "head_bg_synthetic": head_background_ratio(synthetic[k], mask),
            }
        )
    return rows


def conditioning_table(
    cases: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], tumour_values: list[int]
) -> pd.DataFrame:
    """Per-case, per-modality measures for ``[(case_id, real, synthetic, mask), ...]``.

    The real-vs-real floor of case ``i`` uses case ``i+1`` (cyclically) as the other real case.
    """
    rows: list[dict[str, Any]] = []
    for i, (case_id, real, synthetic, mask) in enumerate(cases):
        other = cases[(i + 1) % len(cases)] if len(cases) > 1 else None
        rows += case_metrics(
            case_id, real, synthetic, mask, tumour_values, None if other is None else (other[1], other[3])
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per modality: the medians, the worst head/background ratio and whether each goal is met."""
    g = table.groupby("modality", sort=False)
    out = pd.DataFrame(
        {
            "contrast_real": g["contrast_real"].median(),
            "contrast_synthetic": g["contrast_synthetic"].median(),
            "contrast_error_median": g["contrast_error"].median(),
            "pearson_r_median": g["pearson_r"].median(),
            "pearson_r_real_floor_median": g["pearson_r_real_floor"].median(),
            "head_bg_synthetic_min": g["head_bg_synthetic"].min(),
            "head_bg_real_min": g["head_bg_real"].min(),
        }
    )
    out["contrast_ok"] = [
        (m not in CONTRAST_MODALITIES) or bool(e <= MAX_CONTRAST_ERROR)
        for m, e in zip(out.index, out["contrast_error_median"], strict=True)
    ]
    out["pearson_ok"] = out["pearson_r_median"] >= MIN_MEDIAN_R
    out["background_ok"] = out["head_bg_synthetic_min"] >= MIN_HEAD_BACKGROUND
    return out


def goals_failed(summary: pd.DataFrame) -> list[str]:
    """Human-readable list of the goals a :func:`summarise` table misses (empty when all are met)."""
    failed = []
    for modality, row in summary.iterrows():
        if not row["contrast_ok"]:
            failed.append(
                f"{modality}: median lesion-contrast error {row['contrast_error_median']:.2f} > "
                f"{MAX_CONTRAST_ERROR}"
            )
        if not row["pearson_ok"]:
            failed.append(f"{modality}: median Pearson r {row['pearson_r_median']:.2f} < {MIN_MEDIAN_R}")
        if not row["background_ok"]:
            failed.append(
                f"{modality}: head/background {row['head_bg_synthetic_min']:.1f} < {MIN_HEAD_BACKGROUND}"
            )
    return failed


def evaluate_conditioning(cfg: Config, write: bool = True) -> pd.DataFrame:
    """The measures for every validation case with a generated volume (``synthetic/val``).

    Args:
        cfg: run configuration.
        write: also write the table (``FidelityOutputs.conditioning_csv``), under the run's fidelity lock.

    Raises:
        FileNotFoundError: no validation case has a generated counterpart yet.
    """
    pairs, _ = find_pairs(cfg)
    cases = []
    for pair in pairs:
        real, fake = load_case(pair.real_dir), load_case(pair.fake_dir, with_seg=False)
        cases.append((pair.case_id, real.image, fake.image, real.mask))
    table = conditioning_table(cases, [lab.value for lab in cfg.tumour_labels])
    if write:
        with run_lock(cfg.paths.root, LOCK):
            write_csv(FidelityOutputs(cfg.paths).conditioning_csv, table)
    return table
