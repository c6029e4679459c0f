"""Execute the Jupytext notebooks in order with papermill (the ``gliomagen reproduce`` command).

Each ``notebooks/NN_name.py`` (Jupytext percent format) is converted in memory with jupytext and executed
with papermill on the ``python3`` kernel, with ``profile``, ``overrides`` and ``run_dir`` injected into the
cell tagged ``parameters``. Executed notebooks are written to ``<run-dir>/notebooks/``. The first failure
stops the run and is reported with the notebook and the failing cell.

Progress: the terminal shows one papermill progress bar per notebook (cells done, elapsed, ETA); everything
the notebooks print (including each stage's own progress bars) goes to ``<run-dir>/logs/reproduce.log``
together with the runner's messages. The kernel talks to papermill over IPC sockets in a private temporary
folder, not over unencrypted TCP.

The stages' order, outputs and needs are in :mod:`gliomagen.stages`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

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


@contextlib.contextmanager
def _ipc_kernel_config() -> Iterator[object]:
    """A traitlets config that runs the kernel over IPC sockets in a private temporary folder.

    jupyter's default is unencrypted TCP on localhost, and ipykernel warns about it at every start.
    """
    from traitlets.config import Config as TraitletsConfig

    with tempfile.TemporaryDirectory(prefix="gliomagen-kernel-") as folder:
        yield TraitletsConfig({"KernelManager": {"transport": "ipc", "ip": str(Path(folder) / "kernel")}})


#: the kernel inherits this process's environment; the CLI sets MPLBACKEND=Agg for itself, which would
#: turn every notebook's inline figures off
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


@contextlib.contextmanager
def _inline_figures() -> Iterator[None]:
    """Start kernels with matplotlib's inline backend, whatever ``MPLBACKEND`` this process has."""
    before = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = before


#: run right after the parameters cell when the runner writes a run log
TEXT_PROGRESS = """\
# injected by `gliomagen reproduce`: the stages' progress bars as text, so that they reach the run log
# (runs/<profile>/logs/reproduce.log); opened in JupyterLab, a notebook shows them as widgets instead
import tqdm.auto
import tqdm.std

tqdm.auto.tqdm = tqdm.std.tqdm"""


def _text_progress_bars(nb: object) -> None:
    """Insert :data:`TEXT_PROGRESS` after the ``parameters`` cell (before any stage module is imported)."""
    import nbformat

    cells = nb.cells  # type: ignore[attr-defined]
    at = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])) + 1
    cells.insert(at, nbformat.v4.new_code_cell(TEXT_PROGRESS, metadata={"tags": ["injected-by-gliomagen"]}))


def execute_notebook(
    source: Path,
    output: Path,
    parameters: dict[str, object],
    cwd: Path = PROJECT_ROOT,
    cell_timeout: int | None = None,
    progress: bool = False,
    log_file: TextIO | None = None,
) -> None:
    """Convert one Jupytext ``.py`` notebook and execute it with papermill.

    Args:
        source: the ``.py`` notebook.
        output: the executed ``.ipynb``.
        parameters: values injected into the ``parameters`` cell.
        cwd: working directory of the kernel.
        cell_timeout: per-cell timeout in seconds.
        progress: show papermill's progress bar (cells done, ETA) on the terminal.
        log_file: where the notebook's own stdout/stderr go while it runs (the run log).

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
    if log_file is not None:
        _text_progress_bars(nb)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = output.with_name(f".{output.stem}.partial.ipynb")
    # papermill logs its own chatter (input/output names) at INFO; the runner says what matters
    logging.getLogger("papermill").setLevel(logging.WARNING)
    try:
        with _ipc_kernel_config() as kernel_config, _inline_figures():
            papermill.execute_notebook(
                nb,
                str(tmp_out),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(cwd),
                progress_bar={"desc": source.stem, "unit": "cell", "file": sys.stderr} if progress else False,
                log_output=False,
                stdout_file=log_file,
                stderr_file=log_file,
                execution_timeout=cell_timeout,
                config=kernel_config,
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


def _previous_seconds(path: Path) -> dict[str, float]:
    from gliomagen.io import read_json

    try:
        return {str(k): float(v) for k, v in read_json(path).items()}
    except (OSError, ValueError, AttributeError):
        return {}


@contextlib.contextmanager
def _run_log(path: Path) -> Iterator[TextIO]:
    """Append to the run log; the runner's log records go there too (with their time stamps)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as stream:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root = logging.getLogger("gliomagen")
        level = root.level
        if root.getEffectiveLevel() > logging.INFO:
            root.setLevel(logging.INFO)
        root.addHandler(handler)
        try:
            yield stream
        finally:
            root.removeHandler(handler)
            root.setLevel(level)


