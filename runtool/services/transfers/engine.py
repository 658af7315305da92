"""The transfer engine: moves planned files between a bucket and the local disk, one verified file at a time.

It needs only the configuration and a storage client, so the transfer service, dataset fetches and the
executor's workers (:func:`execute_run_plan`) all move bytes the same way. A download streams exactly the planned
generation to a temporary name beside its target, verifies size and CRC32C (or MD5) while the bytes stream,
syncs the file's data to disk and only then renames it into place: a file at its final path is always complete,
also after a crash, and a failed or cancelled transfer never deletes a good existing file. An upload goes under
the planned generation precondition, so a cloud object is never overwritten blindly.

One run's plan executes under a cross-process lock on the run (see :meth:`TransferEngine.execute`), so two
jobs given the same run (two processes, two pages, a rescheduled Dask task) take turns and never write the
same file at once; under it, files already complete are skipped, so re-running a plan resumes.
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
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

from runtool.config import RuntoolConfig
from runtool.errors import RuntoolError
from runtool.files import LockWaitStopped, exclusive_lock, write_all
from runtool.formatting import format_bytes, format_count
from runtool.models import RunCoordinate
from runtool.services.conflicts import regular_file_size
from runtool.services.transfers.plan import PlannedFile, TransferError, TransferPlan
from runtool.storage import make_client, run_lock_path, storage_errors
from runtool.storage.checksums import ChecksumMismatch, IntegrityChecker, checkers_for, file_crc32c
from runtool.storage.gcs import (
    ObjectChangedError,
    ObjectNotFoundError,
    download_sliced,
    retry_policy,
    stream_object,
)

if TYPE_CHECKING:
    from google.cloud import storage

__all__ = [
    "ALREADY_DOWNLOADED",
    "ALREADY_UPLOADED",
    "PART_MARKER",
    "REFRESH_HINT",
    "FileOutcome",
    "TransferEngine",
    "TransferProgress",
    "TransferResult",
    "execute_run_plan",
]

PART_MARKER = ".part-"
ALREADY_DOWNLOADED = "already downloaded by another job"
ALREADY_UPLOADED = "already uploaded by another job (the cloud object has the local CRC32C)"
REFRESH_HINT = "run `runtool inventory refresh`"
SMALL_FILE_BYTES = 1024 * 1024
SMALL_FILE_FANOUT = 4
"""Downloads of files all under :data:`SMALL_FILE_BYTES` run this many times the workers at once: such a file
costs one round trip and almost no bandwidth, so more of them in flight hide more latency (20 ms a request to a
bucket), while the CPU each costs is the same."""


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
    out_of_space: bool = False
    """Whether the file failed for want of disk space (the small files after it are then not fetched)."""

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
        """The bytes of the files transferred (not those a file that failed or was stopped had received)."""
        return sum(o.bytes for o in self.outcomes if o.status == "transferred")

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



class _Cancelled(Exception):
    """Raised inside a download's write to stop it."""


class _VerifyingWriter:
    """The sink of one download: writes, checks and reports every chunk, and stops at a cancel.

    It writes to the file descriptor itself: a chunk is already a large buffer (up to 1 MiB), so Python's
    buffered file would only add its own calls (and an fstat, an ioctl and seeks when opened) to every file.
    """

    def __init__(
        self,
        fd: int,
        checkers: Sequence[IntegrityChecker],
        on_bytes: Callable[[int], None],
        cancel: threading.Event,
    ) -> None:
        self.fd, self.checkers, self.on_bytes, self.cancel = fd, checkers, on_bytes, cancel

    def __call__(self, chunk: bytes) -> None:
        if self.cancel.is_set():
            raise _Cancelled
        write_all(self.fd, chunk)
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
    fd: int
    """The temporary file, open for writing; :meth:`TransferEngine._land` closes it."""
    bytes: int
    started: float



