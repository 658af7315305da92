"""Transfers between the buckets and the local roots: plan → preview → execute the previewed plan.

A plan lists every file with its source, target, size, checksum, generation, action and reason; what happens to a
file already at its destination is decided by :mod:`runtool.services.conflicts`, as for dataset fetches. Executing
it downloads each file (exactly the planned generation) to a temporary name beside its target, verifies size
and CRC32C (or MD5) while the bytes stream, syncs the file's data to disk and only then renames it into
place: a file at its final path is always complete, also after a crash, and a failed or cancelled transfer
never deletes a good existing file. Re-running a plan's operation resumes:
files already complete are skipped.

One run's plan executes under a cross-process lock on the run (see :meth:`TransferService.execute`), so two
jobs given the same run (two processes, two pages, a rescheduled Dask task) take turns and never write the
same file at once. Many runs execute through the executor of :mod:`runtool.services.executor`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from runtool.config import RuntoolConfig
from runtool.errors import ReadOnlyError, RuntoolError
from runtool.files import LockWaitStopped, exclusive_lock
from runtool.formatting import format_bytes, format_count, format_count_of, format_os_error
from runtool.models import CoordinateError, Filters, RunCoordinate
from runtool.services.conflicts import CONFLICT_MODES, ConflictMode, decide, regular_file_size
from runtool.services.executor import Executor, LocalExecutor, RunOutcome, RunTask, executor_from_config
from runtool.services.inventory import CloudInventoryService
from runtool.services.local_state import LocalStateService
from runtool.storage import (
    MLFileEntry,
    RawBagEntry,
    cloud_to_local_name,
    local_ml_dir,
    local_raw_dir,
    local_to_cloud_name,
    ml_file_key,
    ml_prefix,
    parse_ml_key,
    parse_raw_key,
    raw_bag_key,
    storage_errors,
)
from runtool.storage.checksums import ChecksumMismatch, IntegrityChecker, checkers_for, file_crc32c
from runtool.storage.gcs import (
    ObjectChangedError,
    ObjectNotFoundError,
    download_sliced,
    retry_policy,
    stream_object,
)
from runtool.storage.layout import FRAME_SUFFIXES, LABEL_SUFFIX

if TYPE_CHECKING:
    # google-cloud-storage loads with the first client (storage.gcs): the pages import this module for its
    # plan and progress types and would otherwise pay for the client library in every kernel.
    from google.cloud import storage

__all__ = [
    "CONFLICT_MODES",
    "BulkPlan",
    "BulkResult",
    "ConflictMode",
    "FileOutcome",
    "PlannedFile",
    "TransferError",
    "TransferPlan",
    "TransferProgress",
    "TransferResult",
    "TransferService",
    "execute_run_plan",
]

PART_MARKER = ".part-"
BULK_RUNS_AT_ONCE = 4
"""Runs a bulk transfer executes at once on the default thread executor; they share the service's file workers."""
ALREADY_DOWNLOADED = "already downloaded by another job"
ALREADY_UPLOADED = "already uploaded by another job (the cloud object has the local CRC32C)"
REFRESH_HINT = "run `runtool inventory refresh`"


class TransferError(RuntoolError):
    """A transfer could not be planned (the files themselves fail one by one, in the result)."""


@dataclass(frozen=True)
class PlannedFile:
    """One file of a plan: what moves where, and why (or why not)."""

    key: str
    """The object key (the source of a download, the destination of an upload)."""
    path: Path
    """The local file (the destination of a download, the source of an upload)."""
    size: int
    crc32c: str
    md5: str | None
    generation: int
    action: Literal["transfer", "skip"]
    reason: str
    replaces: bool = False
    """Whether the transfer replaces a file already at the destination (the reason says why: it differs, or
    ``overwrite`` asked for it); see :mod:`runtool.services.conflicts`."""

    @property
    def name(self) -> str:
        return self.path.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "path": str(self.path),
            "size": self.size,
            "crc32c": self.crc32c,
            "md5": self.md5,
            "generation": self.generation,
            "action": self.action,
            "reason": self.reason,
            "replaces": self.replaces,
        }


