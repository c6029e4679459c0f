"""The ``gliomagen`` command: one verb per pipeline stage, plus ``reproduce`` (the notebooks) and ``config``.

Every verb takes ``--profile`` (default ``smoke``), ``--set section.key=value`` (repeatable) and
``--run-dir`` (default ``runs/<profile>``), before or after the verb. Each stage declares its verbs, their
options and entry points in its own ``cli`` module (:data:`COMMAND_MODULES`); this module only registers
them, loads the config, checks that the stages a verb needs have run, and turns input errors into one line
and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from gliomagen import __version__
from gliomagen.commands import Command
from gliomagen.config import Config, ConfigError, available_profiles, load_config
from gliomagen.errors import InputError

log = logging.getLogger("gliomagen")

#: the stage ``cli`` modules, each with a ``COMMANDS`` dict of its verbs, in pipeline order
COMMAND_MODULES: tuple[str, ...] = (
    "gliomagen.data.cli",
    "gliomagen.diffusion.cli",
    "gliomagen.augment.cli",
    "gliomagen.generation.cli",
    "gliomagen.fidelity.cli",
    "gliomagen.segmentation.cli",
    "gliomagen.figures.cli",
    "gliomagen.reader_study.cli",
)


def stage_commands() -> dict[str, Command]:
    """Every stage verb with its :class:`~gliomagen.commands.Command`, in pipeline order."""
    commands: dict[str, Command] = {}
    for module_name in COMMAND_MODULES:
        commands.update(importlib.import_module(module_name).COMMANDS)
    return commands


def _common(parser: argparse.ArgumentParser, default_profile: str = "smoke") -> None:
    parser.add_argument(
        "--profile",
        default=default_profile,
        help=f"configs/<profile>.yaml or a YAML path (default: {default_profile}; available: "
        f"{', '.join(available_profiles())})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.max_steps=100 (repeatable; later wins)",
    )
    parser.add_argument("--run-dir", default=None, help="output folder (default: runs/<profile>)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gliomagen",
        description=(
            "GliomaGen reproducible artifact: mask-conditioned 3D diffusion for BraTS 2024 post-treatment "
            "glioma. Run the whole pipeline with `gliomagen reproduce`, or one stage at a time."
        ),
        epilog="Each command prints its own help: gliomagen <command> --help",
    )
    parser.add_argument("--version", action="version", version=f"gliomagen {__version__}")
    # the common options are accepted before the verb too (`gliomagen --profile paper train`)
    parser.add_argument("--profile", dest="top_profile", default=None, help="same as <command> --profile")
    parser.add_argument("--set", dest="top_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="same as <command> --set")  # fmt: skip
    parser.add_argument("--run-dir", dest="top_run_dir", default=None, help="same as <command> --run-dir")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)

    p = sub.add_parser(
        "reproduce",
        help="execute the notebooks (01..08) in order with papermill",
        description=(
            "Convert each Jupytext notebook in notebooks/ and execute it with papermill for the chosen profile; "
            "executed notebooks go to <run-dir>/notebooks/. Stops at the first failing notebook and names the cell."
        ),
    )
    _common(p)
    p.add_argument("--from", dest="start", type=int, default=1, help="first notebook number (default 1)")
    p.add_argument(
        "--to", dest="stop", type=int, default=None, help="last notebook number (default: the last)"
    )
    p.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds (default none)")

    p = sub.add_parser(
        "config",
        help="print the resolved configuration and its hash",
        description="Print the resolved configuration (profile + --set overrides) as YAML with its hash. "
        "With --explain: every key, its value, the paper's value where this profile differs, and what it means.",
    )
    _common(p)
    p.add_argument(
        "--explain", action="store_true", help="describe every key (and show where it differs from paper)"
    )

    for name, command in stage_commands().items():
        description = command.description or f"{command.help[0].upper()}{command.help[1:]}."
        p = sub.add_parser(
            name,
            help=command.help,
            description=f"{description}\n\nreads:  {command.reads}\nwrites: {command.writes}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _common(p, command.default_profile)
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    chosen: argparse.ArgumentParser = action.choices[command]
    return chosen


def _show_config(cfg: Config, explain: bool) -> None:
    if explain:
        from gliomagen.config import explain as explain_config

        print(explain_config(cfg))
        return
    import yaml

    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    print(f"# config hash: {cfg.hash}\n# run folder: {cfg.paths.root}")


def _missing_stage(cfg: Config, args: argparse.Namespace) -> str | None:
    """The stage to run before this verb, or ``None`` (``generate`` needs depend on its options)."""
    from gliomagen.stages import first_missing_stage

    needs: tuple[str, ...] | None = None
    if args.command == "generate":
        val_only = getattr(args, "which", None) == "val"
        needs = ("prepare", "train") if val_only else ("prepare", "train", "augment")
        if cfg.generate.checkpoint not in ("best", "last"):
            # an explicit checkpoint file (e.g. imported weights) needs no training in this run
            needs = tuple(n for n in needs if n != "train")
    return first_missing_stage(cfg, args.command, needs)


def main(argv: Sequence[str] | None = None) -> int:
    # the CLI only writes figures to files: never open a GUI backend (set here, not at import, so that a
    # notebook importing the package keeps its inline backend; the runner starts kernels with inline)
    os.environ.setdefault("MPLBACKEND", "Agg")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top_profile is not None:
        verb_default = _subparser(parser, args.command).get_default("profile")
        if args.profile not in (verb_default, args.top_profile):
            parser.error(f"--profile given twice ({args.top_profile} and {args.profile}); give it once")
        args.profile = args.top_profile
    args.overrides = args.top_overrides + args.overrides
    args.run_dir = args.run_dir or args.top_run_dir
    _setup_logging(getattr(args, "verbose", False))
    try:
        cfg = load_config(args.profile, args.overrides, run_dir=args.run_dir)
        if args.command == "config":
            _show_config(cfg, args.explain)
            return 0
        if args.command == "reproduce":
            from gliomagen.runner import run_notebooks

            result = run_notebooks(
                cfg.profile if not args.profile.endswith((".yaml", ".yml")) else args.profile,
                overrides=args.overrides,
                run_dir=args.run_dir,
                start=args.start,
                stop=args.stop,
                cell_timeout=args.timeout,
                progress=True,
            )
            return 0 if result.ok else 1
        missing = _missing_stage(cfg, args)
        if missing is not None:
            print(
                f"gliomagen: {args.command} needs the outputs of `gliomagen {missing}`, which are not in "
                f"{cfg.paths.root}: run `gliomagen {missing}` first (with the same --profile/--run-dir)",
                file=sys.stderr,
            )
            return 2
        args.run(cfg, args)
        return 0
    except ConfigError as exc:
        print(f"gliomagen: configuration error: {exc}", file=sys.stderr)
        return 2
    except InputError as exc:  # a bad file, a busy run folder, a bad option: the message says which
        print(f"gliomagen: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gliomagen: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
