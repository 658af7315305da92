"""The ``runtool`` command line: the same services as the pages.

Exit codes: 0 success, 1 an operation failed, 2 bad input (invalid coordinate, filter or option).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from types import FrameType
from typing import Any

from runtool import __version__
from runtool.config import ConfigError, RuntoolConfig, load_config
from runtool.errors import ReadOnlyError, RuntoolError, UsageError
from runtool.formatting import format_bytes, format_count, format_count_of, format_os_error, format_pct, printable
from runtool.models import LEVELS, CoordinateError, CoverageSettings, Filters, RunCoordinate, SyncStatus, to_jsonable
from runtool.serve import ServeOptions, serve
from runtool.services import CONFLICT_MODES, RefreshProgress, ServiceContainer, TransferPlan, TransferProgress
from runtool.services.conflicts import conflict_help
from runtool.services.executor import DaskExecutor, executor_from_config
from runtool.services.pipeline import RUNS_AT_ONCE as PIPELINE_RUNS_AT_ONCE
from runtool.services.pipeline import PipelineResult
from runtool.services.transfers import BULK_RUNS_AT_ONCE, BulkPlan, BulkResult, TransferError

__all__ = ["main"]



def _add_filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("selection (unset = All)")
    for level in LEVELS:
        group.add_argument(f"--{level}", metavar=level.upper())


def _filters(args: argparse.Namespace) -> Filters:
    try:
        return Filters.from_mapping({level: getattr(args, level, None) for level in LEVELS})
    except CoordinateError as exc:
        raise UsageError(f"invalid filter: {exc}") from exc


def _print_json(value: Any) -> None:
    json.dump(to_jsonable(value), sys.stdout, indent=2)
    sys.stdout.write("\n")


def _table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """Aligned columns; every cell goes through :func:`printable`, since cells hold names from the buckets."""
    cells = [[printable(c) for c in row] for row in [header, *rows]]
    widths = [max(len(c) for c in column) for column in zip(*cells, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


class _TerminalProgress:
    """A one-line progress display on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, progress: RefreshProgress) -> None:
        if self.enabled:
            shards = f"{progress.shards_done}/{progress.shards_total} shards" if progress.shards_total else ""
            sys.stderr.write(f"\r{progress.stage}: {format_count(progress.objects)} objects {shards}   ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _refresh(services: ServiceContainer, filters: Filters | None, out: Any = None) -> None:
    progress = _TerminalProgress()
    try:
        info = services.inventory.refresh(filters, progress=progress)
    finally:
        progress.close()
    print(
        f"Inventory refreshed: {format_count(info.objects)} objects, {format_count(info.runs)} runs, "
        f"{format_count(info.anomalies)} anomalies ({services.config.raw_bucket}, {services.config.ml_bucket})",
        file=out or sys.stdout,
    )


def _ensure_inventory(services: ServiceContainer) -> None:
    """Scan once when no usable cache exists, so a first query answers instead of showing nothing."""
    if not services.inventory.has_data:
        if services.inventory.warning:
            print(f"warning: {services.inventory.warning}", file=sys.stderr)
        if services.read_only:
            raise RuntoolError(
                "No inventory cache yet and the services are read-only; run `runtool inventory refresh`."
            )
        _refresh(services, None, out=sys.stderr)


# -- commands --------------------------------------------------------------------------------------


def cmd_inventory_refresh(args: argparse.Namespace, services: ServiceContainer) -> int:
    filters = _filters(args)
    if services.inventory.has_data is False and services.inventory.warning:
        print(f"warning: {services.inventory.warning}", file=sys.stderr)
    _refresh(services, None if filters.is_empty() else filters)
    return 0


def cmd_inventory_info(args: argparse.Namespace, services: ServiceContainer) -> int:
    info = services.inventory.cache_info()
    if args.json:
        _print_json(info.to_dict())
        return 0
    if info.warning:
        print(f"warning: {info.warning}", file=sys.stderr)
    if info.scanned_at is None:
        if info.exists:  # unreadable, or for other buckets: the warning above says which
            print(f"The inventory cache at {info.path} cannot be used. Run `runtool inventory refresh` to build it "
                  "again.")
        else:
            print(f"No inventory cache at {info.path}. Run `runtool inventory refresh`.")
        return 0
    age = info.age_seconds or 0.0
    print(f"Cache:      {info.path} ({format_bytes(info.size_bytes)})")
    print(f"Buckets:    {info.raw_bucket} (raw), {info.ml_bucket} (ML)")
    print(f"Scanned:    {info.scanned_at:%Y-%m-%d %H:%M} UTC ({age / 60:.0f} min ago)")
    print(
        f"Objects:    {format_count(info.objects)}  Runs: {format_count(info.runs)}  "
        f"Anomalies: {format_count(info.anomalies)}"
    )
    return 0


def cmd_runs(args: argparse.Namespace, services: ServiceContainer) -> int:
    filters = _filters(args)
    settings = _settings(args, services)
    _ensure_inventory(services)
    records = services.data_state.run_records(filters, settings)
    if args.json:
        _print_json(records)
        return 0
    if not records:
        print(f"No runs under {filters.describe()}.")
        return 0
    rows = [
        [
            "/".join(str(r[level]) for level in LEVELS),
            str(r["timestamp"]),
            format_count(r["raw_bags"]),
            format_bytes(r["raw_bytes"]),
            format_count(r["ml_labels"]),
            format_count(r["ml_frames"]),
            format_pct(r["coverage_pct"]),
            r["raw_sync"],
            r["ml_sync"],
            r["issues"],
        ]
        for r in records
    ]
    print(
        _table(rows, ["laser box", "timestamp", "bags", "size", "labels", "frames", "coverage", "raw", "ml", "issues"])
    )
    return 0


def cmd_status(args: argparse.Namespace, services: ServiceContainer) -> int:
    """The sync table: each run's raw and ML state, cloud against local, with the issue texts."""
    filters = _filters(args)
    _ensure_inventory(services)
    keep = ["cid", "regionid", "fieldid", "twid", "lbid", "timestamp", "raw_bags", "local_bags", "raw_bytes",
            "local_raw_bytes", "ml_frames", "ml_labels", "local_frames", "local_labels", "raw_sync", "ml_sync",
            "issues"]
    records = [{k: r[k] for k in keep} for r in services.data_state.run_records(filters)]
    if args.json:
        _print_json(records)
        return 0
    if not records:
        print(f"No runs under {filters.describe()}.")
        return 0
    rows = [
        ["/".join(str(r[level]) for level in LEVELS), str(r["timestamp"]), SyncStatus(r["raw_sync"]).label,
         f"{r['local_bags']}/{r['raw_bags']}", SyncStatus(r["ml_sync"]).label,
         f"{r['local_labels']}/{r['ml_labels']}", r["issues"]]
        for r in records
    ]
    print(_table(rows, ["laser box", "timestamp", "raw", "bags local/cloud", "ML", "labels local/cloud", "issues"]))
    return 0


def _check_number(option: str, value: float | None, wanted: str, inside: Callable[[float], bool]) -> None:
    """Refuse NaN, infinities and values ``inside`` rejects, in a sentence naming the option (exit code 2)."""
    if value is not None and not (math.isfinite(value) and inside(value)):
        raise UsageError(f"{option} must be {wanted}, not {value:g}")


def _settings(args: argparse.Namespace, services: ServiceContainer) -> CoverageSettings:
    expected = getattr(args, "expected_samples_per_bag", None)
    threshold = getattr(args, "under_labelled_pct", None)
    _check_number("-E/--expected-samples-per-bag", expected, "a finite number above 0", lambda v: v > 0)
    _check_number("--under-labelled-pct", threshold, "a percentage from 0 to 100", lambda v: 0 <= v <= 100)
    try:
        return CoverageSettings(
            expected if expected is not None else services.config.expected_samples_per_bag,
            threshold if threshold is not None else services.config.under_labelled_pct,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def cmd_coverage(args: argparse.Namespace, services: ServiceContainer) -> int:
    filters = _filters(args)
    settings = _settings(args, services)
    _ensure_inventory(services)
    data = services.data_state
    stats = data.coverage_statistics(filters, settings)
    boxes = data.laser_box_stats(filters, settings)
    if args.json:
        days = data.aggregated_coverage(filters, settings).days
        _print_json(
            {
                "filters": filters.to_dict(),
                "settings": settings,
                "statistics": stats,
                "laser_boxes": boxes,
                "days": days,
            }
        )
        return 0
    print(
        f"Coverage of {filters.describe()} (E = {settings.expected_samples_per_bag:g} samples/bag, "
        f"under-labelled below {settings.under_labelled_pct:g} %)"
    )
    print(
        f"Runs {format_count(stats.total_runs)}, bags {format_count(stats.total_bags)}, "
        f"labels {format_count(stats.total_labels)}, frames {format_count(stats.total_frames)}"
    )
    print(
        f"Overall coverage {format_pct(stats.overall_coverage_pct)}, average per run "
        f"{format_pct(stats.average_coverage_pct)}, under-labelled runs {len(stats.under_labelled)}, "
        f"ML-only runs {stats.ml_only_runs}"
    )
    if boxes:
        rows = [
            [
                b.lb_key,
                format_count(b.runs),
                format_count(b.total_bags),
                format_count(b.total_labels),
                format_pct(b.coverage_pct),
                str(b.active_days),
            ]
            for b in boxes
        ]
        print()
        print(_table(rows, ["laser box", "runs", "bags", "labels", "coverage", "active days"]))
    if stats.under_labelled:
        print("\nWorst covered runs:")
        for point in stats.under_labelled[:10]:
            print(
                f"  {point.coordinate}  {format_pct(point.coverage_pct)}  "
                f"({point.raw_bags} bags, {point.ml_labels} labels)"
            )
    return 0


def cmd_anomalies(args: argparse.Namespace, services: ServiceContainer) -> int:
    _ensure_inventory(services)
    table = services.data_state.anomalies()
    if args.json:
        _print_json(table.to_dict(orient="records"))
        return 0
    if table.empty:
        print("No anomalies: every object fits the bucket layout.")
        return 0
    print(_table([[r.source, r.key, r.reason] for r in table.itertuples()], ["source", "key", "reason"]))
    return 0


def _coordinate(text: str) -> RunCoordinate:
    try:
        return RunCoordinate.parse(text)
    except CoordinateError as exc:
        raise UsageError(str(exc)) from exc


def _known_run(services: ServiceContainer, coord: RunCoordinate) -> RunCoordinate:
    """Refuse coordinates that name no run in the cloud inventory or on disk (exit code 2)."""
    _ensure_inventory(services)
    if not services.data_state.runs(coord.to_filters()).empty:
        return coord
    raise UsageError(f"unknown run {coord}: it is in neither bucket nor the local roots "
                     "(check the coordinate, or run `runtool inventory refresh`)")


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


class _ByteProgress:
    """A one-line byte progress display on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, progress: TransferProgress) -> None:
        if self.enabled:
            pct = 100 * progress.bytes_done / progress.bytes_total if progress.bytes_total else 100.0
            sys.stderr.write(f"\r{pct:5.1f} %  {format_bytes(progress.bytes_done)} of "
                             f"{format_bytes(progress.bytes_total)}  files {progress.files_done}/"
                             f"{progress.files_total}   ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


class _BulkByteProgress:
    """One byte progress line over all runs of a bulk transfer, whose runs report from several threads."""

    def __init__(self, bulk: BulkPlan) -> None:
        self.display = _ByteProgress()
        self.bulk = bulk
        self._latest: dict[int, TransferProgress] = {}
        self._files = self._bytes = 0
        self._lock = threading.Lock()

    def __call__(self, run: int, _runs: int, progress: TransferProgress) -> None:
        with self._lock:
            last = self._latest.get(run, TransferProgress(0, 0, 0, 0, ""))
            self._latest[run] = progress
            self._files += progress.files_done - last.files_done
            self._bytes += progress.bytes_done - last.bytes_done
            self.display(TransferProgress(self._files, self.bulk.files_to_transfer, self._bytes,
                                          self.bulk.bytes_to_transfer, progress.current))

    def close(self) -> None:
        self.display.close()


@contextmanager
def _asked_for(coord: RunCoordinate) -> Iterator[None]:
    """One run's plan that cannot be made asks for what the run does not have (a bag index past its last
    bag, a bag or kind it lacks, nothing local to upload): bad input, exit code 2."""
    try:
        yield
    except TransferError as exc:
        raise UsageError(str(exc)) from exc


@contextmanager
def _cancel_on_interrupt() -> Iterator[threading.Event]:
    """While the block runs, the first Ctrl-C sets the yielded cancel event and the second exits at once.

    After the first, files in flight stop at their next chunk and their temporary files are removed, and
    nothing new starts; the block then reports what was and was not done. The second ends the process
    without waiting (code 130): a final path is only ever written by renaming a complete, verified
    temporary file, so what is left is at most hidden temporary files, which the next run removes.
    """
    cancel = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancel  # only the main thread may install signal handlers; a caller off it cancels otherwise
        return

    def interrupted(_signum: int, _frame: FrameType | None) -> None:
        # os.write, not print: the handler may run while the main thread is inside a write to sys.stderr.
        if cancel.is_set():
            os.write(2, b"\nruntool: interrupted again: stopping now; files in flight are abandoned.\n")
            os._exit(130)
        cancel.set()
        os.write(2, b"\nruntool: cancelling: nothing new starts, files in flight stop at their next chunk "
                    b"(Ctrl-C again to stop at once).\n")

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_download(args: argparse.Namespace, services: ServiceContainer) -> int:
    if args.coord:
        coord = _known_run(services, _coordinate(args.coord))
        with _asked_for(coord):
            plan = services.transfers.plan_raw_download(coord, args.bags, args.conflict)
        return _preview_and_execute(args, services, plan)
    if args.bags:
        raise UsageError("--bags selects bags of one run: give a COORD with it")
    filters = _filters(args)
    if filters.is_empty():
        raise UsageError("give a COORD, or filters (--cid … --lbid) to download many runs")
    _ensure_inventory(services)
    runs = services.data_state.runs(filters)
    coords = services.data_state.generate_coordinates_from_filters(filters)
    with_bags = [c for c, bags in zip(coords, runs["raw_bags"], strict=True) if bags > 0]
    return _preview_and_execute_bulk(args, services, services.transfers.plan_bulk("raw_download", with_bags,
                                                                                   conflict=args.conflict))


def _preview_and_execute_bulk(args: argparse.Namespace, services: ServiceContainer, bulk: BulkPlan) -> int:
    """Per-run preview lines and totals, then :func:`_confirm_and_execute`."""
    if args.json and args.dry_run:
        _print_json(bulk.to_dict())
        return 0
    print(bulk.describe())
    for plan in bulk.plans:
        print(f"  {plan.coordinate}: {plan.describe()}")
    for coord, reason in bulk.left_out:
        print(f"  {coord}: left out — {printable(reason)}")
    if args.dry_run or not bulk.files_to_transfer:
        return 0
    return _confirm_and_execute(args, services, bulk)


def _confirmed(args: argparse.Namespace, what: str) -> bool:
    """Whether to go ahead: --yes, or the user says yes to ``what``; says so when not."""
    if args.yes or _confirm(f"{what}?"):
        sys.stdout.flush()  # the preview is out before a second Ctrl-C may end the process without flushing
        return True
    print("Not confirmed; nothing transferred (use --yes to run without asking).", file=sys.stderr)
    return False


def _confirm_and_execute(args: argparse.Namespace, services: ServiceContainer, bulk: BulkPlan) -> int:
    """Ask (unless --yes), execute the previewed plans, each run as its own unit, on the configured executor
    (``RUNTOOL_DASK_SCHEDULER``: a Dask cluster; unset: a few runs at once here); non-zero if anything failed."""
    if not _confirmed(args, bulk.describe()):
        return 1
    progress = _BulkByteProgress(bulk)
    with _cancel_on_interrupt() as cancel:
        try:
            with executor_from_config(services.config.dask_scheduler, workers=BULK_RUNS_AT_ONCE) as executor:
                if isinstance(executor, DaskExecutor):
                    print(f"Runs go to {executor!r}; its workers write the files.", file=sys.stderr)
                result = services.transfers.execute_bulk(bulk, progress=progress, cancel=cancel, executor=executor)
        finally:
            progress.close()
    return _reported(args, result, cancel)


def _confirm_and_execute_run(args: argparse.Namespace, services: ServiceContainer, plan: TransferPlan) -> int:
    """Ask (unless --yes), then execute one run's previewed plan here, the way the per-run page does
    (:meth:`TransferService.execute`: the run's lock, files in parallel, the run's state refreshed); the output
    and exit code are those of a bulk transfer of that one run."""
    if not _confirmed(args, plan.describe()):
        return 1
    progress = _ByteProgress()

    def waiting() -> None:
        print(f"Waiting for another job transferring {plan.coordinate} to finish (it holds "
              f"{services.transfers.engine.lock_path(plan)}); Ctrl-C stops waiting.", file=sys.stderr, flush=True)

    with _cancel_on_interrupt() as cancel:
        try:
            result = services.transfers.execute(plan, progress=progress, cancel=cancel, waiting=waiting)
        finally:
            progress.close()
    return _reported(args, BulkResult(BulkPlan(plan.operation, (plan,)), (result,), (), result.seconds), cancel)


def _reported(args: argparse.Namespace, result: BulkResult, cancel: threading.Event) -> int:
    """Print ``result`` (JSON or words); the exit code: 130 after a cancel, else 0 only if all went well."""
    if args.json:
        _print_json(result.to_dict())
    else:
        _print_bulk_result(result)
    if cancel.is_set():
        return 130
    return 0 if result.ok and not result.refresh_errors else 1


FAILURES_SHOWN = 20
"""Failed files listed one per line at most; the rest are counted (a full disk fails thousands of small files)."""


def _print_bulk_result(result: BulkResult) -> None:
    """Failures and refresh errors on stderr; the summary, and after a cancel what was not done, on stdout."""
    failed = [(run.plan.coordinate, outcome) for run in result.results for outcome in run.outcomes
              if outcome.status == "failed"]
    for coord, outcome in failed[:FAILURES_SHOWN]:
        print(f"  failed: {coord}: {printable(outcome.file.name)}: {printable(outcome.error)}", file=sys.stderr)
    if len(failed) > FAILURES_SHOWN:
        print(f"  … {format_count(len(failed) - FAILURES_SHOWN)} more failed (--json lists every file and its error)",
              file=sys.stderr)
    for coord, error in result.refresh_errors:
        print(f"  transferred, but the state of {coord} was not refreshed: {printable(error)}", file=sys.stderr)
    single = len(result.plan.plans) == 1 and result.results
    print(result.results[0].summary() if single else result.summary())
    if result.files_not_transferred:
        runs = f" ({len(result.not_started)} runs not started)" if len(result.plan.plans) > 1 else ""
        print(f"Cancelled: {format_count(result.count('transferred'))} files transferred and complete, "
              f"{format_count(result.files_not_transferred)} not transferred{runs}; "
              "the same command again transfers the rest.")
        if len(result.plan.plans) > 1:
            for coord in result.not_started:
                print(f"  not started: {coord}")


def cmd_ml_download(args: argparse.Namespace, services: ServiceContainer) -> int:
    coord = _known_run(services, _coordinate(args.coord))
    with _asked_for(coord):
        plan = services.transfers.plan_ml_download(coord, args.bags, args.kinds, args.conflict)
    return _preview_and_execute(args, services, plan)


def cmd_ml_upload(args: argparse.Namespace, services: ServiceContainer) -> int:
    if args.export_id:
        if args.coord:
            raise UsageError("give either COORD or --export-id, not both")
        return _preview_and_execute_bulk(args, services, services.transfers.plan_export_upload(args.export_id,
                                                                                               args.conflict))
    if not args.coord:
        raise UsageError("give a COORD or --export-id ID")
    coord = _known_run(services, _coordinate(args.coord))
    with _asked_for(coord):
        plan = services.transfers.plan_ml_upload(coord, args.bags, args.kinds, args.conflict)
    return _preview_and_execute(args, services, plan)


def cmd_raw_upload(args: argparse.Namespace, services: ServiceContainer) -> int:
    coord = _known_run(services, _coordinate(args.coord))
    with _asked_for(coord):
        plan = services.transfers.plan_raw_upload(coord, args.bags, args.conflict)
    return _preview_and_execute(args, services, plan)


def _preview_and_execute(args: argparse.Namespace, services: ServiceContainer, plan: TransferPlan) -> int:
    """Show the plan file by file, then :func:`_confirm_and_execute` exactly that plan."""
    if args.json and args.dry_run:
        _print_json(plan.to_dict())
        return 0
    print(f"Plan for {plan.coordinate} ({plan.conflict}): {plan.describe()}")
    shown = plan.files if len(plan.files) <= 50 else plan.to_transfer[:50]
    for file in shown:
        print(f"  {'→' if file.action == 'transfer' else '='} {printable(file.name)}  {format_bytes(file.size)}  "
              f"{printable(file.reason)}")
    if len(shown) < len(plan.files):  # the files to transfer come first; the skipped ones are only counted
        verb = "upload" if plan.uploads else "download"
        more = [(len(plan.to_transfer) - len(shown), f"more to {verb}"), (len(plan.skipped), "skipped")]
        print(f"  … {', '.join(f'{format_count(count)} {words}' for count, words in more if count)}")
    if args.dry_run:
        return 0
    if not plan.to_transfer:
        if not plan.uploads and not services.transfers.read_only:
            try:  # moves nothing, but removes the temporary files a killed download of these files left
                services.transfers.execute(plan)
            except TransferError as exc:
                print(f"warning: {printable(str(exc))}", file=sys.stderr)
        return 0
    return _confirm_and_execute_run(args, services, plan)


class _LabelProgress:
    """Planning's label reads on one line of stderr, only when stderr is a terminal: a first plan reads every label
    of the selection, tens of seconds at fleet scale. Redrawn at most every :attr:`INTERVAL_S`, and when done."""

    INTERVAL_S = 0.1

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self._drawn: float | None = None

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (done < total and self._drawn is not None and now - self._drawn < self.INTERVAL_S):
            return
        self._drawn = now
        sys.stderr.write(f"\rPlanning: {format_count(done)} of {format_count_of(total, 'label')} read and checked   ")
        sys.stderr.flush()

    def close(self) -> None:
        if self._drawn is not None:
            sys.stderr.write("\n")


def cmd_dataset_fetch(args: argparse.Namespace, services: ServiceContainer) -> int:
    """Preview a training dataset for a selection, then fetch exactly that plan into ML/trainings/NAME."""
    from runtool.services.datasets import DatasetError, DatasetOptions

    _check_dataset_name(args.name)
    try:
        services.datasets.dataset_root(args.name)
    except DatasetError as exc:
        raise UsageError(str(exc)) from exc
    _check_number("--min-coverage", args.min_coverage, "a percentage from 0 to 100", lambda v: 0 <= v <= 100)
    _check_number("--max-samples", args.max_samples, "at least 1", lambda v: v >= 1)
    _check_number("--val-fraction", args.val_fraction, "at least 0 and below 1", lambda v: 0 <= v < 1)
    try:
        classes = _classes(args.classes)
        options = DatasetOptions(
            since=args.since, until=args.until, min_coverage_pct=args.min_coverage,
            labelled_only=not args.all_frames, classes=classes, max_samples=args.max_samples,
            val_fraction=args.val_fraction, seed=args.seed,
        )
    except (ValueError, DatasetError) as exc:
        raise UsageError(f"bad dataset option: {exc}") from exc
    _ensure_inventory(services)
    reading = _LabelProgress()
    try:
        plan = services.datasets.plan_dataset_fetch(args.name, _filters(args), options, progress=reading)
    finally:
        reading.close()
    if args.json and args.dry_run:
        _print_json(plan.to_dict())
        return 0
    print(plan.describe())
    for key, reason in plan.rejected:
        print(f"  rejected: {printable(key)}: {printable(reason)}", file=sys.stderr)
    if args.dry_run or not plan.samples:
        return 0
    if not args.yes and not _confirm(f"Fetch {plan.describe()}?"):
        print("Not confirmed; nothing fetched (use --yes to run without asking).", file=sys.stderr)
        return 1
    sys.stdout.flush()  # the preview is out before a second Ctrl-C may end the process without flushing
    progress = _ByteProgress()
    with _cancel_on_interrupt() as cancel:
        try:
            result = services.datasets.execute(plan, progress=progress, cancel=cancel, conflict=args.conflict)
        finally:
            progress.close()
    if args.json:
        _print_json(result.to_dict())
    else:
        for path, error in result.failed:
            print(f"  failed: {printable(path)}: {printable(error)}", file=sys.stderr)
        print(result.summary())
        if result.cancelled:
            print(f"Cancelled: {format_count(result.fetched)} files fetched and complete, the others not; the "
                  "same command again fetches the rest and then writes the manifest.")
    if result.cancelled:
        return 130
    return 0 if result.ok else 1


_NAME_MAX = 255
"""Bytes in one folder name on the file systems runtool writes to (ext4, xfs, btrfs, tmpfs)."""


def _check_dataset_name(name: str) -> None:
    """A dataset name becomes a folder name: refuse one no file system takes, or that would garble a terminal."""
    if not name.isprintable():
        raise UsageError(f"bad dataset name '{printable(name)}': it has control characters")
    if len(os.fsencode(name)) > _NAME_MAX:
        raise UsageError(f"dataset name too long: {len(os.fsencode(name))} bytes, a folder name may have "
                         f"at most {_NAME_MAX}")


def _classes(text: str | None) -> tuple[int, ...] | None:
    """``--classes 0,2`` as class ids; unset is None (every class); an empty or malformed list is bad input."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isascii() and part.isdigit() for part in parts):
        raise UsageError(f"--classes takes class ids ≥ 0 separated by commas (e.g. 0,2), not '{printable(text)}'")
    return tuple(int(part) for part in parts)


def cmd_extract(args: argparse.Namespace, services: ServiceContainer) -> int:
    coord = _known_run(services, _coordinate(args.coord))

    def progress(event: Any) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\r{event.stage}: bag {event.bags_done}/{event.bags_total} "
                             f"{event.bag or ''} {format_count(event.messages)} messages   ")

    result = services.extraction.extract(coord, backend=args.backend, progress=progress)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if args.json:
        _print_json(result.to_dict())
    else:
        for bag in result.bags:
            if not bag.ok:
                print(f"  failed: {printable(bag.name)}: {printable(bag.error)}", file=sys.stderr)
        print(f"Extracted {len(result.bags_ok)} of {len(result.bags)} bags of {coord} ({args.backend}) in "
              f"{result.seconds:.1f} s: {format_count(result.frames)} frames, "
              f"{format_count(result.detections)} detection and {format_count(result.tracks)} tracking messages "
              f"→ {result.output_dir}")
    return 0 if not result.bags_failed else 1


