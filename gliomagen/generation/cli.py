"""The generation stage's verbs: ``gliomagen generate``, ``gliomagen sweep-samplers`` and ``gliomagen sample``."""

from __future__ import annotations

import argparse

from gliomagen.commands import Command, lazy

SAMPLER_CHOICES = ["ddpm", "ddim", "dpmpp", "unipc"]


def _shard_text(text: str) -> str:
    """Check ``--shard i/n`` while parsing, so a bad value stops at once with exit code 2."""
    from gliomagen.generation.jobs import parse_shard

    try:
        parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gliomagen generate``."""
    parser.add_argument("--which", choices=["val", "synthetic", "all"], default="all", help="which masks")
    parser.add_argument("--sampler", choices=SAMPLER_CHOICES, default=None, help="override the sampler")
    parser.add_argument("--steps", type=int, default=None, help="number of sampling steps")
    parser.add_argument(
        "--shard", default=None, type=_shard_text, help="i/n: process only shard i of n (0-based), e.g. 0/4"
    )


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gliomagen sample``."""
    parser.add_argument("--mask", required=True, help="a 3D label map (.nii/.nii.gz) in the profile's labels")
    parser.add_argument("--checkpoint", default=None, help="checkpoint file (default: generate.checkpoint)")
    parser.add_argument("--sampler", choices=SAMPLER_CHOICES, default=None, help="override the sampler")
    parser.add_argument("--steps", type=int, default=None, help="number of sampling steps")
    parser.add_argument("--seed", type=int, default=None, help="noise seed (default: from generate.seed)")
    parser.add_argument("--out", required=True, help="output folder")


COMMANDS = {
    "generate": Command(
        help="generate 4-modality volumes from masks",
        reads="<run>/checkpoints/ (from `gliomagen train`, or generate.checkpoint), validation masks, "
        "<run>/augmented_masks/ (from `gliomagen augment`)",
        writes="<run>/synthetic/{val,train}/ and its manifest, the generation summary",
        run=lazy("gliomagen.generation.stage:run_cli"),
        add_arguments=add_generate_arguments,
    ),
    "sweep-samplers": Command(
        help="sampler quality and speed against the number of network evaluations",
        reads="<run>/checkpoints/ (from `gliomagen train`), <run>/prepared/val/ masks, the real-only nnU-Net "
        "model when `gliomagen segment` has run (a rerun then only adds the re-segmentation Dice)",
        writes="<run>/sampler_sweep/ (volumes, feature caches, figure) and the sweep's tables in <run>/metrics/",
        run=lazy("gliomagen.generation.sweep:run_cli"),
        description="Sampler quality and speed against the number of network evaluations (NFE). The grid comes "
        "from the profile's sweep section (--set sweep.full_grid=true for every sampler and NFE).",
    ),
    "sample": Command(
        help="generate the four modalities for one mask file, in its geometry",
        reads="one mask file (--mask) and a checkpoint (--checkpoint, default: the run's generate.checkpoint)",
        writes="the four generated modalities in the mask's geometry, in --out",
        run=lazy("gliomagen.sample:run_cli"),
        add_arguments=add_sample_arguments,
    ),
}
