"""Segmentation metrics against hand-computed values and independent references (sklearn, scipy)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from gliomagen.config import load_config
from gliomagen.segmentation import metrics as M

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def cfg():
    return load_config("smoke")


def _v(cfg, name):
    return cfg.label(name).value


def test_restricted_confusion_matches_paper_definition(cfg):
    netc, snfh, et, rc, head = (_v(cfg, n) for n in ("NETC", "SNFH", "ET", "RC", "head"))
    gt = np.array([0, 0, head, head, netc, netc, snfh, snfh, et, rc])
    pred = np.array([et, snfh, et, 0, netc, snfh, snfh, 0, et, rc])  # 4 false positives outside the tumour
    cm = M.restricted_confusion(gt, pred, [0, netc, snfh, et, rc])
    # hand count over the 6 tumour voxels only
    expected = np.zeros((5, 5), int)
    expected[1, 1] = expected[1, 2] = 1  # NETC -> NETC, NETC -> SNFH
    expected[2, 2] = expected[2, 0] = 1  # SNFH -> SNFH, SNFH -> bg
    expected[3, 3] = expected[4, 4] = 1
    np.testing.assert_array_equal(cm, expected)
    inside = np.isin(gt, [netc, snfh, et, rc])
    labels = [0, netc, snfh, et, rc]
    np.testing.assert_array_equal(cm, confusion_matrix(gt[inside], pred[inside], labels=labels))
    assert M.kappa(cm) == pytest.approx(cohen_kappa_score(gt[inside], pred[inside], labels=labels))
    assert M.accuracy(cm) == pytest.approx(4 / 6)
    f1 = M.f1_per_class(cm)
    # NETC: TP 1, FN 1, FP 0 -> 2/3 ; SNFH: TP 1, FN 1, FP 1 (the NETC voxel) -> 0.5 ; ET, RC perfect
    np.testing.assert_allclose(f1[1:], [2 / 3, 0.5, 1.0, 1.0])


def test_head_prediction_becomes_background(cfg):
    head, et = _v(cfg, "head"), _v(cfg, "ET")
    out = M.head_to_background(np.array([head, et, 0, head]), cfg)
    np.testing.assert_array_equal(out, [0, et, 0, 0])


def test_dice_paper_empty_rule():
    z = np.zeros((4, 4, 4), bool)
    a = z.copy()
    a[0, 0, :2] = True
    b = z.copy()
    b[0, 0, 1:4] = True
    assert M.dice_paper(z, z) == 1.0
    assert M.dice_paper(a, z) == 0.0
    assert M.dice_paper(a, b) == pytest.approx(2 * 1 / (2 + 3))


def _points(shape, *coords):
    m = np.zeros(shape, bool)
    for c in coords:
        m[c] = True
    return m


def test_medpy_distances_hand_computed():
    shape = (11, 11, 11)
    ref = _points(shape, (5, 5, 5))
    res = _points(shape, (5, 5, 8))
    assert M.medpy_hd95(res, ref) == pytest.approx(3.0)
    assert M.medpy_assd(res, ref) == pytest.approx(3.0)
    assert M.medpy_hd95(res, ref, spacing=(1, 1, 2)) == pytest.approx(6.0)
    # result {z=5, z=9} vs reference {z=5}: result->ref [0, 4], ref->result [0]
    res2 = _points(shape, (5, 5, 5), (5, 5, 9))
    assert M.medpy_hd95(res2, ref) == pytest.approx(np.percentile([0, 4, 0], 95))  # 3.6
    # medpy 0.5: the three distances pooled, (0 + 4 + 0) / 3; medpy 0.4's mean of the one-way means was 1.0
    assert M.medpy_assd(res2, ref) == pytest.approx(4.0 / 3)


def test_medpy_border_is_the_surface_not_the_volume():
    # two 3x3x3 cubes 2 voxels apart along x: only border voxels count (the centre is not a border voxel)
    a = np.zeros((12, 7, 7), bool)
    b = a.copy()
    a[1:4, 2:5, 2:5] = True
    b[3:6, 2:5, 2:5] = True
    d = M._surface_distances(a, b)
    assert d.size == 26  # 27 voxels minus the interior one
    assert M.medpy_hd95(a, a) == 0.0


def test_empty_mask_raises_and_is_dropped_like_the_paper(cfg):
    z = np.zeros((6, 6, 6), bool)
    with pytest.raises(M.EmptyMaskError):
        M.medpy_hd95(z, _points(z.shape, (1, 1, 1)))
    gt = np.zeros((8, 8, 8), np.uint8)
    gt[2:4, 2:4, 2:4] = _v(cfg, "ET")
    rows, _ = M.paper_case_metrics(gt, gt.copy(), cfg)
    by = {r["label"]: r for r in rows}
    assert by["ET"]["dice"] == 1.0 and by["ET"]["hd95_vox"] == 0.0
    assert np.isnan(by["NETC"]["hd95_vox"]) and by["NETC"]["dice"] == 1.0  # both empty
    s = M.paper_summary(rows, np.eye(5, dtype=int), [8], [8], cfg)
    assert s.n_hd_pairs == 1 and s.n_dropped_pairs == 3 and s.hd95 == 0.0 and s.avg_dice == 1.0
    assert np.isnan(s.hd95_per_class["NETC"]) and s.hd95_per_class["ET"] == 0.0


def test_corrected_distances_in_mm_with_anisotropic_spacing():
    shape = (6, 6, 8)
    gt = _points(shape, (2, 2, 2))
    pred = _points(shape, (2, 2, 5))
    r = M.binary_pair_metrics(gt, pred, (1.0, 1.0, 2.0))
    assert r["hd95_mm"] == pytest.approx(6.0) and r["assd_mm"] == pytest.approx(6.0)
    assert r["dice"] == 0.0 and r["status"] == "ok"
    r = M.binary_pair_metrics(gt, pred, (0.5, 3.0, 1.0))
    assert r["hd95_mm"] == pytest.approx(3.0)


def test_corrected_empty_cases_are_explicit():
    shape = (4, 5, 6)
    z = np.zeros(shape, bool)
    both = M.binary_pair_metrics(z, z, (1, 1, 2))
    assert both == {**both, "dice": 1.0, "hd95_mm": 0.0, "assd_mm": 0.0, "status": "both_empty"}
    one = M.binary_pair_metrics(_points(shape, (1, 1, 1)), z, (1, 1, 2))
    diag = np.sqrt(4**2 + 5**2 + 12**2)
    assert one["status"] == "pred_empty" and one["dice"] == 0.0 and one["hd95_mm"] == pytest.approx(diag)


def test_brats_regions_follow_post_treatment_definitions(cfg):
    r = M.region_values(cfg)
    v = {n: _v(cfg, n) for n in ("NETC", "SNFH", "ET", "RC")}
    assert sorted(r["TC"]) == sorted([v["NETC"], v["ET"]])
    assert sorted(r["WT"]) == sorted([v["NETC"], v["SNFH"], v["ET"]])
    assert r["RC"] == [v["RC"]] and v["RC"] not in r["WT"]


def test_lesion_metrics_match_count_and_penalise():
    shape = (20, 8, 8)
    gt = np.zeros(shape, bool)
    pred = gt.copy()
    gt[1:4, 1:4, 1:4] = True  # lesion A, 27 voxels
    gt[12:15, 1:4, 1:4] = True  # lesion B, missed
    pred[1:4, 1:4, 1:3] = True  # hits A with 18 voxels
    pred[7:9, 5:7, 5:7] = True  # false positive
    r = M.lesion_metrics(gt, pred, (1, 1, 1))
    dice_a = 2 * 18 / (27 + 18)
    assert (r["n_ref"], r["n_pred"], r["tp"], r["fp"], r["fn"]) == (2, 2, 1, 1, 1)
    assert r["lesion_dice"] == pytest.approx(dice_a)
    assert r["lesion_dice_penalised"] == pytest.approx(dice_a / 3)
    assert r["lesion_f1"] == pytest.approx(0.5)
    assert r["lesion_precision"] == 0.5 and r["lesion_recall"] == 0.5
    none = M.lesion_metrics(gt, np.zeros(shape, bool), (1, 1, 1))
    # brats-evaluation: no matched lesion -> lesion-wise HD95 infinite (its 373 mm is for the global HD95)
    assert none["lesion_dice"] == 0.0 and none["lesion_hd95_mm"] == float("inf") and none["fn"] == 2
    empty = M.lesion_metrics(np.zeros(shape, bool), np.zeros(shape, bool), (1, 1, 1))
    assert np.isnan(empty["lesion_dice"])


def test_lesion_matching_is_one_to_one_and_diagonal_touch_is_one_lesion():
    shape = (12, 6, 6)
    gt = np.zeros(shape, bool)
    gt[1:3, 1:3, 1:3] = True
    gt[5:7, 1:3, 1:3] = True
    pred = np.zeros(shape, bool)
    pred[1:7, 1:3, 1:3] = True  # one prediction covering both references
    r = M.lesion_metrics(gt, pred, (1, 1, 1))
    assert (r["tp"], r["fp"], r["fn"]) == (1, 0, 1)
    diag = np.zeros((6, 6, 6), bool)
    diag[1, 1, 1] = diag[2, 2, 2] = True  # corner-touching voxels: one 26-connected lesion
    assert M.lesion_metrics(diag, diag, (1, 1, 1))["n_ref"] == 1


def test_pearson_and_bland_altman_hand_values():
    assert M.pearson_r([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert np.isnan(M.pearson_r([1], [1]))
    ba = M.bland_altman([10, 20, 30], [12, 21, 33])  # differences 2, 1, 3
    assert ba["bias"] == pytest.approx(2.0)
    assert ba["sd"] == pytest.approx(1.0)
    assert ba["loa_high"] == pytest.approx(2 + 1.96)


# ------------------------------------------------------------------ independent references (stored values)
REFS = json.loads((DATA / "metric_references.json").read_text())


def _load_cases_module():
    spec = importlib.util.spec_from_file_location(
        "make_metric_references", DATA / "make_metric_references.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # plain numpy: builds the label maps the references were computed on
    return module


def _ref_value(x):
    return float(x) if not isinstance(x, str) else float(x)  # "nan" / "inf" strings -> floats


def _direct_assd_and_one_way(a: np.ndarray, b: np.ndarray, spacing=None):
    """Surface distances written out with scipy: border = voxels with a background 6-neighbour (or on the
    array edge), distance from each border voxel of one mask to the nearest border voxel of the other."""
    from scipy import ndimage as ndi

    def border(m):
        padded = np.pad(m, 1)  # outside the array counts as background: edge voxels are border
        eroded = ndi.binary_erosion(padded, ndi.generate_binary_structure(3, 1))[1:-1, 1:-1, 1:-1]
        return m & ~eroded

    ba, bb = border(a), border(b)
    d_ab = ndi.distance_transform_edt(~bb, sampling=spacing)[ba]
    d_ba = ndi.distance_transform_edt(~ba, sampling=spacing)[bb]
    return d_ab, d_ba


def test_assd_is_medpy_0_5_pooled_mean():
    mod = _load_cases_module()
    a, b = mod.medpy_pair()
    d_ab, d_ba = _direct_assd_and_one_way(a, b)
    assert d_ab.size != d_ba.size  # otherwise pooled and mean-of-means would coincide
    pooled = np.concatenate([d_ab, d_ba]).mean()
    assert M.medpy_assd(a, b) == pytest.approx(pooled, rel=1e-12)
    assert M.medpy_assd(a, b) != pytest.approx((d_ab.mean() + d_ba.mean()) / 2, rel=1e-3)
    ref = REFS["medpy"]  # computed with medpy 0.5.2 itself (tests/data/make_metric_references.py)
    assert M.medpy_assd(a, b) == pytest.approx(ref["assd"], rel=1e-12)
    assert M.medpy_assd(a, b, spacing=(1, 1, 2)) == pytest.approx(ref["assd_spacing_1_1_2"], rel=1e-12)
    assert M.medpy_hd95(a, b) == pytest.approx(ref["hd95"], rel=1e-12)


def test_paper_summary_is_mean_of_class_means(cfg):
    # NETC has a distance in one scan only, ET in three: pooling all pairs would weigh ET three times
    rows = [
        {"label": "NETC", "dice": 0.5, "hd95_vox": 10.0, "assd_vox": 4.0},
        {"label": "NETC", "dice": 1.0, "hd95_vox": float("nan"), "assd_vox": float("nan")},
        {"label": "NETC", "dice": 0.0, "hd95_vox": float("nan"), "assd_vox": float("nan")},
        {"label": "ET", "dice": 0.9, "hd95_vox": 1.0, "assd_vox": 0.5},
        {"label": "ET", "dice": 0.8, "hd95_vox": 2.0, "assd_vox": 1.0},
        {"label": "ET", "dice": 0.7, "hd95_vox": 3.0, "assd_vox": 1.5},
        {"label": "SNFH", "dice": 1.0, "hd95_vox": float("nan"), "assd_vox": float("nan")},
    ]
    s = M.paper_summary(rows, np.eye(5, dtype=int), [1, 2], [1, 2], cfg)
    assert s.hd95 == pytest.approx((10.0 + 2.0) / 2)  # class means 10 and 2; SNFH/RC have none
    assert s.assd == pytest.approx((4.0 + 1.0) / 2)
    pooled = np.nanmean([10.0, 1.0, 2.0, 3.0])  # the old (scan, class)-pair average: 4.0
    assert s.hd95 != pytest.approx(pooled)
    assert s.hd95_per_class == {
        "NETC": 10.0,
        "SNFH": pytest.approx(np.nan, nan_ok=True),
        "ET": 2.0,
        "RC": pytest.approx(np.nan, nan_ok=True),
    }
    assert s.n_hd_pairs == 4 and s.n_dropped_pairs == 3


_BRATS_TO_OURS = {"et": "ET", "tc": "TC", "wt": "WT", "netc": "NETC", "snfh": "SNFH", "rc": "RC"}
_KEYS = {
    "tp": "tp",
    "fp": "fp",
    "fn": "fn",
    "prec": "lesion_precision",
    "rec": "lesion_recall",
    "rq": "lesion_f1",
    "sq_dsc": "lesion_dice",
    "sq_hd95": "lesion_hd95_mm",
}


@pytest.mark.parametrize("case", sorted(REFS["brats"]["cases"]))
def test_lesion_metrics_equal_brats_evaluation(cfg, case):
    ref_map, pred_map, spacing = _load_cases_module().cases()[case]
    brats_values = {"NETC": 1, "SNFH": 2, "ET": 3, "RC": 4}
    ours = {name: _v(cfg, name) for name in brats_values}
    lut = np.zeros(5, np.uint8)
    for name, value in brats_values.items():
        lut[value] = ours[name]
    gt, pred = lut[ref_map], lut[pred_map]  # the same maps in our prepared label values
    regions = M.region_values(cfg)
    for group, expected in REFS["brats"]["cases"][case].items():
        values = regions[_BRATS_TO_OURS[group]]
        got = M.lesion_metrics(np.isin(gt, values), np.isin(pred, values), spacing)
        for theirs, key in _KEYS.items():
            want = _ref_value(expected[theirs])
            assert got[key] == pytest.approx(want, rel=1e-9, nan_ok=True), (case, group, key)
