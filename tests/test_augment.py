"""Mask augmentation: geometry against hand-computed references, discard rules, determinism, resume."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from prepared_run import write_prepared_run

from gliomagen.augment.outputs import read_manifest, read_summary
from gliomagen.augment.recipe import augment_mask
from gliomagen.augment.stage import augment
from gliomagen.augment.transforms import flip_lr, resample_about_centre, touches_border
from gliomagen.cases import Case
from gliomagen.cli import main
from gliomagen.config import Config, load_config
from gliomagen.data.geometry import world_axis
from gliomagen.locks import LockHeld

SHAPE = (17, 21, 17)  # odd sides: the volume centre is a voxel centre
CENTRE = (np.array(SHAPE) - 1) / 2


def ras_affine(spacing: float = 2.0) -> np.ndarray:
    """RAS+ affine whose volume centre sits at world (0, 0, 0)."""
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = -spacing * CENTRE
    return aff


def ball(centre: np.ndarray, radius: float, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    return ((grid - np.asarray(centre, float)[:, None, None, None]) ** 2).sum(0) <= radius**2


def phantom_mask(lesion_offset: int = -4, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """Head ellipsoid (label 1) with a lesion on one side of array axis 0: SNFH 3, ET 4, NETC 2."""
    c = (np.array(shape) - 1) / 2
    grid = np.indices(shape).astype(float)
    head = (((grid - c[:, None, None, None]) / np.array([6.5, 8.5, 6.5])[:, None, None, None]) ** 2).sum(
        0
    ) <= 1
    mask = head.astype(np.uint8)
    p = c + np.array([lesion_offset, 0, 0])
    mask[ball(p, 2.6, shape)] = 3
    mask[ball(p, 1.5, shape)] = 4
    mask[ball(p, 0.5, shape)] = 2
    return mask


def make_run(tmp_path: Path, masks: dict[str, np.ndarray], overrides: list[str] | None = None) -> Config:
    """A run folder with prepared training cases (prepared layout + cases.csv) holding these masks."""
    cfg = load_config("smoke", overrides or [], run_dir=tmp_path / "run")
    write_prepared_run(
        cfg.paths,
        [
            ("train", Case(case_id, np.stack([mask.astype(np.float32) / 5.0] * 4), mask, ras_affine()))
            for case_id, mask in masks.items()
        ],
    )
    return cfg


@contextlib.contextmanager
def lock_held_elsewhere(root: Path, key: str) -> Iterator[None]:
    """Another process holds the run folder's lock ``key`` for the duration of the block."""
    code = (
        "import sys, time\nfrom gliomagen.locks import run_lock\n"
        "with run_lock(sys.argv[1], sys.argv[2]):\n    print('held', flush=True)\n    time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(root), key], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


def world_centroid(mask: np.ndarray, affine: np.ndarray, values: list[int]) -> np.ndarray:
    idx = np.argwhere(np.isin(mask, values)).mean(axis=0)
    return affine[:3, :3] @ idx + affine[:3, 3]


# --------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize(
    ("linear", "axis"),
    [
        (np.diag([2.0, 2.0, 2.0]), 0),  # RAS
        (np.diag([-1.0, -1.0, 1.0]), 0),  # LPS storage
        (np.array([[0, 1.0, 0], [-1.0, 0, 0], [0, 0, 1.0]]), 1),  # array axis 1 runs left-right
        (np.array([[0, 0, -1.5], [1.5, 0, 0], [0, 1.5, 0]]), 2),  # array axis 2 runs left-right
    ],
)
def test_lr_axis_is_read_from_the_affine(linear: np.ndarray, axis: int) -> None:
    aff = np.eye(4)
    aff[:3, :3] = linear
    assert world_axis(aff, "left-right") == axis


@pytest.mark.parametrize("permuted", [False, True])
def test_flip_moves_lesion_to_other_hemisphere_in_world(permuted: bool) -> None:
    mask = phantom_mask(lesion_offset=-4)  # lesion at array axis 0 index 4 (centre 8)
    aff = ras_affine()
    if permuted:  # store the same anatomy with world x on array axis 1, reversed (x = -2 j + ...)
        mask = np.ascontiguousarray(np.transpose(mask, (1, 0, 2)))
        aff = np.zeros((4, 4))
        aff[0, 1], aff[1, 0], aff[2, 2], aff[3, 3] = -2.0, 2.0, 2.0, 1.0
        centre = (np.array(mask.shape) - 1) / 2
        aff[:3, 3] = -aff[:3, :3] @ centre
    before = world_centroid(mask, aff, [2, 3, 4])
    after = world_centroid(flip_lr(mask, aff), aff, [2, 3, 4])
    assert abs(before[0]) == pytest.approx(8.0)  # 4 voxels x 2 mm from the mid-sagittal plane x = 0
    assert after[0] == pytest.approx(-before[0])  # other hemisphere, same distance
    np.testing.assert_allclose(after[1:], before[1:])  # y and z unchanged


