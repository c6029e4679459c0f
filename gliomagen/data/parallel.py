"""Map a function over tasks in worker processes, in order, with a progress bar."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tqdm import tqdm

from gliomagen.locks import die_with_parent


def parallel_map(
    func: Callable[[Any], Any],
    tasks: list[Any],
    workers: int,
    desc: str,
    progress: bool = True,
    on_error: Callable[[Any, BaseException], Any] | None = None,
) -> list[Any]:
    """``[func(t) for t in tasks]`` in ``workers`` processes (in-process when ``workers <= 1``).

    Forked workers (Linux) inherit what the parent already loaded (e.g. the MNI152 template), so they
    start at once; elsewhere they are spawned. ``func`` must be a module-level function. Workers die with
    this process (:func:`gliomagen.locks.die_with_parent`).

    Args:
        on_error: ``on_error(task, exception)`` gives the result of a task whose worker raised or died (a
            killed worker breaks the pool: every unfinished task then goes here); ``None`` re-raises.
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
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context(method), initializer=die_with_parent
        ) as pool:
            futures = [pool.submit(func, task) for task in tasks]
            results = []
            for task, future in zip(tasks, futures, strict=True):
                try:
                    results.append(future.result())
                except Exception as exc:
                    if on_error is None:
                        raise
                    results.append(on_error(task, exc))
                bar.update()
            return results
    finally:
        bar.close()
