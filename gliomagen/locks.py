"""Run-folder locks, partial-file cleanup and child processes that die with their parent.

Every stage that writes into a run folder holds a lock for its work (:func:`run_lock`)::

    with run_lock(cfg.paths.root, "prepare", clean=[cfg.paths.prepared]):
        ...

* The lock is an ``fcntl.flock`` on ``<run>/.locks/<key>.lock``. The kernel releases it when the holder
  dies, however it dies (``kill -9`` included), so a lock can never stay stuck; the file records the holder's
  PID, host, command and start time, which the "busy" message shows and which tells a later run that the
  previous holder died without releasing it (a *stale* lock, taken over with a warning).
* Keys are per unit of work that may run in parallel: ``prepare``, ``train``, ``generate-shard-0-of-4``,
  ``segment-<configuration>``. Two processes asking for the same key: the second stops at once with a clear
  :class:`LockHeld` error (exit code 2 from the CLI).
* ``clean=[folders]``: after taking the lock, the hidden partial files that :func:`gliomagen.io.atomic_path`
  leaves when a writer is killed mid-write (``.<name>.partial-<host>-<pid>-<random><suffix>``) are removed
  from those folders, but only those whose writer process is gone (another shard may be writing right now).

Child processes (:func:`run_child`) start in their own process group; the child calls
:func:`die_with_parent` first thing, so it receives SIGTERM when its parent dies (Linux ``prctl``
``PR_SET_PDEATHSIG``), and :func:`install_group_killer` makes that SIGTERM take its whole process group down
(nnU-Net's augmentation workers included). If the parent is interrupted (Ctrl-C, an exception), it kills the
child's group before re-raising.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from gliomagen.errors import InputError

log = logging.getLogger(__name__)

LOCK_DIR = ".locks"
PARENT_ENV = "GLIOMAGEN_PARENT_PID"
PR_SET_PDEATHSIG = 1
#: hidden partial written by gliomagen.io.atomic_path: ``.<stem>.partial-<host>-<pid>-<random><suffix>``
PARTIAL = re.compile(r"^\..*\.partial-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[A-Za-z0-9_]+(\..*)?$")

_held: dict[Path, tuple[int, int]] = {}  # lock path -> (fd, depth): re-entrant within one process


class LockHeld(InputError):
    """Another live process holds the lock of this unit of work."""


# ------------------------------------------------------------------------------------------ processes
def host_tag() -> str:
    """This machine's name with only letters and digits (used in lock records and partial-file names)."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), or ``None``.

    Why: a PID alone can be reused by a new process after the holder died; PID + start time cannot.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may itself contain spaces or parentheses
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether process ``pid`` exists on this host (and, if given, started at ``start_ticks``)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if start_ticks is not None and sys.platform.startswith("linux"):
        now = process_start_ticks(pid)
        return now is None or now == start_ticks
    return True


