"""Key numbers of a run as LaTeX macros (``<run>/paper_generated/numbers.tex``, published to
``paper/generated/<profile>/``) for the manuscript.

Every macro starts with ``R`` (for "result"); :mod:`gliomagen.paper` checks that each one the manuscript
uses is defined here. A number that the run did not produce is written as "n/a", never guessed.
"""

from __future__ import annotations

from pathlib import Path

from gliomagen.augment.outputs import AugmentationOutputs, read_manifest
from gliomagen.config import Config
from gliomagen.data.outputs import PrepareOutputs, read_cases_table
from gliomagen.diffusion.outputs import TrainingOutputs, read_train_log
from gliomagen.fidelity.outputs import FidelityOutputs, read_results
from gliomagen.figures import export
from gliomagen.figures.outputs import FiguresOutputs

NA = "n/a"


def _fmt_int(value: float | int) -> str:
    return f"{int(value):,}".replace(",", "\u2009")  # thin space; LaTeX \, (export.LATEX_SYMBOLS)


def _data_numbers(cfg: Config) -> dict[str, str]:
    if not PrepareOutputs(cfg.paths).cases_csv.exists():
        return {k: NA for k in ("RNumCases", "RNumPatients", "RNumTrain", "RNumVal", "RNumExcluded")}
    table = read_cases_table(cfg)
    return {
        "RNumCases": str(len(table)),
        "RNumPatients": str(table["patient"].nunique()),
        "RNumTrain": str(int((table["split"] == "train").sum())),
        "RNumVal": str(int((table["split"] == "val").sum())),
        "RNumExcluded": str(int((table["split"] == "excluded").sum())),
    }


def _model_numbers(cfg: Config) -> dict[str, str]:
    from gliomagen.config import load_config
    from gliomagen.diffusion.network import build_model, count_parameters

    paper = load_config("paper")
    numbers = {
        "RParamCount": _fmt_int(count_parameters(build_model(cfg, device="meta"))),
        "RPaperParamCount": _fmt_int(count_parameters(build_model(paper, device="meta"))),
        "RTrainSteps": NA,
        "RSecondsPerStep": NA,
    }
    training = TrainingOutputs(cfg.paths)
    if training.train_log.exists():
        log = read_train_log(training)
        numbers["RTrainSteps"] = str(int(log["step"].max()))
        numbers["RSecondsPerStep"] = f"{log['seconds'].median():.2f}"
    return numbers


def _augment_numbers(cfg: Config) -> dict[str, str]:
    if not AugmentationOutputs(cfg.paths).manifest.exists():
        return {"RAugTried": NA, "RAugKept": NA}
    frame = read_manifest(cfg)
    return {"RAugTried": str(len(frame)), "RAugKept": str(int((frame["status"] == "accepted").sum()))}


def _fidelity_numbers(cfg: Config) -> dict[str, str]:
    if not FidelityOutputs(cfg.paths).results_json.exists():
        return {"RMeanMSSSIM": NA}
    frame = read_results(cfg.paths, cfg.profile).frame()
    hit = frame[
        (frame["modality"] == "mean") & (frame["metric"] == "MS-SSIM 2D") & (frame["variant"] == "paper")
    ]
    value = hit["value"].iloc[0] if len(hit) else None
    return {"RMeanMSSSIM": f"{value:.4f}" if isinstance(value, int | float) else NA}


def _limitations(cfg: Config) -> str:
    if cfg.data.phantom is not None:
        return (
            "This run uses the built-in phantom, not patient data, and networks and training far smaller than the "
            "original's; its numbers exercise the pipeline and must not be compared with the paper's as results. "
            "Inception-based FID and KID need pretrained weights that cannot be downloaded offline; where they are "
            "missing the tables say so and give feature distances from an extractor that needs no download."
        )
    return "The paper profile reproduces the original's scale; see the README for compute requirements."


def collect_numbers(cfg: Config) -> dict[str, str]:
    numbers = {
        "RProfile": cfg.profile,
        "RConfigHash": cfg.hash,
        "RDataDescription": (
            "the built-in BraTS-layout phantom (synthetic anatomy from the MNI152 template, not patient data)"
            if cfg.data.phantom is not None
            else "BraTS 2024 adult post-treatment glioma training scans"
        ),
        "RLimitations": _limitations(cfg),
    }
    for part in (_data_numbers, _model_numbers, _augment_numbers, _fidelity_numbers):
        numbers.update(part(cfg))
    return numbers


def number_sources(cfg: Config) -> list[Path]:
    candidates = [
        PrepareOutputs(cfg.paths).cases_csv,
        TrainingOutputs(cfg.paths).train_log,
        AugmentationOutputs(cfg.paths).manifest,
        FidelityOutputs(cfg.paths).results_json,
    ]
    return [p for p in candidates if p.exists()]


def write_numbers(cfg: Config) -> Path:
    """Write this run's ``numbers.tex`` into the run folder (stamped with its sources and the run)."""
    from gliomagen.figures.publish import provenance

    stamp = export.source_stamp(number_sources(cfg), cfg.paths.root)
    tables_dir = FiguresOutputs(cfg.paths).tables_dir
    return export.write_macros(collect_numbers(cfg), tables_dir, stamp, cfg.hash, provenance(cfg))
