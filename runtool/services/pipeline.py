"""Bring runs up to date: download what is missing, extract, analyse; one run or a whole selection.

:class:`RunPipeline` is the one place that knows the order of the per-run steps. It follows the run's next
action (:class:`~runtool.models.NextAction`): a run without local bags, with bags the cloud has but the local
copy lacks, or with a local bag of the wrong size, is downloaded (the bags already there are skipped, or
verified when one has the wrong size), a run with bags but no current extraction is extracted, and every
run is analysed (a current analysis cache makes that a read). ``cancel`` stops one run's update in its
download or extraction, or between steps, with :class:`PipelineCancelled`: the transfer and extraction services
write through temporary files renamed into place, so the bags already complete are kept and nothing is half
written. :class:`~runtool.services.reports.ReportService`
runs it before executing its notebook; the CLI's ``runtool analyze [filters] --yes`` runs it over a selection.

A selection runs on the :mod:`~runtool.services.executor`, one run per unit: a run that fails is reported
with the step and the reason and the others go on; ``cancel`` leaves the runs not started untouched and
reported as such. On a thread pool the runs use this process's services; on a process pool or a Dask
cluster each worker builds services from the configuration on its first run and keeps them for the next
(:func:`update_run`), so workers need the same data paths.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from runtool.config import RuntoolConfig
from runtool.errors import ReadOnlyError, RuntoolError, first_and_more
from runtool.formatting import format_bytes, format_count_of
from runtool.models import LEVELS, Filters, NextAction, RunCoordinate, RunState, SyncStatus

if TYPE_CHECKING:
    import pandas as pd

    from runtool.extract.outputs import ExtractionProgress
    from runtool.services.analytics import AnalyticsService
    from runtool.services.data_state import DataStateService
    from runtool.services.executor import Executor, RunOutcome
    from runtool.services.extraction import ExtractionService
    from runtool.services.inventory import CacheStamp
    from runtool.services.kpis import KpiService
    from runtool.services.local_state import LocalStateService
    from runtool.services.transfers import TransferProgress, TransferService

__all__ = [
    "RUNS_AT_ONCE",
    "PipelineCancelled",
    "PipelineError",
    "PipelineFailure",
    "PipelineOutcome",
    "PipelinePlan",
    "PipelineProgress",
    "PipelineResult",
    "PipelineStep",
    "RunPipeline",
    "RunUpdate",
    "select_runs",
    "update_run",
]

PipelineStep = Literal["check", "download", "extract", "analyze"]
"""The steps of bringing one run up to date, in order; ``download`` and ``extract`` run only when needed."""

RUNS_AT_ONCE = 2
"""Runs updated at once on the default local pool: extraction and analysis are CPU-bound, so more threads
than cores only queue; a Dask cluster (``RUNTOOL_DASK_SCHEDULER``) takes as many as it has worker threads."""


class PipelineError(RuntoolError):
    """A run could not be brought up to date; the message names the run, the step and the cause."""

    def __init__(self, message: str, coordinate: RunCoordinate, step: PipelineStep) -> None:
        super().__init__(message)
        self.coordinate = coordinate
        self.step = step


class PipelineCancelled(PipelineError):
    """A run's update was cancelled; ``step`` is the step it stopped in or before. What the steps before it
    completed is kept (complete bags, a complete extraction); the stopped step left nothing half written."""


@dataclass(frozen=True)
class PipelineProgress:
    """One step of one run; ``fraction`` is how far the step is (0-1) when it is known (download, extraction)."""

    coordinate: RunCoordinate
    step: PipelineStep
    message: str
    fraction: float | None = None


@dataclass(frozen=True)
class RunUpdate:
    """A run brought up to date: the steps that ran (an analysis read from its cache is not a step) and its KPIs."""

    coordinate: RunCoordinate
    steps: tuple[PipelineStep, ...]
    kpis: dict[str, float | int | None]
    failed_bags: tuple[str, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"coordinate": self.coordinate.to_path_str(), "steps": list(self.steps), "kpis": dict(self.kpis),
                "failed_bags": list(self.failed_bags), "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class PipelineFailure:
    """What a worker sends back for a run whose step failed (a plain value, so it pickles from any worker);
    ``cancelled``: the step stopped because the selection was cancelled, not because it failed."""

    coordinate: RunCoordinate
    step: PipelineStep
    error: str
    cancelled: bool = False


@dataclass(frozen=True)
class PipelineOutcome:
    """What became of one run of a selection: ``ok`` with its update, ``failed`` with the step (when known) and
    the reason, or ``cancelled`` (never started, or stopped in ``step`` with the reason saying what was kept)."""

    coordinate: RunCoordinate
    status: Literal["ok", "failed", "cancelled"]
    update: RunUpdate | None = None
    step: PipelineStep | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"coordinate": self.coordinate.to_path_str(), "status": self.status,
                "update": None if self.update is None else self.update.to_dict(),
                "step": self.step, "error": self.error}


@dataclass(frozen=True)
class PipelinePlan:
    """The runs of a selection to bring up to date, each with its next step; the runs already up to date (a
    current analysis, nothing to download), which are not run again; and the runs left out with why."""

    runs: tuple[tuple[RunCoordinate, NextAction], ...]
    left_out: tuple[tuple[RunCoordinate, str], ...] = ()
    up_to_date: tuple[RunCoordinate, ...] = ()

    @property
    def coordinates(self) -> list[RunCoordinate]:
        return [coord for coord, _ in self.runs]

    def count(self, action: NextAction) -> int:
        return sum(1 for _, next_action in self.runs if next_action is action)

    def describe(self) -> str:
        parts = [f"{self.count(action)} to {action.value}" for action in
                 (NextAction.DOWNLOAD, NextAction.EXTRACT, NextAction.ANALYZE) if self.count(action)]
        detail = f" ({', '.join(parts)})" if parts else ""
        done = f"{format_count_of(len(self.up_to_date), 'run')} up to date already" if self.up_to_date else ""
        left = f"{format_count_of(len(self.left_out), 'run')} left out" if self.left_out else ""
        if not self.runs:
            return "; ".join(["Nothing to do", *(text for text in (done, left) if text)])
        return "; ".join(text for text in (f"Bring {format_count_of(len(self.runs), 'run')} up to date{detail}",
                                           done, left) if text)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [{"coordinate": c.to_path_str(), "next_step": a.value} for c, a in self.runs],
                "up_to_date": [c.to_path_str() for c in self.up_to_date],
                "left_out": [{"coordinate": c.to_path_str(), "reason": r} for c, r in self.left_out]}


@dataclass(frozen=True)
class PipelineResult:
    """Every run's outcome, in plan order."""

    outcomes: tuple[PipelineOutcome, ...]
    seconds: float
    left_out: tuple[tuple[RunCoordinate, str], ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(outcome.status == "ok" for outcome in self.outcomes)

    def with_status(self, status: str) -> list[PipelineOutcome]:
        return [outcome for outcome in self.outcomes if outcome.status == status]

    def summary(self) -> str:
        done, failed = len(self.with_status("ok")), len(self.with_status("failed"))
        stopped = sum(1 for outcome in self.with_status("cancelled") if outcome.step is not None)
        not_started = len(self.with_status("cancelled")) - stopped
        text = f"{format_count_of(done, 'run')} up to date, {failed} failed"
        if stopped:
            text += f", {stopped} stopped in flight (cancelled)"
        if not_started:
            text += f", {not_started} not started (cancelled)"
        return f"{text} in {self.seconds:.1f} s"

    def to_dict(self) -> dict[str, Any]:
        return {"outcomes": [outcome.to_dict() for outcome in self.outcomes], "seconds": round(self.seconds, 3),
                "left_out": [{"coordinate": c.to_path_str(), "reason": r} for c, r in self.left_out]}


PipelineProgressCallback = Callable[[PipelineProgress], None]
BulkProgressCallback = Callable[[int, int, PipelineOutcome], None]
"""``progress(done, total, last_outcome)`` after each run of a selection, in the caller's thread."""


def select_runs(runs: pd.DataFrame, since: date | None = None, until: date | None = None) -> pd.DataFrame:
    """The rows of a run table whose start falls on or after ``since`` and on or before ``until`` (UTC days)."""
    if since is None and until is None:
        return runs
    day = runs["start_time"].dt.date
    mask = (day >= since) if since is not None else day.notna()
    if until is not None:
        mask &= day <= until
    return runs[mask]


PipelineFactory = Callable[[RuntoolConfig], "RunPipeline"]
"""Builds a writable pipeline, with its services, from a configuration: what a process or Dask worker calls.

It must pickle (a module-level function), since it travels with each run to the worker."""


class RunPipeline:
    """Brings runs up to date through the transfer, extraction and analytics services.

    ``from_config`` builds the same pipeline from a configuration where a run executes in another process
    (:func:`update_run`); the :class:`~runtool.services.container.ServiceContainer` passes its own.
    """

    def __init__(
        self,
        config: RuntoolConfig,
        data_state: DataStateService,
        local: LocalStateService,
        transfers: TransferService,
        extraction: ExtractionService,
        analytics: AnalyticsService,
        kpis: KpiService,
        from_config: PipelineFactory,
        read_only: bool = False,
    ) -> None:
        self.config = config
        self.data_state = data_state
        self.local = local
        self.transfers = transfers
        self.extraction = extraction
        self.analytics = analytics
        self.kpis = kpis
        self.from_config = from_config
        self.read_only = read_only

    def bring_up_to_date(
        self,
        coord: RunCoordinate,
        progress: PipelineProgressCallback | None = None,
        force: bool = False,
        cancel: threading.Event | None = None,
    ) -> RunUpdate:
        """Download what is missing, extract, analyse (``force`` recomputes a current analysis).

        ``cancel`` is passed to the download and the extraction, which stop at their next chunk or bag, and is
        checked before each step; once the analysis has started it runs to its end (it takes seconds).

        Raises:
            ReadOnlyError: the services are read-only.
            PipelineCancelled: ``cancel`` was set; the message names the step and what is kept.
            PipelineError: the run has no raw bags anywhere, or a step failed (named with its cause).
        """
        self._refuse_read_only()
        started = time.perf_counter()

        def notify(step: PipelineStep, message: str, fraction: float | None = None) -> None:
            if progress is not None:
                progress(PipelineProgress(coord, step, message, fraction))

        def check_cancel(step: PipelineStep, kept: str) -> None:
            if cancel is not None and cancel.is_set():
                raise PipelineCancelled(f"Bringing {coord} up to date was cancelled before the {step} step; "
                                        f"{kept}.", coord, step)

        check_cancel("check", "nothing was changed")
        notify("check", "Checking the run's state")
        with _step(coord, "check"):
            state = self.data_state.get_complete_run_state(coord)
            check_has_bags(state, self.config)
        steps: list[PipelineStep] = []
        if state.next_action is NextAction.DOWNLOAD:
            check_cancel("download", "nothing was changed")
            with _step(coord, "download"):
                # Verify replaces a local bag of the wrong size, which skip would keep.
                plan = self.transfers.plan_raw_download(coord, conflict="verify" if state.differing_bags else "skip")
                notify("download", plan.describe(), 0.0)
                result = self.transfers.execute(plan, progress=_download_notifier(notify), cancel=cancel)
            if result.cancelled:
                kept = result.count("transferred") + result.count("skipped")
                raise PipelineCancelled(
                    f"Bringing {coord} up to date was cancelled during the download: "
                    f"{format_count_of(kept, 'complete bag')} kept of {len(plan.files)}, no partial file left; "
                    "bring it up to date again to resume.", coord, "download")
            if not result.ok:
                failed = [o for o in result.outcomes if o.status in ("failed", "cancelled")]
                first, details = first_and_more([(o.file.name, o.error or o.status) for o in failed])
                error = PipelineError(f"The download of {coord} failed for {len(failed)} of {len(plan.files)} "
                                      f"bags: {first}.", coord, "download")
                error.details = details
                raise error
            steps.append("download")
        if state.next_action in (NextAction.DOWNLOAD, NextAction.EXTRACT):
            check_cancel("extract", "the downloaded bags are kept" if steps else "nothing was changed")
            notify("extract", "Extracting the bags", 0.0)

            def extraction(event: ExtractionProgress) -> None:
                total = max(event.bags_total, 1)
                notify("extract", f"Extracting: {event.bags_done} of {event.bags_total} bags done",
                       min(1.0, event.bags_done / total))

            # Imported here: the Fleet KPIs page imports this module, and the extractor is not for its first paint.
            from runtool.services.extraction import ExtractionCancelled

            with _step(coord, "extract"):
                try:
                    self.extraction.extract(coord, progress=extraction, cancel=cancel)
                except ExtractionCancelled as exc:
                    left = ("the downloaded bags and any previous extraction are kept" if steps
                            else "any previous extraction is kept")
                    raise PipelineCancelled(f"Bringing {coord} up to date was cancelled during the extraction; "
                                            f"{left}, nothing half written.", coord, "extract") from exc
            steps.append("extract")
        check_cancel("analyze", "the steps done so far are kept" if steps else "nothing was changed")
        notify("analyze", "Analysing")
        with _step(coord, "analyze"):
            analysis = self.analytics.analyze_run(coord, force=force)
        if not analysis.from_cache:
            steps.append("analyze")
        return RunUpdate(coord, tuple(steps), dict(analysis.kpis), tuple(bag.name for bag in analysis.failed_bags),
                         time.perf_counter() - started)

    def plan(
        self, filters: Filters, since: date | None = None, until: date | None = None, force: bool = False
    ) -> PipelinePlan:
        """The runs of a selection with their next step, as :meth:`bring_up_to_date` would take it.

        A run with a partial local copy or a local bag of the wrong size is downloaded first (its
        :attr:`~runtool.models.RunState.next_action`); an extracted run whose analysis cache is current (the KPI
        index's check: version, run and fingerprint) is up to date and not planned, unless ``force`` (then it is
        analysed again). Runs with no raw bags anywhere are left out.
        """
        data_state = self.data_state
        runs = select_runs(data_state.runs(filters), since, until)
        current: set[str] = set()
        if not force and bool(runs["extracted"].any()):
            rows = self.kpis.table(filters, since, until, refresh=True).rows
            current = {f"{lb}/{ts}" for lb, ts in zip(rows["lb_key"], rows["timestamp"], strict=True)}
        planned: list[tuple[RunCoordinate, NextAction]] = []
        up_to_date: list[RunCoordinate] = []
        left_out: list[tuple[RunCoordinate, str]] = []
        columns = [*LEVELS, "timestamp", "raw_bags", "local_bags", "extracted", "raw_sync"]
        for *parts, raw_bags, local_bags, extracted, raw_sync in runs[columns].itertuples(index=False):
            coord = RunCoordinate(*(str(part) for part in parts))
            if raw_sync == SyncStatus.MISMATCH and raw_bags > 0 and local_bags > 0 and \
                    data_state.get_complete_run_state(coord).next_action is NextAction.DOWNLOAD:
                planned.append((coord, NextAction.DOWNLOAD))  # bags missing locally, or of the wrong size
            elif extracted:
                if coord.to_path_str() in current and self.analytics.cache_files_present(coord):
                    up_to_date.append(coord)
                else:
                    planned.append((coord, NextAction.ANALYZE))
            elif local_bags > 0:
                planned.append((coord, NextAction.EXTRACT))
            elif raw_bags > 0:
                planned.append((coord, NextAction.DOWNLOAD))
            else:
                left_out.append((coord, "no raw bags in the raw bucket or locally: nothing to analyse"))
        return PipelinePlan(tuple(planned), tuple(left_out), tuple(up_to_date))

    def update_many(
        self,
        selection: PipelinePlan | Sequence[RunCoordinate],
        progress: BulkProgressCallback | None = None,
        cancel: threading.Event | None = None,
        executor: Executor | None = None,
        force: bool = False,
    ) -> PipelineResult:
        """Bring every run of ``selection`` up to date, each run its own unit on ``executor``.

        ``executor`` defaults to :func:`~runtool.services.executor.executor_from_config` with the configured
        ``dask_scheduler`` (unset: :data:`RUNS_AT_ONCE` threads here). On a thread pool the runs use these
        services; elsewhere each run builds its own from the configuration (:func:`update_run` with
        :attr:`from_config`). This thread
        re-reads each run's local state as it ends, so the views show what the run now has.

        Raises:
            ReadOnlyError: the services are read-only.
        """
        from runtool.services.executor import LocalExecutor, executor_from_config

        self._refuse_read_only()
        started = time.perf_counter()
        if isinstance(selection, PipelinePlan):
            coords, left_out = selection.coordinates, selection.left_out
        else:
            coords, left_out = list(selection), ()
        own = executor is None
        if executor is None:
            executor = executor_from_config(self.config.dask_scheduler,
                                            workers=min(RUNS_AT_ONCE, len(coords) or 1))
        func: Callable[[RunCoordinate], RunUpdate | PipelineFailure]
        if isinstance(executor, LocalExecutor) and executor.kind == "thread":
            func = partial(_update_with, self, force, cancel=cancel)
        else:
            func = partial(update_run, self.from_config, self.config, force)
        index_of = {coord: index for index, coord in enumerate(coords)}
        outcomes: dict[int, PipelineOutcome] = {}

        def finished(done: int, total: int, run: RunOutcome) -> None:
            outcome = _outcome(run)
            outcomes[index_of[run.coordinate]] = outcome
            if outcome.status != "cancelled" or outcome.step is not None:  # a run stopped in flight kept steps
                self.local.refresh_run(run.coordinate)
            if progress is not None:
                progress(done, total, outcome)

        try:
            executor.map_runs(func, coords, progress=finished, cancel=cancel)
        finally:
            if own:
                executor.close()
        return PipelineResult(tuple(outcomes[index] for index in range(len(coords))), time.perf_counter() - started,
                              left_out)

    def _refuse_read_only(self) -> None:
        if self.read_only:
            raise ReadOnlyError("Bringing runs up to date downloads, extracts and analyses, "
                                "which read-only mode does not allow.")


def check_has_bags(state: RunState, config: RuntoolConfig) -> None:
    """Refuse runs that have no bags anywhere: nothing could be downloaded, extracted or analysed.

    Raises:
        PipelineError: at the ``check`` step, saying whether the run is ML-only or unknown.
    """
    if state.cloud_raw.exists or state.local_raw.exists or state.extraction.extracted:
        return
    coord = state.coordinate
    if state.cloud_ml.exists or state.local_ml.exists:
        raise PipelineError(f"Run {coord} has ML samples but no raw bags, in the raw bucket `{config.raw_bucket}` "
                            "or locally: there is nothing to analyse.", coord, "check")
    raise PipelineError(f"Unknown run {coord}: it is in neither the raw bucket `{config.raw_bucket}` nor the local "
                        "roots (check the coordinate, or refresh the inventory).", coord, "check")


def update_run(
    from_config: PipelineFactory, config: RuntoolConfig, force: bool, coord: RunCoordinate
) -> RunUpdate | PipelineFailure:
    """One run brought up to date with services built here (``from_config(config)``): what a process or Dask
    worker runs.

    The inventory comes from the configured cache folder, so a worker sees what the caller saw. The services
    are kept for the next run of the same configuration in this process (:func:`_worker_pipeline`).
    """
    return _update_with(_worker_pipeline(from_config, config, coord), force, coord)


_worker_lock = threading.Lock()
_worker_cached: tuple[PipelineFactory, RuntoolConfig, CacheStamp, RunPipeline] | None = None


def _worker_pipeline(from_config: PipelineFactory, config: RuntoolConfig, coord: RunCoordinate) -> RunPipeline:
    """This process's pipeline for ``config``, built on its first run and reused while the inventory cache stays.

    Building services per run made every run of a worker load the whole inventory cache and scan the whole
    local roots, a cost that grows with the fleet, not the run (benchmarks/bulk_analysis.py). Reused, they
    stay true: a changed inventory cache (another refresh, also of one run) builds new services, and the run's own local
    state is re-read from disk before it starts, since the caller or another worker may have changed it.
    The inventory then stays in the worker's memory between calls, as it does in the caller's.
    """
    global _worker_cached
    from runtool.services.inventory import cache_stamp

    stamp = cache_stamp(config.cache_dir)
    with _worker_lock:
        cached = _worker_cached
        if cached is None or cached[:3] != (from_config, config, stamp):
            cached = _worker_cached = (from_config, config, stamp, from_config(config))
    pipeline = cached[3]
    pipeline.local.refresh_run(coord)
    return pipeline


def _update_with(
    pipeline: RunPipeline, force: bool, coord: RunCoordinate, cancel: threading.Event | None = None
) -> RunUpdate | PipelineFailure:
    """A step's failure comes back as a value naming the step; anything else raises and the executor reports it.

    ``cancel`` (threads only: an event does not cross processes) stops a run in flight at its download's next
    chunk or its extraction's next bag, keeping what its finished steps made.
    """
    try:
        return pipeline.bring_up_to_date(coord, force=force, cancel=cancel)
    except PipelineError as exc:
        return PipelineFailure(coord, exc.step, str(exc), cancelled=isinstance(exc, PipelineCancelled))


def _download_notifier(
    notify: Callable[[PipelineStep, str, float | None], None], interval_s: float = 0.25
) -> Callable[[TransferProgress], None]:
    """Transfer progress (from the transfer's worker threads, at every chunk) as download steps: at most one every
    ``interval_s``, and one whenever a file completes, so a callback that redraws or prints is not flooded.

    The workers send their snapshots outside the transfer's lock, so one may arrive after a newer one: it is
    dropped, and the last event sent is the download's end (every file done).
    """
    lock = threading.Lock()
    last: list[Any] = [0.0, (-1, -1)]  # when the last event was sent, and its (files done, bytes done)

    def on_bytes(event: TransferProgress) -> None:
        position = (event.files_done, event.bytes_done)
        with lock:
            now = time.monotonic()
            if position <= last[1] or (event.files_done == last[1][0] and now - last[0] < interval_s):
                return
            last[0], last[1] = now, position
            fraction = event.bytes_done / event.bytes_total if event.bytes_total else 0.0
            # Sent under the lock, so the events reach the callback in the order checked here.
            notify("download", f"Downloading: {event.files_done} of {format_count_of(event.files_total, 'bag')} "
                               f"done, {format_bytes(event.bytes_done)} of {format_bytes(event.bytes_total)}",
                   fraction)

    return on_bytes


def _outcome(run: RunOutcome) -> PipelineOutcome:
    if run.status == "cancelled":
        return PipelineOutcome(run.coordinate, "cancelled", error="not started (cancelled)")
    if run.status == "failed":
        # The executor's text is the exception line followed by its traceback; the reason is the first line.
        reason = (run.error or "failed").splitlines()[0]
        return PipelineOutcome(run.coordinate, "failed", error=reason)
    if isinstance(run.value, PipelineFailure):
        status: Literal["failed", "cancelled"] = "cancelled" if run.value.cancelled else "failed"
        return PipelineOutcome(run.coordinate, status, step=run.value.step, error=run.value.error)
    return PipelineOutcome(run.coordinate, "ok", update=run.value)


@contextmanager
def _step(coord: RunCoordinate, step: PipelineStep) -> Iterator[None]:
    """Re-raise a step's runtool error as a PipelineError naming the run and the step."""
    try:
        yield
    except (PipelineError, ReadOnlyError):
        raise
    except RuntoolError as exc:
        error = PipelineError(f"Bringing {coord} up to date stopped at the {step} step: {exc}", coord, step)
        error.details = exc.details
        raise error from exc
