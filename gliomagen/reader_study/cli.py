"""``gliomagen reader-study build|score``: the verb's options and its entry point."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gliomagen.commands import Command

if TYPE_CHECKING:
    from gliomagen.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``gliomagen reader-study`` (the common ones are added by :mod:`gliomagen.cli`)."""
    parser.add_argument(
        "action", nargs="?", choices=["build", "score"], help="build the kit or score answers"
    )
    parser.add_argument(
        "--answers",
        nargs="+",
        default=None,
        help="answer files/folders (default <run>/reader_study/answers)",
    )
    parser.add_argument(
        "--force", action="store_true", help="build: replace a kit that has answers (archived)"
    )


def run_cli(cfg: Config, args: argparse.Namespace) -> None:
    """Entry point of ``gliomagen reader-study build|score``."""
    action = getattr(args, "action", None)
    try:
        _run(cfg, action, args)
    except (OSError, ValueError, RuntimeError) as exc:
        # KitError, AnswerFileError and a missing key already name the file and the problem: no traceback.
        raise SystemExit(f"gliomagen reader-study {action}: {exc}") from None


def _run(cfg: Config, action: str | None, args: argparse.Namespace) -> None:
    if action == "build":
        from gliomagen.reader_study.build import build

        kit = build(cfg, force=getattr(args, "force", False))
        print(f"kit {kit.kit_id}: {kit.panels} panels in {kit.kit_dir} (give this folder to readers)")
        print(f"answer key (keep it): {kit.key_path}")
        for row in kit.skipped_cases:
            print(f"  not used: {row['case_id']}: {row['reason']}")
    elif action == "score":
        from gliomagen.reader_study.score import SUMMARY_COLUMNS, score

        result = score(cfg, getattr(args, "answers", None))
        overall = result.detection[result.detection["stratum"] == "overall"]
        print(overall[SUMMARY_COLUMNS].to_string(index=False, float_format="%.3f"))
        kappa = result.agreement
        if kappa["method"]:
            print(f"agreement ({kappa['name']}, {kappa['readers']} readers): {kappa['kappa']:.3f}")
        print("written: " + ", ".join(str(p) for p in result.outputs))
    else:
        raise SystemExit(
            "gliomagen reader-study: name an action: `build` (make the kit) or `score` (score answers)"
        )


COMMANDS = {
    "reader-study": Command(
        help="blinded reader study: build the kit, score answers",
        reads="<run>/prepared/val/ and <run>/synthetic/ (from `gliomagen generate`); answers for `score`",
        writes="<run>/reader_study/ (kit, key, scores)",
        run=run_cli,
        add_arguments=add_arguments,
    ),
}
