"""Map a function over tasks in worker processes, in order, with a progress bar."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tqdm import tqdm


def parallel_map(
    func: Callable[[Any], Any], tasks: list[Any], workers: int, desc: str, progress: bool = True
) -> list[Any]:
    """``[func(t) for t in tasks]`` in ``workers`` processes (in-process when ``workers <= 1``).

    Forked workers (Linux) inherit what the parent already loaded (e.g. the MNI152 template), so they
    start at once; elsewhere they are spawned. ``func`` must be a module-level function.
    """
    bar = tqdm(total=len(tasks), desc=desc, disable=not progress)
    try:
        if workers <= 1 or len(tasks) <= 1:
            results = []
            for task in tasks:
                results.append(func(task))
                bar.update()
            return results
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method)) as pool:
            futures = [pool.submit(func, task) for task in tasks]
            results = []
            for future in futures:
                results.append(future.result())
                bar.update()
            return results
    finally:
        bar.close()
