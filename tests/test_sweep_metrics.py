"""The sampler sweep's re-segmentation Dice (filled on resume) and its radiomics FID with the real-vs-real floor."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from test_generate import TINY, build_run

from gliomagen.config import MODALITIES, Config, load_config
from gliomagen.generation.outputs import GenerationOutputs, read_sweep, read_sweep_volumes
from gliomagen.generation.sweep import sweep_samplers
from gliomagen.generation.sweep_metrics import (
    DISTANCE_EXTRACTOR,
    _subjects,
    cell_distance,
    real_only_configuration,
)
from gliomagen.io import write_nifti

CELLS = [("ddim", 2), ("dpmpp", 2)]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("sweep_metrics") / "run").paths.root


def fresh(base: Path, tmp_path: Path) -> Config:
    shutil.copytree(base, tmp_path / "run")
    return load_config(
        "smoke", [*TINY, "sweep.max_masks=2", "sweep.distance_slices=4"], run_dir=tmp_path / "run"
    )


# ---------------------------------------------------------------------------------- re-segmentation
class FakeNnUNet:
    """Stands in for the nnU-Net worker: "predicts" each sweep input that has no prediction yet as the volume's
    conditioning mask (in nnU-Net's label values), so the Dice is 1; counts its calls and predictions."""

    def __init__(self) -> None:
        self.calls = 0
        self.predicted: list[str] = []

    def __call__(self, cfg: Config, job: dict[str, Any]) -> dict[str, Any]:
        from gliomagen.cases import load_mask
        from gliomagen.segmentation.export import FILE_ENDING, label_lut

        self.calls += 1
        assert job["train"] is False and job["name"].endswith("_sweep")  # never the stage's own job name
        out = GenerationOutputs(cfg.paths)
        for spec in job["predict"]:
            src, dst = Path(spec["input"]), Path(spec["output"])
            for first in sorted(src.glob(f"*_0000{FILE_ENDING}")):
                uid = first.name.removesuffix(f"_0000{FILE_ENDING}")
                if (dst / f"{uid}{FILE_ENDING}").is_file():
                    continue
                sampler, nfe, case_id = uid.split("-", 2)
                mask, affine = load_mask(out.sweep_volume_dir(sampler, int(nfe), case_id))
                write_nifti(dst / f"{uid}{FILE_ENDING}", label_lut(cfg)[mask], affine, dtype=np.uint8)
                self.predicted.append(uid)
        return {}


def _train_fake_model(cfg: Config) -> None:
    """A "trained" real-only model: the file the segmentation stage checks for."""
    from gliomagen.segmentation import export, nnunet

    plan = export.plan_configuration(cfg, real_only_configuration(cfg))
    final = nnunet.model_dir(cfg, plan) / "fold_all" / "checkpoint_final.pth"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"weights v1")


def test_resegmentation_dice_is_filled_on_resume_without_regenerating(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gliomagen.segmentation import nnunet

    cfg = fresh(base, tmp_path)
    out = GenerationOutputs(cfg.paths)
    fake = FakeNnUNet()
    monkeypatch.setattr(nnunet, "run_job", fake)
    first = sweep_samplers(cfg, cells=CELLS, progress=False)
    assert first.resegmentation.startswith("not available") and fake.calls == 0
    assert read_sweep(out).reseg_dice.isna().all()
    images = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.sweep_root.rglob("*-t1c.nii.gz")}
    assert len(images) == 2 * len(CELLS)

    _train_fake_model(cfg)  # notebook 06 has trained nnU-Net: the rerun adds the Dice and nothing else
    second = sweep_samplers(cfg, cells=CELLS, progress=False)
    assert second.generated == 0 and second.skipped == 2 * len(CELLS)
    assert second.resegmentation == "available" and second.resegmented == 2 * len(CELLS) and fake.calls == 1
    table = read_sweep(out)
    assert (table.reseg_dice == 1.0).all() and (table.reseg_dice_low == 1.0).all()
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in images} == images  # no volume rewritten
    volumes = read_sweep_volumes(out)
    assert (volumes.reseg_dice == 1.0).all() and volumes.reseg_model.nunique() == 1

    # a third run finds every Dice of this model in the records: no nnU-Net job at all
    records = {p: p.stat().st_mtime_ns for p in out.sweep_root.rglob("*-sweep.json")}
    third = sweep_samplers(cfg, cells=CELLS, progress=False)
    assert third.resegmented == 0 and fake.calls == 1
    assert {p: p.stat().st_mtime_ns for p in records} == records
    assert (read_sweep(out).reseg_dice == 1.0).all()

    # a regenerated volume (its record gone) is re-segmented alone, its stale prediction replaced
    lost = volumes.iloc[0]
    out.sweep_record(lost.sampler, int(lost.nfe), lost.case_id).unlink()
    fake.predicted.clear()
    fourth = sweep_samplers(cfg, cells=CELLS, progress=False)
    assert fourth.generated == 1 and fourth.resegmented == 1 and fake.calls == 2
    assert fake.predicted == [f"{lost.sampler}-{int(lost.nfe):04d}-{lost.case_id}"]

    # another model (retrained): every Dice is redone
    next(out.paths.nnunet.rglob("checkpoint_final.pth")).write_bytes(b"weights v2")
    fifth = sweep_samplers(cfg, cells=CELLS, progress=False)
    assert fifth.resegmented == 2 * len(CELLS) and fake.calls == 3


