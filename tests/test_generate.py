"""Generation: geometry and value range, manifest, resume == uninterrupted, batching/sharding invariance.

Uses the project's real network (a tiny MONAI DiffusionModelUNet), a real checkpoint written by the
diffusion package, and its real DDIM sampler; 16^3 volumes and 2 steps keep it to seconds on a CPU.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from prepared_run import write_prepared_run

from gliomagen.augment.outputs import read_manifest as read_aug_manifest
from gliomagen.augment.stage import augment
from gliomagen.cases import Case, case_files, is_complete
from gliomagen.cli import main
from gliomagen.config import Config, load_config
from gliomagen.diffusion.checkpoint import file_sha256, save_checkpoint
from gliomagen.diffusion.network import build_model
from gliomagen.generation.jobs import all_jobs, parse_shard, shard_jobs, volume_seed
from gliomagen.generation.outputs import GenerationOutputs
from gliomagen.generation.outputs import read_manifest as read_outputs_manifest
from gliomagen.generation.stage import generate


def read_manifest(cfg: Config) -> pd.DataFrame:
    return read_outputs_manifest(GenerationOutputs(cfg.paths))


SHAPE = (16, 16, 16)
TINY = [
    "model.channels=[8, 8]",
    "model.num_res_blocks=1",
    "model.norm_num_groups=8",
    "model.num_head_channels=8",
    "diffusion.timesteps=20",
    # the random network's output layer is zero-initialised: as a noise prediction it still gives varied
    # samples, as an x0 prediction (the smoke profile's) every volume would be all zero
    "diffusion.prediction=epsilon",
    "train.val_timesteps=[5, 15]",  # must lie in 0..T-1 (checked when the config loads)
    "generate.sampler=ddim",
    "generate.steps=2",
    "generate.batch_size=2",
    "generate.n_synthetic=2",
    "runtime.device=cpu",
]


def affine() -> np.ndarray:
    aff = np.diag([-2.0, 2.0, 2.0, 1.0])  # LAS storage: generation must keep whatever the mask has
    aff[:3, 3] = [15.0, -15.0, -10.0]
    return aff


def mask_for(k: int) -> np.ndarray:
    grid = np.indices(SHAPE).astype(float)
    c = (np.array(SHAPE) - 1) / 2
    head = (((grid - c[:, None, None, None]) / 5.5) ** 2).sum(0) <= 1
    mask = head.astype(np.uint8)
    p = c + np.array([(-1) ** k * 2.0, 0, k % 3 - 1])
    lesion = ((grid - p[:, None, None, None]) ** 2).sum(0)
    mask[lesion <= 4] = 3
    mask[lesion <= 1.5] = 4
    mask[lesion <= 0.3] = 2
    return mask


def build_run(root: Path, overrides: list[str] | None = None) -> Config:
    """Prepared train/val cases, their augmented masks and a real checkpoint of a tiny random network."""
    cfg = load_config("smoke", TINY + (overrides or []), run_dir=root)
    splits = [("train", "BraTS-GLI-00001-000"), ("train", "BraTS-GLI-00002-000")]
    splits += [("val", f"BraTS-GLI-0001{i}-000") for i in range(2)]
    cases = []
    for k, (split, case_id) in enumerate(splits):
        mask = mask_for(k)
        cases.append((split, Case(case_id, np.stack([mask.astype(np.float32) / 5] * 4), mask, affine())))
    write_prepared_run(cfg.paths, cases)
    augment(cfg, progress=False)
    write_random_checkpoint(cfg, seed=0, step=7)
    cfg.paths.training.mkdir(parents=True, exist_ok=True)
    (cfg.paths.training / "train_log.csv").write_text("step\n")  # the CLI checks that training has run
    return cfg


def write_random_checkpoint(cfg: Config, seed: int, step: int) -> None:
    """A checkpoint of a freshly initialised network (model and EMA identical) as ``last.pt``."""
    torch.manual_seed(seed)
    state = build_model(cfg).state_dict()
    ema = {f"module.{k}": v for k, v in state.items()}
    save_checkpoint(cfg.paths.checkpoints / "last.pt", cfg, step, model=state, ema=ema)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("gen") / "base").paths.root


@pytest.fixture(scope="module")
def reference(base_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """An uninterrupted, unsharded run of everything (the reference the other runs must equal)."""
    root = tmp_path_factory.mktemp("ref") / "run"
    shutil.copytree(base_run, root)
    cfg = load_config("smoke", TINY, run_dir=root)
    generate(cfg, "all", progress=False)
    return cfg


def fresh(base_run: Path, tmp_path: Path, overrides: list[str] | None = None) -> Config:
    shutil.copytree(base_run, tmp_path / "run")
    return load_config("smoke", TINY + (overrides or []), run_dir=tmp_path / "run")


def volumes(cfg: Config) -> dict[str, np.ndarray]:
    out = {}
    for split in ("val", "train"):
        for folder in sorted((cfg.paths.synthetic / split).glob("BraTS-*")):
            for name, path in case_files(folder).items():
                out[f"{split}/{folder.name}/{name}"] = np.asarray(nib.load(str(path)).dataobj)
    return out


def assert_same_volumes(a: Config, b: Config) -> None:
    va, vb = volumes(a), volumes(b)
    assert sorted(va) == sorted(vb) and va
    for key in va:
        if key.endswith("seg"):
            np.testing.assert_array_equal(va[key], vb[key], err_msg=key)
        else:  # batched (oneDNN) and batch-of-one (reference kernel) convolutions round differently
            np.testing.assert_allclose(va[key], vb[key], atol=1e-4, rtol=0, err_msg=key)


# --------------------------------------------------------------------------------------------- outputs
def test_outputs_geometry_range_and_manifest(reference: Config) -> None:
    cfg = reference
    frame = read_manifest(cfg)
    aug = read_aug_manifest(cfg)
    accepted = aug[aug.status == "accepted"].sort_values(["round", "aug_id"])
    expected_train = list(accepted.aug_id[:2])
    assert sorted(frame.loc[frame.split == "train", "id"]) == sorted(
        expected_train
    )  # n_synthetic, round 1 first
    assert list(frame.loc[frame.split == "val", "id"]) == [f"BraTS-GLI-0001{i}-000" for i in range(2)]
    sha = file_sha256(cfg.paths.checkpoints / "last.pt")
    for row in frame.itertuples():
        folder = cfg.paths.synthetic / row.split / row.id
        assert is_complete(folder)
        source = cfg.paths.root / row.source_mask
        src = nib.load(str(source))
        for name, path in case_files(folder).items():
            img = nib.load(str(path))
            np.testing.assert_allclose(img.affine, src.affine)  # the mask's own geometry: no flip ever needed
            data = np.asarray(img.dataobj)
            if name == "seg":
                np.testing.assert_array_equal(data, np.asarray(src.dataobj))  # the conditioning mask
            else:
                assert data.dtype == np.float32 and data.min() >= 0 and data.max() <= 1 and data.std() > 0
        assert row.checkpoint_sha256 == sha and int(row.checkpoint_step) == 7
        assert row.sampler == "ddim" and int(row.steps) == 2
        assert str(row.seed) == str(volume_seed(0, row.id)) and float(row.seconds) > 0
    # the four modalities of one volume differ (the network is conditioned, not a copy)
    t1n, t2f = (np.asarray(nib.load(str(case_files(folder)[m])).dataobj) for m in ("t1n", "t2f"))
    assert not np.array_equal(t1n, t2f)
    assert (cfg.paths.synthetic / "manifest.csv").is_file()


def test_resumed_run_equals_uninterrupted_run(base_run: Path, reference: Config, tmp_path: Path) -> None:
    cfg = fresh(base_run, tmp_path)
    generate(cfg, "all", limit=3, progress=False)  # "interrupted" after three volumes
    done = {p: p.stat().st_mtime_ns for p in (cfg.paths.synthetic / "val").rglob("*.nii.gz")}
    # a crash in the middle of a case leaves files without the mask (written last): it must be redone
    half = cfg.paths.synthetic / "train" / all_jobs(cfg, "all")[-1].id
    half.mkdir(parents=True)
    shutil.copy(
        case_files(reference.paths.synthetic / "val" / "BraTS-GLI-00010-000")["t1n"], case_files(half)["t1n"]
    )
    summary = generate(cfg, "all", progress=False)
    assert summary.skipped == 3 and summary.generated == 1
    assert {p: p.stat().st_mtime_ns for p in done} == done  # finished volumes were not rewritten
    assert_same_volumes(cfg, reference)
    cols = ["id", "split", "seed", "checkpoint_sha256", "source_mask"]
    pd.testing.assert_frame_equal(read_manifest(cfg)[cols], read_manifest(reference)[cols])


def test_batch_size_does_not_change_volumes(base_run: Path, reference: Config, tmp_path: Path) -> None:
    cfg = fresh(base_run, tmp_path, ["generate.batch_size=4"])
    generate(cfg, "all", progress=False)
    assert_same_volumes(cfg, reference)


def test_shards_cover_every_mask_once_and_match(base_run: Path, reference: Config, tmp_path: Path) -> None:
    cfg = fresh(base_run, tmp_path)
    jobs = all_jobs(cfg, "all")
    for n in range(1, len(jobs) + 2):
        parts = [shard_jobs(jobs, (i, n)) for i in range(n)]
        flat = [j.id for p in parts for j in p]
        assert sorted(flat) == sorted(j.id for j in jobs) and len(flat) == len(set(flat))
    for i in range(2):
        generate(cfg, "all", shard=(i, 2), progress=False)
    frame = read_manifest(cfg)
    assert len(frame) == len(jobs) and frame.id.is_unique
    assert set(frame.shard) == {"0/2", "1/2"}
    assert_same_volumes(cfg, reference)


def test_torchrun_environment_selects_the_shard(
    base_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = fresh(base_run, tmp_path)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    summary = generate(cfg, "val", progress=False)
    assert summary.shard == "1/3" and summary.generated == 1
    assert list(read_manifest(cfg).id) == ["BraTS-GLI-00011-000"]


def test_new_checkpoint_regenerates(base_run: Path, tmp_path: Path) -> None:
    cfg = fresh(base_run, tmp_path)
    generate(cfg, "val", progress=False)
    before = read_manifest(cfg)
    write_random_checkpoint(cfg, seed=1, step=9)
    summary = generate(cfg, "val", progress=False)
    assert summary.generated == 2 and summary.skipped == 0
    after = read_manifest(cfg)
    assert set(after.checkpoint_sha256) != set(before.checkpoint_sha256) and set(after.checkpoint_step) == {9}


def test_bad_mask_is_reported_and_the_others_go_on(base_run: Path, tmp_path: Path) -> None:
    cfg = fresh(base_run, tmp_path)
    bad = all_jobs(cfg, "synthetic")[0]
    bad.mask_path.write_bytes(b"not a nifti")
    summary = generate(cfg, "synthetic", progress=False)
    assert summary.failed == 1 and summary.generated == 1
    assert summary.errors[0].startswith(f"{bad.mask_path}: cannot read the mask")


def test_sampler_output_is_clamped(base_run: Path, tmp_path: Path) -> None:
    from gliomagen.generation.sampling import load_setup, sample_batch

    cfg = fresh(base_run, tmp_path)
    setup = load_setup(cfg)
    real = setup.sampler

    class Unclamped:  # wraps the real sampler and stretches its output outside [0, 1]
        def sample(self, model: torch.nn.Module, condition: torch.Tensor, **kw: object) -> torch.Tensor:
            return real.sample(model, condition, **kw) * 3 - 1

    setup.sampler = Unclamped()
    images, outside = sample_batch(setup, np.stack([mask_for(0)]), [1])
    assert images.min() >= 0 and images.max() <= 1 and 0 < outside < 1


def test_batched_loop_reproduces_the_samplers_own_loop(base_run: Path, tmp_path: Path) -> None:
    from gliomagen.diffusion.samplers import sample_loop
    from gliomagen.generation.sampling import load_setup

    cfg = fresh(base_run, tmp_path)
    setup = load_setup(cfg)
    cond = setup.encode(torch.as_tensor(np.stack([mask_for(0), mask_for(1)])))
    seeds = [volume_seed(0, "a"), volume_seed(0, "b")]
    s = setup.sampler

    def loop(c: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
        return sample_loop(s.scheduler, s.steps, setup.model, c, generator=gens).clamp(0.0, 1.0)

    with torch.inference_mode():
        own = [
            setup.sampler.sample(setup.model, cond[k : k + 1], generator=torch.Generator().manual_seed(s))
            for k, s in enumerate(seeds)
        ]
        one = loop(cond[:1], [torch.Generator().manual_seed(seeds[0])])
        both = loop(cond, [torch.Generator().manual_seed(s) for s in seeds])
    torch.testing.assert_close(one, own[0], atol=0, rtol=0)  # same noise, same steps: bit for bit
    torch.testing.assert_close(both, torch.cat(own), atol=1e-4, rtol=0)  # per-volume noise in a batch


def test_time_samplers_measures_or_extrapolates(base_run: Path, tmp_path: Path) -> None:
    from gliomagen.generation.sampling import load_setup
    from gliomagen.generation.timing import time_samplers

    cfg = fresh(base_run, tmp_path)
    setup = load_setup(cfg)
    measured = time_samplers(cfg, [("ddim", 2), ("dpmpp", 2)], setup=setup, budget_s=1e9, probe_steps=1)
    assert list(measured.how) == ["measured", "measured"] and (measured.seconds_per_volume > 0).all()
    guessed = time_samplers(cfg, [("ddpm", 20), ("ddim", 2)], setup=setup, budget_s=0, probe_steps=1)
    assert guessed.how.str.startswith("extrapolated").all()
    # both extrapolated from the same DDIM probe: the ratio is exactly the ratio of network evaluations
    ratio = guessed.seconds_per_volume.iloc[0] / guessed.seconds_per_volume.iloc[1]
    assert ratio == pytest.approx(20 / 2)


def test_parse_shard() -> None:
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ["4/4", "a/b", "1", "-1/2"]:
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_volume_seed_is_stable() -> None:
    # a fixed value guards against an accidental change of the derivation (it would change every volume)
    assert volume_seed(0, "BraTS-GLI-00001-000-a1") == 4560698167893610618
    assert volume_seed(0, "x") != volume_seed(1, "x") and 0 <= volume_seed(0, "x") < 2**63


def test_cli_generate_val_shard(base_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = fresh(base_run, tmp_path)
    argv = ["generate", "--run-dir", str(cfg.paths.root), "--which", "val", "--shard", "0/2"]
    for item in TINY:
        argv += ["--set", item]
    assert main(argv) == 0
    assert "1 generated" in capsys.readouterr().out
    assert list(read_manifest(cfg).id) == ["BraTS-GLI-00010-000"]
