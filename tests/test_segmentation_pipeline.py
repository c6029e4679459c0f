"""End to end with the real nnU-Net v2 (tiny: 16^3 volumes, one epoch of two iterations) and the CLI."""

from __future__ import annotations

import glob
import json

import nibabel as nib
import pandas as pd
import pytest
from seg_toy import make_toy_run

from gliomagen.cli import main
from gliomagen.config import ConfigError, load_config
from gliomagen.segmentation import export as E
from gliomagen.segmentation.nnunet import prediction_dir
from gliomagen.segmentation.outputs import SegmentationOutputs, read_hq_scores, read_timing
from gliomagen.segmentation.pipeline import SegmentResult, load_evaluation, segment

TINY = [
    "segment.configurations=[{name: real_only}, {name: hq2_only, real_fraction: 0.0, synthetic: 2,"
    " synthetic_pool: hq}, {name: real_2syn, synthetic: 2, synthetic_pool: all}]",
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
    names = ["real_only", "hq2_only", "real_2syn"]
    assert isinstance(summary, SegmentResult)
    assert list(summary.evaluated) == names and list(summary.missing) == []
    assert summary.validation_cases == len(ids["val"])
    out = SegmentationOutputs(cfg.paths)
    for pattern in out.declared():  # every file the stage promises is there after a complete run
        assert glob.glob(str(pattern)), pattern
    assert all(p.is_file() for p in out.markers())
    for name in names:
        for case in ids["val"]:
            pred = nib.load(str(prediction_dir(cfg, name) / f"{case}.nii.gz"))
            assert pred.shape == (16, 16, 16)
    ev = load_evaluation(cfg)
    assert list(ev.paper["configuration"]) == names
    assert ev.paper["Kappa"].between(-1, 1).all() and ev.paper["avg Dice"].between(0, 1).all()
    assert set(ev.corrected["region"]) == {"ET", "TC", "WT", "NETC", "SNFH", "RC"}
    assert len(ev.corrected_per_case) == 3 * len(ids["val"]) * 6
    assert set(ev.stats["configuration"]) == {"hq2_only", "real_2syn"}
    for f in cfg.paths.metrics.glob("segmentation*.csv"):
        frame = pd.read_csv(f)
        assert "config_hash" in frame and (frame.empty or frame["config_hash"].iloc[0] == cfg.hash), f.name
    hq = read_hq_scores(out)
    assert len(hq) == 4 and hq["hq"].sum() == 2
    hq_plan = json.loads((cfg.paths.nnunet / "raw" / "Dataset502_GG_hq2_only" / E.EXPORT_MARKER).read_text())
    assert hq_plan["real_ids"] == [] and sorted(hq_plan["synthetic_ids"]) == sorted(hq.loc[hq["hq"], "id"])
    assert not set(hq_plan["synthetic_ids"]) & {f"{v}-a1" for v in ids["val"]}
    timing = read_timing(out)
    assert timing["real_only"]["trained"] is True
    # the baseline (plan source, HQ scorer) ran alone; the other two together (smoke: 2 at a time)
    assert timing["real_only"]["concurrent_with"] == []
    assert timing["hq2_only"]["concurrent_with"] == ["real_2syn"]
    assert timing["real_2syn"]["concurrent_with"] == ["hq2_only"]
    # resumable: nothing is retrained or re-predicted
    again = segment(cfg)
    assert all(again.this_run[n].get("skipped") for n in names)
    assert again.timing["real_only"]["trained"] is True  # the measured timing is kept
    assert again.paper_table.equals(summary.paper_table)


def _worker_pids(root: object) -> list[int]:
    """PIDs of running nnU-Net worker processes (python -m gliomagen.segmentation.worker) of run folder
    ``root`` (their job file lies in it; other runs on the machine are not this test's)."""
    from pathlib import Path

    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if (
                b"gliomagen.segmentation.worker" in cmd
                and str(root).encode() in b" ".join(cmd)
                and state != "Z"
            ):
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_killed_segment_leaves_no_worker_and_training_resumes(tmp_path, capsys):
    """Kill -9 `gliomagen segment` mid-training: its nnU-Net worker dies too, a concurrent run is refused
    while it ran, and the rerun continues from checkpoint_latest.pth (loaded safely), not from epoch 0."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    from gliomagen.locks import is_locked
    from gliomagen.segmentation.nnunet import SHA_SUFFIX, load_checkpoint_safely, model_dir, verify_checkpoint

    overrides = [
        "segment.configurations=[{name: real_only}]",
        "segment.epochs=4",
        "segment.iterations_per_epoch=2",
        "segment.val_iterations_per_epoch=1",
        "segment.checkpoint_every=1",
        "segment.bootstrap=20",
    ]
    cfg = load_config("smoke", overrides, run_dir=tmp_path / "run")
    make_toy_run(cfg, n_train_patients=3, timepoints=2, n_val_patients=2, n_synthetic=2, shape=(16, 16, 16))
    for done in (
        cfg.paths.checkpoints / "last.pt",
        cfg.paths.training / "train_log.csv",
        cfg.paths.augmented / "manifest.csv",
    ):  # fmt: skip -- stand-ins for the CLI's stage check
        done.parent.mkdir(parents=True, exist_ok=True)
        done.touch()
    args = ["segment", "--run-dir", str(cfg.paths.root), *[f"--set={o}" for o in overrides]]
    fold = model_dir(cfg, E.plan_configuration(cfg, cfg.segment.configurations[0])) / "fold_all"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gliomagen.cli", *args], env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    try:
        deadline = time.monotonic() + 600
        while not (fold / "checkpoint_latest.pth").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint_latest.pth appeared"
            time.sleep(0.05)
        workers = _worker_pids(cfg.paths.root)
        assert workers
        assert main(args) == 2  # a second run on the same folder is refused while the first runs
        assert "is busy: 'segment-real_only' is running in pid" in capsys.readouterr().err
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while set(workers) & set(_worker_pids(cfg.paths.root)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not set(workers) & set(_worker_pids(cfg.paths.root)), (
            "the nnU-Net worker outlived its killed parent"
        )
    finally:
        proc.kill()
    assert not (fold / "checkpoint_final.pth").exists()
    assert is_locked(cfg.paths.root, "segment-real_only") is None  # released by the kernel
    assert main(args) == 0  # the rerun
    log_text = (cfg.paths.logs / "nnunet_real_only.log").read_text()
    last_run = log_text.rsplit("===== ", 1)[1]
    resumed = re.search(r"resuming real_only from .*checkpoint_latest.pth at epoch (\d+)", last_run)
    assert resumed and 1 <= int(resumed.group(1)) < 4, last_run[-2000:]
    epochs = [int(e) for e in re.findall(r"^.*Epoch (\d+)\s*$", last_run, re.MULTILINE)]
    assert epochs and min(epochs) == int(resumed.group(1)) and max(epochs) == 3, epochs
    final = fold / "checkpoint_final.pth"
    assert verify_checkpoint(final) and (fold / f"checkpoint_final.pth{SHA_SUFFIX}").is_file()
    assert load_checkpoint_safely(final)["current_epoch"] == 4
