"""``gliomagen sample`` (mask validation, geometry, orientation) and checkpoint refusal (issue 13 items 2, 4).

Real networks (tiny), real checkpoints, real NIfTI files; the CLI is called in-process and must answer bad
input with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from gliomagen.cli import main
from gliomagen.config import Config, load_config
from gliomagen.diffusion.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    load_for_sampling,
    save_checkpoint,
)
from gliomagen.diffusion.network import build_model
from gliomagen.diffusion.orientation import from_orientation, sample_oriented, to_orientation

TINY = [
    "model.channels=[8, 8]",
    "model.num_res_blocks=1",
    "model.norm_num_groups=8",
    "model.num_head_channels=8",
    "data.target_shape=[16, 16, 16]",
    "diffusion.timesteps=20",
    "train.val_timesteps=[5, 15]",
    "generate.sampler=ddim",
    "generate.steps=2",
    "runtime.device=cpu",
]


def tiny(tmp_path: Path, *extra: str) -> Config:
    return load_config("smoke", [*TINY, *extra], run_dir=tmp_path / "run")


def write_checkpoint(cfg: Config, path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    state = build_model(cfg).state_dict()
    save_checkpoint(path, cfg, 3, model=state, ema={f"module.{k}": v for k, v in state.items()})
    return path


def head_mask(shape=(18, 20, 16), lesion: bool = True, head: bool = True) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    c = (np.array(shape) - 1) / 2
    r = np.array(shape) * 0.34
    mask = np.zeros(shape, np.uint8)
    if head:
        mask[(((grid - c[:, None, None, None]) / r[:, None, None, None]) ** 2).sum(0) <= 1] = 1
    if lesion:
        d = ((grid - (c + [2, 0, 1])[:, None, None, None]) ** 2).sum(0)
        mask[d <= 7] = 3
        mask[d <= 2] = 4
        mask[d <= 0.6] = 2
    return mask


def save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    if affine is None:
        affine = np.diag([-1.5, 1.5, 1.5, 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def cli(argv: list[str], cfg_items: list[str], tmp_path: Path) -> list[str]:
    out = [*argv, "--run-dir", str(tmp_path / "run")]
    for item in cfg_items:
        out += ["--set", item]
    return out


# ------------------------------------------------------------------------------------ mask validation
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown", r"label values \[7\] are not in the profile's label map \[0, 1, 2, 3, 4, 5\]"),
        ("4d", r"must be a 3D label map, got a 4D array of shape \(18, 20, 16, 2\)"),
        ("empty", r"the mask is empty"),
        ("no_head", r"does not cover a head \(no voxel of the head label 1\)"),
        ("tumour_only", r"does not cover a head"),
        ("fov", r"does not fit the model's field of view"),
        ("float", r"non-integer values"),
        ("missing", r"mask file does not exist"),
    ],
)
def test_bad_masks_are_clear_errors_with_exit_code_2(tmp_path: Path, capsys, case: str, message: str) -> None:
    mask = head_mask()
    path = tmp_path / f"{case}.nii.gz"
    if case == "unknown":
        mask[0, 0, 0] = 7
    elif case == "4d":
        mask = np.stack([mask, mask], axis=-1)
    elif case == "empty":
        mask[:] = 0
    elif case == "no_head":
        mask = head_mask(head=False)
    elif case == "tumour_only":  # a raw BraTS segmentation: tumour labels 1..3 around nothing
        raw = head_mask(head=False)
        mask = np.where(raw > 0, raw - 1, 0).astype(np.uint8)
    elif case == "fov":
        mask = np.ones((16, 16, 16), np.uint8)  # the head fills the grid up to its border
    elif case == "float":
        mask = mask.astype(np.float32) + 0.5
    if case != "missing":
        save(path, mask)
    ckpt = write_checkpoint(tiny(tmp_path), tmp_path / "c.pt")  # the field of view is checked on its grid
    argv = ["sample", "--mask", str(path), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]
    code = main(cli(argv, TINY, tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert str(path) in err
    import re

    assert re.search(message, err), err


# ------------------------------------------------------------------------------ geometry and orientation
def test_sample_writes_the_masks_own_grid_and_affine(tmp_path: Path) -> None:
    cfg = tiny(tmp_path)
    ckpt = write_checkpoint(cfg, tmp_path / "c.pt")
    mask = head_mask()
    affine = np.array([[0, 0, 1.5, -10], [-1.5, 0, 0, 12], [0, 1.5, 0, -8], [0, 0, 0, 1]])  # permuted axes
    path = save(tmp_path / "BraTS-GLI-00001-000-seg.nii.gz", mask, affine)
    out = tmp_path / "out"
    code = main(
        cli(["sample", "--mask", str(path), "--checkpoint", str(ckpt), "--out", str(out)], TINY, tmp_path)
    )
    assert code == 0
    for m in ("t1n", "t1c", "t2w", "t2f", "seg"):
        img = nib.load(str(out / f"BraTS-GLI-00001-000-{m}.nii.gz"))
        assert img.shape == mask.shape
        np.testing.assert_allclose(img.affine, affine)
    prov = json.loads((out / "BraTS-GLI-00001-000-provenance.json").read_text())
    assert prov["input_orientation"] is None and prov["model_grid_shape"] == [16, 16, 16]


def test_sample_oriented_feeds_ras_arrays_and_returns_the_masks_voxel_order() -> None:
    mask = head_mask((10, 12, 8))
    affine = np.array([[-2.0, 0, 0, 30], [0, 0, 2.0, -40], [0, -2.0, 0, 20], [0, 0, 0, 1]])  # L, S, P
    seen: list[np.ndarray] = []

    def fake_sample_batch(setup, masks, seeds):
        seen.append(masks.copy())
        images = np.stack([np.stack([m.astype(np.float32) * (c + 1) for c in range(4)]) for m in masks])
        return images, 0.0

    class Setup:
        input_orientation = "RAS"

    images, _ = sample_oriented(fake_sample_batch, Setup(), mask[None], [affine], [0])
    canonical = nib.as_closest_canonical(nib.Nifti1Image(mask, affine))  # the original's reorientation
    np.testing.assert_array_equal(seen[0][0], np.asarray(canonical.dataobj))
    assert nib.aff2axcodes(canonical.affine) == ("R", "A", "S")
    for c in range(4):
        np.testing.assert_array_equal(images[0, c], mask * (c + 1))  # back in the mask's own voxel order
    moved, moved_affine = to_orientation(mask, affine, "RAS")
    np.testing.assert_allclose(moved_affine, canonical.affine)
    np.testing.assert_array_equal(from_orientation(moved, affine, "RAS"), mask)
    Setup.input_orientation = None  # weights trained here: arrays as stored
    sample_oriented(fake_sample_batch, Setup(), mask[None], [affine], [0])
    np.testing.assert_array_equal(seen[1][0], mask)


# ------------------------------------------------------------------------------------ checkpoint refusal
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused_without_running(tmp_path: Path, capsys) -> None:
    cfg = tiny(tmp_path)
    marker = tmp_path / "marker"
    forged = tmp_path / "best.pt"
    torch.save({"format": "gliomagen-diffusion-v1", "ema": _Payload(marker)}, forged)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_for_sampling(cfg, forged)
    assert (
        str(info.value)
        == f"refused to load {forged}: it contains objects other than tensors (possibly unsafe)"
    )
    mask = save(tmp_path / "m.nii.gz", head_mask())
    argv = ["sample", "--mask", str(mask), "--checkpoint", str(forged), "--out", str(tmp_path / "o")]
    code = main(cli(argv, TINY, tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "possibly unsafe" in err and str(forged) in err
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ("data.target_shape=[32, 32, 32]", "target_shape: checkpoint [16, 16, 16] vs config [32, 32, 32]"),
        ("model.mask_encoding=compact", "model.mask_encoding: checkpoint 'paper' vs config 'compact'"),
        ("model.upsample_mode=trilinear", "model.upsample_mode: checkpoint 'nearest' vs config 'trilinear'"),
        ("diffusion.timesteps=30", "diffusion.timesteps: checkpoint 20 vs config 30"),
        (
            "data.labels=[{name: background, source: 0, value: 0, tumour: false}, "
            "{name: head, source: null, value: 1, tumour: false}, {name: lesion, source: 1, value: 2}]",
            "labels",
        ),
    ],
)
def test_checkpoint_of_another_model_config_is_refused_naming_the_keys(
    tmp_path: Path, change: str, key: str
) -> None:
    ckpt = write_checkpoint(tiny(tmp_path), tmp_path / "c.pt")
    other = tiny(tmp_path, change)
    with pytest.raises(CheckpointError) as info:
        load_for_sampling(other, ckpt)
    message = str(info.value)
    assert str(ckpt) in message and key in message and "allow_config_mismatch" in message
    assert "\n" not in message  # one line


def test_mismatch_can_be_overridden_explicitly(tmp_path: Path, capsys) -> None:
    ckpt = write_checkpoint(tiny(tmp_path), tmp_path / "c.pt")
    other = tiny(tmp_path, "data.target_shape=[32, 32, 32]", "generate.allow_config_mismatch=true")
    model, meta = load_for_sampling(other, ckpt)  # the network is the same: usable at another shape
    assert not model.training and meta["step"] == 3
    mask = save(tmp_path / "m.nii.gz", head_mask())
    argv = ["sample", "--mask", str(mask), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]
    assert main(cli(argv, [*TINY, "data.target_shape=[32, 32, 32]"], tmp_path)) == 2
    err = capsys.readouterr().err
    assert "target_shape" in err and str(ckpt) in err and "Traceback" not in err
    items = [*TINY, "data.target_shape=[32, 32, 32]", "generate.allow_config_mismatch=true"]
    assert main(cli(argv, items, tmp_path)) == 0


def test_older_checkpoints_without_the_new_keys_still_load(tmp_path: Path) -> None:
    cfg = tiny(tmp_path)
    path = write_checkpoint(cfg, tmp_path / "old.pt")
    ckpt = torch.load(path, weights_only=True)
    saved = json.loads(ckpt["model_config"])
    for key in ("upsample_mode", "time_embed_max_period", "zero_init_attention_out"):
        del saved["model"][key]
    del saved["target_shape"]
    ckpt["model_config"] = json.dumps(saved)
    torch.save(ckpt, path)
    load_for_sampling(cfg, path)  # absent options = MONAI's defaults, shape from the training config
    with pytest.raises(CheckpointError, match="model.upsample_mode"):
        load_for_sampling(tiny(tmp_path, "model.upsample_mode=trilinear"), path)


def test_truncated_and_foreign_files_are_clear(tmp_path: Path) -> None:
    cfg = tiny(tmp_path)
    path = write_checkpoint(cfg, tmp_path / "c.pt")
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"c\.pt cannot be read .*truncated, corrupted"):
        load_for_sampling(cfg, path)
    original = tmp_path / "model-98.pt"
    torch.save({"step": 1, "model": {}, "ema": {}}, original)
    with pytest.raises(CheckpointError, match="convert it with `gliomagen import-weights`"):
        load_for_sampling(cfg, original)
