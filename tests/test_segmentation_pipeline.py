"""End to end with the real nnU-Net v2 (tiny: 16^3 volumes, one epoch of two iterations) and the CLI."""

from __future__ import annotations

import json

import nibabel as nib
import pandas as pd
import pytest
from seg_toy import make_toy_run

from gliomagen.cli import main
from gliomagen.config import ConfigError, load_config
from gliomagen.segmentation import export as E
from gliomagen.segmentation.nnunet import prediction_dir
from gliomagen.segmentation.pipeline import load_evaluation, segment

TINY = [
    "segment.configurations=[{name: real_only}, {name: hq2_only, real_fraction: 0.0, synthetic: 2,"
    " synthetic_pool: hq}]",
    "segment.hq_count=2",
    "segment.epochs=1",
    "segment.iterations_per_epoch=2",
    "segment.val_iterations_per_epoch=1",
    "segment.bootstrap=20",
]


def test_unknown_configuration_is_a_config_error(tmp_path):
    cfg = load_config("smoke", run_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown segmentation configuration 'nope'"):
        segment(cfg, configuration="nope")
    assert main(["segment", "--run-dir", str(tmp_path), "--configuration", "nope"]) == 2


@pytest.mark.slow
def test_segment_end_to_end_with_real_nnunet(tmp_path):
    cfg = load_config("smoke", TINY, run_dir=tmp_path / "run")
    ids = make_toy_run(
        cfg, n_train_patients=3, timepoints=2, n_val_patients=2, n_synthetic=4, shape=(16, 16, 16)
    )
    summary = segment(cfg)
    names = ["real_only", "hq2_only"]
    assert summary["evaluated"] == names and summary["missing"] == []
    assert summary["validation_cases"] == len(ids["val"])
    for name in names:
        for case in ids["val"]:
            pred = nib.load(str(prediction_dir(cfg, name) / f"{case}.nii.gz"))
            assert pred.shape == (16, 16, 16)
    ev = load_evaluation(cfg)
    assert list(ev.paper["configuration"]) == names
    assert ev.paper["Kappa"].between(-1, 1).all() and ev.paper["avg Dice"].between(0, 1).all()
    assert set(ev.corrected["region"]) == {"ET", "TC", "WT", "NETC", "SNFH", "RC"}
    assert len(ev.corrected_per_case) == 2 * len(ids["val"]) * 6
    assert set(ev.stats["configuration"]) == {"hq2_only"}
    for f in cfg.paths.metrics.glob("segmentation*.csv"):
        frame = pd.read_csv(f)
        assert "config_hash" in frame and (frame.empty or frame["config_hash"].iloc[0] == cfg.hash), f.name
    hq = pd.read_csv(cfg.paths.metrics / "segmentation_hq_scores.csv")
    assert len(hq) == 4 and hq["hq"].sum() == 2
    hq_plan = json.loads((cfg.paths.nnunet / "raw" / "Dataset502_GG_hq2_only" / E.EXPORT_MARKER).read_text())
    assert hq_plan["real_ids"] == [] and sorted(hq_plan["synthetic_ids"]) == sorted(hq.loc[hq["hq"], "id"])
    assert not set(hq_plan["synthetic_ids"]) & {f"{v}-a1" for v in ids["val"]}
    timing = json.loads((cfg.paths.metrics / "segmentation_timing.json").read_text())
    assert timing["real_only"]["trained"] is True
    # resumable: nothing is retrained or re-predicted
    again = segment(cfg)
    assert all(again["this_run"][n].get("skipped") for n in names)
    assert again["timing"]["real_only"]["trained"] is True  # the measured timing is kept
    assert again["paper_table"] == summary["paper_table"]
