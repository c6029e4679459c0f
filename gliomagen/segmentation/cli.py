"""``gliomagen segment``: its options (:func:`add_arguments`) and its entry point (:func:`run_cli`)."""

from __future__ import annotations

import argparse

from gliomagen.commands import Command, lazy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gliomagen segment``."""
    parser.add_argument("--configuration", default=None, help="train/evaluate only this data mix")
    parser.add_argument("--skip-training", action="store_true", help="only export datasets and evaluate")


COMMANDS = {
    "segment": Command(
        help="train and evaluate nnU-Net v2 on the six data mixes",
        reads="<run>/prepared/ and <run>/synthetic/ (from `gliomagen prepare` and `gliomagen generate`)",
        writes="<run>/nnunet/ (datasets, models, predictions), the segmentation metrics in <run>/metrics/",
        run=lazy("gliomagen.segmentation.pipeline:run_cli"),
        add_arguments=add_arguments,
    ),
}
