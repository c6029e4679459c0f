"""The mask-following measures (lesion contrast, Pearson r in the head, head/background) on known volumes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gliomagen.config import MODALITIES
from gliomagen.fidelity.conditioning import (
    conditioning_table,
    contrast_error,
    floor_partner,
    goals_failed,
    head_background_ratio,
    lesion_contrast,
    pearson_in,
    summarise,
)

TUMOUR = [2, 3, 4, 5]


def _toy(seed: int, lesion: float = 1.6) -> tuple[np.ndarray, np.ndarray]:
    """A 4-modality cube: head 0.5 (+ texture), a bright lesion in t2w/t2f, background 0.01."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((12, 12, 12), np.uint8)
    mask[2:10, 2:10, 2:10] = 1
    mask[4:7, 4:7, 4:7] = 3
    image = np.full((4, *mask.shape), 0.01, np.float32)
    for k, m in enumerate(MODALITIES):
        head = 0.5 + 0.1 * rng.standard_normal(mask.shape)
        image[k][mask > 0] = head[mask > 0]
        if m in ("t2w", "t2f"):
            image[k][mask == 3] *= lesion
    return image, mask


def test_ratios_match_their_definitions() -> None:
    image, mask = _toy(0)
    k = MODALITIES.index("t2f")
    tumour, rest = mask == 3, mask == 1
    assert lesion_contrast(image[k], mask, TUMOUR) == pytest.approx(
        image[k][tumour].mean() / image[k][rest].mean()
    )
    assert head_background_ratio(image[k], mask) == pytest.approx(image[k][mask > 0].mean() / 0.01, rel=1e-5)
    assert np.isnan(lesion_contrast(image[k], (mask > 0).astype(np.uint8), TUMOUR))  # no tumour
    assert head_background_ratio(np.where(mask > 0, 1.0, 0.0), mask) == float("inf")


def test_pearson_agrees_with_scipy_inside_the_region() -> None:
    a, mask = _toy(1)
    b, _ = _toy(2)
    region = mask > 0
    assert pearson_in(a[0], b[0], region) == pytest.approx(stats.pearsonr(a[0][region], b[0][region])[0])
    assert np.isnan(pearson_in(a[0], np.zeros_like(a[0]), region))


def test_contrast_error_is_relative_to_the_real_departure_from_one() -> None:
    assert contrast_error(1.6, 1.6) == 0.0
    assert contrast_error(1.0, 1.6) == pytest.approx(1.0)  # no lesion at all
    assert contrast_error(1.48, 1.6) == pytest.approx(0.2)
    assert np.isnan(contrast_error(1.2, 1.0))  # the real case shows no contrast: undefined


def test_table_and_goals_separate_a_good_from_a_maskless_generator() -> None:
    cases = [_toy(s) for s in range(3)]
    good = [(f"c{i}", img, img * 0.9 + 0.01 * _toy(10 + i)[0], m) for i, (img, m) in enumerate(cases)]
    table = conditioning_table(good, TUMOUR)
    assert list(table["modality"].unique()) == list(MODALITIES) and len(table) == 12
    assert not table["pearson_r_real_floor"].isna().any()
    assert goals_failed(summarise(table)) == []
    # noise everywhere, background as bright as the head: every goal must fail
    rng = np.random.default_rng(0)
    noise = [(cid, real, rng.uniform(0, 1, real.shape).astype(np.float32), m) for cid, real, _, m in good]
    failed = goals_failed(summarise(conditioning_table(noise, TUMOUR)))
    assert any("t2f: median lesion-contrast" in f for f in failed)
    assert any("t1n: median Pearson r" in f for f in failed)
    assert any("head/background" in f for f in failed)
    assert isinstance(summarise(table), pd.DataFrame)


def test_the_floor_pairs_each_case_with_another_patient() -> None:
    ids = ["BraTS-GLI-00005-000", "BraTS-GLI-00008-000", "BraTS-GLI-00008-001", "BraTS-GLI-00009-000"]
    # 00008-000's next case is the same patient's later scan: skipped for 00009
    assert [floor_partner(ids, i) for i in range(4)] == [1, 3, 3, 0]
    assert floor_partner(["BraTS-GLI-00001-000", "BraTS-GLI-00001-001"], 0) == 1  # one patient: no choice
    assert floor_partner(ids[:1], 0) is None


def test_template_reference_and_the_goal_of_beating_it() -> None:
    cases = [_toy(s) for s in range(3)]
    template = np.mean([img for img, _ in cases], axis=0)
    k = MODALITIES.index("t2w")
    # a generator that returns the template: r equals the template reference, so it is not above it
    echo = [(f"c{i}", img, template, m) for i, (img, m) in enumerate(cases)]
    table = conditioning_table(echo, TUMOUR, template)
    assert np.allclose(table["pearson_r"], table["pearson_r_template"])
    expected = pearson_in(cases[0][0][k], template[k], cases[0][1] > 0)
    assert table.set_index(["case_id", "modality"]).loc[("c0", "t2w"), "pearson_r_template"] == pytest.approx(
        expected
    )
    summary = summarise(table)
    assert not summary["pearson_above_references"].any()
    assert any("not above the anatomy-blind references" in f for f in goals_failed(summary))
    # a generator close to each real case is above both references
    good = [(f"c{i}", img, img * 0.9 + 0.01 * _toy(10 + i)[0], m) for i, (img, m) in enumerate(cases)]
    assert summarise(conditioning_table(good, TUMOUR, template))["pearson_above_references"].all()
    # without a template the column is nan and only the floor is compared
    assert conditioning_table(good, TUMOUR)["pearson_r_template"].isna().all()