def cmd_analyze(args: argparse.Namespace, services: ServiceContainer) -> int:
    if not args.coord:
        return _analyze_selection(args, services)
    if args.since or args.until:
        raise UsageError("--since and --until select runs of a selection: give filters instead of a COORD")
    coord = _known_run(services, _coordinate(args.coord))
    analysis = services.analytics.analyze_run(coord, force=args.force)
    if args.json:
        _print_json(analysis.to_dict())
        return 0 if not analysis.failed_bags else 1
    print(f"Analysis of {coord}{' (cached)' if analysis.from_cache else ''}")
    width = max(len(key) for key in analysis.kpis)
    for key, value in analysis.kpis.items():
        shown = "–" if value is None else (f"{value:,.3f}" if isinstance(value, float) else f"{value:,}")
        print(f"  {key.ljust(width)}  {shown}")
    for bag in analysis.failed_bags:
        print(f"  failed bag: {printable(bag.name)}: {printable(bag.error)}", file=sys.stderr)
    return 0 if not analysis.failed_bags else 1


def _analyze_selection(args: argparse.Namespace, services: ServiceContainer) -> int:
    """Bring every run of the selection up to date (download, extract, analyse as needed) on the executor."""
    filters = _filters(args)
    if filters.is_empty() and not (args.since or args.until):
        raise UsageError("give a COORD, or filters (--cid … --lbid, --since, --until) to analyse many runs")
    _check_dates(args)
    _ensure_inventory(services)
    plan = services.pipeline.plan(filters, args.since, args.until, force=args.force)
    if args.json and args.dry_run:
        _print_json(plan.to_dict())
        return 0
    preview = sys.stderr if args.json else sys.stdout  # with --json, stdout carries the result alone
    print(plan.describe(), file=preview)
    for coord, action in plan.runs:
        print(f"  {coord}: {action.value}", file=preview)
    for coord, reason in plan.left_out:
        print(f"  {coord}: left out — {printable(reason)}", file=preview)
    if args.dry_run:
        return 0
    if not plan.runs:  # every run up to date (or left out): nothing to run, and the result says so
        if args.json:
            _print_json(PipelineResult((), 0.0, plan.left_out).to_dict())
        return 0
    if not args.yes and not _confirm(f"{plan.describe()}?"):
        print("Not confirmed; nothing done (use --yes to run without asking).", file=sys.stderr)
        return 1
    sys.stdout.flush()

    def progress(done: int, total: int, outcome: Any) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\r{done}/{total} runs: {outcome.coordinate} {outcome.status}"[:150].ljust(150))

    workers = min(PIPELINE_RUNS_AT_ONCE, len(plan.runs))
    with _cancel_on_interrupt() as cancel, executor_from_config(services.config.dask_scheduler,
                                                                workers=workers) as executor:
        if isinstance(executor, DaskExecutor):
            print(f"Runs go to {executor!r}; its workers download, extract and analyse.", file=sys.stderr)
        result = services.pipeline.update_many(plan, progress=progress, cancel=cancel, executor=executor,
                                               force=args.force)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if args.json:
        _print_json(result.to_dict())
    else:
        for outcome in result.outcomes:
            if outcome.status == "failed":
                step = f" at the {outcome.step} step" if outcome.step else ""
                print(f"  failed{step}: {outcome.coordinate}: {printable(outcome.error)}", file=sys.stderr)
            elif outcome.status == "cancelled" and outcome.step is not None:
                print(f"  cancelled at the {outcome.step} step: {outcome.coordinate}: {printable(outcome.error)}")
            elif outcome.status == "cancelled":
                print(f"  not started: {outcome.coordinate}")
            elif outcome.update is not None:
                steps = ", ".join(outcome.update.steps) or "already up to date"
                print(f"  {outcome.coordinate}: {steps}")
        print(result.summary())
    if cancel.is_set():
        return 130
    return 0 if result.ok else 1


