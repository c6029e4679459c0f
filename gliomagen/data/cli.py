"""The data stage's verbs: ``gliomagen phantom`` (the built-in phantom dataset) and ``gliomagen prepare``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gliomagen.commands import Command, lazy
from gliomagen.config import Config, ConfigError, PhantomConfig

if TYPE_CHECKING:
    from gliomagen.data.phantom.generator import PhantomSummary


def add_phantom_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gliomagen phantom`` (the common ones are added by :mod:`gliomagen.cli`)."""
    parser.add_argument("--out", default=None, help="output folder (default: the profile's data.raw_dir)")
    parser.add_argument("--patients", type=int, default=None, help="number of patients (default: profile)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: profile)")
    parser.add_argument("--faults", action="store_true", help="add malformed cases to exercise validation")
    parser.add_argument("--brats-grid", action="store_true", help="full BraTS grid 182x218x182 at 1 mm")


def run_phantom(cfg: Config, args: argparse.Namespace) -> PhantomSummary:
    """``gliomagen phantom``: options override the profile's ``data.phantom`` section."""
    from gliomagen.data.phantom.anatomy import BRATS_GRID
    from gliomagen.data.phantom.faults import FAULTS
    from gliomagen.data.phantom.generator import make_phantom

    base = cfg.data.phantom or PhantomConfig()
    updates: dict[str, Any] = {}
    if args.patients is not None:
        updates["patients"] = args.patients
    if args.seed is not None:
        updates["seed"] = args.seed
    if args.faults:
        updates["faults"] = True
    if args.brats_grid:
        updates.update(shape=BRATS_GRID, spacing=1.0)
    phantom = PhantomConfig.model_validate({**base.model_dump(), **updates})
    out = Path(args.out) if args.out else cfg.raw_dir
    try:
        summary = make_phantom(out, phantom, workers=cfg.runtime.workers, target_shape=cfg.data.target_shape)
    except FileExistsError as exc:
        raise ConfigError(str(exc)) from None
    print(f"phantom: {len(summary.cases)} scans in {summary.out_dir} ({summary.seconds:.1f} s)")
    for cid, fault in summary.faults.items():
        print(f"  fault {cid}: {fault} -- {FAULTS[fault]}")
    return summary


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gliomagen prepare``."""
    parser.add_argument(
        "--raw-dir", default=None, help="BraTS-layout folder (default: the profile's data.raw_dir)"
    )


COMMANDS = {
    "phantom": Command(
        help="write the BraTS-layout phantom dataset",
        reads="nothing (built from nilearn's bundled MNI152 template)",
        writes="<run>/raw/ (or --out)",
        run=run_phantom,
        add_arguments=add_phantom_arguments,
    ),
    "prepare": Command(
        help="validate, QC, normalise, resample and split the data",
        reads="the raw BraTS-layout folder (data.raw_dir, --raw-dir; smoke: <run>/raw/, built there first)",
        writes="<run>/prepared/{train,val,excluded}/, the cases table, the QC report and records",
        run=lazy("gliomagen.data.prepare:run_cli"),
        add_arguments=add_prepare_arguments,
    ),
}
