"""The sampler sweep (issue 18): grid, per-volume records, resume, table with CIs, recommendation rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_generate import TINY, build_run

from gliomagen.config import Config, load_config
from gliomagen.generation.outputs import GenerationOutputs, read_sweep, read_sweep_volumes
from gliomagen.generation.sweep import grid, recommend, sweep_samplers

CELLS = [("ddpm", 20), ("ddim", 2), ("dpmpp", 2), ("unipc", 3)]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("sweep") / "run").paths.root


def fresh(base: Path, tmp_path: Path) -> Config:
    shutil.copytree(base, tmp_path / "run")
    return load_config("smoke", [*TINY, "sweep.max_masks=2"], run_dir=tmp_path / "run")


def test_sweep_writes_its_table_and_resumes(base: Path, tmp_path: Path) -> None:
    cfg = fresh(base, tmp_path)
    out = GenerationOutputs(cfg.paths)
    first = sweep_samplers(cfg, cells=CELLS, progress=False)
    assert first.generated == 2 * len(CELLS) and first.skipped == 0
    table = read_sweep(out)
    assert [(r.sampler, r.nfe) for r in table.itertuples()] == CELLS
    assert (table.n_subjects == 2).all() and (table.seconds_per_volume > 0).all()
    assert (table.ms_ssim_low <= table.ms_ssim).all() and (table.ms_ssim <= table.ms_ssim_high).all()
    assert table.reseg_dice.isna().all() and first.resegmentation.startswith("not available")
    assert table.speedup_vs_ddpm.iloc[0] == pytest.approx(1.0) and (table.cpu_seconds_per_volume > 0).all()
    assert set(first.recommendation["samplers"]) == {"ddim", "dpmpp", "unipc"}
    for path in out.sweep_declared():
        assert path.is_file(), path
    volumes = read_sweep_volumes(out)
    assert len(volumes) == 2 * len(CELLS) and volumes.ms_ssim.between(-1, 1).all()
    records = {p: p.stat().st_mtime_ns for p in out.sweep_root.rglob("*-sweep.json")}
    # a rerun skips every finished volume and rewrites none
    again = sweep_samplers(cfg, cells=CELLS, progress=False)
    assert again.generated == 0 and again.skipped == 2 * len(CELLS)
    assert {p: p.stat().st_mtime_ns for p in records} == records
    pd.testing.assert_frame_equal(
        read_sweep_volumes(out).drop(columns=["seconds"]), volumes.drop(columns=["seconds"])
    )
    # an interrupted run (a volume without its record, written last) redoes exactly that volume
    lost = out.sweep_record("ddim", 2, volumes.case_id.iloc[0])
    image = next(lost.parent.glob("*-t1n.nii.gz"))
    before = image.read_bytes()
    lost.unlink()
    third = sweep_samplers(cfg, cells=CELLS, progress=False)
    assert third.generated == 1 and third.skipped == 2 * len(CELLS) - 1
    assert image.read_bytes() == before  # same seed, same sampler: the same volume


def test_grid_follows_the_profile() -> None:
    smoke = load_config("smoke")
    assert grid(smoke) == [("ddim", 10), ("ddim", 25), ("dpmpp", 10), ("dpmpp", 25)]
    full = load_config("smoke", ["sweep.full_grid=true", "sweep.reference=true"])
    cells = grid(full)
    assert cells[0] == ("ddpm", 1000) and len(cells) == 1 + 3 * 6


def test_recommendation_is_the_smallest_nfe_whose_every_ci_overlaps_ddpm() -> None:
    def row(sampler: str, nfe: int, m: tuple[float, float], d: tuple[float, float]) -> dict[str, object]:
        return {
            "sampler": sampler,
            "nfe": nfe,
            "seconds_per_volume": float(nfe),
            "speedup_vs_ddpm": 1000 / nfe,
            "ms_ssim": np.mean(m),
            "ms_ssim_low": m[0],
            "ms_ssim_high": m[1],
            "reseg_dice": np.mean(d),
            "reseg_dice_low": d[0],
            "reseg_dice_high": d[1],
        }

    table = pd.DataFrame(
        [
            row("ddpm", 1000, (0.70, 0.80), (0.60, 0.70)),
            row("ddim", 5, (0.50, 0.60), (0.60, 0.70)),  # MS-SSIM apart
            row("ddim", 10, (0.75, 0.85), (0.40, 0.55)),  # Dice apart
            row("ddim", 25, (0.78, 0.90), (0.65, 0.75)),  # both overlap
            row("dpmpp", 5, (0.10, 0.20), (0.10, 0.20)),
        ]
    )
    rec = recommend(table)
    assert rec["samplers"]["ddim"]["nfe"] == 25 and rec["samplers"]["dpmpp"] is None
    assert rec["metrics"] == ["ms_ssim", "reseg_dice"]
    assert recommend(table[table.sampler != "ddpm"])["available"] is False