@dataclass(frozen=True)
class TransferPlan:
    """A previewable, executable list of files for one run."""

    operation: Literal["raw_download", "ml_download", "raw_upload", "ml_upload"]
    coordinate: RunCoordinate
    bucket: str
    conflict: ConflictMode
    files: tuple[PlannedFile, ...]
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def uploads(self) -> bool:
        return self.operation.endswith("_upload")

    @property
    def to_transfer(self) -> tuple[PlannedFile, ...]:
        return tuple(f for f in self.files if f.action == "transfer")

    @property
    def skipped(self) -> tuple[PlannedFile, ...]:
        return tuple(f for f in self.files if f.action == "skip")

    @property
    def replaced(self) -> tuple[PlannedFile, ...]:
        """The files to transfer that replace one already at their destination (each reason says why)."""
        return tuple(f for f in self.to_transfer if f.replaces)

    @property
    def bytes_to_transfer(self) -> int:
        return sum(f.size for f in self.to_transfer)

    def describe(self) -> str:
        """What Execute will do, e.g. ``Download 14 bags, 6.8 GiB (1 replaced, 2 skipped)``."""
        todo = self.to_transfer
        noun = "bag" if self.operation.startswith("raw") else "file"
        verb = "Upload" if self.uploads else "Download"
        if not todo:
            return f"Nothing to {verb.lower()}: all {format_count(len(self.files))} {noun}s are present"
        text = f"{verb} {format_count(len(todo))} {noun}{'' if len(todo) == 1 else 's'}, "
        text += format_bytes(self.bytes_to_transfer)
        notes = [f"{format_count(len(files))} {word}" for files, word in ((self.replaced, "replaced"),
                                                                          (self.skipped, "skipped")) if files]
        return text + (f" ({', '.join(notes)})" if notes else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "coordinate": self.coordinate.to_path_str(),
            "bucket": self.bucket,
            "conflict": self.conflict,
            "created_at": self.created_at.isoformat(),
            "files_to_transfer": len(self.to_transfer),
            "bytes_to_transfer": self.bytes_to_transfer,
            "files_skipped": len(self.skipped),
            "files_replaced": len(self.replaced),
            "files": [f.to_dict() for f in self.files],
        }


@dataclass(frozen=True)
class TransferProgress:
    """Reported as bytes arrive (from worker threads)."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    current: str


@dataclass(frozen=True)
class FileOutcome:
    file: PlannedFile
    status: Literal["transferred", "skipped", "failed", "cancelled"]
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    reason: str | None = None
    """Why a file was skipped."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file.name,
            "path": str(self.file.path),
            "status": self.status,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class TransferResult:
    plan: TransferPlan
    outcomes: tuple[FileOutcome, ...]
    seconds: float
    cancelled: bool
    refresh_error: str | None = None
    """Why the run's state could not be refreshed after the transfer (the files themselves are as reported)."""

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def bytes(self) -> int:
        return sum(o.bytes for o in self.outcomes)

    @property
    def ok(self) -> bool:
        return not self.cancelled and self.count("failed") == 0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line, e.g. ``12 files, 1.3 GiB in 8.2 s — 2 skipped, 0 failed``."""
        text = (
            f"{format_count(self.count('transferred'))} files, {format_bytes(self.bytes)} in "
            f"{self.seconds:.1f} s — {format_count(self.count('skipped'))} skipped, "
            f"{format_count(self.count('failed'))} failed"
        )
        if self.cancelled:
            text += f", cancelled ({format_count(self.count('cancelled'))} not transferred)"
        return text + (f"; not refreshed afterwards: {self.refresh_error}" if self.refresh_error else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "seconds": round(self.seconds, 3),
            "bytes": self.bytes,
            "mb_per_s": round(self.mb_per_s, 2),
            "cancelled": self.cancelled,
            "transferred": self.count("transferred"),
            "skipped": self.count("skipped"),
            "failed": self.count("failed"),
            "cancelled_files": self.count("cancelled"),
            "refresh_error": self.refresh_error,
            "files": [o.to_dict() for o in self.outcomes],
        }


@dataclass(frozen=True)
class BulkPlan:
    """One operation over many runs: a plan per run, plus the runs left out and why."""

    operation: str
    plans: tuple[TransferPlan, ...]
    left_out: tuple[tuple[RunCoordinate, str], ...] = ()

    @property
    def files_to_transfer(self) -> int:
        return sum(len(plan.to_transfer) for plan in self.plans)

    @property
    def bytes_to_transfer(self) -> int:
        return sum(plan.bytes_to_transfer for plan in self.plans)

    @property
    def files_replaced(self) -> int:
        """Files to transfer that replace one already at their destination (see :attr:`TransferPlan.replaced`)."""
        return sum(len(plan.replaced) for plan in self.plans)

    def describe(self) -> str:
        """e.g. ``Download 123 files, 4.5 GiB over 7 runs (3 replaced, 2 runs left out)``."""
        verb = "Upload" if self.operation.endswith("_upload") else "Download"
        text = (
            f"{verb} {format_count_of(self.files_to_transfer, 'file')}, {format_bytes(self.bytes_to_transfer)} over "
            f"{format_count_of(sum(1 for p in self.plans if p.to_transfer), 'run')}"
        )
        notes = [f"{format_count(self.files_replaced)} replaced"] if self.files_replaced else []
        notes += [f"{format_count_of(len(self.left_out), 'run')} left out"] if self.left_out else []
        return text + (f" ({', '.join(notes)})" if notes else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "files_to_transfer": self.files_to_transfer,
            "bytes_to_transfer": self.bytes_to_transfer,
            "files_replaced": self.files_replaced,
            "plans": [p.to_dict() for p in self.plans],
            "left_out": [{"coordinate": str(c), "reason": r} for c, r in self.left_out],
        }


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


class _Cancelled(Exception):
    """Raised inside a download's write to stop it."""