class TransferEngine:
    """Moves the files of plans: verified, atomic, in parallel (``workers`` files at once), cancellable."""

    def __init__(self, config: RuntoolConfig, client_factory: Callable[[], storage.Client], workers: int = 8) -> None:
        self.config = config
        self._client_factory = client_factory
        self._client: storage.Client | None = None
        self.workers = workers

    @property
    def client(self) -> storage.Client:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def lock_path(self, plan: TransferPlan) -> Path:
        """The file locked while the plan executes: ``<data_dir>/.runtool/locks/<coord>.<raw|ml>.lock``."""
        side = "raw" if plan.operation.startswith("raw") else "ml"
        return run_lock_path(self.config.data_dir, plan.coordinate, side)

    def execute(
        self,
        plan: TransferPlan,
        progress: Callable[[TransferProgress], None] | None = None,
        cancel: threading.Event | None = None,
        workers: int | None = None,
        waiting: Callable[[], None] | None = None,
    ) -> TransferResult:
        """Move the plan's files under the run's lock; no state refresh (the caller's part).

        The lock (a file under ``<data_dir>/.runtool/locks/``, see :meth:`lock_path`) makes two jobs given the
        same run take turns. Under it, a download whose target now holds the planned object (size and CRC32C)
        was done by the other job and is skipped as :data:`ALREADY_DOWNLOADED` (except with ``overwrite``,
        which asks for a fresh copy), and the temporary files a killed job left beside any of the plan's files
        are removed, also when the plan has nothing to download (a killed replacement leaves its final file
        there, so the next plan skips it). Such a plan does not wait for the lock: when another job holds it,
        it returns at once and leaves the tidying to that job's next run. ``waiting`` is called when the plan
        begins to wait for another job's lock (to say why nothing moves).
        """
        cancel = cancel or threading.Event()
        started = time.perf_counter()
        outcomes = [FileOutcome(f, "skipped", reason=f.reason) for f in plan.skipped]
        todo = list(plan.to_transfer)
        with ExitStack() as held:
            try:
                if todo:
                    held.enter_context(exclusive_lock(self.lock_path(plan), cancel, on_wait=waiting))
                else:  # nothing to move: tidy up only when no other job holds the run, without waiting
                    held.enter_context(exclusive_lock(self.lock_path(plan), cancel, timeout=0))
            except LockWaitStopped:
                outcomes += [FileOutcome(f, "cancelled", error="cancelled before it started") for f in todo]
                return TransferResult(plan, tuple(outcomes), time.perf_counter() - started, bool(todo))
            except OSError as exc:
                raise TransferError(f"Cannot lock {plan.coordinate} for the transfer: {exc}") from exc
            if not plan.uploads:
                _remove_stale_parts(plan.files)
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
        """Transfer ``files`` in parallel (``workers`` at once, default the engine's; :data:`SMALL_FILE_FANOUT`
        times that for downloads of small files), each verified and renamed into place; one outcome per file, in
        order. A download counts as done (``files_done``) once renamed.

        What :meth:`execute` runs under the run's lock, also used by operations that build their own file lists
        under their own lock (dataset fetches).
        """
        cancel = cancel or threading.Event()
        total = sum(f.size for f in files)
        counters = {"bytes": 0, "files": 0}
        lock = threading.Lock()

        def on_bytes(count: int, name: str) -> None:
            if progress is None:
                return
            with lock:
                counters["bytes"] += count
                snapshot = TransferProgress(counters["files"], len(files), counters["bytes"], total, name)
            progress(snapshot)

        def finished(outcome: FileOutcome) -> FileOutcome:
            if progress is not None:
                with lock:
                    counters["files"] += 1
                on_bytes(0, outcome.file.name)
            return outcome

        at_once = workers or self.workers
        small = not upload and bool(files) and max(f.size for f in files) < SMALL_FILE_BYTES
        if small:
            at_once *= SMALL_FILE_FANOUT
        landings = threading.BoundedSemaphore(at_once)
        disk_full = threading.Event()
        """Set once a small file ran out of space: the many after it are not fetched, each only to fail alike."""

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
            if disk_full.is_set():
                return finished(FileOutcome(file, "failed", error=DISK_FULL_NOT_STARTED))
            fetched = self._fetch(bucket, file, report if progress is not None else _ignore, cancel)
            if small and not isinstance(fetched, FileOutcome):
                # A small file lands where it was fetched: its sync is short, and a handoff costs as much.
                fetched = self._land(fetched)
            if isinstance(fetched, FileOutcome):
                if small and fetched.out_of_space:
                    disk_full.set()
                return finished(fetched)
            landings.acquire()
            return landing.submit(land, fetched)

        # A worker hands its verified temporary file to a landing thread (sync, then rename: see _land) and
        # streams its next file meanwhile. At most one landing per worker waits, so a cancel lands at most that
        # many complete files, and parallel syncs still share the file system's journal commits. Small files
        # (:data:`SMALL_FILE_BYTES`) land on the worker itself, the SMALL_FILE_FANOUT workers syncing in parallel.
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

        fd: int | None = None
        try:
            checkers = checkers_for(file.size, file.crc32c, file.md5)
            try:
                fd = os.open(tmp, _CREATE_FLAGS, 0o666)
            except FileNotFoundError:  # the folder is made once, by its first file
                file.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(tmp, _CREATE_FLAGS, 0o666)
            with storage_errors(bucket, "downloading from", file.key, file.generation, self.client):
                if file.generation and file.crc32c and file.size >= self.config.sliced_download_bytes:
                    # Ranged GETs in parallel into the preallocated file (a full disk fails here, before any
                    # byte moves); download_sliced verifies the whole object's CRC32C before it returns.
                    with _PREALLOCATING:
                        os.posix_fallocate(fd, 0, file.size)
                    download_sliced(self.client, bucket, file.key, file.generation, file.size, file.crc32c,
                                    fd, _VerifyingWriter(fd, (), counted, cancel).count,
                                    retry_s=self.config.request_retry_s)
                    checkers = []
                else:
                    stream_object(self.client, bucket, file.key, file.generation,
                                  _VerifyingWriter(fd, checkers, counted, cancel), retry_s=self.config.request_retry_s)
            for checker in checkers:
                checker.verify(file.key)
            fetched = _Fetched(file, tmp, fd, received, started)
            fd = None  # _land's now
            return fetched
        except _Cancelled:
            return FileOutcome(file, "cancelled", received, time.perf_counter() - started, "cancelled")
        except ChecksumMismatch as exc:
            error = _explain(exc, file)
            if self._current_generation(bucket, file) != file.generation:
                error = _changed_since_preview(file)
            return FileOutcome(file, "failed", received, time.perf_counter() - started, error)
        except (RuntoolError, OSError, gexc.GoogleAPIError) as exc:
            return _failed(file, received, started, exc)
        finally:
            if fd is not None:  # the download failed or stopped: remove what it wrote
                with contextlib.suppress(OSError):
                    os.close(fd)
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
            try:
                _sync_data(fetched.fd)
            finally:
                os.close(fetched.fd)
            os.replace(fetched.tmp, file.path)
        except OSError as exc:
            fetched.tmp.unlink(missing_ok=True)
            return _failed(file, fetched.bytes, started, exc)
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


    def _current_generation(self, bucket: str, file: PlannedFile) -> int | None:
        """The object's generation now (None if it is gone), to tell corruption from a newer upload."""
        blob = self._current_blob(bucket, file)
        return int(blob.generation) if blob is not None and blob.generation else None

    def _current_blob(self, bucket: str, file: PlannedFile) -> storage.Blob | None:
        with storage_errors(bucket, "reading"):
            return self.client.bucket(bucket).get_blob(file.key)


