"""Atomic writes: permissions as an ordinary file's, and no change to the process umask from threads."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gliomagen.io import read_json, write_json


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_writes_get_the_usual_permissions_and_leave_the_umask_alone(tmp_path: Path) -> None:
    before = _umask()
    paths = [tmp_path / f"f{i}.json" for i in range(64)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: write_json(p, {"name": p.name}), paths))
    assert _umask() == before
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~before
        assert read_json(p) == {"name": p.name}
    assert sorted(tmp_path.iterdir()) == sorted(paths)  # no temporary file left behind
