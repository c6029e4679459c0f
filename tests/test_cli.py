"""The ``gliomagen`` command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gliomagen.cli import STAGES, build_parser, main


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ["reproduce", *STAGES]:
        assert name in out


@pytest.mark.parametrize("command", ["reproduce", *STAGES])
def test_every_command_takes_common_options(command: str) -> None:
    args = build_parser().parse_args(
        [command, "--profile", "paper", "--set", "seed=3", "--run-dir", "/tmp/x"]
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
