"""``gliomagen augment [--limit N]``: the verb's options and its entry point."""

from __future__ import annotations

import argparse

from gliomagen.augment.outputs import AugmentationOutputs, AugmentSummary
from gliomagen.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gliomagen augment`` (the common ones are added by :mod:`gliomagen.cli`)."""
    parser.add_argument("--limit", type=int, default=None, help="augment only the first N training masks")


def run_cli(cfg: Config, args: argparse.Namespace) -> AugmentSummary:
    """Entry point of ``gliomagen augment``."""
    from gliomagen.augment.stage import augment

    summary = augment(cfg, limit=getattr(args, "limit", None))
    print(
        f"augmented masks: {summary.tried} tried, {summary.accepted} accepted, "
        f"{summary.discarded} discarded {summary.discard_reasons} -> {AugmentationOutputs(cfg.paths).root}"
    )
    return summary
