"""The sampler sweep as paper artifacts: fig_sampler_sweep and tab_sampler_sweep from a run's sweep outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gliomagen.config import Config, load_config
from gliomagen.figures.artifacts import artifact_names
from gliomagen.figures.export import read_stamp
from gliomagen.figures.regenerate import regenerate
from gliomagen.generation.outputs import GenerationOutputs
from gliomagen.generation.plots import plot_sweep
from gliomagen.generation.sweep import NO_REFERENCE, recommend, recommendation_text
from gliomagen.io import provenance, write_csv, write_json

NAMES = ["fig_sampler_sweep", "tab_sampler_sweep"]


def sweep_table(reference: bool) -> pd.DataFrame:
    """A sweep table as ``sweep_samplers`` writes it: DDIM at 5 and 25, DPM-Solver++ at 5 (+ DDPM-1000)."""

    def row(sampler: str, nfe: int, ms: float, dice: float, fid: float) -> dict[str, object]:
        r: dict[str, object] = {
            "sampler": sampler,
            "nfe": nfe,
            "n_subjects": 4,
            "seconds_per_volume": nfe * 0.1,
        }
        r["cpu_seconds_per_volume"] = nfe * 0.2
        for m, v in (("ms_ssim", ms), ("reseg_dice", dice), ("rad_fid", fid)):
            r.update({m: v, f"{m}_low": v - 0.05, f"{m}_high": v + 0.05})
        r.update(rad_fid_floor=0.5, rad_fid_floor_low=0.45, rad_fid_floor_high=0.55)
        r.update(rad_fid_ratio=fid / 0.5, rad_fid_ratio_low=np.nan, rad_fid_ratio_high=np.nan)
        r.update(
            resegmentation="available", distance_pairs=2, distance="ok: 2 subject pairs, 95% bootstrap CI"
        )
        return r

    rows = [row("ddpm", 1000, 0.80, 0.70, 0.60)] if reference else []
    rows += [
        row("ddim", 5, 0.60, 0.70, 0.60),
        row("ddim", 25, 0.79, 0.69, 0.62),
        row("dpmpp", 5, 0.5, 0.1, 2.0),
    ]
    table = pd.DataFrame(rows)
    ddpm = table.loc[table.sampler == "ddpm", "seconds_per_volume"]
    table["speedup_vs_ddpm"] = float(ddpm.iloc[0]) / table.seconds_per_volume if len(ddpm) else np.nan
    return table


def write_sweep(cfg: Config, table: pd.DataFrame) -> None:
    out = GenerationOutputs(cfg.paths)
    write_csv(out.sweep_table, table)
    rec = recommend(table)
    write_json(
        out.sweep_recommendation,
        {**provenance(cfg.hash), "resegmentation": "available", "recommendation": rec},
    )


@pytest.mark.parametrize("reference", [True, False])
def test_sweep_artifacts_are_made_from_the_runs_sweep(tmp_path: Path, reference: bool) -> None:
    assert set(NAMES) <= set(artifact_names())
    cfg = load_config("smoke", run_dir=tmp_path / "run")
    write_sweep(cfg, sweep_table(reference))
    result = regenerate(cfg, NAMES)
    assert result.failed.empty, result.failed.message.tolist()
    for fmt in cfg.figures.formats:
        assert (result.figures_dir / f"fig_sampler_sweep.{fmt}").stat().st_size > 0
    md = (result.tables_dir / "tab_sampler_sweep.md").read_text()
    tex = (result.tables_dir / "tab_sampler_sweep.tex").read_text()
    stamp = read_stamp(result.tables_dir / "tab_sampler_sweep.tex")
    assert stamp is not None and set(stamp["sources"]) == {  # type: ignore[arg-type]
        "metrics/sampler_sweep.csv",
        "metrics/sampler_sweep.json",
    }
    assert "0.6000 [0.5500, 0.6500]" in md  # DDIM-5 MS-SSIM with its interval
    assert r"\label{tab:tab_sampler_sweep}" in tex
    if reference:
        assert (
            "Recommended: ddim: NFE 25 (40x faster than DDPM)" in md
            and "dpmpp: none overlaps DDPM-1000" in md
        )
        assert "no recommendation" not in md
    else:
        assert "No DDPM reference" in md and "no recommendation" in md and "no reference" in md
        assert "Recommended:" not in md


def test_sweep_figure_says_when_there_is_no_reference() -> None:
    table = sweep_table(reference=False)
    text = recommendation_text(recommend(table))
    assert text == NO_REFERENCE and "no recommendation" in text
    fig = plot_sweep(table, text)
    title = fig._suptitle.get_text()  # type: ignore[union-attr]
    assert NO_REFERENCE in title and "radiomics FID: ok" in title
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert any("radiomics FID" in label for label in labels) and any("Dice" in label for label in labels)
    floor_lines = [
        line for ax in fig.axes for line in ax.get_lines() if line.get_label() == "real-vs-real floor"
    ]
    assert len(floor_lines) == 1


def test_recommendation_needs_the_distance_to_overlap_too() -> None:
    table = sweep_table(reference=True)
    assert recommend(table)["metrics"] == ["ms_ssim", "reseg_dice", "rad_fid"]
    assert recommend(table)["samplers"]["ddim"]["nfe"] == 25
    far = table["sampler"].eq("ddim") & table["nfe"].eq(25)
    table.loc[far, ["rad_fid", "rad_fid_low", "rad_fid_high"]] = [0.9, 0.85, 0.95]  # apart from DDPM's
    assert recommend(table)["samplers"]["ddim"] is None