def test_sweep_table_has_the_distance_and_its_floor(base: Path, tmp_path: Path) -> None:
    cfg = fresh(base, tmp_path)
    out = GenerationOutputs(cfg.paths)
    result = sweep_samplers(cfg, cells=CELLS, progress=False)
    assert result.distance == "available", result.distance
    table = read_sweep(out)
    assert (table.rad_fid > 0).all() and (table.rad_fid_floor > 0).all()
    assert table.rad_fid_floor.nunique() == 1  # the same real halves in every cell
    assert np.allclose(table.rad_fid_ratio, table.rad_fid / table.rad_fid_floor)
    # two masks: one subject pair, so no interval, and the table says so
    assert table.rad_fid_low.isna().all() and (table.distance_pairs == 1).all()
    assert table.distance.str.contains("no CI").all()
    cached = sorted(out.sweep_root.rglob(f"*-{DISTANCE_EXTRACTOR}.npz"))
    assert len(cached) == 2 + 2 * len(CELLS)  # the real volumes once, each generated volume once
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    again = sweep_samplers(cfg, cells=CELLS, progress=False)
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps  # features reused, not recomputed
    pd.testing.assert_frame_equal(
        again.table.drop(columns=["seconds_per_volume", "cpu_seconds_per_volume"]),
        table.drop(columns=["seconds_per_volume", "cpu_seconds_per_volume"]),
    )


# ------------------------------------------------------------------------------------ distance (units)
def _features(
    n: int, shift: float = 0.0, seed: int = 0
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """``n`` subjects' real features and "generated" ones (the real plus noise, moved by ``shift``)."""
    rng = np.random.default_rng(seed)
    real = [{m: rng.normal(size=(6, 4)) for m in MODALITIES} for _ in range(n)]
    fake = [{m: r[m] + shift + 0.05 * rng.normal(size=r[m].shape) for m in MODALITIES} for r in real]
    return real, fake


def test_distance_is_at_its_floor_for_real_data_and_above_it_for_shifted_data() -> None:
    cfg = load_config("smoke", ["fidelity.bootstrap=50"])
    real, _ = _features(8)
    same = cell_distance(cfg, real, real)  # "generated" = real: the synthetic value is the floor itself
    assert same["rad_fid"] == pytest.approx(same["rad_fid_floor"]) and same["rad_fid_ratio"] == pytest.approx(
        1.0
    )
    real, fake = _features(8, shift=2.0)
    far = cell_distance(cfg, real, fake)
    assert far["rad_fid"] > 2 * far["rad_fid_floor"] > 0
    assert far["distance_pairs"] == 4 and "4 subject pairs" in far["distance"]
    for col in ("rad_fid", "rad_fid_floor", "rad_fid_ratio"):  # 4 pairs: intervals around the estimates
        assert far[f"{col}_low"] <= far[col] <= far[f"{col}_high"], col
    assert far["rad_fid_low"] > far["rad_fid_floor_high"]  # separated at this shift
    small = cell_distance(cfg, *_features(3, shift=2.0))  # one pair (one subject sits out): no interval
    assert small["distance_pairs"] == 1 and math.isnan(small["rad_fid_low"]) and "no CI" in small["distance"]


def test_distance_per_modality_is_the_fidelity_stages_floor() -> None:
    """The sweep's distance is the fidelity stage's real-vs-real FID design, averaged over modalities."""
    from gliomagen.fidelity.floor import floor_feature_rows, halves_of
    from gliomagen.fidelity.subjects import SubjectResult

    class Radiomics:  # the only extractor attributes floor_feature_rows reads
        name, standardise = DISTANCE_EXTRACTOR, True

    cfg = load_config("smoke", ["fidelity.bootstrap=0"])
    real, fake = _features(6, shift=0.7, seed=3)
    subjects: list[SubjectResult] = _subjects(real, fake)
    rows = [
        r
        for m in MODALITIES
        for r in floor_feature_rows(cfg, subjects, halves_of(cfg, len(subjects)), m, Radiomics())  # type: ignore[arg-type]
        if r["metric"] == "FID"
    ]
    ours = cell_distance(cfg, real, fake)
    assert ours["rad_fid_floor"] == pytest.approx(np.mean([r["value"] for r in rows]))
    assert ours["rad_fid"] == pytest.approx(np.mean([r["synthetic_matched"] for r in rows]))
