"""Execute the Jupytext notebooks in order with papermill (the ``gliomagen reproduce`` command).

Each ``notebooks/NN_name.py`` (Jupytext percent format) is converted in memory with jupytext and executed
with papermill on the ``python3`` kernel, with ``profile``, ``overrides`` and ``run_dir`` injected into the
cell tagged ``parameters``. Executed notebooks are written to ``<run-dir>/notebooks/``. The first failure
stops the run and is reported with the notebook and the failing cell.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from gliomagen.config import load_config
from gliomagen.paths import NOTEBOOK_DIR, PROJECT_ROOT

log = logging.getLogger(__name__)

NOTEBOOK_PATTERN = re.compile(r"^(\d{2})_[A-Za-z0-9_]+\.py$")
EXPECTED_NOTEBOOKS: dict[int, str] = {
    1: "01_data_preparation",
    2: "02_training",
    3: "03_mask_augmentation",
    4: "04_generation",
    5: "05_fidelity",
    6: "06_segmentation",
    7: "07_figures_and_tables",
    8: "08_reader_study",
}


@dataclass
class NotebookResult:
    number: int
    name: str
    status: str  # "ok", "failed", "missing", "not run"
    seconds: float = 0.0
    output: Path | None = None
    message: str = ""


@dataclass
class RunResult:
    results: list[NotebookResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" for r in self.results)

    def table(self) -> str:
        rows = [f"{'notebook':<28} {'seconds':>8}  status"]
        for r in self.results:
            rows.append(f"{r.name:<28} {r.seconds:>8.1f}  {r.status}{' - ' + r.message if r.message else ''}")
        return "\n".join(rows)


def discover_notebooks(notebook_dir: Path = NOTEBOOK_DIR) -> dict[int, Path]:
    """Map notebook number -> path for every ``NN_name.py`` in ``notebook_dir``."""
    found: dict[int, Path] = {}
    for path in sorted(notebook_dir.glob("*.py")):
        m = NOTEBOOK_PATTERN.match(path.name)
        if m:
            number = int(m.group(1))
            if number in found:
                raise RuntimeError(
                    f"two notebooks share number {number:02d}: {found[number].name}, {path.name}"
                )
            found[number] = path
    return found


def _describe_cell(nb: object, index: int | None) -> str:
    if index is None:
        return "unknown cell"
    cells = nb.cells  # type: ignore[attr-defined]
    if not 0 <= index < len(cells):
        return f"cell {index}"
    source = cells[index].source.strip().splitlines()
    first = next(
        (line for line in source if line.strip() and not line.startswith("#")), source[0] if source else ""
    )
    return f"cell {index} ({first.strip()[:70]!r})"


def execute_notebook(
    source: Path,
    output: Path,
    parameters: dict[str, object],
    cwd: Path = PROJECT_ROOT,
    cell_timeout: int | None = None,
) -> None:
    """Convert one Jupytext ``.py`` notebook and execute it with papermill.

    Raises:
        NotebookFailed: naming the notebook and the failing cell.
    """
    import jupytext
    import papermill
    from papermill.exceptions import PapermillExecutionError

    nb = jupytext.read(source)
    if not any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
        raise NotebookFailed(
            f"{source.name}: no cell is tagged 'parameters' (add `# %% tags=[\"parameters\"]`)"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = output.with_name(f".{output.stem}.partial.ipynb")
    try:
        papermill.execute_notebook(
            nb,
            str(tmp_out),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(cwd),
            progress_bar=False,
            log_output=False,
            execution_timeout=cell_timeout,
        )
    except PapermillExecutionError as exc:
        executed = _read_partial(tmp_out)
        # papermill inserts an error banner cell and the injected-parameters cell; map back by execution count.
        where = _failing_cell(executed) if executed is not None else f"cell {exc.cell_index}"
        failed_copy = output.with_name(output.stem + ".FAILED.ipynb")
        if tmp_out.exists():
            tmp_out.replace(failed_copy)
        raise NotebookFailed(
            f"{source.name} failed in {where}: {exc.ename}: {exc.evalue}\n"
            f"  the partly executed notebook is at {failed_copy}"
        ) from None
    tmp_out.replace(output)


def _read_partial(path: Path) -> object | None:
    import nbformat

    try:
        return nbformat.read(str(path), as_version=4)
    except Exception:  # noqa: BLE001 -- best effort for the error message only
        return None


def _failing_cell(nb: object) -> str:
    for index, cell in enumerate(nb.cells):  # type: ignore[attr-defined]
        if cell.cell_type != "code":
            continue
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return _describe_cell(nb, index)
    return "unknown cell"


class NotebookFailed(RuntimeError):
    pass


def run_notebooks(
    profile: str = "smoke",
    overrides: list[str] | None = None,
    run_dir: str | Path | None = None,
    start: int = 1,
    stop: int | None = None,
    notebook_dir: Path = NOTEBOOK_DIR,
    cell_timeout: int | None = None,
) -> RunResult:
    """Run notebooks ``start..stop`` in order; print a summary table; stop at the first failure.

    Args:
        profile: profile name or YAML path.
        overrides: ``section.key=value`` strings forwarded to each notebook's ``parameters`` cell.
        run_dir: run folder (default ``runs/<profile>``).
        start: first notebook number.
        stop: last notebook number (default: the last one expected or found).
        notebook_dir: where the Jupytext notebooks are.
        cell_timeout: per-cell timeout in seconds.
    """
    overrides = list(overrides or [])
    cfg = load_config(profile, overrides, run_dir=run_dir)  # fail fast on a bad config
    out_dir = cfg.paths.notebooks
    found = discover_notebooks(notebook_dir)
    known = set(EXPECTED_NOTEBOOKS) | set(found)
    stop = max(known) if stop is None else stop
    numbers = sorted(set(range(start, stop + 1)) & known)
    parameters = {"profile": profile, "overrides": overrides, "run_dir": str(cfg.paths.root)}
    result = RunResult()
    failed = False
    log.info("reproducing profile %r (config %s) into %s", cfg.profile, cfg.hash, cfg.paths.root)
    for number in numbers:
        name = found[number].stem if number in found else EXPECTED_NOTEBOOKS.get(number, f"{number:02d}")
        if failed:
            result.results.append(NotebookResult(number, name, "not run"))
            continue
        if number not in found:
            result.results.append(
                NotebookResult(number, name, "missing", message=f"notebooks/{name}.py does not exist")
            )
            failed = True
            continue
        output = out_dir / f"{name}.ipynb"
        log.info("executing %s", found[number].name)
        t0 = time.perf_counter()
        try:
            execute_notebook(found[number], output, parameters, cell_timeout=cell_timeout)
        except NotebookFailed as exc:
            result.results.append(
                NotebookResult(number, name, "failed", time.perf_counter() - t0, None, str(exc))
            )
            failed = True
            continue
        result.results.append(NotebookResult(number, name, "ok", time.perf_counter() - t0, output))
    print(result.table())
    if result.ok:
        print(
            f"\nAll notebooks ran.\n  executed notebooks: {out_dir}\n  run outputs:        {cfg.paths.root}\n"
            f"  figures:            {cfg.figures_dir}\n  paper tables:       {cfg.tables_dir}\n"
            f"  manuscript:         make paper PROFILE={cfg.profile}"
        )
    else:
        print("\nReproduction did NOT complete; see the failed or missing notebook above.")
    return result
