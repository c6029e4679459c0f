"""Running segmentation configurations concurrently: the scheduler with fake work, the phase split, the rule."""

from __future__ import annotations

import threading
import time

import pytest

from gliomagen.config import load_config
from gliomagen.segmentation import pipeline
from gliomagen.segmentation.schedule import concurrent_configurations, overlapping, run_scheduled

NAMES = ["a", "b", "c", "d", "e"]


class Recorder:
    """Fake configurations: each "runs" for ``seconds`` in a pool thread; records what happened where."""

    def __init__(self, seconds: float = 0.05, fail: str | None = None) -> None:
        self.seconds = seconds
        self.fail = fail
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.started: list[str] = []
        self.finished: list[str] = []
        self.start_threads: set[int] = set()
        self.finish_threads: set[int] = set()
        self.work_threads: set[int] = set()

    def start(self, name: str):  # noqa: ANN201 -- a test double
        self.started.append(name)
        self.start_threads.add(threading.get_ident())

        def work() -> str:
            self.work_threads.add(threading.get_ident())
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            try:
                time.sleep(self.seconds * (3 if name == "a" else 1))  # "a" is long: the others overtake it
                if name == self.fail:
                    raise RuntimeError(f"nnU-Net failed for configuration {name!r}")
                return f"result of {name}"
            finally:
                with self.lock:
                    self.running -= 1

        return work

    def finish(self, name: str, result: str) -> None:
        assert result == f"result of {name}"
        self.finished.append(name)
        self.finish_threads.add(threading.get_ident())


def test_runs_in_order_at_most_workers_at_a_time_and_records_in_the_calling_thread():
    rec = Recorder()
    run_scheduled(NAMES, rec.start, rec.finish, workers=2)
    me = threading.get_ident()
    assert rec.started == NAMES  # started in the given order
    assert sorted(rec.finished) == NAMES and rec.finished[0] != "a"  # recorded as each one ends
    assert rec.peak == 2
    assert rec.start_threads == rec.finish_threads == {me}  # preparation and records: this thread only
    assert me not in rec.work_threads


def test_one_worker_is_a_plain_loop_in_this_thread():
    rec = Recorder(seconds=0.0)
    run_scheduled(NAMES, rec.start, rec.finish, workers=1)
    assert rec.started == rec.finished == NAMES
    assert rec.work_threads == {threading.get_ident()} and rec.peak == 1


def test_a_failure_starts_nothing_new_lets_the_running_finish_and_names_the_configuration():
    rec = Recorder(fail="b")
    with pytest.raises(RuntimeError, match="configuration 'b'") as info:
        run_scheduled(NAMES, rec.start, rec.finish, workers=2)
    assert rec.started == ["a", "b"]  # nothing started after b failed
    assert rec.finished == ["a"]  # a, running beside it, finished and was recorded
    assert any("'b' failed" in note for note in info.value.__notes__)


def test_a_failed_preparation_is_that_configurations_failure():
    rec = Recorder()

    def start(name: str):  # noqa: ANN202
        if name == "c":
            raise ValueError("export of c failed")
        return rec.start(name)

    with pytest.raises(ValueError, match="export of c failed"):
        run_scheduled(NAMES, start, rec.finish, workers=2)
    assert sorted(rec.finished) == ["a", "b"] and "d" not in rec.started


def test_an_interruption_stops_the_running_work_before_it_propagates():
    release = threading.Event()
    stops: list[float] = []

    def start(name: str):  # noqa: ANN202
        def work() -> str:
            if name == "a":
                return "result of a"
            release.wait(30)  # a long nnU-Net process, until stopped
            raise RuntimeError("killed")

        return work

    def finish(name: str, result: str) -> None:
        raise KeyboardInterrupt  # Ctrl-C while recording "a"; "b" still runs

    def stop() -> None:
        stops.append(time.monotonic())
        release.set()

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_scheduled(["a", "b"], start, finish, workers=2, stop_running=stop)
    assert stops and time.monotonic() - t0 < 10  # stopped, not waited for
    assert not [t for t in threading.enumerate() if t.name.startswith("segment")]  # no thread left behind


def test_overlapping_lists_what_ran_at_the_same_time():
    intervals = {"a": (0.0, 10.0), "b": (1.0, 4.0), "c": (4.0, 12.0), "d": (11.0, None)}
    assert overlapping(intervals, "a") == ["b", "c"]
    assert overlapping(intervals, "b") == ["a"]
    assert overlapping(intervals, "c") == ["a", "d"]


def test_concurrency_rule_smoke_two_paper_one(tmp_path):
    assert concurrent_configurations(load_config("smoke", run_dir=tmp_path)) == 2
    assert concurrent_configurations(load_config("smoke", ["runtime.workers=1"], run_dir=tmp_path)) == 1
    # the paper profile: the library's threads (every core), or an accelerator: one at a time
    assert concurrent_configurations(load_config("paper", ["runtime.device=cpu"], run_dir=tmp_path)) == 1
    with_augmentation = ["runtime.nnunet_augmentation_workers=1", "runtime.workers=4"]
    assert concurrent_configurations(load_config("smoke", with_augmentation, run_dir=tmp_path)) == 2


def test_phases_baseline_alone_first_then_the_rest(tmp_path):
    cfg = load_config("smoke", run_dir=tmp_path)
    todo = pipeline._ordered(cfg)
    alone, together = pipeline._phases(cfg, todo, hq_needed=True)
    assert [c.name for c in alone] == ["real_only"]
    assert [c.name for c in together] == ["real_6syn", "real_12syn", "real_4hq", "hq4_only", "halfreal_4hq"]
    single = [c for c in todo if c.name == "real_4hq"]
    assert pipeline._phases(cfg, single, hq_needed=False) == ([], single)
    # without shared plans and with the HQ ranking done, nothing has to wait for the baseline
    unshared = load_config("smoke", ["segment.shared_plans=false"], run_dir=tmp_path)
    todo = pipeline._ordered(unshared)
    assert pipeline._phases(unshared, todo, hq_needed=False) == ([], todo)
    assert [c.name for c in pipeline._phases(unshared, todo, hq_needed=True)[0]] == ["real_only"]


def test_stop_worker_processes_stops_only_this_processes_workers():
    import subprocess
    import sys

    from gliomagen.segmentation.schedule import WORKER_MODULE, stop_worker_processes

    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    worker = subprocess.Popen([*sleep, WORKER_MODULE], start_new_session=True)  # looks like a worker
    other = subprocess.Popen(sleep, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        stopped: list[int] = []
        while worker.pid not in stopped and time.monotonic() < deadline:  # until its cmdline is readable
            stopped = stop_worker_processes()
        assert stopped == [worker.pid]
        assert worker.wait(timeout=10) != 0
        assert other.poll() is None
    finally:
        worker.kill()
        other.kill()
        worker.wait()
        other.wait()
