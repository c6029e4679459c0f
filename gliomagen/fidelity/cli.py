"""The fidelity stage's commands: ``gliomagen fidelity`` and ``gliomagen fetch-weights``.

Each verb has its parser (``add_*``) beside its entry point (``run_*(cfg, args)``); ``gliomagen.cli``
registers them. This module imports nothing heavy: the stage is imported when a verb runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from gliomagen.commands import Command

if TYPE_CHECKING:
    from gliomagen.config import Config
    from gliomagen.fidelity.evaluate import FidelitySummary

FIDELITY_HELP = "MS-SSIM, FID, KID, FRD on validation pairs"
FETCH_WEIGHTS_HELP = "download the pretrained weights of the FID/KID feature extractors (needs internet)"


# --------------------------------------------------------------------------------------- gliomagen fidelity
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gliomagen fidelity``."""
    parser.add_argument("--force", action="store_true", help="recompute even if the results are up to date")


def run_cli(cfg: Config, args: argparse.Namespace) -> FidelitySummary:
    """Entry point of ``gliomagen fidelity``: runs the stage, prints the mean rows and where the files are."""
    from gliomagen.fidelity.evaluate import run_fidelity

    try:
        summary = run_fidelity(cfg, force=bool(getattr(args, "force", False)))
    except FileNotFoundError as exc:  # missing inputs: a one-line message, not a traceback
        raise SystemExit(f"gliomagen fidelity: {exc}") from None
    frame = summary.results.frame()
    shown = frame[frame["modality"].eq("mean")][
        ["metric", "variant", "extractor", "value", "ci_low", "ci_high", "status"]
    ]
    print(shown.to_string(index=False))
    print(f"results: {summary.outputs.results_json}")
    print(f"mask-following measures: {summary.outputs.conditioning_csv}")
    return summary


# ---------------------------------------------------------------------------------- gliomagen fetch-weights
def add_fetch_weights_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gliomagen fetch-weights``."""
    parser.add_argument(
        "extractors", nargs="*", default=None, help="only these extractors (default: every one with weights)"
    )
    parser.add_argument("--weights-dir", default=None, help="destination and place to look for weights")
    parser.add_argument("--list", action="store_true", help="only list the extractors and their weights")


def run_fetch_weights(cfg: Config, args: argparse.Namespace) -> list[Path]:
    """Entry point of ``gliomagen fetch-weights``; returns the weight files present afterwards."""
    from gliomagen.fidelity.features import REGISTRY, WeightsMissingError, fetch_all, find_weights

    weights_dir = getattr(args, "weights_dir", None) or cfg.fidelity.weights_dir
    names = list(getattr(args, "extractors", None) or [])
    unknown = sorted(set(names) - set(REGISTRY))
    if unknown:
        raise SystemExit(
            f"gliomagen fetch-weights: unknown extractor(s) {unknown}; known: {', '.join(REGISTRY)}"
        )
    if not getattr(args, "list", False):
        for path in fetch_all(weights_dir, names or None):
            print(f"ok {path}")
    present = []
    for name, entry in REGISTRY.items():
        if entry.weights is None:
            state = "no weights needed"
        else:
            try:
                path = find_weights(entry.weights, weights_dir, name)
                present.append(path)
                state = f"weights at {path}"
            except WeightsMissingError:
                state = "weights missing"
        print(f"{name:<22} {state}\n    {entry.description}")
    return present


COMMANDS = {
    "fidelity": Command(
        help=FIDELITY_HELP,
        reads="<run>/prepared/val/ and <run>/synthetic/val/ (from `gliomagen generate --which val`)",
        writes="<run>/metrics/ (the fidelity results, per-subject and per-slice tables, mask-following measures)",
        run=run_cli,
        add_arguments=add_arguments,
    ),
    "fetch-weights": Command(
        help=FETCH_WEIGHTS_HELP,
        reads="the internet (download.pytorch.org, github.com)",
        writes="--weights-dir, else the profile's fidelity.weights_dir, else the torch hub cache",
        run=run_fetch_weights,
        add_arguments=add_fetch_weights_arguments,
        description=f"{FETCH_WEIGHTS_HELP}; evaluations never download. Without --list, downloads what is "
        "missing, then lists every extractor and where its weights are.",
    ),
}
