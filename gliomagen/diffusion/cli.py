"""The diffusion stage's verbs: ``gliomagen train`` and ``gliomagen import-weights``."""

from __future__ import annotations

import argparse

from gliomagen.commands import Command, lazy


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gliomagen train``."""
    parser.add_argument(
        "--no-resume", action="store_true", help="start from scratch even if checkpoints exist"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this global step")


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gliomagen import-weights``."""
    parser.add_argument("src", help="the original's checkpoint (.pt with step, model, ema)")
    parser.add_argument("--out", required=True, help="the project checkpoint to write")
    parser.add_argument(
        "--which", choices=["ema", "model"], default="ema", help="which weights (default: ema)"
    )


COMMANDS = {
    "train": Command(
        help="train the mask-conditioned 3D diffusion model",
        reads="<run>/prepared/ (from `gliomagen prepare`)",
        writes="<run>/checkpoints/*.pt, <run>/training/ (loss logs, TensorBoard, previews)",
        run=lazy("gliomagen.diffusion.train:run_cli"),
        add_arguments=add_train_arguments,
    ),
    "import-weights": Command(
        help="convert the original's released checkpoint into a project checkpoint (default profile: paper)",
        reads="the original's released checkpoint (SRC, a .pt with step, model, ema; loaded without running code)",
        writes="a project checkpoint (--out) for the paper network",
        run=lazy("gliomagen.diffusion.import_weights:run_cli"),
        add_arguments=add_import_arguments,
        default_profile="paper",  # the released weights are the paper network's
    ),
}