def test_flip_keeps_affine_through_augment_mask(tmp_path: Path) -> None:
    cfg = load_config("smoke", ["augment.flip_p=1.0", "augment.scale_range=[1.0, 1.0]"], run_dir=tmp_path)
    mask = phantom_mask()
    out, res = augment_mask(mask, ras_affine(), "BraTS-GLI-00001-000", 1, cfg)
    assert res.flipped and res.status == "accepted" and res.lr_axis == 0
    np.testing.assert_array_equal(out, mask[::-1])  # scale 1 is the identity


def test_scale_is_nearest_neighbour_about_the_centre() -> None:
    # independent reference: gather input voxel round(c + (o - c) / s) for every output voxel o
    mask = phantom_mask()
    s = 1.25
    grid = np.indices(SHAPE).astype(float)
    src = np.rint(CENTRE[:, None, None, None] + (grid - CENTRE[:, None, None, None]) / s).astype(int)
    inside = np.all((src >= 0) & (src < np.array(SHAPE)[:, None, None, None]), axis=0)
    ref = np.zeros_like(mask)
    ref[inside] = mask[tuple(src[:, inside])]
    got = resample_about_centre(mask, ras_affine(), s)
    # rounding of exact .5 coordinates may differ: allow a tiny disagreement
    assert (got != ref).mean() < 0.005
    assert set(np.unique(got)) == set(np.unique(mask))
    # the lesion moves away from the centre by the factor s
    off_before = world_centroid(mask, ras_affine(), [2, 3, 4])[0]
    off_after = world_centroid(got, ras_affine(), [2, 3, 4])[0]
    assert off_after == pytest.approx(s * off_before, abs=1.0)


def test_scale_one_is_identity_even_with_anisotropic_voxels() -> None:
    aff = np.diag([1.0, 2.0, 3.0, 1.0])
    mask = phantom_mask()
    np.testing.assert_array_equal(resample_about_centre(mask, aff, 1.0), mask)


def test_touches_border() -> None:
    m = np.zeros((5, 5, 5), np.uint8)
    m[2, 2, 2] = 1
    assert not touches_border(m)
    m[2, 4, 2] = 1
    assert touches_border(m)


# ------------------------------------------------------------------------------------------ discarding
def test_head_leaving_the_volume_is_retried_then_discarded(tmp_path: Path) -> None:
    cfg = load_config("smoke", ["augment.scale_range=[1.5, 1.6]", "augment.max_retries=3"], run_dir=tmp_path)
    out, res = augment_mask(phantom_mask(), ras_affine(), "BraTS-GLI-00001-000", 1, cfg)
    assert out is None and res.status == "discarded" and res.attempts == 3
    assert res.reason.startswith("head_outside_volume")


def test_vanishing_label_is_discarded_and_named(tmp_path: Path) -> None:
    # one NETC voxel at an odd offset from the centre: at scale 0.5 no output voxel reads it
    mask = phantom_mask()
    mask[mask == 2] = 4
    mask[int(CENTRE[0]) - 3, int(CENTRE[1]), int(CENTRE[2])] = 2
    cfg = load_config("smoke", ["augment.scale_range=[0.5, 0.5]", "augment.flip_p=0"], run_dir=tmp_path)
    out, res = augment_mask(mask, ras_affine(), "BraTS-GLI-00001-000", 1, cfg)
    assert out is None and res.reason == "label_lost: NETC" and res.attempts == 1
    assert res.voxels["voxels_NETC_source"] == 1 and res.voxels["voxels_NETC_aug"] == 0


