"""Does a generated volume follow its mask? Three direct measures, per validation case and modality.

Perceptual scores (MS-SSIM, FID) say how alike two images look; they do not say whether the lesion sits
where the conditioning mask puts it. These measures do, on the real validation case and the volume
generated from its mask:

* **lesion contrast** = mean intensity inside the tumour labels / mean intensity in the rest of the head.
  Its *departure from 1* is what the mask asks for (oedema bright in t2w/t2f). The synthetic contrast is
  compared with the real one as ``contrast_error = |c_syn - c_real| / |c_real - 1|`` (0 = same contrast,
  1 = no lesion at all).
* **Pearson r inside the head** between synthetic and real voxels (anatomy and lesion in the right place),
  beside two references that know nothing of the case's own anatomy:

  - the *real-vs-real floor*: r between the real case and a real validation case of **another patient**
    (another head, anatomy and lesion; a later scan of the same patient shares the anatomy and would
    overstate the floor);
  - the *template*: r between the real case and the voxelwise mean of the training cases' real volumes
    (:func:`training_template`), the best a generator could do that knew only the average anatomy.

  Where a modality's contrast lives in patient-specific anatomy that the mask does not encode (the phantom's
  CSF in t2w: ventricles and sulci are warped per patient), both references are low, and so is any honest
  generator's r: it must sample *an* anatomy, not the patient's.
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

from gliomagen.cases import load_case, patient_of
from gliomagen.config import MODALITIES, Config
from gliomagen.data.outputs import usable_cases
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
#: training cases averaged into the template (a mean of this many is already smooth; bounded at paper scale)
TEMPLATE_CASES = 64

COLUMNS = [
    "case_id",
    "modality",
    "contrast_real",
    "contrast_synthetic",
    "contrast_error",
    "pearson_r",
    "pearson_r_real_floor",
    "pearson_r_template",
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
    template: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """The conditioning measures of one validation case, one row per modality.

    Args:
        case_id: the case.
        real: real image ``(4, X, Y, Z)`` in MODALITIES order.
        synthetic: image generated from ``mask``, same shape.
        mask: the prepared mask ``(X, Y, Z)``.
        tumour_values: tumour label values.
        other_real: ``(image, mask)`` of another patient's real case, for the real-vs-real floor of r.
        template: mean real training image ``(4, X, Y, Z)``, for the template reference of r.
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
                "pearson_r_template": float("nan")
                if template is None
                else pearson_in(real[k], template[k], head),
                "head_bg_real": head_background_ratio(real[k], mask),
                "head_bg_synthetic": head_background_ratio(synthetic[k], mask),
            }
        )
    return rows


def floor_partner(case_ids: list[str], i: int) -> int | None:
    """Index of the real case that case ``i``'s floor is measured against: the next case (cyclically) of
    another patient; the next case at all when every case is the same patient; ``None`` for one case."""
    n = len(case_ids)
    if n < 2:
        return None
    later = [(i + d) % n for d in range(1, n)]
    others = [j for j in later if patient_of(case_ids[j]) != patient_of(case_ids[i])]
    return (others or later)[0]


def conditioning_table(
    cases: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    tumour_values: list[int],
    template: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-case, per-modality measures for ``[(case_id, real, synthetic, mask), ...]``.

    Args:
        cases: ``(case_id, real image, synthetic image, mask)`` per validation case.
        tumour_values: the tumour label values.
        template: mean real training image for the template reference of r (column ``nan`` without).
    """
    ids = [c[0] for c in cases]
    rows: list[dict[str, Any]] = []
    for i, (case_id, real, synthetic, mask) in enumerate(cases):
        j = floor_partner(ids, i)
        other = None if j is None else (cases[j][1], cases[j][3])
        rows += case_metrics(case_id, real, synthetic, mask, tumour_values, other, template)
    return pd.DataFrame(rows, columns=COLUMNS)


def training_template(cfg: Config, max_cases: int = TEMPLATE_CASES) -> np.ndarray | None:
    """Voxelwise mean of the real images of the first ``max_cases`` training cases (``None`` without any).

    Args:
        cfg: run configuration (its prepared training split).
        max_cases: at most this many cases, by id.
    """
    total: np.ndarray | None = None
    dirs = list(usable_cases(cfg, "train"))[:max_cases]
    for d in dirs:
        image = load_case(d, with_seg=False).image.astype(np.float64)
        total = image if total is None else total + image
    return None if total is None else (total / len(dirs)).astype(np.float32)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per modality: the medians, the worst head/background ratio and whether each goal is met."""
    if "pearson_r_template" not in table:  # a table written before the template reference existed
        table = table.assign(pearson_r_template=np.nan)
    g = table.groupby("modality", sort=False)
    out = pd.DataFrame(
        {
            "contrast_real": g["contrast_real"].median(),
            "contrast_synthetic": g["contrast_synthetic"].median(),
            "contrast_error_median": g["contrast_error"].median(),
            "pearson_r_median": g["pearson_r"].median(),
            "pearson_r_real_floor_median": g["pearson_r_real_floor"].median(),
            "pearson_r_template_median": g["pearson_r_template"].median(),
            "head_bg_synthetic_min": g["head_bg_synthetic"].min(),
            "head_bg_real_min": g["head_bg_real"].min(),
        }
    )
    out["contrast_ok"] = [
        (m not in CONTRAST_MODALITIES) or bool(e <= MAX_CONTRAST_ERROR)
        for m, e in zip(out.index, out["contrast_error_median"], strict=True)
    ]
    out["pearson_ok"] = out["pearson_r_median"] >= MIN_MEDIAN_R
    # above both anatomy-blind references: the generator uses what the mask says about this case
    references = out[["pearson_r_real_floor_median", "pearson_r_template_median"]].max(axis=1)
    out["pearson_above_references"] = out["pearson_r_median"] > references.fillna(-1.0)
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
        if not row["pearson_above_references"]:
            failed.append(
                f"{modality}: median Pearson r {row['pearson_r_median']:.2f} not above the anatomy-blind "
                f"references (real-vs-real floor {row['pearson_r_real_floor_median']:.2f}, template "
                f"{row['pearson_r_template_median']:.2f})"
            )
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
    table = conditioning_table(cases, [lab.value for lab in cfg.tumour_labels], training_template(cfg))
    if write:
        with run_lock(cfg.paths.root, LOCK):
            write_csv(FidelityOutputs(cfg.paths).conditioning_csv, table)
    return table
