"""The ``gliomagen`` command: one subcommand per pipeline stage, plus ``reproduce`` to run the notebooks.

Every subcommand takes ``--profile`` (default ``smoke``), ``--set section.key=value`` (repeatable) and
``--run-dir`` (default ``runs/<profile>``). Stage logic lives in the package; the CLI only parses
arguments, loads the config and calls the stage's entry point.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from gliomagen import __version__
from gliomagen.config import Config, ConfigError, available_profiles, load_config
from gliomagen.errors import InputError
from gliomagen.fidelity import cli as fidelity_cli

log = logging.getLogger("gliomagen")

#: stage name -> (entry point "module:function", issue that builds it, one-line help)
STAGES: dict[str, tuple[str, int, str]] = {
    "phantom": ("gliomagen.data.phantom.cli:run_cli", 3, "write the BraTS-layout phantom dataset"),
    "prepare": ("gliomagen.data.prepare:run_cli", 3, "validate, QC, normalise, resample and split the data"),
    "train": ("gliomagen.diffusion.train:run_cli", 4, "train the mask-conditioned 3D diffusion model"),
    "augment": ("gliomagen.augment.cli:run_cli", 5, "augment the training masks (flip, scale, discard)"),
    "generate": ("gliomagen.generation.stage:run_cli", 5, "generate 4-modality volumes from masks"),
    "sweep-samplers": ("gliomagen.generation.sweep:run_cli", 18, "sampler quality and speed against NFE"),
    "import-weights": (
        "gliomagen.diffusion.import_weights:run_cli",
        15,
        "convert the original's released checkpoint into a project checkpoint (default profile: paper)",
    ),
    "sample": (
        "gliomagen.sample:run_cli",
        15,
        "generate the four modalities for one mask file, in its geometry",
    ),
    "fidelity": ("gliomagen.fidelity.cli:run_cli", 6, "MS-SSIM, FID, KID, FRD on validation pairs"),
    "segment": ("gliomagen.segmentation.pipeline:run_cli", 7, "nnU-Net v2 on the six data mixes"),
    "figures": ("gliomagen.figures.cli:run_cli", 8, "regenerate every figure and table"),
    "reader-study": (
        "gliomagen.reader_study.cli:run_cli",
        9,
        "blinded reader study: build the kit, score answers",
    ),
    "paper": ("gliomagen.paper:run_cli", 8, "check the manuscript's includes and build its PDF"),
}


#: what each CLI verb reads and writes (shown by ``gliomagen <verb> --help``)
VERB_IO: dict[str, tuple[str, str]] = {
    "phantom": ("nothing (built from nilearn's bundled MNI152 template)", "<run>/raw/ (or --out)"),
    "prepare": (
        "the raw BraTS-layout folder (data.raw_dir, --raw-dir; smoke: <run>/raw/)",
        "<run>/prepared/{train,val,excluded}/, prepared/cases.csv, prepared/qc_report.md",
    ),
    "train": (
        "<run>/prepared/ (from `gliomagen prepare`)",
        "<run>/checkpoints/*.pt, <run>/training/ (loss CSVs, TensorBoard, previews)",
    ),
    "augment": (
        "<run>/prepared/train/ masks (from `gliomagen prepare`)",
        "<run>/augmented_masks/ and its manifest.csv",
    ),
    "generate": (
        "<run>/checkpoints/ (from `gliomagen train`), validation masks, <run>/augmented_masks/ "
        "(from `gliomagen augment`)",
        "<run>/synthetic/{val,train}/ and synthetic/manifest.csv",
    ),
    "fidelity": (
        "<run>/prepared/val/ and <run>/synthetic/val/ (from `gliomagen generate`)",
        "<run>/metrics/fidelity*.json|csv",
    ),
    "segment": (
        "<run>/prepared/ and <run>/synthetic/ (from `gliomagen prepare` and `gliomagen generate`)",
        "<run>/nnunet/ (datasets, models, predictions), <run>/metrics/segmentation*.json|csv",
    ),
    "figures": (
        "every stage's outputs in <run>/",
        "<run>/figures/, <run>/paper_generated/; then, if the run is complete, the published copy "
        "figures/<profile>/ and paper/generated/<profile>/",
    ),
    "import-weights": (
        "the original's released checkpoint (SRC, a .pt with step, model, ema; loaded without running code)",
        "a project checkpoint (--out) for the paper network",
    ),
    "sample": (
        "one mask file (--mask) and a checkpoint (--checkpoint, default: the run's generate.checkpoint)",
        "the four generated modalities in the mask's geometry, in --out",
    ),
    "reader-study": (
        "<run>/prepared/val/ and <run>/synthetic/ (from `gliomagen generate`); answers for `score`",
        "<run>/reader_study/ (kit, key, scores)",
    ),    "sweep-samplers": (
        "<run>/checkpoints/ (from `gliomagen train`), <run>/prepared/val/ masks, the real-only nnU-Net model "
        "when `gliomagen segment` has run",
        "<run>/sampler_sweep/ (volumes, figure) and <run>/metrics/sampler_sweep*.{csv,json}",
    ),
    "paper": (
        "the published copy figures/<profile>/ and paper/generated/<profile>/ (from `gliomagen figures`)",
        "paper/gliomagen-<profile>.pdf (where LaTeX exists); the check itself writes nothing",
    ),
    "fetch-weights": (
        "the internet (torchvision's and torch-fidelity's Inception weights)",
        "the torch hub cache or --weights-dir",
    ),
}


class StageNotBuilt(RuntimeError):
    pass


def _load_entry(stage: str) -> Callable[..., Any]:
    target, issue, _ = STAGES[stage]
    module_name, func_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise StageNotBuilt(
                f"stage {stage!r} is not built yet (module {module_name} does not exist; see issue #{issue})"
            ) from None
        raise
    if not hasattr(module, func_name):
        raise StageNotBuilt(f"stage {stage!r} is not built yet ({target} missing; see issue #{issue})")
    return getattr(module, func_name)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        default="smoke",
        help=f"configs/<profile>.yaml or a YAML path (default: smoke; available: {', '.join(available_profiles())})",
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

    for name, (_, _issue, help_text) in STAGES.items():
        reads, writes = VERB_IO.get(name, ("", ""))
        p = sub.add_parser(
            name,
            help=help_text,
            description=f"{help_text}.\n\nreads:  {reads}\nwrites: {writes}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _common(p)
        _stage_arguments(name, p)
    fidelity_cli.add_fetch_weights_parser(sub, _common)
    return parser


def _stage_arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name == "phantom":
        p.add_argument("--out", default=None, help="output folder (default: the profile's data.raw_dir)")
        p.add_argument("--patients", type=int, default=None, help="number of patients (default: profile)")
        p.add_argument("--seed", type=int, default=None, help="random seed (default: profile)")
        p.add_argument("--faults", action="store_true", help="add malformed cases to exercise validation")
        p.add_argument("--brats-grid", action="store_true", help="full BraTS grid 182x218x182 at 1 mm")
    elif name == "prepare":
        p.add_argument(
            "--raw-dir", default=None, help="BraTS-layout folder (default: the profile's data.raw_dir)"
        )
    elif name == "train":
        p.add_argument(
            "--no-resume", action="store_true", help="start from scratch even if checkpoints exist"
        )
        p.add_argument("--max-steps", type=int, default=None, help="stop after this global step")
    elif name == "generate":
        p.add_argument("--which", choices=["val", "synthetic", "all"], default="all", help="which masks")
        p.add_argument(
            "--sampler", choices=["ddpm", "ddim", "dpmpp", "unipc"], default=None, help="override the sampler"
        )
        p.add_argument("--steps", type=int, default=None, help="number of sampling steps")
        p.add_argument(
            "--shard",
            default=None,
            type=_shard_text,
            help="i/n: process only shard i of n (0-based), e.g. 0/4",
        )
    elif name == "import-weights":
        p.set_defaults(profile="paper")  # the released weights are the paper network's
        p.add_argument("src", help="the original's checkpoint (.pt with step, model, ema)")
        p.add_argument("--out", required=True, help="the project checkpoint to write")
        p.add_argument(
            "--which", choices=["ema", "model"], default="ema", help="which weights (default: ema)"
        )
    elif name == "sample":
        p.add_argument("--mask", required=True, help="a 3D label map (.nii/.nii.gz) in the profile's labels")
        p.add_argument("--checkpoint", default=None, help="checkpoint file (default: generate.checkpoint)")
        p.add_argument(
            "--sampler", choices=["ddpm", "ddim", "dpmpp", "unipc"], default=None, help="override the sampler"
        )
        p.add_argument("--steps", type=int, default=None, help="number of sampling steps")
        p.add_argument("--seed", type=int, default=None, help="noise seed (default: from generate.seed)")
        p.add_argument("--out", required=True, help="output folder")
    elif name == "segment":
        p.add_argument("--configuration", default=None, help="train/evaluate only this data mix")
        p.add_argument("--skip-training", action="store_true", help="only export datasets and evaluate")
    elif name == "augment":
        p.add_argument("--limit", type=int, default=None, help="augment only the first N training masks")
    elif name == "figures":
        p.add_argument(
            "--no-publish",
            action="store_true",
            help="only write <run>/figures and <run>/paper_generated; leave the published copy alone",
        )
    elif name == "fidelity":
        fidelity_cli.add_fidelity_arguments(p)
    elif name == "reader-study":
        p.add_argument("action", nargs="?", choices=["build", "score"], help="build the kit or score answers")
        p.add_argument(
            "--answers",
            nargs="+",
            default=None,
            help="answer files/folders (default <run>/reader_study/answers)",
        )
        p.add_argument(
            "--force", action="store_true", help="build: replace a kit that has answers (archived)"
        )


def _shard_text(text: str) -> str:
    """Check ``--shard i/n`` while parsing, so a bad value stops at once with exit code 2."""
    from gliomagen.generation.jobs import parse_shard

    try:
        parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _config_from(args: argparse.Namespace) -> Config:
    return load_config(args.profile, args.overrides, run_dir=args.run_dir)


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


def main(argv: Sequence[str] | None = None) -> int:
    # the CLI only writes figures to files: never open a GUI backend (set here, not at import, so that a
    # notebook importing the package keeps its inline backend)
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
        cfg = _config_from(args)
        if args.command == "config":
            import yaml

            if args.explain:
                from gliomagen.config import explain

                print(explain(cfg))
                return 0
            print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
            print(f"# config hash: {cfg.hash}\n# run folder: {cfg.paths.root}")
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
        from gliomagen.stages import first_missing_stage

        val_only = args.command == "generate" and getattr(args, "which", None) == "val"
        needs: tuple[str, ...] | None = ("train",) if val_only else None
        if args.command == "generate" and cfg.generate.checkpoint not in ("best", "last"):
            # an explicit checkpoint file (e.g. imported weights) needs no training in this run
            needs = ("prepare",) if val_only else ("prepare", "augment")
        missing = first_missing_stage(cfg, args.command, needs)
        if missing is not None:
            print(
                f"gliomagen: {args.command} needs the outputs of `gliomagen {missing}`, which are not in "
                f"{cfg.paths.root}: run `gliomagen {missing}` first (with the same --profile/--run-dir)",
                file=sys.stderr,
            )
            return 2
        entry = getattr(args, "entry", None) or _load_entry(args.command)  # a verb's parser may set it
        entry(cfg, args)
        return 0
    except ConfigError as exc:
        print(f"gliomagen: configuration error: {exc}", file=sys.stderr)
        return 2
    except InputError as exc:  # a bad file, a busy run folder, a bad option: the message says which
        print(f"gliomagen: {exc}", file=sys.stderr)
        return 2
    except StageNotBuilt as exc:
        print(f"gliomagen: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("gliomagen: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