def die_with_parent(expected_parent: int | None = None, sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux; no-op elsewhere).

    Call it first thing in a child process.

    Args:
        expected_parent: the parent's PID (:func:`run_child` passes it in ``$GLIOMAGEN_PARENT_PID``); if the
            parent is already gone (it died between the fork and this call), exit at once.
        sig: the signal to receive.
    """
    if not sys.platform.startswith("linux"):
        return
    # CDLL(None): the C library already loaded in this process. Not ctypes.util.find_library, which runs
    # ldconfig/gcc in a subprocess: forking a process that already has BLAS threads can deadlock there
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        log.warning(
            "prctl(PR_SET_PDEATHSIG) failed (errno %d): this process may outlive its parent",
            ctypes.get_errno(),
        )
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(1)


def parent_from_env() -> int | None:
    """The parent PID that :func:`run_child` put in the environment (removed, so grandchildren do not see it)."""
    value = os.environ.pop(PARENT_ENV, None)
    return int(value) if value else None


def install_group_killer() -> None:
    """Make SIGTERM kill this process's whole process group at once (it and every descendant).

    For a child started by :func:`run_child` (its own group): when the parent dies, the death signal reaches
    only this process; without this, worker pools it started (nnU-Net's augmentation processes) would live on.
    """

    if os.getpgrp() != os.getpid():  # not a group leader (e.g. started by hand from a shell): leave SIGTERM
        return

    owner = os.getpid()

    def _kill_group(signum: int, frame: Any) -> None:  # noqa: ARG001 -- signal handler signature
        if os.getpid() != owner:  # a forked worker inherited the handler: a pool stopping it is no reason
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # to kill the group; die as SIGTERM would
            os.kill(os.getpid(), signal.SIGTERM)
            return
        os.killpg(os.getpgrp(), signal.SIGKILL)

    signal.signal(signal.SIGTERM, _kill_group)


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it has not exited after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_child(
    cmd: Sequence[str],
    env: dict[str, str] | None = None,
    stdout: TextIO | int | None = None,
    grace_s: float = 10.0,
) -> int:
    """Run ``cmd`` in its own process group and return its exit code; it never outlives this call.

    Args:
        cmd: the command (the child should call :func:`die_with_parent` and :func:`install_group_killer`).
        env: its environment (default: this process's); ``$GLIOMAGEN_PARENT_PID`` is added.
        stdout: where its stdout and stderr go.
        grace_s: seconds between SIGTERM and SIGKILL when it must be stopped.
    """
    env = {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}
    proc = subprocess.Popen(
        list(cmd), env=env, stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        return proc.wait()
    except BaseException:  # Ctrl-C, SIGTERM turned into an exception, ...: the child must not live on
        _kill_group(proc, grace_s)
        raise


# ----------------------------------------------------------------------------------------------- locks
def lock_path(root: str | Path, key: str) -> Path:
    """``<root>/.locks/<key>.lock`` (``key`` may only hold letters, digits, ``-``, ``_`` and ``.``)."""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
        raise ValueError(f"lock key {key!r} may only hold letters, digits, '-', '_' and '.'")
    return Path(root) / LOCK_DIR / f"{key}.lock"


def _record(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (it has not written its details yet)"
    command = " ".join(holder.get("command", [])) or "?"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} (`{command}`)"


@contextlib.contextmanager
def run_lock(root: str | Path, key: str, clean: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Hold the lock ``key`` of run folder ``root`` for the duration of the block.

    Args:
        root: the run folder.
        key: the unit of work (see the module docstring).
        clean: folders whose dead writers' partial files are removed once the lock is held.

    Raises:
        LockHeld: another live process holds it (the message names it, the lock file and what to do).
    """
    import fcntl

    path = lock_path(root, key).resolve()
    if path in _held:  # re-entrant: the same process already holds it
        fd, depth = _held[path]
        _held[path] = (fd, depth + 1)
        try:
            yield path
        finally:
            fd, depth = _held[path]
            _held[path] = (fd, depth - 1)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _record(path)
            raise LockHeld(
                f"{Path(root)} is busy: {key!r} is running in {_describe(holder)}; lock file {path}. "
                "Wait for it to finish or stop it, then run this again (the lock is released when it exits)."
            ) from None
        # the file may have been unlinked by the previous holder between our open and our flock
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    previous = _record(path)
    if previous and previous.get("pid") != os.getpid():
        log.warning(
            "stale lock %s: the previous holder (%s) ended without releasing it; taking it over",
            path,
            _describe(previous),
        )
    me = {
        "pid": os.getpid(),
        "start_ticks": process_start_ticks(os.getpid()),
        "host": host_tag(),
        "key": key,
        "command": sys.argv,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
    _held[path] = (fd, 1)
    try:
        for folder in clean:
            removed = remove_partials(folder)
            if removed:
                log.info("removed %d partial file(s) of an interrupted write under %s", len(removed), folder)
        yield path
    finally:
        del _held[path]
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before unlocking: a waiter that opened the old file re-checks the inode
        os.close(fd)


def is_locked(root: str | Path, key: str) -> dict[str, Any] | None:
    """The holder record if a live process holds lock ``key`` of ``root``, else ``None``."""
    import fcntl

    path = lock_path(root, key)
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _record(path) or {"pid": None}
    finally:
        os.close(fd)
    return None


# ---------------------------------------------------------------------------------------- partial files
def partial_name(path: Path) -> tuple[str, str]:
    """Prefix and suffix of a partial file for ``path`` (see :data:`PARTIAL`): its writer is in the name."""
    stem = path.name.split(".")[0]
    return f".{stem}.partial-{host_tag()}-{os.getpid()}-", "".join(path.suffixes)


def remove_partials(folder: str | Path) -> list[Path]:
    """Delete the partial files under ``folder`` whose writer process (on this host) is gone.

    Partials of a live process, or written on another host (whose processes cannot be checked from here),
    are left alone. Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    me = host_tag()
    removed = []
    for path in folder.rglob(".*.partial-*"):
        m = PARTIAL.match(path.name)
        if m is None or not path.is_file() or m.group("host") != me or pid_alive(int(m.group("pid"))):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed
