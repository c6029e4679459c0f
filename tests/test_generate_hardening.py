"""Generation (issue 13): batching tolerance, bad --shard values, partial files of a killed run, the lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_generate import build_run

from gliomagen.cli import main
from gliomagen.generation.jobs import ShardError, all_jobs, load_job_mask, parse_shard, volume_seed
from gliomagen.generation.sampling import BATCH_TOLERANCE, load_setup, sample_batch
from gliomagen.generation.stage import generate
from gliomagen.locks import run_lock


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("genh") / "run").paths.root


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp"])
def test_a_volume_does_not_depend_on_its_batch_beyond_the_stated_tolerance(run: Path, sampler: str) -> None:
    from test_generate import TINY

    from gliomagen.config import load_config

    cfg = load_config("smoke", [*TINY, f"generate.sampler={sampler}", "generate.steps=4"], run_dir=run)
    setup = load_setup(cfg)
    jobs = all_jobs(cfg, "all")[:4]
    masks = np.stack([load_job_mask(j, cfg)[0] for j in jobs])
    seeds = [volume_seed(cfg.generate.seed, j.id) for j in jobs]
    one = np.concatenate([sample_batch(setup, masks[k : k + 1], seeds[k : k + 1])[0] for k in range(4)])
    four = sample_batch(setup, masks, seeds)[0]
    assert np.abs(one - four).max() <= BATCH_TOLERANCE


def test_bad_shards_exit_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    for text, words in (("x/y", "must look like i/n"), ("2/2", "0 <= i < n"), ("1/0", "0 <= i < n")):
        with pytest.raises(ShardError, match=words):
            parse_shard(text)
        with pytest.raises(SystemExit) as info:
            main(["generate", "--shard", text])
        assert info.value.code == 2 and words in capsys.readouterr().err


def test_partials_of_a_killed_generation_are_removed_on_the_next_run(run: Path, tmp_path: Path) -> None:
    import shutil

    from test_generate import TINY

    from gliomagen.config import load_config

    root = tmp_path / "run"
    shutil.copytree(run, root)
    cfg = load_config("smoke", TINY, run_dir=root)
    target = cfg.paths.synthetic / "val" / "BraTS-GLI-00010-000" / "BraTS-GLI-00010-000-t1n.nii.gz"
    code = textwrap.dedent(f"""
        import os, signal
        from gliomagen.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", code], check=False)
    assert len(list(target.parent.glob(".*.partial-*"))) == 1
    (cfg.paths.training / "train_log.csv").parent.mkdir(parents=True, exist_ok=True)
    (cfg.paths.training / "train_log.csv").touch()  # the CLI checks that training has run
    with run_lock(root, "generate-shard-0-of-1"):  # another process generating the same shard
        out = subprocess.run(
            [sys.executable, "-m", "gliomagen.cli", "generate", "--run-dir", str(root), "--which", "val",
             *[f"--set={o}" for o in TINY]],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    assert out.returncode == 2 and "is busy: 'generate-shard-0-of-1' is running" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    summary = generate(cfg, "val", progress=False)
    assert summary.generated == 2
    assert not list(cfg.paths.synthetic.rglob(".*.partial-*"))
