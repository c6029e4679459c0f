"""The high-quality synthetic subset, chosen by a measured score instead of by eye.

Rule (documented in notebook 06): every synthetic *training* volume is segmented by the nnU-Net trained on
real data only; its score is the agreement of that segmentation with the mask the volume was generated
from -- the mean Dice over the tumour labels present in either mask (the head label is left out: it is
trivially easy). A volume whose tumour the real-only model recognises as drawn is one that looks like real
data to a segmenter. The ``segment.hq_count`` best volumes form the HQ pool (ties broken by id).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from gliomagen.cases import load_mask
from gliomagen.config import Config
from gliomagen.io import load_nifti, provenance, write_csv, write_json
from gliomagen.segmentation.export import FILE_ENDING, inverse_label_lut
from gliomagen.segmentation.outputs import SegmentationOutputs, read_hq_scores
from gliomagen.segmentation.overlap import dice_paper

log = logging.getLogger(__name__)


def scores_path(cfg: Config) -> Path:
    """The HQ ranking's file (:attr:`SegmentationOutputs.hq_scores`)."""
    return SegmentationOutputs(cfg.paths).hq_scores


def agreement_score(condition: np.ndarray, predicted: np.ndarray, cfg: Config) -> dict[str, float]:
    """Per-tumour-label Dice and their mean over the labels present in either mask (NaN if none is)."""
    out: dict[str, float] = {}
    present = []
    for lab in cfg.tumour_labels:
        c, p = condition == lab.value, predicted == lab.value
        out[f"dice_{lab.name}"] = dice_paper(c, p)
        if c.any() or p.any():
            present.append(out[f"dice_{lab.name}"])
    out["score"] = float(np.mean(present)) if present else float("nan")
    return out


def score_synthetic(cfg: Config, pool: pd.DataFrame, pred_dir: Path) -> pd.DataFrame:
    """Score every synthetic volume of ``pool`` against its conditioning mask and write the ranking.

    Args:
        cfg: run configuration.
        pool: synthetic training volumes (``id``, ``source_id``, ``path``) from ``export.synthetic_pool``.
        pred_dir: the real-only model's predictions (``<id>.nii.gz``, nnU-Net label values).

    Returns:
        the ranking (best first) with ``rank`` and ``hq`` columns; written to
        :attr:`SegmentationOutputs.hq_scores` (+ its ``.json`` summary).
    """
    lut = inverse_label_lut(cfg)
    rows = []
    for r in tqdm(list(pool.itertuples()), desc="HQ scoring", unit="volume"):
        pred_file = pred_dir / f"{r.id}{FILE_ENDING}"
        try:
            cond = load_mask(Path(r.path))[0]
            pred = lut[np.asarray(load_nifti(pred_file).dataobj).astype(np.uint8)]
            if pred.shape != cond.shape:
                raise ValueError(f"prediction shape {pred.shape} != mask shape {cond.shape}")
            rows.append(
                {"id": r.id, "source_id": r.source_id, **agreement_score(cond, pred, cfg), "error": ""}
            )
        except (OSError, ValueError) as exc:  # one unreadable volume must not stop the ranking
            log.error("HQ scoring: %s left out: %s", r.id, exc)
            rows.append({"id": r.id, "source_id": r.source_id, "score": float("nan"), "error": str(exc)})
    table = pd.DataFrame(rows)
    table = table.sort_values(["score", "id"], ascending=[False, True], na_position="last").reset_index(
        drop=True
    )
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table["hq"] = table["rank"].le(cfg.segment.hq_count) & table["score"].notna()
    table["config_hash"] = cfg.hash
    write_csv(scores_path(cfg), table)
    write_json(
        SegmentationOutputs(cfg.paths).hq_summary,
        {
            **provenance(cfg.hash, rule=cfg.segment.hq_score),
            "n_scored": int(table["score"].notna().sum()),
            "hq_count": int(table["hq"].sum()),
            "threshold_score": float(table.loc[table["hq"], "score"].min()) if table["hq"].any() else None,
            "score_mean": float(table["score"].mean()),
            "score_median": float(table["score"].median()),
        },
    )
    return table


def hq_ranking(cfg: Config) -> list[str] | None:
    """The HQ ids best first (only those flagged ``hq``), or ``None`` if the scoring has not run."""
    path = scores_path(cfg)
    if not path.is_file():
        return None
    table = read_hq_scores(SegmentationOutputs(cfg.paths))
    if "config_hash" in table and table["config_hash"].iloc[0] != cfg.hash:
        log.info(
            "HQ scores were made with config %s, not %s: recomputing", table["config_hash"].iloc[0], cfg.hash
        )
        return None
    return table.loc[table["hq"].astype(bool), "id"].tolist()
