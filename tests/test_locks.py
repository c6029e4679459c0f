"""Run-folder locks, partial-file cleanup and child processes that die with their parent (gliomagen.locks)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from gliomagen.io import atomic_path, write_nifti
from gliomagen.locks import (
    PARTIAL,
    LockHeld,
    host_tag,
    is_locked,
    lock_path,
    pid_alive,
    remove_partials,
    run_lock,
)

PY = sys.executable


def _wait_for(predicate, timeout: float = 20.0) -> bool:  # noqa: ANN001 -- a zero-argument callable
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _dead_pid() -> int:
    proc = subprocess.Popen([PY, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_holder_gets_a_clear_error_and_the_lock_frees_on_exit(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [
            PY,
            "-c",
            textwrap.dedent(f"""
            import time, pathlib
            from gliomagen.locks import run_lock
            with run_lock({str(tmp_path)!r}, "train"):
                pathlib.Path({str(ready)!r}).touch()
                time.sleep(60)
        """),
        ]  # fmt: skip
    )
    try:
        assert _wait_for(ready.exists)
        with pytest.raises(LockHeld) as info, run_lock(tmp_path, "train"):
            pass
        msg = str(info.value)
        assert (
            f"pid {holder.pid}" in msg
            and "'train' is running" in msg
            and str(lock_path(tmp_path, "train")) in msg
        )
        assert is_locked(tmp_path, "train")["pid"] == holder.pid
        with run_lock(tmp_path, "prepare"):  # another key of the same run folder is free
            pass
        holder.send_signal(signal.SIGKILL)  # killed: the kernel releases the lock
        holder.wait()
        assert is_locked(tmp_path, "train") is None
        with run_lock(tmp_path, "train") as path:
            assert json.loads(path.read_text())["pid"] == os.getpid()
        assert not path.exists()  # released and removed
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dead = _dead_pid()
    path = lock_path(tmp_path, "prepare")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pid": dead, "host": "x", "command": ["gliomagen", "prepare"]}))
    assert not pid_alive(dead)
    with caplog.at_level(logging.WARNING, logger="gliomagen.locks"), run_lock(tmp_path, "prepare"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with run_lock(tmp_path, "prepare"):  # re-entrant in the same process
            pass
        assert path.exists()
    assert f"pid {dead}" in caplog.text and "stale lock" in caplog.text


def test_partials_of_dead_writers_are_removed_and_others_kept(tmp_path: Path) -> None:
    out = tmp_path / "synthetic" / "val" / "BraTS-GLI-00001-000"
    target = out / "BraTS-GLI-00001-000-t1n.nii.gz"
    # a writer killed mid-write leaves its hidden partial: simulate it in a child that is SIGKILLed
    child = subprocess.Popen(
        [
            PY,
            "-c",
            textwrap.dedent(f"""
            import os, signal
            from gliomagen.io import atomic_path
            with atomic_path({str(target)!r}) as tmp:
                tmp.write_bytes(b"half a volume")
                os.kill(os.getpid(), signal.SIGKILL)
        """),
        ]  # fmt: skip
    )
    child.wait()
    dead_partials = list(out.glob(".*.partial-*"))
    assert len(dead_partials) == 1 and dead_partials[0].name.endswith(".nii.gz") and not target.exists()
    assert PARTIAL.match(dead_partials[0].name).group("host") == host_tag()
    live = out / f".BraTS-GLI-00001-000-t1c.partial-{host_tag()}-{os.getpid()}-abc.nii.gz"
    other_host = out / f".BraTS-GLI-00001-000-t2w.partial-otherhost-{_dead_pid()}-abc.nii.gz"
    user_file = out / ".notes.txt"
    for p in (live, other_host, user_file):
        p.write_bytes(b"x")
    assert PARTIAL.match(live.name) and PARTIAL.match(other_host.name) and not PARTIAL.match(user_file.name)
    with run_lock(tmp_path, "generate-shard-0-of-1", clean=[tmp_path / "synthetic"]):
        pass
    assert not dead_partials[0].exists()
    assert live.exists() and other_host.exists() and user_file.exists()
    assert remove_partials(tmp_path / "missing") == []


def test_atomic_writes_leave_no_partial_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("{")
        raise RuntimeError("boom")
    write_nifti(tmp_path / "v.nii.gz", np.zeros((2, 2, 2), np.float32), np.eye(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nii.gz"]


def _pids_alive(pids: list[int]) -> list[int]:
    return [p for p in pids if pid_alive(p) and "Z" not in _state(p)]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_child_and_its_workers_die_when_the_parent_is_killed(tmp_path: Path) -> None:
    """A parent running run_child is SIGKILLed: the child and the worker the child started both die."""
    pids = tmp_path / "pids"
    child_code = textwrap.dedent(f"""
        import os, subprocess, sys, time
        from gliomagen.locks import die_with_parent, install_group_killer, parent_from_env
        die_with_parent(parent_from_env())
        install_group_killer()
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{grandchild.pid}}")
        time.sleep(120)
    """)
    parent = subprocess.Popen(
        [
            PY,
            "-c",
            f"from gliomagen.locks import run_child; import sys; run_child([sys.executable, '-c', {child_code!r}])",
        ]
    )
    try:
        assert _wait_for(lambda: pids.exists() and len(pids.read_text().split()) == 2)
        child, grandchild = (int(x) for x in pids.read_text().split())
        assert _pids_alive([child, grandchild]) == [child, grandchild]
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _wait_for(lambda: not _pids_alive([child, grandchild]), timeout=15), (
            "orphans survived the parent"
        )
    finally:
        parent.kill()
        for pid in (int(x) for x in pids.read_text().split()) if pids.exists() else ():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_interrupted_parent_stops_its_child(tmp_path: Path) -> None:
    """An exception (Ctrl-C) in the waiting parent kills the child's process group before it propagates."""
    from gliomagen.locks import run_child

    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    old = signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        signal.setitimer(signal.ITIMER_REAL, 3.0)
        with pytest.raises(KeyboardInterrupt):
            run_child([PY, "-c", code], grace_s=2)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert pid_file.exists()
    assert not _pids_alive([int(pid_file.read_text())])
