"""The executor contract on thread and process pools and on a real two-process Dask LocalCluster.

Task functions live at module level so they pickle into processes and onto Dask workers, which import
this module by name.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from runtool.models import RunCoordinate
from runtool.services.executor import (
    DASK_SCHEDULER_ENV,
    DaskExecutor,
    Executor,
    ExecutorError,
    LocalExecutor,
    RunOutcome,
    executor_from_config,
)

BAD_SECOND = 3


def _coords(n: int) -> list[RunCoordinate]:
    return [RunCoordinate("c1", "r1", "f1", "tw1", "lb1", f"2025_08_25T08:59:{s:02d}Z") for s in range(n)]


def _second(coord: RunCoordinate) -> int:
    return coord.start_time.second


def square(coord: RunCoordinate, delay: float = 0.0) -> int:
    """The run's second squared; the run at BAD_SECOND raises."""
    time.sleep(delay)
    if _second(coord) == BAD_SECOND:
        raise ValueError(f"bag of run {coord.timestamp} is corrupt")
    return _second(coord) ** 2


def square_and_mark(coord: RunCoordinate, marker_dir: Path, delay: float) -> int:
    """``square``, leaving a marker file that proves the run started."""
    (marker_dir / f"started-{_second(coord)}").touch()
    return square(coord, delay)


def kill_worker_once(coord: RunCoordinate, marker_dir: Path, victim: int) -> int:
    """Kill the process running it on the victim run's first attempt; a marker file tells attempts apart."""
    if _second(coord) == victim:
        marker = marker_dir / f"attempt-{victim}"
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
    return _second(coord) ** 2


def kill_worker_always(coord: RunCoordinate, victim: int) -> int:
    if _second(coord) == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    return _second(coord) ** 2


