"""The fidelity stage's commands: ``gliomagen fetch-weights`` and ``gliomagen fidelity``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from gliomagen.cli import build_parser, main


@pytest.fixture()
def empty_torch_hub(tmp_path: Path) -> Iterator[Path]:
    """A torch hub cache without any weights (whatever this machine's cache holds)."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(old)


def test_fetch_weights_lists_weight_status(
    empty_torch_hub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fetch-weights", "--list", "--run-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "inception-fid" in out and "weights missing" in out
    assert "radiomics" in out and "no weights needed" in out


def test_fetch_weights_finds_weights_in_the_profiles_folder(
    empty_torch_hub: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gliomagen.fidelity.features import FID_INCEPTION

    (tmp_path / FID_INCEPTION.filename).write_bytes(b"")
    args = [
        "fetch-weights",
        "--list",
        "--set",
        f"fidelity.weights_dir={tmp_path}",
        "--run-dir",
        str(tmp_path),
    ]
    assert main(args) == 0
    assert f"weights at {tmp_path / FID_INCEPTION.filename}" in capsys.readouterr().out


def test_fetch_weights_rejects_an_unknown_extractor(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown extractor"):
        main(["fetch-weights", "vgg", "--list", "--run-dir", str(tmp_path)])


def test_fetch_weights_help_says_what_it_reads_and_writes() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["fetch-weights"]  # type: ignore[union-attr]
    text = sub.format_help()
    assert "reads:" in text and "writes:" in text and "--weights-dir" in text and "--profile" in text


def test_fidelity_verb_takes_force() -> None:
    args = build_parser().parse_args(["fidelity", "--force"])
    assert args.force and args.command == "fidelity"