def test_discarded_are_exactly_those_that_lost_a_label_or_left_the_volume(tmp_path: Path) -> None:
    # wide scale range and a big head near the border: both discard reasons and acceptances happen
    masks = {
        f"BraTS-GLI-{i:05d}-000": phantom_mask(lesion_offset=o) for i, o in enumerate([-4, -3, 3, 4, -2, 2])
    }
    masks["BraTS-GLI-00009-000"] = np.pad(np.ones((13, 17, 13), np.uint8), 2)
    masks["BraTS-GLI-00009-000"][8, 10, 8] = 2  # a single-voxel label at the centre survives any scale
    masks["BraTS-GLI-00009-000"][5, 10, 8] = 3  # a single voxel that shrinking can drop
    cfg = make_run(
        tmp_path, masks, ["augment.scale_range=[0.6, 1.5]", "augment.max_retries=2", "augment.rounds=4"]
    )
    summary = augment(cfg, progress=False)
    frame = read_manifest(cfg)
    assert summary.tried == len(frame) == 4 * len(masks)
    assert 0 < summary.accepted < summary.tried
    assert read_summary(cfg) == summary
    reasons = set(frame.loc[frame.status == "discarded", "reason"].str.split(":").str[0])
    assert reasons == {"head_outside_volume", "label_lost"}
    for _, row in frame.iterrows():  # recompute each try's last attempt independently
        src = masks[row.source_id]
        base = src[::-1] if row.flipped else src
        aug = resample_about_centre(base, ras_affine(), float(row.scale))
        left = touches_border(aug)
        lost = bool(set(np.unique(src)) - set(np.unique(aug)))
        assert (row.status == "discarded") == (left or lost), row.aug_id
        path = cfg.paths.augmented / row.aug_id / f"{row.aug_id}-seg.nii.gz"
        assert path.is_file() == (row.status == "accepted")
        if row.status == "accepted":
            img = nib.load(str(path))
            np.testing.assert_array_equal(np.asarray(img.dataobj), aug)
            np.testing.assert_allclose(img.affine, ras_affine())
            assert not touches_border(np.asarray(img.dataobj))


def test_unreadable_source_does_not_stop_the_others(tmp_path: Path) -> None:
    bad = phantom_mask()
    bad[8, 10, 8] = 9  # not in data.labels
    cfg = make_run(tmp_path, {"BraTS-GLI-00001-000": phantom_mask(), "BraTS-GLI-00002-000": bad})
    augment(cfg, progress=False)
    frame = read_manifest(cfg).set_index("aug_id")
    assert (frame.loc[["BraTS-GLI-00001-000-a1", "BraTS-GLI-00001-000-a2"], "status"] == "accepted").all()
    reason = frame.loc["BraTS-GLI-00002-000-a1", "reason"]
    assert (
        reason.startswith("unreadable_source")
        and "BraTS-GLI-00002-000-seg.nii.gz" in reason
        and "[9]" in reason
    )


# ---------------------------------------------------------------------------------- determinism/resume
def test_same_source_and_round_give_the_same_mask_different_rounds_differ(tmp_path: Path) -> None:
    cfg = load_config("smoke", ["augment.scale_range=[0.9, 1.1]"], run_dir=tmp_path)
    mask = phantom_mask()
    a1, r1 = augment_mask(mask, ras_affine(), "BraTS-GLI-00001-000", 1, cfg)
    a1b, r1b = augment_mask(mask, ras_affine(), "BraTS-GLI-00001-000", 1, cfg)
    _, r2 = augment_mask(mask, ras_affine(), "BraTS-GLI-00001-000", 2, cfg)
    np.testing.assert_array_equal(a1, a1b)
    assert r1.row() == r1b.row() and r1.scale != r2.scale


def test_resume_and_workers_give_the_same_result_as_one_run(tmp_path: Path) -> None:
    masks = {f"BraTS-GLI-{i:05d}-001": phantom_mask(lesion_offset=o) for i, o in enumerate([-4, 3, 2])}
    full = make_run(tmp_path / "a", masks)
    augment(full, progress=False)
    resumed = make_run(tmp_path / "b", masks, ["runtime.workers=2"])
    augment(resumed, limit=1, progress=False)
    assert len(read_manifest(resumed)) == 2
    partial = read_manifest(resumed)
    done = [
        resumed.paths.augmented / a / f"{a}-seg.nii.gz" for a in partial.aug_id[partial.status == "accepted"]
    ]
    assert done
    mtimes = [p.stat().st_mtime_ns for p in done]
    augment(resumed, progress=False)
    assert [p.stat().st_mtime_ns for p in done] == mtimes  # finished work is skipped, not redone
    a, b = read_manifest(full), read_manifest(resumed)
    pd.testing.assert_frame_equal(a, b)
    for aug_id in a.loc[a.status == "accepted", "aug_id"]:
        rel = Path(aug_id) / f"{aug_id}-seg.nii.gz"
        np.testing.assert_array_equal(
            np.asarray(nib.load(str(full.paths.augmented / rel)).dataobj),
            np.asarray(nib.load(str(resumed.paths.augmented / rel)).dataobj),
        )