class _VerifyingWriter:
    """The sink of one download: writes, checks and reports every chunk, and stops at a cancel."""

    def __init__(
        self,
        out: BinaryIO,
        checkers: Sequence[IntegrityChecker],
        on_bytes: Callable[[int], None],
        cancel: threading.Event,
    ) -> None:
        self.out, self.checkers, self.on_bytes, self.cancel = out, checkers, on_bytes, cancel

    def __call__(self, chunk: bytes) -> None:
        if self.cancel.is_set():
            raise _Cancelled
        self.out.write(chunk)
        for checker in self.checkers:
            checker.update(chunk)
        self.on_bytes(len(chunk))

    def count(self, written: int) -> None:
        """Report bytes written elsewhere (a sliced download's slices), or stop them at a cancel."""
        if self.cancel.is_set():
            raise _Cancelled
        if written:
            self.on_bytes(written)


@dataclass(frozen=True)
class _Fetched:
    """A download whose bytes are all in its temporary file, verified, waiting to be synced and renamed."""

    file: PlannedFile
    tmp: Path
    out: BinaryIO
    bytes: int
    started: float


class TransferService:
    """Plans and executes downloads of raw bags (and, in later slices, the other operations)."""

    def __init__(
        self,
        config: RuntoolConfig,
        client_factory: Callable[[], storage.Client],
        inventory: CloudInventoryService,
        local: LocalStateService,
        read_only: bool = False,
        workers: int = 8,
    ) -> None:
        self.config = config
        self._client_factory = client_factory
        self._client: storage.Client | None = None
        self.inventory = inventory
        self.local = local
        self.read_only = read_only
        self.workers = workers

    @property
    def client(self) -> storage.Client:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    # -- planning ------------------------------------------------------------------------------

    def plan_raw_download(
        self, coord: RunCoordinate, bags: Sequence[str] | None = None, conflict: ConflictMode = "skip"
    ) -> TransferPlan:
        """List the run's bags in the raw bucket now (not from the cache) and decide each file.

        ``bags`` selects bags by cloud name (``_…_0.bag``), local name (``rosbag_…_0.bag``) or index.
        """
        _check_conflict(conflict)
        bucket = self.config.raw_bucket
        prefix = raw_bag_key(coord, "")
        with storage_errors(bucket, "listing"):
            blobs = [
                b
                for b in self.client.list_blobs(bucket, prefix=prefix, retry=retry_policy(self.config.request_retry_s))
                if isinstance(parse_raw_key(b.name), RawBagEntry)  # as the inventory sees it: no anomaly
            ]
        if not blobs:
            raise TransferError(f"No bags for {coord} in the raw bucket `{bucket}`.")
        blobs.sort(key=lambda b: _bag_sort_key(b.name[len(prefix) :]))
        chosen = self._select(blobs, prefix, bags, coord)
        target_dir = local_raw_dir(self.config.raw_root, coord)
        files = tuple(
            self._decide(b, target_dir / cloud_to_local_name(b.name[len(prefix) :]), conflict) for b in chosen
        )
        return TransferPlan("raw_download", coord, bucket, conflict, files)

    def plan_ml_download(
        self,
        coord: RunCoordinate,
        bags: Sequence[str] | None = None,
        kinds: Sequence[str] = ("frames", "labels"),
        conflict: ConflictMode = "skip",
    ) -> TransferPlan:
        """Plan the download of a run's ML samples into ``<ml_root>/raw/<coord>/rosbag_<bag>/<kind>/``.

        ``bags`` selects bag folders by cloud (``_…_0``) or local (``rosbag_…_0``) name; ``kinds`` picks
        frames and/or labels. Objects that do not fit the ML layout are left out (they are anomalies).
        """
        _check_conflict(conflict)
        _check_kinds(kinds)
        wanted = {local_to_cloud_name(b) if b.startswith("rosbag_") else b for b in bags or ()}
        bucket = self.config.ml_bucket
        prefix = ml_prefix(coord.to_filters())
        with storage_errors(bucket, "listing"):
            blobs = list(self.client.list_blobs(bucket, prefix=prefix, retry=retry_policy(self.config.request_retry_s)))
        entries = [(blob, parse_ml_key(blob.name)) for blob in blobs]
        chosen = sorted(
            (
                (blob, entry)
                for blob, entry in entries
                if isinstance(entry, MLFileEntry) and entry.kind in kinds and (not wanted or entry.bag_dir in wanted)
            ),
            key=lambda item: item[0].name,
        )
        missing = wanted - {entry.bag_dir for _, entry in chosen}
        if missing:
            raise TransferError(f"{coord} has no ML samples for {', '.join(sorted(missing))}.")
        if not chosen:
            raise TransferError(f"No ML samples for {coord} in the ML bucket `{bucket}` match the selection.")
        root = local_ml_dir(self.config.ml_root, coord)
        files = tuple(
            self._decide(blob, root / cloud_to_local_name(entry.bag_dir) / entry.kind / entry.name, conflict)
            for blob, entry in chosen
        )
        return TransferPlan("ml_download", coord, bucket, conflict, files)

    def plan_raw_upload(
        self, coord: RunCoordinate, bags: Sequence[str] | None = None, conflict: ConflictMode = "skip"
    ) -> TransferPlan:
        """Plan the upload of a run's local bags (``rosbag_*.bag``) to ``<coord>/rosbag/_*.bag``."""
        folder = local_raw_dir(self.config.raw_root, coord)
        local = sorted((p for p in folder.glob("rosbag_*.bag") if p.is_file()), key=lambda p: _bag_sort_key(p.name))
        if bags:
            wanted = {b if b.startswith("rosbag_") else cloud_to_local_name(b) for b in bags}
            wanted = {b if b.endswith(".bag") else b + ".bag" for b in wanted}
            unknown = wanted - {p.name for p in local}
            if unknown:
                raise TransferError(f"{coord} has no local bag named {', '.join(sorted(unknown))}.")
            local = [p for p in local if p.name in wanted]
        if not local:
            raise TransferError(f"No local bags for {coord} in {folder}.")
        keys = [(p, raw_bag_key(coord, local_to_cloud_name(p.name))) for p in local]
        return self._plan_upload("raw_upload", coord, self.config.raw_bucket, raw_bag_key(coord, ""), keys, conflict)

    def plan_ml_upload(
        self,
        coord: RunCoordinate,
        bags: Sequence[str] | None = None,
        kinds: Sequence[str] = ("frames", "labels"),
        conflict: ConflictMode = "skip",
    ) -> TransferPlan:
        """Plan the upload of a run's local ML samples (``rosbag_<bag>/{frames,labels}/``) to the ML bucket.

        Only frames and labels go up; other files in the export (e.g. per-bag JSON) stay local.
        """
        _check_kinds(kinds)
        root = local_ml_dir(self.config.ml_root, coord)
        wanted = {b if b.startswith("rosbag_") else cloud_to_local_name(b) for b in bags or ()}
        keys: list[tuple[Path, str]] = []
        bag_dirs = sorted(p for p in root.glob("rosbag_*") if p.is_dir()) if root.is_dir() else []
        unknown = wanted - {p.name for p in bag_dirs}
        if unknown:
            raise TransferError(f"{coord} has no local ML samples for {', '.join(sorted(unknown))}.")
        for bag_dir in bag_dirs:
            if wanted and bag_dir.name not in wanted:
                continue
            for kind in kinds:
                suffixes = FRAME_SUFFIXES if kind == "frames" else (LABEL_SUFFIX,)
                for path in sorted((bag_dir / kind).glob("*")):
                    if path.is_file() and path.name.lower().endswith(suffixes):
                        keys.append((path, ml_file_key(coord, local_to_cloud_name(bag_dir.name), kind, path.name)))  # type: ignore[arg-type]
        if not keys:
            raise TransferError(f"No local ML samples for {coord} in {root} match the selection.")
        return self._plan_upload(
            "ml_upload", coord, self.config.ml_bucket, ml_prefix(coord.to_filters()), keys, conflict
        )

    def _plan_upload(
        self,
        operation: Literal["raw_upload", "ml_upload"],
        coord: RunCoordinate,
        bucket: str,
        prefix: str,
        files: list[tuple[Path, str]],
        conflict: ConflictMode,
    ) -> TransferPlan:
        """Decide each upload against what the bucket holds now; the generation seen becomes a precondition."""
        _check_conflict(conflict)
        with storage_errors(bucket, "listing"):
            existing = {
                b.name: b
                for b in self.client.list_blobs(bucket, prefix=prefix, retry=retry_policy(self.config.request_retry_s))
            }
        planned = tuple(self._decide_upload(path, key, existing.get(key), conflict) for path, key in files)
        return TransferPlan(operation, coord, bucket, conflict, planned)

    @staticmethod
    def _select(
        blobs: list[storage.Blob], prefix: str, bags: Sequence[str] | None, coord: RunCoordinate
    ) -> list[storage.Blob]:
        if not bags:
            return blobs
        by_name = {b.name[len(prefix) :]: b for b in blobs}
        chosen: list[storage.Blob] = []
        for wanted in bags:
            name = wanted
            if wanted.isdigit():
                index = int(wanted)
                if index >= len(blobs):
                    raise TransferError(f"{coord} has {len(blobs)} bags; there is no bag index {index}.")
                chosen.append(blobs[index])
                continue
            if name.startswith("rosbag_"):
                name = name[len("rosbag") :]
            if not name.endswith(".bag"):
                name += ".bag"
            if name not in by_name:
                raise TransferError(f"{coord} has no bag named {wanted!r}.")
            chosen.append(by_name[name])
        return list(dict.fromkeys(chosen))

    @staticmethod
    def _decide_upload(path: Path, key: str, blob: storage.Blob | None, conflict: ConflictMode) -> PlannedFile:
        """One upload, decided against the object the bucket holds now (``blob``, None if there is none)."""
        local_crc32c = cache(partial(file_crc32c, path))  # read only when the decision or the upload needs it
        size, target_size = path.stat().st_size, None if blob is None else int(blob.size or 0)
        decision = decide(conflict, size, target_size, lambda: blob is not None and blob.crc32c == local_crc32c(),
                          upload=True, missing="not uploaded")
        crc = local_crc32c() if decision.action == "transfer" else ""
        generation = int(blob.generation or 0) if blob is not None else 0
        return PlannedFile(key, path, size, crc, None, generation, decision.action, decision.reason, decision.replaces)

    @staticmethod
    def _decide(blob: storage.Blob, target: Path, conflict: ConflictMode) -> PlannedFile:
        """One download, decided against the local file at ``target``."""
        size, crc, md5, generation = int(blob.size or 0), blob.crc32c or "", blob.md5_hash, int(blob.generation or 0)
        decision = decide(conflict, size, regular_file_size(target), lambda: bool(crc) and file_crc32c(target) == crc)
        return PlannedFile(blob.name, target, size, crc, md5, generation, decision.action, decision.reason,
                           decision.replaces)

    # -- execution -----------------------------------------------------------------------------

    def execute(
        self,
        plan: TransferPlan,
        progress: Callable[[TransferProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> TransferResult:
        """Execute exactly the previewed plan, in parallel, under the run's lock; then refresh the run's state.

        The lock (a file under ``<data_dir>/.runtool/locks/``) makes two jobs given the same run take turns.
        Under it, a download whose target now holds the planned object (size and CRC32C) was done by the
        other job and is skipped as :data:`ALREADY_DOWNLOADED` (except with ``overwrite``, which asks for a
        fresh copy), and the temporary files of a job killed mid-download are removed.
        """
        self._check_writable()
        result = self._execute_locked(plan, progress, cancel)
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

    def lock_path(self, plan: TransferPlan) -> Path:
        """The file locked while the plan executes: ``<data_dir>/.runtool/locks/<coord>.<raw|ml>.lock``."""
        side = "raw" if plan.operation.startswith("raw") else "ml"
        return self.config.data_dir / ".runtool" / "locks" / f"{plan.coordinate.to_path_str()}.{side}.lock"

    def _execute_locked(
        self,
        plan: TransferPlan,
        progress: Callable[[TransferProgress], None] | None = None,
        cancel: threading.Event | None = None,
        workers: int | None = None,
    ) -> TransferResult:
        """The files of :meth:`execute`, moved under the run's lock; no state refresh (the caller's part)."""
        cancel = cancel or threading.Event()
        started = time.perf_counter()
        outcomes = [FileOutcome(f, "skipped", reason=f.reason) for f in plan.skipped]
        todo = list(plan.to_transfer)
        with ExitStack() as held:
            try:
                held.enter_context(exclusive_lock(self.lock_path(plan), cancel))
            except LockWaitStopped:
                outcomes += [FileOutcome(f, "cancelled", error="cancelled before it started") for f in todo]
                return TransferResult(plan, tuple(outcomes), time.perf_counter() - started, True)
            except OSError as exc:
                raise TransferError(f"Cannot lock {plan.coordinate} for the transfer: {exc}") from exc
            if not plan.uploads:
                _remove_stale_parts(todo)
                if plan.conflict != "overwrite":
                    present = {f for f in todo if _holds_planned_object(f)}
                    outcomes += [FileOutcome(f, "skipped", reason=ALREADY_DOWNLOADED) for f in todo if f in present]
                    todo = [f for f in todo if f not in present]
            outcomes += self.move_files(plan.bucket, todo, plan.uploads, progress, cancel, workers)
        # Cancelled only if the cancel stopped a file: a run whose files all completed first is complete.
        stopped = any(outcome.status == "cancelled" for outcome in outcomes)
        return TransferResult(plan, tuple(outcomes), time.perf_counter() - started, stopped)

    def move_files(
        self,
        bucket: str,
        files: Sequence[PlannedFile],
        upload: bool = False,
        progress: Callable[[TransferProgress], None] | None = None,
        cancel: threading.Event | None = None,
        workers: int | None = None,
    ) -> list[FileOutcome]:
        """Transfer ``files`` in parallel (``workers`` at once, default the service's), each verified and renamed
        into place; one outcome per file, in order. A download counts as done (``files_done``) once renamed.

        The engine under :meth:`execute`, also used by operations that build their own file lists (datasets).
        """
        cancel = cancel or threading.Event()
        total = sum(f.size for f in files)
        counters = {"bytes": 0, "files": 0}
        lock = threading.Lock()

        def on_bytes(count: int, name: str) -> None:
            with lock:
                counters["bytes"] += count
                snapshot = TransferProgress(counters["files"], len(files), counters["bytes"], total, name)
            if progress is not None:
                progress(snapshot)

        def finished(outcome: FileOutcome) -> FileOutcome:
            with lock:
                counters["files"] += 1
            on_bytes(0, outcome.file.name)
            return outcome

        at_once = workers or self.workers
        landings = threading.BoundedSemaphore(at_once)

        def land(fetched: _Fetched) -> FileOutcome:
            try:
                return finished(self._land(fetched))
            finally:
                landings.release()

        def one(file: PlannedFile) -> FileOutcome | Future[FileOutcome]:
            def report(count: int) -> None:
                on_bytes(count, file.name)

            if upload:
                return finished(self._upload(bucket, file, report, cancel))
            fetched = self._fetch(bucket, file, report, cancel)
            if isinstance(fetched, FileOutcome):
                return finished(fetched)
            landings.acquire()
            return landing.submit(land, fetched)

        # A worker hands its verified temporary file to a landing thread (sync, then rename: see _land) and
        # streams its next file meanwhile. At most one landing per worker waits, so a cancel lands at most that
        # many complete files, and parallel syncs still share the file system's journal commits.
        with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="transfer-land") as landing:
            with ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="transfer") as pool:
                pending = list(pool.map(one, files))
            return [item.result() if isinstance(item, Future) else item for item in pending]

    def _fetch(
        self, bucket: str, file: PlannedFile, on_bytes: Callable[[int], None], cancel: threading.Event
    ) -> _Fetched | FileOutcome:
        """Stream one object into a temporary file beside its target and verify size and CRC32C (or MD5).

        A verified file is returned open, for :meth:`_land`; anything else is an outcome, its temporary file gone.
        """
        from google.api_core import exceptions as gexc

        if cancel.is_set():
            return FileOutcome(file, "cancelled", error="cancelled before it started")
        started = time.perf_counter()
        tmp = file.path.with_name(f".{file.path.name}{PART_MARKER}{secrets.token_hex(4)}")
        received = 0

        def counted(count: int) -> None:
            nonlocal received
            received += count
            on_bytes(count)

        out: BinaryIO | None = None
        try:
            file.path.parent.mkdir(parents=True, exist_ok=True)
            checkers = checkers_for(file.size, file.crc32c, file.md5)
            out = tmp.open("wb")
            with storage_errors(bucket, "downloading from", file.key, file.generation, self.client):
                if file.generation and file.crc32c and file.size >= self.config.sliced_download_bytes:
                    # Ranged GETs in parallel into the preallocated file (a full disk fails here, before any
                    # byte moves); download_sliced verifies the whole object's CRC32C before it returns.
                    os.posix_fallocate(out.fileno(), 0, file.size)
                    download_sliced(self.client, bucket, file.key, file.generation, file.size, file.crc32c,
                                    out.fileno(), _VerifyingWriter(out, (), counted, cancel).count,
                                    retry_s=self.config.request_retry_s)
                    checkers = []
                else:
                    stream_object(self.client, bucket, file.key, file.generation,
                                  _VerifyingWriter(out, checkers, counted, cancel), retry_s=self.config.request_retry_s)
            for checker in checkers:
                checker.verify(file.key)
            fetched = _Fetched(file, tmp, out, received, started)
            out = None  # _land's now
            return fetched
        except _Cancelled:
            return FileOutcome(file, "cancelled", received, time.perf_counter() - started, "cancelled")
        except ChecksumMismatch as exc:
            error = _explain(exc, file)
            if self._current_generation(bucket, file) != file.generation:
                error = _changed_since_preview(file)
            return FileOutcome(file, "failed", received, time.perf_counter() - started, error)
        except (RuntoolError, OSError, gexc.GoogleAPIError) as exc:
            return FileOutcome(file, "failed", received, time.perf_counter() - started, _explain(exc, file))
        finally:
            if out is not None:  # the download failed or stopped: remove what it wrote
                with contextlib.suppress(OSError):  # closing flushes; a disk-full error has already failed the file
                    out.close()
                tmp.unlink(missing_ok=True)

    @staticmethod
    def _land(fetched: _Fetched) -> FileOutcome:
        """Make a verified temporary file durable, then rename it to its target.

        fdatasync before the rename is what keeps a file at its final path complete after a crash (a journalling
        file system may otherwise commit the rename before the data). The folder is not synced: a crash may lose
        the rename, never the bytes behind it, and a re-run downloads that file again.
        """
        file, started = fetched.file, fetched.started
        try:
            with fetched.out as out:
                out.flush()
                _sync_data(out.fileno())
            os.replace(fetched.tmp, file.path)
        except OSError as exc:
            fetched.tmp.unlink(missing_ok=True)
            return FileOutcome(file, "failed", fetched.bytes, time.perf_counter() - started, _explain(exc, file))
        return FileOutcome(file, "transferred", fetched.bytes, time.perf_counter() - started)

    def _upload(
        self, bucket: str, file: PlannedFile, on_bytes: Callable[[int], None], cancel: threading.Event
    ) -> FileOutcome:
        """Upload under the generation precondition from the plan (0: the object must not exist yet).

        An object created or changed in the cloud since the preview makes the precondition fail, so it is
        never overwritten blindly; the stored object's CRC32C is then checked against the local file's. When
        the object found then has exactly the local CRC32C, another job uploaded it: skipped, not failed.
        """
        from google.api_core import exceptions as gexc

        if cancel.is_set():
            return FileOutcome(file, "cancelled", error="cancelled before it started")
        started = time.perf_counter()
        blob = self.client.bucket(bucket).blob(file.key)
        try:
            if file_crc32c(file.path) != file.crc32c:
                raise ChecksumMismatch(f"{file.path} changed on disk since the preview")
            with storage_errors(bucket, "uploading to", file.key, file.generation, self.client):
                blob.upload_from_filename(
                    str(file.path),
                    if_generation_match=file.generation,
                    checksum="crc32c",
                    retry=retry_policy(self.config.request_retry_s),
                    timeout=60,
                )
            if blob.crc32c != file.crc32c:
                raise ChecksumMismatch(
                    f"{file.key}: the stored CRC32C {blob.crc32c} differs from the local {file.crc32c}"
                )
        except ChecksumMismatch as exc:
            return FileOutcome(file, "failed", 0, time.perf_counter() - started, f"Checksum mismatch: {exc}")
        except (RuntoolError, OSError, gexc.GoogleAPIError) as exc:
            error = _explain(exc, file)
            if isinstance(exc, ObjectChangedError):
                current = self._current_blob(bucket, file)
                if current is not None and current.crc32c == file.crc32c:
                    return FileOutcome(file, "skipped", 0, time.perf_counter() - started, reason=ALREADY_UPLOADED)
                error = f"{file.key} was created or changed in the cloud since the preview; it was not overwritten."
            return FileOutcome(file, "failed", 0, time.perf_counter() - started, error)
        on_bytes(file.size)
        return FileOutcome(file, "transferred", file.size, time.perf_counter() - started)

    def plan_bulk(self, operation: str, coords: Sequence[RunCoordinate], **options: Any) -> BulkPlan:
        """A plan per run (``operation`` is ``raw_download``, ``ml_download``, ``raw_upload`` or ``ml_upload``).

        Runs that cannot be planned (no bags, nothing local, a local path the file system refuses, ...) are left
        out with the reason, not fatal. A run listed twice is planned once.
        """
        planners: dict[str, Callable[..., TransferPlan]] = {
            "raw_download": self.plan_raw_download,
            "ml_download": self.plan_ml_download,
            "raw_upload": self.plan_raw_upload,
            "ml_upload": self.plan_ml_upload,
        }
        planner = planners.get(operation)
        if planner is None:
            raise TransferError(f"Unknown operation {operation!r}.")
        plans: list[TransferPlan] = []
        left_out: list[tuple[RunCoordinate, str]] = []
        for coord in dict.fromkeys(coords):
            try:
                plans.append(planner(coord, **options))
            except TransferError as exc:
                left_out.append((coord, str(exc)))
            except OSError as exc:  # one strange object name (too long for the file system, say) spoils one run
                left_out.append((coord, format_os_error(exc)))
        return BulkPlan(operation, tuple(plans), tuple(left_out))

    def plan_export_upload(self, export_id: str, conflict: ConflictMode = "skip") -> BulkPlan:
        """Upload a labelling export: every local ML run under the coordinates listed for ``export_id``."""
        exports = self.local.export_tracking()
        if export_id not in exports:
            known = ", ".join(exports) or "none"
            raise TransferError(f"Unknown export id {export_id!r}; the export tracking file lists: {known}.")
        coords: list[RunCoordinate] = []
        for listed in exports[export_id].coordinates:
            parts = listed.strip("/").split("/")
            try:
                filters = Filters(**dict(zip(RunCoordinate.PARTS, parts, strict=False)))
            except (CoordinateError, TypeError) as exc:
                raise TransferError(f"Export {export_id!r} lists a bad coordinate {listed!r}: {exc}") from exc
            coords.extend(run.coordinate for run in self.local.runs(filters) if run.ml.exists)
        if not coords:
            raise TransferError(f"Export {export_id!r} has no local ML samples under its coordinates.")
        return self.plan_bulk("ml_upload", sorted(set(coords), key=RunCoordinate.sort_key), conflict=conflict)

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
        scheduler: up to :data:`BULK_RUNS_AT_ONCE` runs at once, sharing this service's file workers) the
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
            file_workers = max(1, self.workers // min(pool.workers, len(todo) or 1))

            def run_here(index: int, plan: TransferPlan, _: RunCoordinate) -> TransferResult:
                def relay(event: TransferProgress) -> None:
                    if progress is not None:
                        progress(index, len(todo), event)

                return self._execute_locked(plan, relay, cancel, file_workers)

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

    def _current_generation(self, bucket: str, file: PlannedFile) -> int | None:
        """The object's generation now (None if it is gone), to tell corruption from a newer upload."""
        blob = self._current_blob(bucket, file)
        return int(blob.generation) if blob is not None and blob.generation else None

    def _current_blob(self, bucket: str, file: PlannedFile) -> storage.Blob | None:
        with storage_errors(bucket, "reading"):
            return self.client.bucket(bucket).get_blob(file.key)


def execute_run_plan(config: RuntoolConfig, plan: TransferPlan, coordinate: RunCoordinate) -> TransferResult:
    """Execute one run's previewed plan in this process, under the run's lock, and refresh no state.

    What :meth:`TransferService.execute_bulk` ships to a Dask worker or a pool process: a module-level
    function of picklable values, rebuilding the transfer engine from ``config`` where it runs. The files
    are written here, so a remote worker needs the data folder mounted at the configured path.
    ``coordinate`` is the plan's (the executor's calling convention); the caller refreshes the run's state.
    """
    if coordinate != plan.coordinate:
        raise TransferError(f"Asked to execute the plan of {plan.coordinate} as {coordinate}.")
    from runtool.services.container import ServiceContainer  # the container builds on this module

    return ServiceContainer(config).transfers._execute_locked(plan)


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


def _holds_planned_object(file: PlannedFile) -> bool:
    """Whether the local file already is the planned object: same size and CRC32C (read only if sizes match)."""
    try:
        return bool(file.crc32c) and file.path.stat().st_size == file.size and file_crc32c(file.path) == file.crc32c
    except (FileNotFoundError, NotADirectoryError):
        return False


def _sync_data(fd: int) -> None:
    """Put a file's bytes, and the size needed to read them back, on the disk (fdatasync; macOS has only fsync)."""
    getattr(os, "fdatasync", os.fsync)(fd)


def _remove_stale_parts(files: Sequence[PlannedFile]) -> None:
    """Remove temporary files left by downloads of ``files`` whose process died (it could not clean up).

    Called only under the run's lock, when no other job can be writing them.
    """
    names: dict[Path, set[str]] = {}
    for file in files:
        names.setdefault(file.path.parent, set()).add(file.path.name)
    for folder, wanted in names.items():
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            name, marker, _ = entry.name.partition(PART_MARKER)
            if marker and name.startswith(".") and name[1:] in wanted:
                entry.unlink(missing_ok=True)


def _check_conflict(conflict: str) -> None:
    if conflict not in CONFLICT_MODES:
        raise TransferError(f"Unknown conflict mode {conflict!r}; use one of {', '.join(CONFLICT_MODES)}.")


def _check_kinds(kinds: Sequence[str]) -> None:
    unknown = set(kinds) - {"frames", "labels"}
    if unknown or not kinds:
        raise TransferError(f"Choose frames and/or labels, not {', '.join(sorted(unknown)) or 'nothing'}.")


def _explain(exc: BaseException, file: PlannedFile) -> str:
    """A sentence a user can act on, naming the file."""
    if isinstance(exc, ObjectChangedError):
        return _changed_since_preview(file)
    if isinstance(exc, ObjectNotFoundError):
        return f"{file.key} no longer exists in the cloud (deleted since the preview)."
    if isinstance(exc, ChecksumMismatch):
        return f"Checksum mismatch, file rejected: {exc}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"Not enough disk space to write {file.path} ({exc.strerror})."
    if isinstance(exc, OSError):
        return f"Cannot write {file.path}: {exc.strerror or exc}."
    return str(exc)


def _changed_since_preview(file: PlannedFile) -> str:
    """Plans built from the inventory cache (dataset fetches) would pick the same old generation again, so
    planning again helps only after the cache is refreshed."""
    return f"{file.key} changed in the cloud since the preview; {REFRESH_HINT}, then plan again."


def _bag_sort_key(name: str) -> tuple[str, int]:
    """Bags sort by start time, then by split index as a number (``_…_10`` after ``_…_9``)."""
    stem = name[: -len(".bag")]
    head, _, index = stem.rpartition("_")
    return (head, int(index)) if index.isdigit() else (stem, -1)