def execute_run_plan(config: RuntoolConfig, plan: TransferPlan, coordinate: RunCoordinate) -> TransferResult:
    """Execute one run's previewed plan in this process, under the run's lock, and refresh no state.

    What :meth:`~runtool.services.transfers.TransferService.execute_bulk` ships to a Dask worker or a pool
    process: a module-level function of picklable values, building a transfer engine from ``config`` where it
    runs. The files
    are written here, so a remote worker needs the data folder mounted at the configured path.
    ``coordinate`` is the plan's (the executor's calling convention); the caller refreshes the run's state.
    """
    if coordinate != plan.coordinate:
        raise TransferError(f"Asked to execute the plan of {plan.coordinate} as {coordinate}.")
    return TransferEngine(config, partial(make_client, config.gcp_project, config.emulator_host)).execute(plan)


def _ignore(_count: int) -> None:
    """Where bytes are reported when nobody listens."""


def _holds_planned_object(file: PlannedFile) -> bool:
    """Whether the local file already is the planned object: same size and CRC32C (read only if sizes match).

    Anything else at the path (a folder, a file that cannot be read) is not: its download then fails or
    replaces it, with that file's own error.
    """
    try:
        return bool(file.crc32c) and regular_file_size(file.path) == file.size and file_crc32c(file.path) == file.crc32c
    except OSError:
        return False


_PREALLOCATING = threading.Lock()
"""Large files are preallocated one at a time: in parallel on a nearly full disk each took part of the room and
all of them failed, where one at a time the first that fits gets it (a metadata update, quick on ext4 and xfs)."""

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
"""A download's temporary file: a new file (its name is random), written through its descriptor."""


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



DISK_FULL_NOT_STARTED = "Not started: the disk is full (an earlier file of this transfer ran out of space)."


def _out_of_space(exc: BaseException) -> TypeGuard[OSError]:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _failed(file: PlannedFile, received: int, started: float, exc: BaseException) -> FileOutcome:
    """A download of ``file`` that failed with ``exc`` after ``received`` bytes, started at ``started``."""
    return FileOutcome(file, "failed", received, time.perf_counter() - started, _explain(exc, file),
                       out_of_space=_out_of_space(exc))


def _explain(exc: BaseException, file: PlannedFile) -> str:
    """A sentence a user can act on, naming the file."""
    if isinstance(exc, ObjectChangedError):
        return _changed_since_preview(file)
    if isinstance(exc, ObjectNotFoundError):
        return f"{file.key} no longer exists in the cloud (deleted since the preview)."
    if isinstance(exc, ChecksumMismatch):
        return f"Checksum mismatch, file rejected: {exc}"
    if _out_of_space(exc):
        return f"Not enough disk space to write {file.path} ({exc.strerror})."
    if isinstance(exc, OSError):
        return f"Cannot write {file.path}: {exc.strerror or exc}."
    return str(exc)


def _changed_since_preview(file: PlannedFile) -> str:
    """Plans built from the inventory cache (dataset fetches) would pick the same old generation again, so
    planning again helps only after the cache is refreshed."""
    return f"{file.key} changed in the cloud since the preview; {REFRESH_HINT}, then plan again."

