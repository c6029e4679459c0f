"""The CLI helps: a stage run before the one it needs says which to run first (exit 2), options go before
or after the verb, every verb's help says what it reads and writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from gliomagen.cli import build_parser, main, stage_commands
from gliomagen.config import load_config
from gliomagen.data.outputs import PrepareOutputs
from gliomagen.stages import first_missing_stage


@pytest.mark.parametrize("verb", ["train", "augment", "generate", "segment", "fidelity"])
def test_stage_before_prepare_says_run_prepare_first(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([verb, "--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    assert f"gliomagen: {verb} needs the outputs of `gliomagen prepare`" in err
    assert "run `gliomagen prepare` first" in err


def test_the_earliest_missing_stage_is_named(tmp_path: Path) -> None:
    cfg = load_config("smoke", run_dir=tmp_path)
    PrepareOutputs(cfg.paths).cases_csv.parent.mkdir(parents=True)
    PrepareOutputs(cfg.paths).cases_csv.write_text("id\n")
    assert first_missing_stage(cfg, "generate") == "train"  # prepare is done; train comes before augment
    assert first_missing_stage(cfg, "generate", ("train",)) == "train"
    (cfg.paths.checkpoints).mkdir()
    (cfg.paths.checkpoints / "last.pt").write_bytes(b"")
    cfg.paths.training.mkdir()
    (cfg.paths.training / "train_log.csv").write_text("step\n")
    assert first_missing_stage(cfg, "generate") == "augment"
    assert first_missing_stage(cfg, "generate", ("train",)) is None  # --which val needs no augmented masks
    assert first_missing_stage(cfg, "train") is None


def test_generate_val_only_does_not_ask_for_augment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = load_config("smoke", run_dir=tmp_path)
    PrepareOutputs(cfg.paths).cases_csv.parent.mkdir(parents=True)
    PrepareOutputs(cfg.paths).cases_csv.write_text("id\n")
    assert main(["generate", "--which", "val", "--run-dir", str(tmp_path)]) == 2
    assert "run `gliomagen train` first" in capsys.readouterr().err


def test_options_before_the_verb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["--profile", "paper", "--set", "train.max_steps=9", "--run-dir", str(tmp_path), "config"]) == 0
    )
    out = capsys.readouterr().out
    assert "profile: paper" in out and "max_steps: 9" in out and f"# run folder: {tmp_path}" in out
    # before and after the verb together: the --set values add up, later wins
    assert main(["--set", "train.max_steps=9", "config", "--set", "train.max_steps=11"]) == 0
    assert "max_steps: 11" in capsys.readouterr().out
    assert main(["--profile", "paper", "train", "--run-dir", str(tmp_path)]) == 2  # parsed; prepare first
    with pytest.raises(SystemExit):
        main(["--profile", "paper", "config", "--profile", "nope"])
    assert "give it once" in capsys.readouterr().err


@pytest.mark.parametrize("verb", sorted(stage_commands()))
def test_every_verb_help_says_what_it_reads_and_writes(verb: str) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[verb]  # type: ignore[union-attr]
    text = sub.format_help()
    command = stage_commands()[verb]
    reads, writes = command.reads, command.writes
    assert "reads:" in text and "writes:" in text
    assert reads.split()[0] in text and writes.split()[0] in text
    assert "NnU-Net" not in text


def test_no_capitalised_nnunet_anywhere_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "NnU-Net" not in capsys.readouterr().out


def test_a_need_whose_outputs_exist_is_satisfied_however_they_were_made(tmp_path: Path) -> None:
    """Validation volumes generated from imported weights: fidelity can run although nothing was trained."""
    from gliomagen.data.outputs import PrepareOutputs
    from gliomagen.generation.outputs import GenerationOutputs

    cfg = load_config("smoke", run_dir=tmp_path)
    for marker in [*PrepareOutputs(cfg.paths).markers(), *GenerationOutputs(cfg.paths).markers()]:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("id\n")
    assert first_missing_stage(cfg, "fidelity") is None
    assert first_missing_stage(cfg, "segment") is None
    assert first_missing_stage(cfg, "sweep-samplers") == "train"
