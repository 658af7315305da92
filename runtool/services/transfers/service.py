"""The transfer service: plan → preview → execute the previewed plan, for one run or many, then refresh state.

:class:`TransferService` plans (it is a :class:`~runtool.services.transfers.plan.TransferPlanner`), refuses to
write in read-only mode, executes one run's plan through the
:class:`~runtool.services.transfers.engine.TransferEngine` and refreshes that run's local state (and, after
uploads, its inventory) so the pages never show stale state. Many runs execute through the executor of
:mod:`runtool.services.executor`, each run its own unit (:meth:`TransferService.execute_bulk`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from runtool.errors import ReadOnlyError, RuntoolError
from runtool.formatting import format_bytes, format_count, format_os_error
from runtool.models import RunCoordinate
from runtool.services.executor import Executor, LocalExecutor, RunOutcome, RunTask, executor_from_config
from runtool.services.inventory import CloudInventoryService
from runtool.services.local_state import LocalStateService
from runtool.services.transfers.engine import (
    REFRESH_HINT,
    FileOutcome,
    TransferEngine,
    TransferProgress,
    TransferResult,
    execute_run_plan,
)
from runtool.services.transfers.plan import BulkPlan, TransferPlan, TransferPlanner

__all__ = ["BULK_RUNS_AT_ONCE", "BulkResult", "TransferService"]

BULK_RUNS_AT_ONCE = 4
"""Runs a bulk transfer executes at once on the default thread executor; they share the engine's file workers."""


@dataclass(frozen=True)
class BulkResult:
    """Per-run results; each run is its own unit, so one failing run does not stop the others.

    ``results`` holds the runs that ran (a run that raised or lost its worker has its files failed),
    ``not_started`` the runs a cancel kept from starting; runs with nothing to transfer are in neither.
    """

    plan: BulkPlan
    results: tuple[TransferResult, ...]
    not_started: tuple[RunCoordinate, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.not_started and all(result.ok for result in self.results)

    def count(self, status: str) -> int:
        """Files with this outcome over all runs."""
        return sum(result.count(status) for result in self.results)

    @property
    def files_not_transferred(self) -> int:
        """Planned files a cancel kept from moving: stopped in flight, not started, or in runs not started."""
        waiting = {plan.coordinate: len(plan.to_transfer) for plan in self.plan.plans}
        return self.count("cancelled") + sum(waiting[coord] for coord in self.not_started)

    @property
    def refresh_errors(self) -> tuple[tuple[RunCoordinate, str], ...]:
        """Runs whose state could not be refreshed after their transfer, and why."""
        return tuple((r.plan.coordinate, r.refresh_error) for r in self.results if r.refresh_error)

    def summary(self) -> str:
        """e.g. ``2 runs complete, 1 with failures, 0 not started, 1 with nothing to transfer, 0 left out — …``."""
        done = sum(1 for r in self.results if r.ok)
        failed = sum(1 for r in self.results if not r.ok)
        nothing = sum(1 for p in self.plan.plans if not p.to_transfer)
        size = sum(r.bytes for r in self.results)
        return (
            f"{done} runs complete, {failed} with failures, {len(self.not_started)} not started, "
            f"{nothing} with nothing to transfer, {len(self.plan.left_out)} left out — "
            f"{format_count(self.count('transferred'))} files, {format_bytes(size)} in {self.seconds:.1f} s, "
            f"{format_count(self.count('skipped'))} skipped, {format_count(self.count('failed'))} failed"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "transferred": self.count("transferred"),
            "skipped": self.count("skipped"),
            "failed": self.count("failed"),
            "runs": [r.to_dict() for r in self.results],
            "not_started": [str(c) for c in self.not_started],
            "files_not_transferred": self.files_not_transferred,
            "left_out": [{"coordinate": str(c), "reason": r} for c, r in self.plan.left_out],
            "refresh_errors": [{"coordinate": str(c), "error": e} for c, e in self.refresh_errors],
        }


class TransferService(TransferPlanner):
    """Plans transfers, executes the previewed plans through the engine and refreshes the runs they changed."""

    def __init__(
        self,
        engine: TransferEngine,
        inventory: CloudInventoryService,
        local: LocalStateService,
        read_only: bool = False,
    ) -> None:
        super().__init__(engine.config, lambda: engine.client, local)
        self.engine = engine
        self.inventory = inventory
        self.read_only = read_only

    def execute(
        self,
        plan: TransferPlan,
        progress: Callable[[TransferProgress], None] | None = None,
        cancel: threading.Event | None = None,
        waiting: Callable[[], None] | None = None,
    ) -> TransferResult:
        """Execute exactly the previewed plan, in parallel, under the run's lock (see
        :meth:`TransferEngine.execute`, also for ``waiting``); then refresh the run's state."""
        self._check_writable()
        result = self.engine.execute(plan, progress, cancel, waiting=waiting)
        return self._refreshed(result, changed_cloud=result.count("transferred") > 0)

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError("Transfers are not allowed in read-only mode.")

    def _refreshed(self, result: TransferResult, changed_cloud: bool) -> TransferResult:
        """``result`` after refreshing its run's state; a refresh that fails is noted in the result, not raised,
        so the caller still learns which files moved."""
        plan = result.plan
        try:
            self.local.refresh_run(plan.coordinate)
            if plan.uploads and changed_cloud:
                # The bucket changed: rescan just this run, so the pages never show the old state.
                self.inventory.refresh(plan.coordinate.to_filters())
        except OSError as exc:
            return replace(result, refresh_error=f"{format_os_error(exc)} Then {REFRESH_HINT}.")
        except RuntoolError as exc:
            return replace(result, refresh_error=f"{exc} Then {REFRESH_HINT}.")
        return result

    def execute_bulk(
        self,
        bulk: BulkPlan,
        progress: Callable[[int, int, TransferProgress], None] | None = None,
        cancel: threading.Event | None = None,
        executor: Executor | None = None,
    ) -> BulkResult:
        """Execute each run's previewed plan as its own unit (see :meth:`execute`), several runs at once.

        ``progress(run_index, run_count, event)`` indexes the plans with files to transfer, in ``bulk.plans``
        order, and may be called from several threads. ``executor`` defaults to :func:`executor_from_config`
        with the configured ``dask_scheduler``. On a thread :class:`LocalExecutor` (the default without a
        scheduler: up to :data:`BULK_RUNS_AT_ONCE` runs at once, sharing the engine's file workers) the
        runs execute here and report bytes as they arrive. On any other executor (a Dask cluster, a process
        pool) each run is shipped as :func:`execute_run_plan`, so the worker writes the files: on a remote
        cluster every worker must see the data folder at the configured path (a shared file system).
        Progress then comes once per finished run.

        This thread refreshes each run's local state (and, after uploads, its inventory) as the run ends.
        A run that raises or whose worker dies for good is reported with its files failed, never as done;
        a Dask run rescheduled after a worker died runs again under the run's lock, which removes the dead
        attempt's temporary files and (unless overwriting) skips the downloads it finished. The other runs
        carry on. After ``cancel``, runs in flight stop their files in flight (nothing half-written) and runs
        not yet started are reported not started, as are runs stopped before any file moved (waiting for
        another job's lock on the run, say). On a Dask cluster the workers cannot hear the cancel: the runs
        already on them are waited for and reported as they end.
        """
        self._check_writable()
        cancel = cancel or threading.Event()
        started = time.perf_counter()
        todo = [plan for plan in bulk.plans if plan.to_transfer]
        own = executor is None
        if executor is None:
            executor = executor_from_config(self.config.dask_scheduler, workers=min(BULK_RUNS_AT_ONCE, len(todo) or 1))
        pool = executor if isinstance(executor, LocalExecutor) and executor.kind == "thread" else None
        index_of = {plan.coordinate: index for index, plan in enumerate(todo)}
        ended: dict[int, TransferResult] = {}

        def finished(_done: int, _total: int, outcome: RunOutcome) -> None:
            index = index_of[outcome.coordinate]
            plan = todo[index]
            if outcome.status == "cancelled":  # never started
                return
            result = outcome.value if outcome.status == "ok" else _failed_run(plan, outcome)
            if result.count("cancelled") == len(plan.to_transfer):
                return  # stopped before any file moved (waiting for the run's lock, say): not started
            ended[index] = self._refreshed(
                result, changed_cloud=outcome.status == "failed" or result.count("transferred") > 0
            )
            if pool is None and progress is not None:
                files = len(plan.to_transfer)
                progress(index, len(todo), TransferProgress(files, files, result.bytes, plan.bytes_to_transfer, ""))

        funcs: list[Callable[[RunCoordinate], Any]]
        if pool is not None:
            file_workers = max(1, self.engine.workers // min(pool.workers, len(todo) or 1))

            def run_here(index: int, plan: TransferPlan, _: RunCoordinate) -> TransferResult:
                def relay(event: TransferProgress) -> None:
                    if progress is not None:
                        progress(index, len(todo), event)

                return self.engine.execute(plan, relay if progress is not None else None, cancel, file_workers)

            funcs = [partial(run_here, index, plan) for index, plan in enumerate(todo)]
        else:
            funcs = [partial(execute_run_plan, self.config, plan) for plan in todo]
        tasks = [RunTask(f, p.coordinate, p.coordinate.to_path_str()) for f, p in zip(funcs, todo, strict=True)]
        try:
            executor.run_tasks(tasks, progress=finished, cancel=cancel)
        finally:
            if own:
                executor.close()
        results = tuple(ended[index] for index in sorted(ended))
        not_started = tuple(plan.coordinate for index, plan in enumerate(todo) if index not in ended)
        return BulkResult(bulk, results, not_started, time.perf_counter() - started)


def _failed_run(plan: TransferPlan, outcome: RunOutcome) -> TransferResult:
    """A run that raised, or whose worker died for good: every file it had to move counts as failed.

    Some may have landed before the end; at their final paths they are complete, and re-running skips them.
    """
    error = f"the run failed: {(outcome.error or 'unknown error').splitlines()[0]}"
    if outcome.attempts > 1:
        error += f" (after {outcome.attempts} attempts)"
    outcomes = (
        *(FileOutcome(f, "skipped", reason=f.reason) for f in plan.skipped),
        *(FileOutcome(f, "failed", error=error) for f in plan.to_transfer),
    )
    return TransferResult(plan, outcomes, outcome.seconds, cancelled=False)

