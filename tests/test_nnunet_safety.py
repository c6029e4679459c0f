"""No nnU-Net checkpoint can run code: malicious pickles, forged files and tampered records are refused.

The payload of the malicious checkpoints writes a marker file; every test checks that it never appears.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gliomagen.segmentation.checkpoints import (
    SHA_SUFFIX,
    CheckpointRefused,
    guarded_torch_load,
    load_checkpoint_safely,
    record_checkpoint,
)


class _Payload:
    """Pickles as a call of ``os.system`` (what a forged checkpoint would contain)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    """A ``.pth`` that looks like nnU-Net's but runs ``touch marker`` when unpickled without weights_only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network_weights": {}, "trainer_name": "nnUNetTrainer", "x": _Payload(marker)}, path)
    return path


def nnunet_like_checkpoint(path: Path) -> dict:
    """The structure nnU-Net 2.8's ``save_checkpoint`` writes (numpy scalars in the logger, a torch.device)."""
    ckpt = {
        "network_weights": {"conv.weight": torch.randn(4, 2, 3, 3, 3)},
        "optimizer_state": {
            "state": {0: {"momentum_buffer": torch.zeros(3)}},
            "param_groups": [{"lr": 0.01}],
        },
        "grad_scaler_state": None,
        "logging": {
            "mean_fg_dice": [np.float32(0.5), np.float64(0.25)],
            "ema_fg_dice": [np.float32(0.5)],
            "dice_per_class_or_region": [[np.float32(0.1), np.float32(0.2)]],
            "train_losses": [np.float32(-0.3)],
            "lrs": [0.01],
            "epoch_start_timestamps": [1.0],
        },
        "_best_ema": np.float32(0.12),
        "current_epoch": 3,
        "init_args": {
            "plans": {"a": 1},
            "configuration": "3d_fullres",
            "fold": "all",
            "device": torch.device("cpu"),
        },
        "trainer_name": "nnUNetTrainerGliomaGen",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return ckpt


def test_a_real_nnunet_structure_loads(tmp_path: Path) -> None:
    path = tmp_path / "fold_all" / "checkpoint_final.pth"
    saved = nnunet_like_checkpoint(path)
    record_checkpoint(path)
    loaded = load_checkpoint_safely(path, "cpu")
    assert loaded["current_epoch"] == 3 and loaded["_best_ema"] == saved["_best_ema"]
    assert torch.equal(loaded["network_weights"]["conv.weight"], saved["network_weights"]["conv.weight"])
    assert loaded["init_args"]["device"] == torch.device("cpu")


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = malicious_checkpoint(tmp_path / "fold_all" / "checkpoint_final.pth", marker)
    with pytest.raises(
        CheckpointRefused, match=f"refused to load {path}: it contains objects other than tensors"
    ):
        load_checkpoint_safely(path)
    assert not marker.exists()


def test_nnunet_predictor_goes_through_the_guard(tmp_path: Path) -> None:
    """nnU-Net's own loading code (weights_only=False inside) is refused under the worker's guard."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    marker = tmp_path / "PWNED"
    model = tmp_path / "model"
    malicious_checkpoint(model / "fold_all" / "checkpoint_final.pth", marker)
    (model / "dataset.json").write_text("{}")
    (model / "plans.json").write_text("{}")
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    with (
        guarded_torch_load(),
        pytest.raises(CheckpointRefused, match="checkpoint_final.pth: it contains objects"),
    ):
        predictor.initialize_from_trained_model_folder(str(model), ("all",), "checkpoint_final.pth")
    assert not marker.exists()
    assert torch.load is torch.serialization.load  # the guard is undone after the block


def test_a_file_that_differs_from_its_record_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_latest.pth"
    nnunet_like_checkpoint(path)
    record_checkpoint(path)
    old = path.read_bytes()
    nnunet_like_checkpoint(path)  # replaced by another (harmless) checkpoint: not the one gliomagen wrote
    assert path.read_bytes() != old
    with pytest.raises(CheckpointRefused, match="differs from the one gliomagen recorded"):
        load_checkpoint_safely(path)
    # the record keeps the previous hash: a kill between record and rename leaves the old file, still valid
    record_checkpoint(path)
    path.write_bytes(old)
    load_checkpoint_safely(path)
    assert (tmp_path / f"checkpoint_latest.pth{SHA_SUFFIX}").is_file()


def test_truncated_checkpoint_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_latest.pth"
    nnunet_like_checkpoint(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointRefused, match=f"refused to load {path}: it cannot be read"):
        load_checkpoint_safely(path)


@pytest.mark.slow
def test_segment_cli_refuses_a_forged_checkpoint_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gliomagen segment` predicting with a forged checkpoint_final.pth: exit 2, one line, no code run."""
    from seg_toy import make_toy_run

    from gliomagen.cli import main
    from gliomagen.config import load_config
    from gliomagen.segmentation.export import export_dataset, plan_configuration
    from gliomagen.segmentation.nnunet import model_dir

    overrides = ["segment.configurations=[{name: real_only}]"]
    cfg = load_config("smoke", overrides, run_dir=tmp_path / "run")
    make_toy_run(cfg, n_train_patients=2, timepoints=1, n_val_patients=1, n_synthetic=2, shape=(16, 16, 16))
    plan = plan_configuration(cfg, cfg.segment.configurations[0])
    export_dataset(cfg, plan)
    marker = tmp_path / "PWNED"
    folder = model_dir(cfg, plan)
    ckpt = malicious_checkpoint(folder / "fold_all" / "checkpoint_final.pth", marker)
    (folder / "dataset.json").write_text("{}")
    (folder / "plans.json").write_text("{}")
    # the CLI first checks that earlier stages have run; segment itself reads only prepared/ and synthetic/
    for done in (cfg.paths.checkpoints / "last.pt", cfg.paths.training / "train_log.csv",
                 cfg.paths.augmented / "manifest.csv", cfg.paths.synthetic / "manifest.csv"):  # fmt: skip
        done.parent.mkdir(parents=True, exist_ok=True)
        if not done.exists():
            done.touch()
    args = ["segment", "--run-dir", str(cfg.paths.root), "--skip-training"]
    assert main(args + [f"--set={o}" for o in overrides]) == 2
    err = capsys.readouterr().err
    assert f"refused to load {ckpt}: it contains objects other than tensors" in err
    assert "Traceback" not in err and not marker.exists()
