"""The whole smoke reproduction, end to end: every notebook under the papermill runner, then checks that
every figure and table of the paper exists, is fresh relative to the run's metrics, and that the
manuscript's includes resolve. This is the test that CI's time budget is planned around (~15 min on 2 cores).
"""

from __future__ import annotations

import nbformat
import pytest

from gliomagen.config import load_config
from gliomagen.figures import ARTIFACTS
from gliomagen.figures.export import stale_outputs
from gliomagen.paper import check_manuscript
from gliomagen.paths import PAPER_DIR
from gliomagen.runner import EXPECTED_NOTEBOOKS, run_notebooks

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("e2e")
    overrides = [f"figures.figures_dir={root / 'figures'}", f"figures.tables_dir={root / 'generated'}"]
    result = run_notebooks("smoke", overrides=overrides, run_dir=root / "run")
    cfg = load_config("smoke", overrides, run_dir=root / "run")
    return {"result": result, "cfg": cfg, "root": root}


def test_every_notebook_ran(smoke_run: dict[str, object]) -> None:
    result = smoke_run["result"]
    assert [r.name for r in result.results] == list(EXPECTED_NOTEBOOKS.values())  # type: ignore[attr-defined]
    failures = [f"{r.name}: {r.status} {r.message}" for r in result.results if r.status != "ok"]  # type: ignore[attr-defined]
    assert not failures, "\n".join(failures)


def test_executed_notebooks_show_figures_and_no_errors(smoke_run: dict[str, object]) -> None:
    cfg = smoke_run["cfg"]
    for name in EXPECTED_NOTEBOOKS.values():
        nb = nbformat.read(str(cfg.paths.notebooks / f"{name}.ipynb"), as_version=4)  # type: ignore[attr-defined]
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("output_type") == "error"], name
        images = [o for o in outputs if "image/png" in o.get("data", {})]
        assert images, f"{name} shows no figure"


def test_every_figure_and_table_exists(smoke_run: dict[str, object]) -> None:
    cfg = smoke_run["cfg"]
    missing = []
    for art in ARTIFACTS:
        folder, suffixes = (
            (cfg.figures_dir, cfg.figures.formats)
            if art.kind == "figure"
            else (cfg.tables_dir, ["tex", "md"])  # type: ignore[attr-defined]
        )
        missing += [f"{art.name}.{s}" for s in suffixes if not (folder / f"{art.name}.{s}").is_file()]
    assert (cfg.tables_dir / "numbers.tex").is_file()  # type: ignore[attr-defined]
    assert not missing, f"missing after the smoke run: {missing}"


def test_tables_are_fresh_and_staleness_is_detected(smoke_run: dict[str, object]) -> None:
    cfg = smoke_run["cfg"]
    assert stale_outputs(cfg.tables_dir, cfg.paths.root) == []  # type: ignore[attr-defined]
    fidelity = cfg.paths.metrics / "fidelity.json"  # type: ignore[attr-defined]
    original = fidelity.read_bytes()
    try:  # metrics that change after the tables were written must make them stale
        fidelity.write_bytes(original + b" ")
        stale = stale_outputs(cfg.tables_dir, cfg.paths.root)  # type: ignore[attr-defined]
    finally:
        fidelity.write_bytes(original)
    assert any("fidelity.json changed" in s for s in stale), stale
    assert not any("segmentation" in s for s in stale), stale


def test_manuscript_includes_resolve(smoke_run: dict[str, object]) -> None:
    cfg = smoke_run["cfg"]
    problems = check_manuscript(PAPER_DIR / "main.tex", cfg.profile, cfg.tables_dir, cfg.figures_dir)  # type: ignore[attr-defined]
    assert problems == []
