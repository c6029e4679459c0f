"""Blinded reader study (visual Turing test): build an offline kit for readers, score their answers.

``gliomagen reader-study build`` writes ``<run>/reader_study/kit/`` (a static page with PNG panels, to be
given to readers as it is) and the organiser's ``answer_key.csv`` beside it; ``gliomagen reader-study score``
reads the readers' exported answer files (default ``<run>/reader_study/answers/``) and writes
``<run>/metrics/reader_study_*``. See :mod:`gliomagen.reader_study.build` and
:mod:`gliomagen.reader_study.score`.
"""

from __future__ import annotations

import argparse

from gliomagen.config import Config


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

        result = build(cfg, force=getattr(args, "force", False))
        print(
            f"kit {result.kit_id}: {result.panels} panels in {result.kit_dir} (give this folder to readers)"
        )
        print(f"answer key (keep it): {result.key_path}")
        for row in result.skipped_cases:
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
