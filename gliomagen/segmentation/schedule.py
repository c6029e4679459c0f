"""Running several segmentation configurations at once: how many, in what order, and how they stop.

Each configuration's heavy work (plan, preprocess, train, predict) happens in its own nnU-Net process
(:func:`gliomagen.segmentation.nnunet.run_job`), so a pool of threads in the parent that only *waits* for
those processes is enough to run several at once. :func:`run_scheduled` keeps every other step in the
calling thread: preparing a configuration (its export, its job file), recording its result, the progress
bar. Only that thread writes files; the pool threads start a process and wait for it.

Why the processes are safe to start from threads: :func:`gliomagen.locks.run_child` uses ``subprocess``,
which forks and immediately execs in C (no Python runs in the child before ``exec``), and the child's file
descriptors are closed except its log; the fork-with-live-threads deadlocks that
:mod:`gliomagen.segmentation.worker` avoids come from ``multiprocessing`` forking a process that goes on
running Python, which does not happen here. The child's death signal (``PR_SET_PDEATHSIG``) follows the
*thread* that started it; that thread waits for the child until it ends, so the signal still means "the
parent process died".
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TypeVar

from gliomagen.config import Config

log = logging.getLogger(__name__)

R = TypeVar("R")

#: the module the nnU-Net worker processes run (``python -m ...``): how :func:`stop_worker_processes` finds them
WORKER_MODULE = "gliomagen.segmentation.worker"


def concurrent_configurations(cfg: Config) -> int:
    """How many configurations may train at once: ``runtime.workers`` CPU processes shared by their width.

    One configuration's nnU-Net process keeps ``runtime.threads`` cores busy training, plus one per
    augmentation worker (``runtime.nnunet_augmentation_workers``). On an accelerator, or with the
    library's default threads (every core), it is one at a time: the configurations would share the same
    GPU or cores (separate GPUs: ``gliomagen segment --configuration NAME`` per GPU). The paper profile
    (``device: auto``, ``threads: null``) therefore runs them one after another; smoke (``cpu``, 2 workers,
    1 thread, no augmentation workers) runs two at a time.
    """
    from gliomagen.segmentation.nnunet import resolve_device

    rt = cfg.runtime
    if rt.threads is None or resolve_device(rt.device) != "cpu":
        return 1
    return max(1, rt.workers // (rt.threads + rt.nnunet_augmentation_workers))


def run_scheduled(
    names: Sequence[str],
    start: Callable[[str], Callable[[], R]],
    finish: Callable[[str, R], None],
    workers: int,
    stop_running: Callable[[], object] | None = None,
) -> None:
    """Run ``names`` in order, at most ``workers`` at a time; ``start`` and ``finish`` run in this thread.

    Args:
        names: the units of work, in the order they start.
        start: prepares ``name`` and returns its work, which runs in a pool thread (with ``workers`` 1,
            in this thread, exactly as a plain loop would).
        finish: records ``name``'s result; called in this thread as each one ends.
        workers: how many may run at once.
        stop_running: stops the work that is running (kills its processes); called, repeatedly until
            every pool thread has returned, when this thread is interrupted (Ctrl-C reaches only it).

    Raises:
        Exception: the first failure, in ``names`` order. After a failure no new unit starts (as a plain
            loop stops); those already running finish and are recorded, then the failure is raised with
            a note naming its unit (and the other units that failed).
    """
    if workers <= 1 or len(names) <= 1:
        for name in names:  # the sequential run: nothing changes from a plain loop
            finish(name, start(name)())
        return
    waiting = list(names)
    running: dict[Future[R], str] = {}
    failed: dict[str, BaseException] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="segment") as pool:
        try:
            while running or (waiting and not failed):
                while waiting and not failed and len(running) < workers:
                    name = waiting.pop(0)
                    try:
                        running[pool.submit(start(name))] = name
                    except Exception as exc:  # its preparation failed: nothing of it runs
                        _failed(failed, name, exc)
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: names.index(running[f])):
                    name = running.pop(future)
                    try:
                        finish(name, future.result())
                    except Exception as exc:
                        _failed(failed, name, exc)
        except BaseException:
            # interrupted (KeyboardInterrupt, a failing finish): the pool would wait for the running
            # processes to end by themselves; stop them, then let the interruption through
            while running:
                if stop_running is not None:
                    stop_running()
                done, _ = wait(running, timeout=1.0)
                for future in done:
                    running.pop(future)
            raise
    if failed:
        first = next(n for n in names if n in failed)
        error = failed[first]
        others = [n for n in names if n in failed and n != first]
        error.add_note(
            f"segmentation configuration {first!r} failed"
            + (f"; so did {', '.join(map(repr, others))}" if others else "")
            + "; the configurations that finished are kept: re-run to resume"
        )
        raise error


def _failed(failed: dict[str, BaseException], name: str, exc: BaseException) -> None:
    log.error("configuration %s failed: %s", name, exc)
    failed[name] = exc


def stop_worker_processes() -> list[int]:
    """SIGTERM the process group of every nnU-Net worker this process started; returns their PIDs.

    Why here and not through the ``Popen`` objects: those live inside :func:`gliomagen.locks.run_child`,
    blocked in ``wait()`` in pool threads, and a signal (Ctrl-C) reaches only the main thread. The workers
    are found as this process's direct children running :data:`WORKER_MODULE` (``/proc``; Linux, as the
    death signal). Each leads its own process group, and its SIGTERM handler kills that whole group
    (:func:`gliomagen.locks.install_group_killer`); the waiting thread then sees it exit.
    """
    me = os.getpid()
    stopped = []
    for pid in _children(me):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if WORKER_MODULE.encode() not in cmd:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
            stopped.append(pid)
    if stopped:
        log.warning("interrupted: stopped nnU-Net worker process(es) %s", stopped)
    return stopped


def _children(parent: int) -> list[int]:
    """PIDs whose parent is ``parent`` (``/proc/<pid>/stat`` field 4); empty where there is no ``/proc``."""
    pids: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return pids
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name (field 2) is in parentheses and may itself contain spaces or parentheses
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == parent:
            pids.append(int(entry.name))
    return pids


def overlapping(intervals: dict[str, tuple[float, float | None]], name: str) -> list[str]:
    """The other units whose interval (start, end; ``None`` = still running) overlaps ``name``'s.

    Called when ``name`` has ended: every unit that overlaps it has started by then, so the list is final.
    """
    start, end = intervals[name]
    assert end is not None
    return [
        other for other, (s, e) in intervals.items() if other != name and s < end and (e is None or e > start)
    ]
