"""The papermill runner: parameter injection, failure reporting, missing notebooks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gliomagen.runner import discover_notebooks, run_notebooks

HEADER = """# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
profile = "smoke"
overrides = []
run_dir = None
"""


def _write(folder: Path, name: str, body: str) -> None:
    (folder / name).write_text(HEADER + body)


@pytest.mark.slow
def test_runner_injects_parameters_and_reports_failing_cell(tmp_path: Path) -> None:
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _write(
        nbdir,
        "01_first.py",
        '\n# %%\nimport json, pathlib\npathlib.Path(run_dir, "seen.json").write_text(json.dumps([profile, overrides]))\n',
    )
    _write(nbdir, "02_second.py", "\n# %%\nx = 1\n\n# %%\nraise ValueError('boom in second')\n")
    _write(nbdir, "03_third.py", "\n# %%\nprint('never')\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = run_notebooks(
        "smoke", overrides=["train.max_steps=7"], run_dir=run_dir, start=1, stop=3, notebook_dir=nbdir
    )
    assert json.loads((run_dir / "seen.json").read_text()) == ["smoke", ["train.max_steps=7"]]
    statuses = [(r.name, r.status) for r in result.results]
    assert statuses == [("01_first", "ok"), ("02_second", "failed"), ("03_third", "not run")]
    failed = result.results[1]
    assert "02_second.py" in failed.message and "boom in second" in failed.message
    assert "raise ValueError" in failed.message  # the failing cell is named by its source
    assert (run_dir / "notebooks" / "01_first.ipynb").is_file()
    assert (run_dir / "notebooks" / "02_second.FAILED.ipynb").is_file()
    assert not result.ok
    # the run log holds the runner's messages and what the notebooks printed (the traceback included)
    log_text = (run_dir / "logs" / "reproduce.log").read_text()
    assert "[1/3] executing 01_first.py" in log_text and "===== 02_second.py =====" in log_text
    assert "boom in second" in log_text and "02_second.py failed" in log_text


@pytest.mark.slow
def test_runner_prints_progress_and_remembers_seconds(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    body = "\n# %%\nfrom tqdm.auto import tqdm\nfor _ in tqdm(range(2), desc='toy stage'):\n    pass\nprint('printed by the notebook')\n"
    _write(nbdir, "01_first.py", body)
    run_dir = tmp_path / "run"
    for _ in range(2):
        result = run_notebooks("smoke", run_dir=run_dir, start=1, stop=1, notebook_dir=nbdir, progress=True)
        assert result.ok
    err = capfd.readouterr().err  # file-descriptor level: the kernel process writes here too
    assert "[1/1] 01_first.py" in err and "took" in err  # the second run shows the first run's time
    assert "running over TCP" not in err  # the kernel talks to papermill over IPC
    assert "01_first:" in err and "cell" in err  # papermill's progress bar, named by the notebook
    log_text = (run_dir / "logs" / "reproduce.log").read_text()
    assert "printed by the notebook" in log_text
    assert "toy stage: 100%" in log_text  # the stage's own bar, as text, not an ipywidget
    assert "IProgress not found" not in log_text
    assert json.loads((run_dir / "logs" / "notebook_seconds.json").read_text())["01_first"] > 0


def test_missing_notebook_is_reported_not_skipped(tmp_path: Path) -> None:
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    result = run_notebooks("smoke", run_dir=tmp_path / "run", start=2, stop=2, notebook_dir=nbdir)
    assert [(r.name, r.status) for r in result.results] == [("02_training", "missing")]
    assert not result.ok


def test_project_notebooks_follow_naming() -> None:
    found = discover_notebooks()
    assert 1 in found and found[1].name == "01_data_preparation.py"
    for path in found.values():
        text = path.read_text()
        assert 'tags=["parameters"]' in text, f"{path.name} has no parameters cell"


@pytest.mark.slow
def test_notebook_figures_stay_inline_when_the_cli_chose_agg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI sets MPLBACKEND=Agg for itself; the kernels it starts must still show figures inline."""
    from gliomagen.runner import execute_notebook

    monkeypatch.setenv("MPLBACKEND", "Agg")
    source = tmp_path / "01_plot.py"
    source.write_text(HEADER + "\n# %%\nimport matplotlib.pyplot as plt\nplt.plot([0, 1])\nplt.show()\n")
    out = tmp_path / "01_plot.ipynb"
    execute_notebook(source, out, {"profile": "smoke", "overrides": [], "run_dir": str(tmp_path)})
    assert "image/png" in out.read_text()
    assert os.environ["MPLBACKEND"] == "Agg"  # this process keeps its own backend
