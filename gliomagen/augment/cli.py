"""``gliomagen augment [--limit N]``: the verb's options and its entry point."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gliomagen.commands import Command

if TYPE_CHECKING:
    from gliomagen.augment.outputs import AugmentSummary
    from gliomagen.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gliomagen augment`` (the common ones are added by :mod:`gliomagen.cli`)."""
    parser.add_argument("--limit", type=int, default=None, help="augment only the first N training masks")


def run_cli(cfg: Config, args: argparse.Namespace) -> AugmentSummary:
    """Entry point of ``gliomagen augment``."""
    from gliomagen.augment.outputs import AugmentationOutputs
    from gliomagen.augment.stage import augment

    summary = augment(cfg, limit=getattr(args, "limit", None))
    print(
        f"augmented masks: {summary.tried} tried, {summary.accepted} accepted, "
        f"{summary.discarded} discarded {summary.discard_reasons} -> {AugmentationOutputs(cfg.paths).root}"
    )
    return summary


COMMANDS = {
    "augment": Command(
        help="augment the training masks (flip, scale, retry, discard)",
        reads="<run>/prepared/train/ masks (from `gliomagen prepare`)",
        writes="<run>/augmented_masks/, its manifest and summary",
        run=run_cli,
        add_arguments=add_arguments,
    ),
}
