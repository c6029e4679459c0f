"""``gliomagen figures [--no-publish]``: the verb's options and its entry point."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gliomagen.commands import Command, lazy

if TYPE_CHECKING:
    from gliomagen.config import Config
    from gliomagen.figures.regenerate import FiguresResult


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gliomagen figures`` (the common ones are added by :mod:`gliomagen.cli`)."""
    parser.add_argument(
        "--no-publish",
        action="store_true",
        help="only write <run>/figures and <run>/paper_generated; leave the published copy alone",
    )


def run_cli(cfg: Config, args: argparse.Namespace) -> FiguresResult:
    """Make every figure and table of the run, then publish the run.

    Raises:
        PublishRefused: the run is incomplete (the CLI prints one line and exits 2); its own copies stay in
            the run folder and nothing published changes.
    """
    from gliomagen.figures.publish import publish
    from gliomagen.figures.regenerate import regenerate

    result = regenerate(cfg)
    print(result.manifest[["name", "kind", "paper", "status"]].to_string(index=False))
    print(f"\nthis run's figures: {result.figures_dir}\nthis run's tables:  {result.tables_dir}")
    if getattr(args, "no_publish", False):
        print("not published (--no-publish)")
        return result
    record = publish(cfg)
    print(
        f"published run {record['run_dir']} (config {record['config_hash']}) to\n"
        f"  {cfg.figures_dir}\n  {cfg.tables_dir}"
    )
    return result


COMMANDS = {
    "figures": Command(
        help="regenerate every figure and table",
        reads="every stage's outputs in <run>/, through each stage's readers",
        writes="<run>/figures/, <run>/paper_generated/; then, if the run is complete, the published copy "
        "figures/<profile>/ and paper/generated/<profile>/",
        run=run_cli,
        add_arguments=add_arguments,
    ),
    "paper": Command(
        help="check the manuscript's includes and build its PDF",
        reads="the published copy figures/<profile>/ and paper/generated/<profile>/ (from `gliomagen figures`)",
        writes="paper/gliomagen-<profile>.pdf (where LaTeX exists); the check itself writes nothing",
        run=lazy("gliomagen.paper:run_cli"),
    ),
}
