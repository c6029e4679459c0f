"""Paired statistics (Wilcoxon, bootstrap CI) and the HQ score, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from seg_toy import make_toy_run

from gliomagen.config import load_config
from gliomagen.io import write_nifti
from gliomagen.segmentation import hq
from gliomagen.segmentation.export import label_lut, synthetic_pool
from gliomagen.segmentation.stats import mean_ci, paired_comparison, wilcoxon_p


def test_wilcoxon_exact_p_for_all_positive_differences():
    # n=6, every difference positive: exact two-sided p = 2 / 2**6
    assert wilcoxon_p(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])) == pytest.approx(2 / 64)
    assert np.isnan(wilcoxon_p(np.zeros(4)))


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    d = np.array([0.1, -0.05, 0.2, 0.15, 0.0, 0.3])
    a = mean_ci(d, 500, 0.95, 1)
    b = mean_ci(d, 500, 0.95, 1)
    assert a == b and a[0] < d.mean() < a[1]
    const = mean_ci(np.full(5, 0.2), 100, 0.95, 0)
    assert const == pytest.approx((0.2, 0.2))


def test_paired_comparison_is_paired_by_case():
    rows = []
    for case, base in enumerate([0.5, 0.6, 0.7, 0.8]):
        rows.append({"configuration": "real_only", "case": case, "region": "WT", "dice": base})
        rows.append({"configuration": "mix", "case": case, "region": "WT", "dice": base + 0.1})
    out = paired_comparison(pd.DataFrame(rows), ["dice"], "real_only", 200, 0.95, 0)
    (r,) = out.to_dict(orient="records")
    assert r["configuration"] == "mix" and r["n"] == 4
    assert r["mean_diff"] == pytest.approx(0.1) and r["ci_low"] == pytest.approx(0.1)
    assert r["p_wilcoxon"] == pytest.approx(2 / 16)


def test_infinite_values_are_left_out_and_counted():
    # BraTS lesion-wise HD95 is inf where no lesion matched: that scan has no finite paired difference
    rows = []
    for case, (base, mix) in enumerate([(2.0, 3.0), (4.0, float("inf")), (1.0, 1.5), (float("inf"), 2.0)]):
        rows.append({"configuration": "real_only", "case": case, "region": "ET", "hd": base})
        rows.append({"configuration": "mix", "case": case, "region": "ET", "hd": mix})
    (r,) = paired_comparison(pd.DataFrame(rows), ["hd"], "real_only", 100, 0.95, 0).to_dict(orient="records")
    assert r["n"] == 2 and r["n_nonfinite"] == 2
    assert r["mean_diff"] == pytest.approx(0.75) and np.isfinite(r["ci_low"])


def test_agreement_score_hand_computed():
    cfg = load_config("smoke")
    v = {lab.name: lab.value for lab in cfg.data.labels}
    cond = np.array([v["head"], v["NETC"], v["NETC"], v["ET"], 0, 0])
    pred = np.array([v["head"], v["NETC"], 0, v["ET"], v["ET"], 0])
    s = hq.agreement_score(cond, pred, cfg)
    assert s["dice_NETC"] == pytest.approx(2 / 3) and s["dice_ET"] == pytest.approx(2 / 3)
    assert s["score"] == pytest.approx(2 / 3)  # SNFH and RC absent in both: not averaged in


def test_hq_ranking_keeps_the_best_scored(tmp_path):
    # hq_count=2 needs mixes that take at most 2 HQ volumes (the config refuses more)
    mixes = (
        "segment.configurations=[{name: real_only, real_fraction: 1.0, synthetic: 0},"
        " {name: hq2_only, real_fraction: 0.0, synthetic: 2, synthetic_pool: hq}]"
    )
    cfg = load_config("smoke", ["segment.hq_count=2", mixes], run_dir=tmp_path / "run")
    make_toy_run(cfg, n_train_patients=2, timepoints=1, n_val_patients=1, n_synthetic=4, shape=(10, 10, 10))
    pool = synthetic_pool(cfg)
    lut = label_lut(cfg)
    out = tmp_path / "pred"
    # predictions: perfect, perfect minus tumour, empty, perfect -> scores 1, <1, 0, 1
    from gliomagen.cases import load_mask

    for k, r in enumerate(pool.itertuples()):
        mask, affine = load_mask(r.path)
        pred = mask.copy()
        if k == 1:
            pred[pred == cfg.label("SNFH").value] = 0
        if k == 2:
            pred[:] = 0
        write_nifti(out / f"{r.id}.nii.gz", lut[pred], affine, None, np.uint8)
    table = hq.score_synthetic(cfg, pool, out)
    assert list(table["rank"]) == [1, 2, 3, 4]
    ids = list(pool["id"])
    assert set(table.loc[table["hq"], "id"]) == {ids[0], ids[3]}
    assert table.iloc[-1]["id"] == ids[2] and table.iloc[-1]["score"] == 0.0
    assert hq.hq_ranking(cfg) == sorted([ids[0], ids[3]])
    assert hq.scores_path(cfg).with_suffix(".json").is_file()