class Recorder:
    """A progress callback that remembers its calls and can set a cancel event after ``cancel_after`` runs."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.calls: list[tuple[int, int, RunOutcome]] = []
        self.cancel = threading.Event()
        self.cancel_after = cancel_after

    def __call__(self, done: int, total: int, outcome: RunOutcome) -> None:
        self.calls.append((done, total, outcome))
        if self.cancel_after is not None and done >= self.cancel_after:
            self.cancel.set()


def check_contract(executor: Executor, n: int = 6, delay: float = 0.0) -> None:
    coords = _coords(n)
    progress = Recorder()
    outcomes = executor.map_runs(partial(square, delay=delay), coords, progress=progress)
    assert [o.coordinate for o in outcomes] == coords
    assert [o.label for o in outcomes] == [c.to_path_str() for c in coords]
    for outcome in outcomes:
        second = _second(outcome.coordinate)
        if second == BAD_SECOND:
            assert outcome.status == "failed"
            assert outcome.value is None
            assert outcome.error is not None and "ValueError: bag of run" in outcome.error
        else:
            assert (outcome.status, outcome.value, outcome.error) == ("ok", second**2, None)
            assert outcome.attempts == 1
            assert outcome.seconds >= delay
    assert [call[:2] for call in progress.calls] == [(i, n) for i in range(1, n + 1)]
    assert sorted(call[2].coordinate.timestamp for call in progress.calls) == [c.timestamp for c in coords]


def check_cancel_before_start(executor: Executor) -> None:
    cancel = threading.Event()
    cancel.set()
    progress = Recorder()
    outcomes = executor.map_runs(square, _coords(4), progress=progress, cancel=cancel)
    assert [o.status for o in outcomes] == ["cancelled"] * 4
    assert all(o.attempts == 0 and o.seconds == 0 for o in outcomes)
    assert len(progress.calls) == 4


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_local_contract(kind: str) -> None:
    check_contract(LocalExecutor(workers=3, kind=kind))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_local_cancel_before_start(kind: str) -> None:
    check_cancel_before_start(LocalExecutor(workers=2, kind=kind))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_local_cancel_midway_lets_finished_runs_stand(kind: str) -> None:
    progress = Recorder(cancel_after=2)
    coords = [c for c in _coords(7) if _second(c) != BAD_SECOND]
    with LocalExecutor(workers=1, kind=kind) as executor:  # type: ignore[arg-type]
        outcomes = executor.map_runs(square, coords, progress=progress, cancel=progress.cancel)
    assert [o.status for o in outcomes] == ["ok", "ok"] + ["cancelled"] * 4
    assert [o.value for o in outcomes[:2]] == [0, 1]
    assert len(progress.calls) == 6


def test_local_empty_selection() -> None:
    assert LocalExecutor().map_runs(square, []) == []


def test_local_rejects_bad_settings() -> None:
    with pytest.raises(ExecutorError, match="kind"):
        LocalExecutor(kind="fiber")  # type: ignore[arg-type]
    with pytest.raises(ExecutorError, match="worker"):
        LocalExecutor(workers=-1)


@pytest.fixture(scope="module")
def dask_executor() -> Iterator[DaskExecutor]:
    with DaskExecutor("local-cluster") as executor:
        yield executor


def test_dask_contract(dask_executor: DaskExecutor) -> None:
    check_contract(dask_executor, n=8)


def test_dask_cancel_before_start(dask_executor: DaskExecutor) -> None:
    check_cancel_before_start(dask_executor)


def test_dask_cancel_midway(dask_executor: DaskExecutor, tmp_path: Path) -> None:
    progress = Recorder(cancel_after=2)
    coords = [c for c in _coords(11) if _second(c) != BAD_SECOND]
    func = partial(square_and_mark, marker_dir=tmp_path, delay=0.3)
    outcomes = dask_executor.map_runs(func, coords, progress=progress, cancel=progress.cancel)
    statuses = [o.status for o in outcomes]
    assert set(statuses) <= {"ok", "cancelled"}
    assert 2 <= statuses.count("ok") < len(coords)
    assert all(o.value == _second(o.coordinate) ** 2 for o in outcomes if o.status == "ok")
    assert all(o.value is None for o in outcomes if o.status == "cancelled")
    assert len(progress.calls) == len(coords)
    # What is reported cancelled never started, and what started is reported with its result.
    started = {int(p.name.split("-")[1]) for p in tmp_path.glob("started-*")}
    assert started == {_second(o.coordinate) for o in outcomes if o.status == "ok"}


def test_dask_worker_killed_once_is_retried_or_failed(dask_executor: DaskExecutor, tmp_path: Path) -> None:
    coords = _coords(3)
    func = partial(kill_worker_once, marker_dir=tmp_path, victim=1)
    outcomes = dask_executor.map_runs(func, coords)
    assert (tmp_path / "attempt-1").exists(), "the victim's first attempt ran and killed its worker"
    victim = outcomes[1]
    assert victim.status in ("ok", "failed")
    if victim.status == "ok":
        assert victim.value == 1
        assert victim.attempts == 2
    else:
        assert victim.value is None and victim.error
    assert [(o.status, o.value) for o in (outcomes[0], outcomes[2])] == [("ok", 0), ("ok", 4)]


def test_dask_worker_always_killed_is_failed_and_others_complete(dask_executor: DaskExecutor) -> None:
    progress = Recorder()
    outcomes = dask_executor.map_runs(partial(kill_worker_always, victim=2), _coords(4), progress=progress)
    victim = outcomes[2]
    assert victim.status == "failed"
    assert victim.value is None
    assert victim.error is not None and "KilledWorker" in victim.error
    assert victim.attempts >= 2
    assert [(o.status, o.value) for i, o in enumerate(outcomes) if i != 2] == [("ok", 0), ("ok", 1), ("ok", 9)], [
        o.error for o in outcomes
    ]
    assert len(progress.calls) == 4
    check_contract(dask_executor, n=4)  # the cluster's workers were restarted and still serve


def test_executor_from_config_local_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DASK_SCHEDULER_ENV, raising=False)
    executor = executor_from_config(workers=3, kind="process")
    assert isinstance(executor, LocalExecutor)
    assert (executor.workers, executor.kind) == (3, "process")
    assert isinstance(executor_from_config(environ={DASK_SCHEDULER_ENV: "  "}), LocalExecutor)


def test_executor_from_config_connects_to_a_scheduler(
    dask_executor: DaskExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = dask_executor.client.scheduler.address
    monkeypatch.setenv(DASK_SCHEDULER_ENV, address)
    with executor_from_config() as executor:
        assert isinstance(executor, DaskExecutor)
        assert executor.address == address
        assert [o.value for o in executor.map_runs(square, _coords(2))] == [0, 1]
    assert dask_executor.map_runs(square, _coords(1))[0].value == 0, "closing a client leaves the cluster up"


def test_executor_from_config_local_cluster_and_explicit_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DASK_SCHEDULER_ENV, "tcp://192.0.2.1:8786")
    with executor_from_config(" local-cluster ") as executor:
        assert isinstance(executor, DaskExecutor)
        cluster = executor._cluster
        assert cluster is not None
    assert cluster.status.name == "closed"


def test_executor_from_config_rejects_a_bad_address() -> None:
    with pytest.raises(ExecutorError, match=DASK_SCHEDULER_ENV):
        executor_from_config(environ={DASK_SCHEDULER_ENV: "http://scheduler:8786"})