def run_notebooks(
    profile: str = "smoke",
    overrides: list[str] | None = None,
    run_dir: str | Path | None = None,
    start: int = 1,
    stop: int | None = None,
    notebook_dir: Path = NOTEBOOK_DIR,
    cell_timeout: int | None = None,
    progress: bool = False,
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
        progress: a progress bar per notebook on the terminal (``gliomagen reproduce`` turns it on).

    Everything the notebooks print goes to ``<run>/logs/reproduce.log``; the seconds each notebook took are
    kept in ``<run>/logs/notebook_seconds.json`` and shown as the expected time of the next run.
    """
    from gliomagen.io import write_json

    overrides = list(overrides or [])
    cfg = load_config(profile, overrides, run_dir=run_dir)  # fail fast on a bad config
    out_dir = cfg.paths.notebooks
    found = discover_notebooks(notebook_dir)
    known = set(EXPECTED_NOTEBOOKS) | set(found)
    stop = max(known) if stop is None else stop
    numbers = sorted(set(range(start, stop + 1)) & known)
    parameters: dict[str, object] = {
        "profile": profile,
        "overrides": overrides,
        "run_dir": str(cfg.paths.root),
    }
    result = RunResult()
    failed = False
    log_path = cfg.paths.logs / "reproduce.log"
    seconds_path = cfg.paths.logs / "notebook_seconds.json"
    previous = _previous_seconds(seconds_path)
    with _run_log(log_path) as log_stream:
        log.info("reproducing profile %r (config %s) into %s", cfg.profile, cfg.hash, cfg.paths.root)
        print(f"run log (everything the notebooks print): {log_path}", file=sys.stderr)
        for position, number in enumerate(numbers, start=1):
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
            expected = f" (took {previous[name]:.0f} s last time)" if name in previous else ""
            # the terminal gets one line per notebook (then papermill's bar); the log gets the same line
            print(f"[{position}/{len(numbers)}] {found[number].name}{expected}", file=sys.stderr, flush=True)
            log_stream.write(
                f"{time.strftime('%H:%M:%S')} [{position}/{len(numbers)}] executing {found[number].name}{expected}"
                f"\n===== {found[number].name} =====\n"
            )
            log_stream.flush()
            t0 = time.perf_counter()
            try:
                execute_notebook(
                    found[number],
                    output,
                    parameters,
                    cell_timeout=cell_timeout,
                    progress=progress,
                    log_file=log_stream,
                )
            except NotebookFailed as exc:
                seconds = time.perf_counter() - t0
                log.error("%s failed after %.0f s: %s", found[number].name, seconds, exc)
                result.results.append(NotebookResult(number, name, "failed", seconds, None, str(exc)))
                failed = True
                continue
            seconds = time.perf_counter() - t0
            log.info("%s finished in %.0f s", found[number].name, seconds)
            previous[name] = round(seconds, 1)
            write_json(seconds_path, previous)
            result.results.append(NotebookResult(number, name, "ok", seconds, output))
        log_stream.write("\n" + result.table() + "\n")
    print(result.table())
    if result.ok:
        from gliomagen.figures.outputs import run_figures_dir, run_tables_dir

        print(
            f"\nAll notebooks ran.\n  executed notebooks: {out_dir}\n  run outputs:        {cfg.paths.root}\n"
            f"  run log:            {log_path}\n"
            f"  this run's figures: {run_figures_dir(cfg)}\n  this run's tables:  {run_tables_dir(cfg)}\n"
            f"  published copy:     {cfg.figures_dir}, {cfg.tables_dir}\n"
            f"  manuscript:         make paper PROFILE={cfg.profile}"
        )
    else:
        print(f"\nReproduction did NOT complete; see the failed or missing notebook above and {log_path}.")
    return result