def _check_dates(args: argparse.Namespace) -> None:
    if args.since and args.until and args.since > args.until:
        raise UsageError(f"--since {args.since} is after --until {args.until}")


def cmd_kpis(args: argparse.Namespace, services: ServiceContainer) -> int:
    """The KPI table of the analysed runs of a selection, from the analysis caches (never computed here)."""
    _check_dates(args)
    _ensure_inventory(services)
    filters = _filters(args)
    table = services.kpis.table(filters, args.since, args.until)
    if args.json:
        _print_json(table.records())
    elif table.rows.empty:
        print("No analysed runs in the selection.")
    else:
        shown = [name for name in _KPI_COLUMNS if name in table.kpi_names]
        rows = [
            [record["lbid"], record["timestamp"], *(_kpi_cell(name, record[name]) for name in shown),
             "; ".join(record["regressions"])]
            for record in table.records()
        ]
        print(_table(rows, ["LB", "run", *(_KPI_HEADERS[name] for name in shown), "regressions"]))
    if table.not_analysed:
        options = [f"--{level} {printable(shlex.quote(value))}" for level, value in filters.to_dict().items()]
        options += [f"--{name} {getattr(args, name)}" for name in ("since", "until") if getattr(args, name)]
        if not options and table.first_not_analysed is not None:
            # `analyze` refuses a selection of the whole fleet without a date: from the earliest run not analysed
            # on is the same runs left to analyse, and a selection it takes.
            options = [f"--since {table.first_not_analysed.isoformat()}"]
        command = f"runtool analyze {' '.join(options)} --yes"
        print(f"{format_count_of(table.not_analysed, 'run')} not analysed yet; run `{command}`",
              file=sys.stderr if args.json else None)
    return 0


_KPI_HEADERS = {
    "detections_median_fps": "det fps", "detections_p5_fps": "det p5", "detections_share_below_target": "det <tgt",
    "detections_dropped_frames": "det drop", "tracking_p5_fps": "trk p5", "tracking_dropped_frames": "trk drop",
    "detection_latency_p95_ms": "lat p95", "detection_latency_p99_ms": "lat p99",
    "mean_detections_per_frame": "det/frame", "tracks_per_minute": "trk/min", "failed_bags": "bad bags",
}
"""The KPIs of the human table, with short headers; ``--json`` has them all."""
_KPI_COLUMNS = tuple(_KPI_HEADERS)


def _kpi_cell(name: str, value: float | int | None) -> str:
    if value is None:
        return "–"
    if name.endswith("share_below_target"):
        return f"{100 * value:.1f} %"
    if isinstance(value, int):
        return format_count(value)
    return f"{value:,.1f}"


def cmd_report(args: argparse.Namespace, services: ServiceContainer) -> int:
    """One report for COORD, or one per run matching the filters."""
    from runtool.services.reports import ReportFailure

    out_dir = Path(args.out) if args.out else None

    def progress(event: Any) -> None:
        if sys.stderr.isatty():
            line = f"[{event.run_index}/{event.runs_total}] {event.stage}: {event.message}"
            sys.stderr.write("\r" + line[:150].ljust(150))

    if args.coord:
        coord = _known_run(services, _coordinate(args.coord))
        result = services.reports.render(coord, out_dir, progress)
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        print(f"Report of {coord}: {result.html} (notebook {result.ipynb}) in {result.seconds:.1f} s")
        return 0
    _ensure_inventory(services)
    outcomes = services.reports.render_many(_filters(args), out_dir, progress)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    if not outcomes:
        print("No runs match the selection.")
        return 0
    for outcome in outcomes:
        if isinstance(outcome, ReportFailure):
            print(f"  failed: {outcome.coordinate}: {printable(outcome.error)}", file=sys.stderr)
        else:
            print(f"  {outcome.coordinate}: {outcome.html}")
    failed = sum(isinstance(o, ReportFailure) for o in outcomes)
    print(f"{len(outcomes) - failed} reports written, {failed} failed")
    return 1 if failed else 0


def cmd_emulator(args: argparse.Namespace, _: ServiceContainer | None) -> int:
    from runtool.demo.emulator import Emulator

    _check_number("--port", args.port, "a port from 0 (any free one) to 65535", lambda v: 0 <= v <= 65535)
    emulator = Emulator(port=args.port, data_dir=None if args.memory else Path(args.data))
    emulator.start()
    backend = "memory" if args.memory else f"filesystem at {args.data}"
    print(f"fake-gcs-server on {emulator.url} ({backend}); export STORAGE_EMULATOR_HOST={emulator.url}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            if emulator.process is None or emulator.process.poll() is not None:
                print("fake-gcs-server exited", file=sys.stderr)
                return 1
    finally:
        emulator.stop()
    return 0


def cmd_demo_seed(args: argparse.Namespace, services: ServiceContainer) -> int:
    from runtool.demo.fleet import plan_fleet, seed_fleet

    if services.read_only:  # seeding writes both buckets and the data folder
        raise ReadOnlyError("Seeding the demo fleet is not allowed in read-only mode.")
    plan = plan_fleet(args.preset, args.seed)

    def progress(stage: str, done: int, total: int) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\r{stage}: {done}/{total}   ")

    report = seed_fleet(services.config, plan, services.make_client(), progress=progress)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    print(
        f"Seeded {report.runs} runs: {report.raw_objects} raw objects, {report.ml_objects} ML objects, "
        f"{report.anomaly_objects} malformed keys, {report.local_runs} local runs, "
        f"{format_bytes(report.bytes_uploaded)} in {report.seconds:.1f} s"
    )
    return 0


def _serve_options(args: argparse.Namespace, config: RuntoolConfig) -> ServeOptions:
    return ServeOptions.from_config(
        config,
        port=args.port,
        ip=args.ip,
        read_only=args.read_only or None,
        base_url=args.base_url,
        cull_idle_s=args.cull_idle,
        max_kernels=args.max_kernels,
        pool_size=args.pool_size,
        preheat=False if args.no_preheat else None,
        allowed_hosts=tuple(args.allowed_host) if args.allowed_host else None,
        token_file=args.token_file,
    )


def cmd_serve(args: argparse.Namespace, services: ServiceContainer) -> int:
    return serve(_serve_options(args, services.config), _page_environment(args, services.config))


def _page_environment(args: argparse.Namespace, config: RuntoolConfig) -> dict[str, str]:
    """What the page kernels need to load the configuration this command loaded.

    Voila starts each kernel in the notebooks' folder, not here: the config file (``--config``,
    ``$RUNTOOL_CONFIG`` or ``./runtool.toml``) and the data folder (relative to this working directory when it
    comes from the defaults or the environment) go as absolute paths.
    """
    named = args.config or os.environ.get("RUNTOOL_CONFIG") or "runtool.toml"
    env = {"RUNTOOL_DATA_DIR": str(config.data_dir.resolve())}  # the value this command computed, whatever its source
    if Path(named).is_file():
        env["RUNTOOL_CONFIG"] = str(Path(named).resolve())
    return env


def cmd_demo_up(args: argparse.Namespace, _: ServiceContainer | None) -> int:
    from runtool.demo.emulator import Emulator
    from runtool.demo.fleet import is_seeded, plan_fleet, seed_fleet

    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    emulator = Emulator(port=args.emulator_port, data_dir=root / "gcs", log=root / "emulator.log")
    config_path = root / "runtool.toml"
    config_path.write_text(
        "# Written by `runtool demo up`: the local demo fleet.\n"
        f'[buckets]\nraw = "runtool-demo-raw"\nml = "runtool-demo-ml"\nemulator_host = "{emulator.url}"\n\n'
        f'[paths]\ndata_dir = "data"\n',
        encoding="utf-8",
    )
    config = load_config(config_path, environ={})
    options = _serve_options(args, config)
    emulator.start()
    try:
        services = ServiceContainer(config, read_only=False)
        client = services.make_client()
        if is_seeded(client, config):
            print(f"Demo fleet already seeded in {root / 'gcs'}")
        else:
            print(f"Seeding the demo fleet ({args.preset}) into {root / 'gcs'} …", flush=True)
            report = seed_fleet(config, plan_fleet(args.preset, args.seed), client)
            print(f"Seeded {report.runs} runs in {report.seconds:.1f} s")
        _refresh(services, None)
        print(f"Use the CLI on the demo fleet with: export RUNTOOL_CONFIG={config_path}")
        return serve(options, {"RUNTOOL_CONFIG": str(config_path)})
    finally:
        emulator.stop()


# -- parser ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runtool", description=__doc__)
    parser.add_argument("--config", help="config file (default: $RUNTOOL_CONFIG or ./runtool.toml)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[..., int], help: str, parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = command("emulator", cmd_emulator, "run a local GCS emulator (fake-gcs-server) until interrupted")
    p.add_argument("--port", type=int, default=4443)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--data", default="data/gcs", help="keep objects in this folder (default)")
    where.add_argument("--memory", action="store_true", help="keep objects in memory only")
    p.set_defaults(needs_services=False)

    demo = sub.add_parser("demo", help="the synthetic demo fleet").add_subparsers(dest="demo", required=True)
    p = command("seed", cmd_demo_seed, "create the buckets and fill them with a demo fleet", demo)
    p.add_argument("--preset", choices=["small", "medium", "large"], default="small")
    p.add_argument("--seed", type=int, default=7)
    p = command("up", cmd_demo_up, "start the emulator, seed once, refresh and serve the app", demo)
    p.add_argument("--dir", default=".demo", help="where the demo keeps its buckets, data and config")
    p.add_argument("--preset", choices=["small", "medium", "large"], default="small")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--emulator-port", type=int, default=4443)
    _add_serve_options(p)
    p.set_defaults(needs_services=False)

    inventory = sub.add_parser("inventory", help="the cloud inventory cache").add_subparsers(
        dest="inventory", required=True
    )
    p = command("refresh", cmd_inventory_refresh, "scan the buckets (or the selected part) into the cache", inventory)
    _add_filters(p)
    p = command("info", cmd_inventory_info, "show the cache's age and contents", inventory)
    p.add_argument("--json", action="store_true")

    p = command("runs", cmd_runs, "list runs with bags, samples, coverage and sync status")
    _add_filters(p)
    _add_coverage_options(p)
    p.add_argument("--json", action="store_true")

    p = command("status", cmd_status, "the sync table: raw and ML state of each run, cloud against local")
    _add_filters(p)
    p.add_argument("--json", action="store_true")

    p = command("coverage", cmd_coverage, "labelling coverage of a selection, per laser box and day")
    _add_filters(p)
    _add_coverage_options(p)
    p.add_argument("--json", action="store_true")

    p = command("anomalies", cmd_anomalies, "objects whose keys do not fit the bucket layout")
    p.add_argument("--json", action="store_true")

    p = command("download", cmd_download, "download raw bags of a run, or of every run matching filters")
    p.add_argument("coord", metavar="COORD", nargs="?", help="cid/regionid/fieldid/twid/lbid/timestamp")
    p.add_argument("--bags", nargs="+", metavar="BAG", help="bag names or indices (default: all; one run only)")
    _add_filters(p)
    _add_transfer_options(p)

    ml = sub.add_parser("ml", help="ML samples (frames and labels)").add_subparsers(dest="ml", required=True)
    p = command("download", cmd_ml_download, "download a run's ML samples (preview, confirm, verify, resume)", ml)
    p.add_argument("coord", metavar="COORD", help="cid/regionid/fieldid/twid/lbid/timestamp")
    p.add_argument("--bags", nargs="+", metavar="BAG", help="bag folders (default: all)")
    p.add_argument("--kinds", nargs="+", choices=["frames", "labels"], default=["frames", "labels"])
    _add_transfer_options(p)

    p = command("upload", cmd_ml_upload, "upload a run's local ML samples, or a labelling export by its id", ml)
    p.add_argument("coord", metavar="COORD", nargs="?", help="cid/regionid/fieldid/twid/lbid/timestamp")
    p.add_argument("--export-id", metavar="ID", help="every run of this export in ML/raw/.export_tracking.json")
    p.add_argument("--bags", nargs="+", metavar="BAG", help="bag folders (default: all)")
    p.add_argument("--kinds", nargs="+", choices=["frames", "labels"], default=["frames", "labels"])
    _add_transfer_options(p)

    raw = sub.add_parser("raw", help="raw bags").add_subparsers(dest="raw", required=True)
    p = command("upload", cmd_raw_upload, "upload a run's local bags (generation preconditions, CRC32C)", raw)
    p.add_argument("coord", metavar="COORD", help="cid/regionid/fieldid/twid/lbid/timestamp")
    p.add_argument("--bags", nargs="+", metavar="BAG", help="bag names or indices (default: all)")
    _add_transfer_options(p)

    dataset = sub.add_parser("dataset", help="training datasets").add_subparsers(dest="dataset", required=True)
    p = command("fetch", cmd_dataset_fetch, "fetch labelled samples of a selection into ML/trainings/NAME (YOLO)",
                dataset)
    p.add_argument("name", metavar="NAME")
    _add_filters(p)
    p.add_argument("--since", type=_date, metavar="YYYY-MM-DD", help="runs starting on or after this UTC day")
    p.add_argument("--until", type=_date, metavar="YYYY-MM-DD", help="runs starting on or before this UTC day")
    p.add_argument("--min-coverage", type=float, metavar="PCT", help="leave out runs below this coverage")
    p.add_argument("--all-frames", action="store_true", help="also frames without labels (empty label files)")
    p.add_argument("--classes", metavar="0,2", help="only samples with a box of these classes")
    p.add_argument("--max-samples", type=int, metavar="N")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of runs in the validation split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--conflict", choices=CONFLICT_MODES, default="verify",
                   help=f"files already there (default verify): {conflict_help(by_name=True)}")
    p.add_argument("--dry-run", action="store_true", help="show the plan only")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask before fetching")
    p.add_argument("--json", action="store_true")

    p = command("extract", cmd_extract, "extract a downloaded run's bags into CSV/Parquet tables")
    p.add_argument("coord", metavar="COORD", help="cid/regionid/fieldid/twid/lbid/timestamp")
    p.add_argument("--backend", choices=["local", "docker"], default="local")
    p.add_argument("--json", action="store_true")

    p = command("analyze", cmd_analyze, "perception metrics and KPIs of an extracted run (cached); with filters "
                "instead of COORD, bring every run of the selection up to date (download, extract, analyse)")
    p.add_argument("coord", metavar="COORD", nargs="?", help="cid/regionid/fieldid/twid/lbid/timestamp")
    _add_filters(p)
    _add_date_range(p)
    p.add_argument("--force", action="store_true", help="recompute even when the cached analysis is current")
    p.add_argument("--dry-run", action="store_true", help="selection: show the plan only")
    p.add_argument("--yes", "-y", action="store_true", help="selection: do not ask before starting")
    p.add_argument("--json", action="store_true")

    p = command("kpis", cmd_kpis, "KPI table of the analysed runs of a selection, regressions flagged per laser box")
    _add_filters(p)
    _add_date_range(p)
    p.add_argument("--json", action="store_true", help="the rows as a JSON array (KPI names of `analyze --json`)")

    p = command("report", cmd_report, "render a run's report (HTML, offline-readable) — or one per matching run")
    p.add_argument("coord", metavar="COORD", nargs="?", help="cid/regionid/fieldid/twid/lbid/timestamp")
    _add_filters(p)
    p.add_argument("--out", metavar="DIR", help="where to write (default: the run's processed folder/report)")

    p = command("serve", cmd_serve, "serve the pages with Voila")
    _add_serve_options(p)
    return parser


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from exc


def _add_date_range(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=_date, metavar="YYYY-MM-DD", help="runs starting on or after this UTC day")
    p.add_argument("--until", type=_date, metavar="YYYY-MM-DD", help="runs starting on or before this UTC day")


def _add_transfer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conflict", choices=CONFLICT_MODES, default="skip",
                   help=f"files already at the destination (default skip): {conflict_help(by_name=True)}")
    p.add_argument("--dry-run", action="store_true", help="show the plan only")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask before transferring")
    p.add_argument("--json", action="store_true")


def _add_coverage_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--expected-samples-per-bag", "-E", type=float, metavar="E")
    p.add_argument("--under-labelled-pct", type=float, metavar="PCT")


def _add_serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8866)
    p.add_argument("--ip", default="127.0.0.1", help="address to listen on; any other than loopback needs a token")
    p.add_argument("--read-only", action="store_true", help="viewers only: no transfers, uploads or refreshes")
    p.add_argument("--base-url", default="/", metavar="PATH", help="URL prefix behind a reverse proxy, e.g. /runtool/")
    p.add_argument("--allowed-host", action="append", metavar="NAME",
                   help="a host name viewers use to reach this server (repeatable; localhost always works)")
    p.add_argument("--token-file", type=Path, metavar="PATH",
                   help="keep the token in this file (made, owner-only, if missing), so links outlive a restart")
    p.add_argument("--max-kernels", type=int, metavar="N",
                   help="most pages open at once; past it a viewer gets 'server busy' (default: 4 per core)")
    p.add_argument("--cull-idle", type=float, metavar="SECONDS",
                   help="stop a page's kernel this long after its viewer left without a word (default 300)")
    p.add_argument("--pool-size", type=int, metavar="N", help="preheated kernels kept ready per page (default 1)")
    p.add_argument("--no-preheat", action="store_true", help="start each page's kernel only when it is opened")


