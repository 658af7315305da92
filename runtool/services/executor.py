"""One interface for many-run work: a local pool by default, a Dask distributed cluster when configured.

Bulk transfers, extraction, analysis and reports over a selection all have the same shape: one function
applied to many runs, where each run is its own unit. :class:`Executor` captures that shape so callers
never care where the work runs: a failing run is reported as failed with its error and the others carry
on, ``progress`` hears about every finished run, and a ``cancel`` event stops what has not started.

:class:`LocalExecutor` uses :mod:`concurrent.futures` threads (I/O-bound work) or processes (CPU-bound
work); :class:`DaskExecutor` submits to a Dask cluster, either one it starts itself (``"local-cluster"``)
or an existing scheduler (``tcp://host:port``). :func:`executor_from_config` picks one from
``RUNTOOL_DASK_SCHEDULER``. Functions must pickle (a module-level function, or a
:func:`functools.partial` of one) so the same call works in threads, processes and on remote workers.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from runtool.errors import RuntoolError
from runtool.extras import require_extra
from runtool.models import RunCoordinate

if TYPE_CHECKING:
    import distributed

__all__ = [
    "DASK_SCHEDULER_ENV",
    "LOCAL_CLUSTER",
    "DaskExecutor",
    "Executor",
    "ExecutorError",
    "LocalExecutor",
    "ProgressCallback",
    "RunOutcome",
    "RunStatus",
    "RunTask",
    "dask_setup",
    "executor_from_config",
]

DASK_SCHEDULER_ENV = "RUNTOOL_DASK_SCHEDULER"
LOCAL_CLUSTER = "local-cluster"
"""The scheduler address that makes :class:`DaskExecutor` start (and later close) its own LocalCluster."""

RunStatus = Literal["ok", "failed", "cancelled"]
_POLL_S = 0.05  # how long a wait for Dask results may go before the cancel event is looked at again


class ExecutorError(RuntoolError):
    """An executor could not be created or reached (a bad scheduler address, an unreachable cluster)."""


@dataclass(frozen=True)
class RunTask:
    """One run's unit of work: ``func(coordinate)``, shipped whole to a thread, a process or a Dask worker.

    ``label`` names the task in progress displays and in Dask's dashboard.
    """

    func: Callable[[RunCoordinate], Any]
    coordinate: RunCoordinate
    label: str


@dataclass(frozen=True)
class RunOutcome:
    """What became of one run: its value when ``ok``, its error text when ``failed`` or ``cancelled``.

    ``seconds`` is the time the function ran (0 for a run that never started); ``attempts`` counts the
    times it was started, more than one when a Dask worker died under it and the run was rescheduled.
    """

    coordinate: RunCoordinate
    label: str
    status: RunStatus
    value: Any = None
    error: str | None = None
    seconds: float = 0.0
    attempts: int = 1


ProgressCallback = Callable[[int, int, RunOutcome], None]
"""``progress(done, total, last_outcome)``, called in the caller's thread after each run."""


def _run_task(task: RunTask) -> RunOutcome:
    """Run one task where it was sent, turning its exception into a failed outcome.

    Catching here, on the worker, keeps one run's failure from ever looking like an executor failure,
    and keeps the traceback text (exceptions themselves may not pickle back).
    """
    start = time.perf_counter()
    try:
        value = task.func(task.coordinate)
    except Exception as exc:
        detail = traceback.format_exc(limit=-3)
        error = f"{type(exc).__name__}: {exc}\n{detail}"
        return RunOutcome(task.coordinate, task.label, "failed", error=error, seconds=time.perf_counter() - start)
    return RunOutcome(task.coordinate, task.label, "ok", value=value, seconds=time.perf_counter() - start)


def _cancelled(task: RunTask) -> RunOutcome:
    return RunOutcome(task.coordinate, task.label, "cancelled", error="cancelled", attempts=0)


def _failed(task: RunTask, exc: BaseException, attempts: int = 1) -> RunOutcome:
    return RunOutcome(task.coordinate, task.label, "failed", error=f"{type(exc).__name__}: {exc}", attempts=attempts)


