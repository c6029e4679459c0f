"""The ``gliomagen`` command line."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from gliomagen.cli import build_parser, main, stage_commands

STAGES = list(stage_commands())


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ["reproduce", *STAGES]:
        assert name in out


def _required(parser: argparse.ArgumentParser, command: str) -> list[str]:
    """Placeholder values for the arguments ``command`` requires (positionals and required options)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    args: list[str] = []
    for action in sub._actions:
        if not action.option_strings and action.nargs not in ("?", "*"):
            args.append("x")
        elif action.option_strings and action.required:
            args += [action.option_strings[0], "x"]
    return args


@pytest.mark.parametrize("command", ["reproduce", *STAGES])
def test_every_command_takes_common_options(command: str) -> None:
    parser = build_parser()
    args = parser.parse_args(
        [command, *_required(parser, command), "--profile", "paper", "--set", "seed=3", "--run-dir", "/tmp/x"]
    )
    assert args.profile == "paper" and args.overrides == ["seed=3"] and args.run_dir == "/tmp/x"


def test_config_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--set", "nope.key=1"]) == 2
    assert "unknown key 'nope'" in capsys.readouterr().err


def test_config_prints_hash(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 0
    assert "# config hash:" in capsys.readouterr().out


def test_console_script_installed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gliomagen.cli", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("gliomagen ")


def test_help_imports_no_stage() -> None:
    """``gliomagen --help`` builds every verb's parser without importing torch or a stage's code."""
    code = (
        "import sys; from gliomagen.cli import build_parser; build_parser(); "
        "heavy = [m for m in ('torch', 'monai', 'nnunetv2', 'nibabel') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