PIPE_CLOSED = 141
"""What a shell reports for a command that SIGPIPE ended, as for ``ls | head``."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure ends as a sentence on stderr and an exit code, never a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    services = None
    try:
        if getattr(args, "needs_services", True):
            config = load_config(Path(args.config) if args.config else None)
            services = ServiceContainer(config, read_only=getattr(args, "read_only", None) or None)
        code: int = args.func(args, services)
        # A reader that left early (`runtool runs | head`) shows up here at the latest, while it can be handled.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        drop_stdout()
        return PIPE_CLOSED
    except (UsageError, CoordinateError, ConfigError) as exc:
        print(f"runtool: error: {printable(exc)}", file=sys.stderr)
        return 2
    except RuntoolError as exc:
        print(f"runtool: {printable(exc)}", file=sys.stderr)
        for line in (exc.details or "").splitlines():
            print(f"  {printable(line)}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full or read-only disk, a name too long for the file system, ...
        where = ""
        if exc.filename is None and services is not None:
            # A failed write() names no file; the data folder at least says which disk to look at.
            where = f" The data folder is {printable(services.config.data_dir)}."
        print(f"runtool: {format_os_error(exc)}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("runtool: interrupted", file=sys.stderr)
        return 130


def drop_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's flush at exit does not fail on the closed pipe again.

    See "Note on SIGPIPE" in the Python documentation of the signal module.
    """
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # a replaced stdout (tests, notebooks) has no descriptor to swap
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