# -------------------------------------------------------------------------------------- richer options
def test_rotation_and_elastic_are_deterministic_and_keep_labels(tmp_path: Path) -> None:
    cfg = load_config(
        "smoke",
        [
            "augment.rotation_deg=8",
            "augment.elastic=true",
            "augment.elastic_sigma_mm=6",
            "augment.scale_range=[1,1]",
        ],
        run_dir=tmp_path,
    )
    plain = load_config("smoke", ["augment.scale_range=[1,1]"], run_dir=tmp_path)
    mask = phantom_mask()
    out, res = augment_mask(mask, ras_affine(), "BraTS-GLI-00001-000", 1, cfg)
    again, _ = augment_mask(mask, ras_affine(), "BraTS-GLI-00001-000", 1, cfg)
    ref, ref_res = augment_mask(mask, ras_affine(), "BraTS-GLI-00001-000", 1, plain)
    assert res.status == "accepted" and max(abs(res.rotation_deg_x), abs(res.rotation_deg_z)) > 0
    assert res.flipped == ref_res.flipped  # the extras use their own random streams
    np.testing.assert_array_equal(out, again)
    assert (out != ref).any()
    assert set(np.unique(out)) == set(np.unique(mask))
    # rotation and a 1.5 mm deformation roughly keep the head volume (on this 17-voxel head a smooth
    # field compresses or expands locally by up to ~15 %)
    assert (out > 0).sum() == pytest.approx((mask > 0).sum(), rel=0.2)


def test_pure_rotation_about_world_z_by_90_degrees() -> None:
    # hand-computed: +90 deg about z maps world (x, y) -> (-y, x); the lesion at x=-8 mm moves to y=-8 mm
    shape = (17, 17, 17)
    c = (np.array(shape) - 1) / 2
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[:3, 3] = -2 * c
    mask = np.zeros(shape, np.uint8)
    mask[4, 8, 8] = 2
    out = resample_about_centre(mask, aff, 1.0, (0, 0, 90))
    np.testing.assert_allclose(world_centroid(out, aff, [2]), [0.0, -8.0, 0.0], atol=1e-6)


def test_move_lesion_stays_inside_the_head(tmp_path: Path) -> None:
    cfg = load_config(
        "smoke",
        [
            "augment.move_lesion=true",
            "augment.move_max_mm=6",
            "augment.flip_p=0",
            "augment.scale_range=[1,1]",
        ],
        run_dir=tmp_path,
    )
    mask = phantom_mask(lesion_offset=-2)
    out, res = augment_mask(mask, ras_affine(), "BraTS-GLI-00001-000", 1, cfg)
    shift = np.array([res.move_mm_x, res.move_mm_y, res.move_mm_z])
    assert res.status == "accepted" and np.abs(shift).max() > 0
    lesion = [2, 3, 4]
    np.testing.assert_allclose(
        world_centroid(out, ras_affine(), lesion) - world_centroid(mask, ras_affine(), lesion),
        shift,
        atol=1e-6,
    )
    for v in lesion:  # every lesion label keeps its exact size
        assert (out == v).sum() == (mask == v).sum()
    np.testing.assert_array_equal(out > 0, mask > 0)  # the head outline is unchanged


def test_cli_augment_with_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_run(tmp_path, {f"BraTS-GLI-{i:05d}-000": phantom_mask() for i in range(3)})
    assert main(["augment", "--run-dir", str(cfg.paths.root), "--limit", "2"]) == 0
    assert "4 tried" in capsys.readouterr().out
    assert set(read_manifest(cfg).source_id) == {"BraTS-GLI-00000-000", "BraTS-GLI-00001-000"}
    assert (cfg.paths.metrics / "augmentation_summary.json").is_file()


def test_sub_voxel_scale_leaves_the_mask_unchanged(tmp_path: Path) -> None:
    # hand-computed: on a 17-voxel side the largest shift of s in [0.98, 1.02] is 8 * (1/0.98 - 1) = 0.16
    # voxel < 0.5, so nearest-neighbour scaling is the identity and only the flip can change the mask
    cfg = load_config("smoke", ["augment.flip_p=0"], run_dir=tmp_path)
    mask = phantom_mask()
    out, res = augment_mask(mask, ras_affine(), "BraTS-GLI-00001-000", 1, cfg)
    np.testing.assert_array_equal(out, mask)
    assert res.changed_voxels == 0 and res.scale != 1.0
    # and on a 41-voxel side a 5 % scale shifts the edge by 20 * (1 - 1/1.05) = 0.95 voxel: the head grows
    head = ball(np.full(3, 20.0), 17.0, (41, 41, 41)).astype(np.uint8)
    grown = resample_about_centre(head, np.eye(4), 1.05)
    assert grown.sum() > head.sum() and (grown >= head).all()


def test_augment_holds_the_run_lock(tmp_path: Path) -> None:
    cfg = make_run(tmp_path, {"BraTS-GLI-00001-000": phantom_mask()})
    with lock_held_elsewhere(cfg.paths.root, "augment"), pytest.raises(LockHeld, match="augment"):
        augment(cfg, progress=False)
    assert read_manifest(cfg).empty
    assert augment(cfg, progress=False).tried == 2
