"""``gliomagen segment``: its options (:func:`add_arguments`) and its entry point (:func:`run_cli`)."""

from __future__ import annotations

import argparse

from gliomagen.segmentation.pipeline import run_cli

__all__ = ["add_arguments", "run_cli"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gliomagen segment``."""
    parser.add_argument("--configuration", default=None, help="train/evaluate only this data mix")
    parser.add_argument("--skip-training", action="store_true", help="only export datasets and evaluate")