class Executor(ABC):
    """Runs one function over many runs, each run on its own; subclasses decide where.

    Outcomes come back in input order whatever order the runs finish in. Executors that hold resources
    (a cluster, a connection) release them in :meth:`close`; use them as context managers.
    """

    def map_runs(
        self,
        func: Callable[[RunCoordinate], Any],
        coords: Sequence[RunCoordinate],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[RunOutcome]:
        """Apply ``func`` to every coordinate; see :meth:`run_tasks`."""
        tasks = [RunTask(func, coord, coord.to_path_str()) for coord in coords]
        return self.run_tasks(tasks, progress, cancel)

    @abstractmethod
    def run_tasks(
        self,
        tasks: Sequence[RunTask],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[RunOutcome]:
        """Run every task and return one outcome per task, in input order.

        A task that raises is reported ``failed`` with the error text; the others carry on. ``progress``
        is called after each task. Once ``cancel`` is set, tasks not yet started are reported
        ``cancelled``.
        """

    @abstractmethod
    def close(self) -> None:
        """Release what the executor started."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LocalExecutor(Executor):
    """A :mod:`concurrent.futures` pool on this machine, made fresh for each call.

    ``kind="thread"`` suits I/O-bound work (transfers); ``kind="process"`` suits CPU-bound work
    (extraction, analysis) and uses ``forkserver`` so children never inherit the locks of a parent's
    threads. Tasks are handed to the pool only as workers free up, so that after a cancel nothing new
    starts and the runs already running finish.
    """

    def __init__(self, workers: int | None = None, kind: Literal["thread", "process"] = "thread") -> None:
        if kind not in ("thread", "process"):
            raise ExecutorError(f"LocalExecutor kind must be 'thread' or 'process', not {kind!r}")
        self.workers = workers or min(8, os.cpu_count() or 1)
        if self.workers < 1:
            raise ExecutorError(f"LocalExecutor needs at least one worker, not {self.workers}")
        self.kind = kind

    def __repr__(self) -> str:
        return f"LocalExecutor(workers={self.workers}, kind={self.kind!r})"

    def close(self) -> None:
        """Nothing to release: each call's pool is shut down when the call ends."""

    def run_tasks(
        self,
        tasks: Sequence[RunTask],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[RunOutcome]:
        outcomes: list[RunOutcome | None] = [None] * len(tasks)
        done = 0

        def record(index: int, outcome: RunOutcome) -> None:
            nonlocal done
            outcomes[index] = outcome
            done += 1
            if progress is not None:
                progress(done, len(tasks), outcome)

        if not tasks:
            return []
        workers = min(self.workers, len(tasks))
        pool: ThreadPoolExecutor | ProcessPoolExecutor
        if self.kind == "thread":
            pool = ThreadPoolExecutor(workers, thread_name_prefix="runtool-run")
        else:
            pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
        running: dict[Future[RunOutcome], int] = {}

        def collect(limit: int) -> None:
            """Wait until at most ``limit`` tasks are running, recording those that finish."""
            while len(running) > limit:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = running.pop(future)
                    try:
                        record(index, future.result())
                    except Exception as exc:  # the process died, or the value did not pickle back
                        record(index, _failed(tasks[index], exc))

        with pool:
            for index, task in enumerate(tasks):
                collect(workers - 1)
                if cancel is not None and cancel.is_set():
                    record(index, _cancelled(task))
                    continue
                try:
                    running[pool.submit(_run_task, task)] = index
                except Exception as exc:  # a broken process pool refuses new work
                    record(index, _failed(task, exc))
            collect(0)
        return [outcome for outcome in outcomes if outcome is not None]


class DaskExecutor(Executor):
    """Submits runs to a Dask distributed cluster.

    ``address="local-cluster"`` starts a two-process :class:`distributed.LocalCluster` on this machine
    (the dashboard on a free port) and closes it in :meth:`close`; any other address is a scheduler to
    connect to (``tcp://host:port``), of which only the client connection is closed.

    When a worker dies under a run, the scheduler reschedules the run on another worker; after too many
    deaths (``distributed.scheduler.allowed-failures``, 3 by default) it gives up and the run is reported
    failed with ``KilledWorker``. Only as many runs as the cluster has worker threads are in flight at a
    time, so a dying worker rarely holds a second run (one that does is rescheduled too). A run is ``ok``
    only when its function returned. Once ``cancel`` is set, runs not yet submitted are reported cancelled
    and the runs already on a worker are waited for and reported as they end (a worker cannot be stopped
    in the middle of a call, so dropping its result would report as untouched a run that finished).
    """

    def __init__(self, address: str, *, n_workers: int = 2) -> None:
        require_extra("distributed", "dask")  # a missing extra names its pip install, not just the module
        import distributed
        self.address = address
        self._cluster: distributed.LocalCluster | None = None
        try:
            if address == LOCAL_CLUSTER:
                self._cluster = distributed.LocalCluster(
                    n_workers=n_workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    preload=[__name__],  # each worker process runs dask_setup below as it starts
                )
                self.client = distributed.Client(self._cluster)
            else:
                self.client = distributed.Client(address, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            if self._cluster is not None:
                self._cluster.close()
            raise ExecutorError(f"Cannot reach the Dask scheduler at {address}: {exc}") from exc

    def __repr__(self) -> str:
        return f"DaskExecutor({self.address!r}, dashboard={self.client.dashboard_link!r})"

    def close(self) -> None:
        """Close the client, and the cluster if this executor started it."""
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def run_tasks(
        self,
        tasks: Sequence[RunTask],
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[RunOutcome]:
        from distributed import as_completed

        finished: dict[int, RunOutcome] = {}

        def record(index: int, outcome: RunOutcome) -> None:
            finished[index] = outcome
            if progress is not None:
                progress(len(finished), len(tasks), outcome)

        index_of: dict[object, int] = {}
        pending: dict[object, distributed.Future] = {}
        queue = iter(enumerate(tasks))
        results = as_completed()

        def submit_next() -> None:
            for index, task in queue:
                # retries=1 re-runs an attempt that erred outside the function (say, the task would not
                # unpickle on a fresh worker); the function's own errors are caught in _run_task.
                future = self.client.submit(
                    _run_task, task, key=f"{task.label}-{index}-{time.time_ns()}", pure=False, retries=1
                )
                index_of[future.key] = index
                pending[future.key] = future
                results.add(future)
                return

        # At most one run in flight per worker thread: a worker that dies then takes no queued bystander
        # down with it, nothing left to start is ever on a worker when cancel comes, and each result is
        # fetched as it comes and its future dropped (a result left in a dead worker's memory would make
        # Dask run the finished run again).
        if cancel is None or not cancel.is_set():
            for _ in range(max(1, sum(self.client.nthreads().values()))):
                submit_next()
        while pending:
            for future in results.next_batch(block=False):
                if pending.pop(future.key, None) is not None:
                    record(index_of[future.key], self._outcome(tasks[index_of[future.key]], future))
                    if cancel is None or not cancel.is_set():
                        submit_next()
                del future
            if pending and not results.has_ready():
                time.sleep(_POLL_S)
        for index, task in queue:
            record(index, _cancelled(task))
        results.clear()
        return [finished[index] for index in range(len(tasks))]

    def _outcome(self, task: RunTask, future: distributed.Future) -> RunOutcome:
        if future.status == "cancelled":
            return _cancelled(task)
        try:
            # When the worker holding a finished result died before it was fetched, Dask runs the task
            # again and result() waits for that, or raises when it fails too.
            outcome: RunOutcome = future.result()
        except Exception as exc:
            # No attempt came back (its workers died, say): the attempts are the worker deaths.
            return _failed(task, exc, self._worker_deaths(future.key))
        return replace(outcome, attempts=1 + self._worker_deaths(future.key))

    def _worker_deaths(self, key: object) -> int:
        """How many workers died while running the task: the attempts that never came back."""
        try:
            deaths: int = self.client.run_on_scheduler(_scheduler_worker_deaths, key)
        except Exception:  # a remote scheduler without runtool installed cannot run the lookup
            return 0
        return deaths


def dask_setup(worker: Any) -> None:
    """Dask runs this in each worker process of the cluster a :class:`DaskExecutor` starts (its preload).

    Ctrl-C in a terminal reaches the whole process group, so these workers, this process's helpers, hear it
    too. They ignore it: a worker dying of it would have Dask run its run again elsewhere, while the caller
    decides what an interrupt means (the CLI cancels the runs not started and waits for those in flight).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _scheduler_worker_deaths(key: object, dask_scheduler: Any) -> int:
    """Runs on the scheduler: ``suspicious`` counts the workers lost while the task was processing on them."""
    task = dask_scheduler.tasks.get(key)
    return 0 if task is None else int(task.suspicious)


def executor_from_config(
    scheduler: str | None = None,
    *,
    workers: int | None = None,
    kind: Literal["thread", "process"] = "thread",
    environ: Mapping[str, str] | None = None,
) -> Executor:
    """The executor the configuration asks for: ``scheduler``, else ``$RUNTOOL_DASK_SCHEDULER``.

    Empty or unset → :class:`LocalExecutor` (``workers``, ``kind``); ``local-cluster`` or
    ``tcp://host:port`` → :class:`DaskExecutor`. The choice lives in the environment so that a notebook,
    the CLI and the page all move to a cluster together without code changes.

    Raises:
        ExecutorError: the address is neither ``local-cluster`` nor a ``tcp://`` or ``tls://`` address,
            or the scheduler cannot be reached.
        MissingExtraError: a scheduler is configured but dask[distributed] (the ``[dask]`` extra) is not installed.
    """
    address = (scheduler or (environ if environ is not None else os.environ).get(DASK_SCHEDULER_ENV, "")).strip()
    if not address:
        return LocalExecutor(workers, kind)
    if address != LOCAL_CLUSTER and not address.startswith(("tcp://", "tls://")):
        raise ExecutorError(
            f"{DASK_SCHEDULER_ENV} = {address!r}: expected {LOCAL_CLUSTER!r} or a scheduler like tcp://host:8786"
        )
    return DaskExecutor(address)
