"""Dataset fetch: turn a fleet selection into a YOLO training folder under ``<ml_root>/trainings/<name>/``.

Planning reads the inventory (which runs, frames and labels exist) and the label contents (needed to reject
malformed labels and to filter by class). A label object is untrusted input: one larger than ``max_label_bytes``
(config, 1 MiB by default) is refused with its reason and never read, and a download stops one byte past the cap
whatever the listing said. Label bytes are cached by key and generation under
``<ml_root>/trainings/.labels-cache/`` so that planning the same selection again costs no downloads; in
read-only mode planning reads that cache but writes nothing.

A sample's file name is readable (coordinate, bag, frame stem) and ends in a short hash of its frame's object
key, so two sources never share a name however their parts happen to join; a plan in which they still would is
refused. One execution per dataset name runs at a time (a cross-process lock under
``<data_dir>/.runtool/locks/datasets/``); another waits a bounded time, then is refused.

Executing is incremental: a file whose bytes already have the planned CRC32C is kept, only missing files are
fetched (frames downloaded in parallel, verified, temp file + rename, through the transfer engine; labels,
which planning already read, copied from its cache when their CRC32C matches, else downloaded too), files of
samples no longer selected are deleted, and ``data.yaml`` and ``manifest.json`` are written atomically last,
each only when its content differs from what is there. Re-running the same plan therefore writes nothing at all
(no file's mtime or inode changes), and an interrupted run never leaves a half-written file at a final path.
The manifest records each file's size and mtime as it was found complete, so a re-run only stats the files that
still match it and reads (CRC32C) the others.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import yaml

from runtool.config import RuntoolConfig
from runtool.errors import ReadOnlyError, RuntoolError, UsageError
from runtool.files import LockWaitStopped, exclusive_lock, write_atomic
from runtool.formatting import format_bytes, format_count, printable
from runtool.models import Filters, RunCoordinate
from runtool.services.conflicts import CONFLICT_MODES, ConflictDecision, ConflictMode, decide
from runtool.services.data_state import DataStateService
from runtool.services.inventory import COORD_COLUMNS, CloudInventoryService
from runtool.services.transfers.engine import TransferEngine, TransferProgress
from runtool.services.transfers.plan import PlannedFile
from runtool.storage import ml_file_key, storage_errors
from runtool.storage.checksums import Crc32cChecker, file_crc32c
from runtool.storage.gcs import ObjectChangedError, ObjectNotFoundError, read_bounded

if TYPE_CHECKING:
    # google-cloud-storage loads with the first client (storage.gcs): the download manager imports this
    # module for its dataset form and would otherwise carry the client library in every page kernel.
    from google.cloud import storage

__all__ = [
    "DatasetBusyError",
    "DatasetError",
    "DatasetNameError",
    "DatasetOptions",
    "DatasetPlan",
    "DatasetResult",
    "DatasetSample",
    "DatasetService",
    "parse_yolo_label",
]

Split = Literal["train", "val"]
SPLITS: tuple[Split, ...] = ("train", "val")
TRAININGS = "trainings"
LABELS_CACHE = ".labels-cache"
MANIFEST = "manifest.json"
NOT_IN_DATASET = "not in the dataset"
LABEL_WORKERS = 32
"""Label reads of a plan in flight at once. A label is one small GET, so a plan waits on round trips (tens of ms to
GCS each, for about 0.6 ms of CPU here): 32 in flight keep about a thousand a second going where 8 kept a few
hundred (``benchmarks/dataset_plan.py``); below the media pool's 64 connections."""
NAME_MAX = 100
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{NAME_MAX - 1}}}")
# File names keep these characters of the coordinate, bag and stem; any run of others becomes one "-".
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_READABLE_MAX = 160
"""Characters of a sample name's readable part: with the hash and suffix, far below the 255 bytes of a file name."""
_KEY_HASH_CHARS = 10
"""Hex digits of the frame key's SHA-256 in a sample name (40 bits)."""


class DatasetError(RuntoolError):
    """A dataset fetch cannot be planned or executed as asked (bad options or name, read-only mode)."""


class DatasetNameError(DatasetError, UsageError):
    """A dataset name that cannot be a dataset's folder name: bad input, so also a :class:`UsageError`."""


class DatasetBusyError(DatasetError):
    """Another fetch of the same dataset is running and did not finish within the wait."""


@dataclass(frozen=True)
class DatasetOptions:
    """What goes into a dataset; recorded in the manifest so a dataset says how it was made."""

    since: date | None = None
    """First run start day (UTC), inclusive."""
    until: date | None = None
    """Last run start day (UTC), inclusive."""
    min_coverage_pct: float | None = None
    """Runs below are excluded; runs without raw bags have no coverage and are excluded when set."""
    labelled_only: bool = True
    """True: a sample is a frame whose label exists. False: every frame (an empty label for unlabelled ones)."""
    classes: tuple[int, ...] | None = None
    """Keep only samples whose label has at least one box of these classes."""
    max_samples: int | None = None
    val_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.val_fraction <= 1:
            raise DatasetError(f"The validation fraction must be between 0 and 1, not {self.val_fraction}.")
        if self.max_samples is not None and self.max_samples < 1:
            raise DatasetError(f"The maximum number of samples must be at least 1, not {self.max_samples}.")
        if self.since and self.until and self.since > self.until:
            raise DatasetError(f"The date range is empty: since {self.since} is after until {self.until}.")
        if self.classes is not None and (not self.classes or min(self.classes) < 0):
            raise DatasetError("The class filter needs one or more class ids ≥ 0.")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["since"] = self.since.isoformat() if self.since else None
        data["until"] = self.until.isoformat() if self.until else None
        data["classes"] = list(self.classes) if self.classes is not None else None
        return data


@dataclass(frozen=True)
class DatasetSample:
    """One frame and its label: where they come from (key, generation, CRC32C) and where they go."""

    coordinate: RunCoordinate
    bag: str
    frame_key: str
    frame_generation: int
    frame_crc32c: str
    frame_size: int
    label_key: str | None
    """None: an unlabelled frame (all-frames mode); an empty label file is written for it."""
    label_generation: int
    label_crc32c: str
    label_size: int
    classes: tuple[int, ...]
    split: Split
    image_name: str
    label_name: str

    @property
    def image_path(self) -> str:
        return f"images/{self.split}/{self.image_name}"

    @property
    def label_path(self) -> str:
        return f"labels/{self.split}/{self.label_name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "coordinate": self.coordinate.to_path_str(),
            "bag": self.bag,
            "split": self.split,
            "frame": {
                "key": self.frame_key,
                "generation": self.frame_generation,
                "crc32c": self.frame_crc32c,
                "size": self.frame_size,
                "target": self.image_path,
            },
            "label": {
                "key": self.label_key,
                "generation": self.label_generation,
                "crc32c": self.label_crc32c,
                "size": self.label_size,
                "target": self.label_path,
            },
            "classes": list(self.classes),
        }


@dataclass(frozen=True)
class DatasetPlan:
    """Every sample of the dataset to be, the labels rejected and why, and the totals for a preview."""

    name: str
    root: Path
    options: DatasetOptions
    filters: Filters
    samples: tuple[DatasetSample, ...]
    rejected: tuple[tuple[str, str], ...]
    """(label key, reason) for labels that do not parse as YOLO or were not read (larger than the cap, changed or
    gone since the inventory); their samples are skipped."""
    runs_excluded: int

    @property
    def runs(self) -> int:
        return len({s.coordinate for s in self.samples})

    def count(self, split: Split) -> int:
        return sum(1 for s in self.samples if s.split == split)

    def runs_in(self, split: Split) -> set[RunCoordinate]:
        return {s.coordinate for s in self.samples if s.split == split}

    @property
    def bytes(self) -> int:
        return sum(s.frame_size + s.label_size for s in self.samples)

    @property
    def class_ids(self) -> tuple[int, ...]:
        return tuple(sorted({c for s in self.samples for c in s.classes}))

    def describe(self) -> str:
        """e.g. ``12 samples from 3 runs (train 9, val 3), 1.2 MiB; 1 label rejected``."""
        text = (
            f"{format_count(len(self.samples))} samples from {format_count(self.runs)} runs "
            f"(train {format_count(self.count('train'))}, val {format_count(self.count('val'))}), "
            f"{format_bytes(self.bytes)}"
        )
        return text + (f"; {format_count(len(self.rejected))} labels rejected" if self.rejected else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "root": str(self.root),
            "filters": self.filters.to_dict(),
            "options": self.options.to_dict(),
            "runs": self.runs,
            "runs_excluded": self.runs_excluded,
            "samples": {"train": self.count("train"), "val": self.count("val"), "total": len(self.samples)},
            "bytes": self.bytes,
            "rejected": [{"key": key, "reason": reason} for key, reason in self.rejected],
        }


@dataclass(frozen=True)
class DatasetResult:
    """What an execution changed on disk; ``ok`` only when the folder now matches the plan."""

    plan: DatasetPlan
    downloaded: int
    written: int
    """Empty labels written for unlabelled frames."""
    kept: int
    removed: int
    failed: tuple[tuple[str, str], ...]
    """(target path, error) per file that could not be fetched."""
    cancelled: bool
    bytes: int
    seconds: float
    copied: int = 0
    """Labels copied from the label cache that planning filled (checked against their CRC32C), not downloaded."""
    replaced: int = 0
    """Of the files fetched (downloaded or copied), those that replaced a file already there that the conflict mode
    did not keep (its size or CRC32C differed, or ``overwrite``)."""

    @property
    def ok(self) -> bool:
        return not self.cancelled and not self.failed

    @property
    def fetched(self) -> int:
        """Files that arrived in the dataset folder: downloaded, or labels copied from the label cache."""
        return self.downloaded + self.copied

    def summary(self) -> str:
        """One line: ``3 downloaded, 3 labels from the cache, 0 empty labels, 17 kept, 2 removed, 1 replaced, 0 failed
        (…)``; the replaced files are among the downloaded and copied ones."""
        text = (
            f"{format_count(self.downloaded)} downloaded, {format_count(self.copied)} labels from the cache, "
            f"{format_count(self.written)} empty labels, "
            f"{format_count(self.kept)} kept, {format_count(self.removed)} removed, "
            f"{format_count(self.replaced)} replaced, "
            f"{format_count(len(self.failed))} failed ({format_bytes(self.bytes)} in {self.seconds:.1f} s)"
        )
        return text + (", cancelled: the manifest was not updated" if self.cancelled else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "plan": self.plan.to_dict(),
            "downloaded": self.downloaded,
            "copied": self.copied,
            "replaced": self.replaced,
            "written": self.written,
            "kept": self.kept,
            "removed": self.removed,
            "failed": [{"path": path, "error": error} for path, error in self.failed],
            "cancelled": self.cancelled,
        }


def parse_yolo_label(data: bytes) -> tuple[int, ...] | str:
    """The class ids of a YOLO label (``class cx cy w h`` per line, floats in [0, 1]), or why it is not one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    found: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            return f"line {number}: {len(fields)} fields, expected 5 (class cx cy w h)"
        if not fields[0].isdigit():
            return f"line {number}: class {fields[0]!r} is not a non-negative integer"
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            return f"line {number}: box values {' '.join(fields[1:])!r} are not numbers"
        if not all(math.isfinite(v) and 0 <= v <= 1 for v in values):
            return f"line {number}: box values must lie in [0, 1]"
        found.append(int(fields[0]))
    return tuple(found)


class DatasetService:
    """Plans and executes dataset fetches over the inventory and the transfer engine.

    ``workers`` bounds the label downloads of planning; the frames move ``engine.workers`` at a time.
    """

    def __init__(
        self,
        config: RuntoolConfig,
        data_state: DataStateService,
        inventory: CloudInventoryService,
        engine: TransferEngine,
        read_only: bool = False,
        workers: int = LABEL_WORKERS,
        lock_wait_s: float = 30.0,
    ) -> None:
        self.config = config
        self.data_state = data_state
        self.inventory = inventory
        self.engine = engine
        self.read_only = read_only
        self.workers = workers
        self.lock_wait_s = lock_wait_s
        """How long :meth:`execute` waits for another fetch of the same dataset before refusing."""

    @property
    def client(self) -> storage.Client:
        """The engine's client: label reads and frame downloads share its connections."""
        return self.engine.client

    def dataset_root(self, name: str) -> Path:
        """``<ml_root>/trainings/<name>``.

        Raises:
            DatasetNameError: ``name`` is not 1 to 100 letters, digits, ``.``, ``_`` and ``-`` starting with a
                letter or digit (one plain folder name, never a path, a hidden folder or an option).
        """
        if not _NAME.fullmatch(name):
            shown = printable(name[:NAME_MAX]) + ("…" if len(name) > NAME_MAX else "")
            raise DatasetNameError(
                f"Bad dataset name '{shown}' ({len(name)} characters): use 1 to {NAME_MAX} letters, digits, "
                "'.', '_' and '-', starting with a letter or digit."
            )
        return self.config.ml_root / TRAININGS / name

    def lock_path(self, name: str) -> Path:
        """The file locked while dataset ``name`` executes: ``<data_dir>/.runtool/locks/datasets/<name>.lock``."""
        self.dataset_root(name)
        return self.config.data_dir / ".runtool" / "locks" / "datasets" / f"{name}.lock"

    # -- planning ------------------------------------------------------------------------------

    def plan_dataset_fetch(
        self,
        name: str,
        filters: Filters,
        options: DatasetOptions,
        progress: Callable[[int, int], None] | None = None,
    ) -> DatasetPlan:
        """Choose runs (filters, dates, coverage), pair frames with labels, check labels, split by run, sample.

        Reading the labels is most of a first plan's time (one request per label not cached yet), so
        ``progress(done, total)`` is called with the labels read so far (from the cache or the bucket, or refused
        over the cap) of those the plan reads: once with what the cache held before any download, then as labels
        arrive, from the calling thread.
        """
        root = self.dataset_root(name)
        runs = self.data_state.runs(filters)
        selected = _select_runs(runs, options)
        pairs = _pair(_ml_objects(self.inventory.snapshot.entries, selected))
        if options.labelled_only:
            pairs = pairs[pairs["label_key"].notna()]
        labelled = pairs[pairs["label_key"].notna()]
        contents = self._label_contents(
            zip(
                labelled["label_key"],
                labelled["label_generation"],
                labelled["label_crc32c"],
                labelled["label_size"],
                strict=True,
            ),
            progress,
        )
        wanted = set(options.classes) if options.classes is not None else None
        rejected: list[tuple[str, str]] = []
        kept: list[tuple[int, tuple[int, ...]]] = []
        for row, key in enumerate(pairs["label_key"]):
            classes: tuple[int, ...] = ()
            if key is not None:
                content = contents[key]
                parsed = parse_yolo_label(content) if isinstance(content, bytes) else content
                if isinstance(parsed, str):
                    rejected.append((key, parsed))
                    continue
                classes = parsed
            if wanted is None or wanted.intersection(classes):
                kept.append((row, classes))
        coords = {path: RunCoordinate.parse(path) for path in pairs["run"].unique()}
        in_use = pairs["run"].iloc[[row for row, _ in kept]].unique()
        splits = _split_runs([coords[path] for path in in_use], options.val_fraction, options.seed)
        if options.max_samples is not None and len(kept) > options.max_samples:
            picked = sorted(random.Random(options.seed).sample(range(len(kept)), options.max_samples))
            kept = [kept[i] for i in picked]
        records = pairs.iloc[[row for row, _ in kept]].to_dict("records")
        samples = tuple(
            _sample(coords[record["run"]], record, classes, splits[coords[record["run"]]])
            for record, (_, classes) in zip(records, kept, strict=True)
        )
        _check_targets(samples)
        return DatasetPlan(name, root, options, filters, samples, tuple(rejected), len(runs) - len(selected))

    def _label_contents(
        self, labels: Iterable[tuple[str, int, str, int]], progress: Callable[[int, int], None] | None = None
    ) -> dict[str, bytes | str]:
        """Label bytes by key, or why a label was not read, for (key, generation, CRC32C, size) as listed.

        A label over the cap is refused unread; others come from the cache when its copy has the CRC32C, else
        are downloaded (``workers`` at a time, each GET bounded by the cap) and cached, unless the services are
        read-only. ``progress`` as for :meth:`plan_dataset_fetch`.
        """
        cap = self.config.max_label_bytes
        found: dict[str, bytes | str] = {}
        missing: list[tuple[str, int, str]] = []
        total = 0
        for key, generation, crc, size in labels:
            total += 1
            if size > cap:
                found[key] = _too_large(f"{format_bytes(size)}", cap)
                continue
            data = self._cached_label(key, generation, crc, size)
            if data is not None:
                found[key] = data
            else:
                missing.append((key, generation, crc))
        done = total - len(missing)
        if progress is not None:
            progress(done, total)
        if not missing:
            return found
        bucket = self.config.ml_bucket
        client = self.client
        retry_s = self.config.request_retry_s
        if not self.read_only:
            # Made once here, not per label: a label's cache write is then one create, write and rename.
            (self.config.ml_root / TRAININGS / LABELS_CACHE).mkdir(parents=True, exist_ok=True)

        def download(label: tuple[str, int, str]) -> tuple[str, bytes | str]:
            key, generation, crc = label
            try:
                with storage_errors(bucket, "reading", key, generation, client):
                    # One byte past the cap tells an object that outgrew its listing from one that fits.
                    data = read_bounded(client, bucket, key, generation, cap, retry_s=retry_s, timeout=60)
            except ObjectNotFoundError:
                return key, "no longer in the bucket; refresh the inventory"
            except ObjectChangedError:
                return key, "changed since the inventory was scanned; refresh the inventory"
            if len(data) > cap:
                return key, _too_large(f"over {format_bytes(cap)}", cap)
            if _crc(data) != crc:
                return key, "changed since the inventory was scanned (CRC32C differs); refresh the inventory"
            if not self.read_only:
                write_atomic(self._label_cache_path(key, generation), data, durable=False)
            return key, data

        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="labels")
        try:
            for key, content in pool.map(download, missing):
                found[key] = content
                done += 1
                if progress is not None:
                    progress(done, total)
        finally:
            # On a failure (the storage unreachable, an interrupt) the labels not started are dropped, not each
            # tried and retried in turn before the error is raised.
            pool.shutdown(cancel_futures=True)
        return found

    def _label_cache_path(self, key: str, generation: int) -> Path:
        digest = hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()
        return self.config.ml_root / TRAININGS / LABELS_CACHE / f"{digest}-{generation}.txt"

    def _cached_label(self, key: str, generation: int, crc: str, size: int) -> bytes | None:
        """The cached copy of a label object, if there is one of its size (within the cap) with its CRC32C.

        The size is checked before reading, so an oversized file in the cache (left by an older version) is
        never loaded. An empty label needs no copy.
        """
        if size == 0 and crc == _crc(b""):
            return b""
        path = self._label_cache_path(key, generation)
        try:
            if size > self.config.max_label_bytes or path.stat().st_size != size:
                return None
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return data if _crc(data) == crc else None

    # -- execution -----------------------------------------------------------------------------

    def execute(
        self,
        plan: DatasetPlan,
        progress: Callable[[TransferProgress], None] | None = None,
        cancel: threading.Event | None = None,
        conflict: ConflictMode = "verify",
    ) -> DatasetResult:
        """Make the folder match the plan: fetch what is missing, delete what is no longer selected, manifest last.

        ``conflict`` says what to do with a file already at its place, as for every transfer (see
        :mod:`runtool.services.conflicts`): ``verify`` (the default) keeps it when it holds the planned object
        (size and CRC32C; a file the manifest recorded with this size and mtime is not read again), ``skip``
        keeps it when its size is right, ``overwrite`` fetches every file again. A file that is not kept is
        fetched again and replaces the one there (counted in :attr:`DatasetResult.replaced`).

        Only one execution per dataset name runs at a time, across processes: another waits up to
        :attr:`lock_wait_s` seconds for it (a cancel stops the wait), then is refused.

        Raises:
            ReadOnlyError: the services are read-only.
            DatasetBusyError: another fetch of the dataset is still running after the wait.
            DatasetError: a bad conflict mode, or the dataset folder cannot be written.
        """
        if self.read_only:
            raise ReadOnlyError("Dataset fetches are not allowed in read-only mode.")
        if conflict not in CONFLICT_MODES:
            raise DatasetError(f"Unknown conflict mode {conflict!r}; use one of {', '.join(CONFLICT_MODES)}.")
        cancel = cancel or threading.Event()
        lock = self.lock_path(plan.name)
        try:
            with exclusive_lock(lock, cancel, self.lock_wait_s):
                return self._execute_locked(plan, progress, cancel, conflict)
        except LockWaitStopped as exc:
            if cancel.is_set():
                return DatasetResult(plan, 0, 0, 0, 0, (), cancelled=True, bytes=0, seconds=0.0)
            raise DatasetBusyError(
                f"Another fetch of dataset {plan.name!r} is running (it holds {lock}); waited "
                f"{self.lock_wait_s:g} s. Try again when it has finished."
            ) from exc
        except OSError as exc:
            # Files are written through the transfer engine (which reports its own per-file errors) and here.
            where = f" ({exc.filename})" if exc.filename else ""
            raise DatasetError(f"Cannot write dataset {plan.name!r}: {exc.strerror or exc}{where}.") from exc

    def _execute_locked(
        self,
        plan: DatasetPlan,
        progress: Callable[[TransferProgress], None] | None,
        cancel: threading.Event,
        conflict: ConflictMode,
    ) -> DatasetResult:
        """:meth:`execute`'s work, under the dataset's lock."""
        started = time.perf_counter()
        root = plan.root
        recorded = _recorded(root)
        todo: list[PlannedFile] = []
        copies: list[tuple[PlannedFile, bytes]] = []  # labels the plan already read, checked, and cached
        empty: list[Path] = []
        found: dict[str, int] = {}  # target → mtime (ns) of each file known to be complete, for the manifest
        kept = 0
        for sample in plan.samples:
            targets = [
                (sample.frame_key, sample.image_path, sample.frame_size, sample.frame_crc32c, sample.frame_generation)
            ]
            if sample.label_key is not None:
                targets.append(
                    (
                        sample.label_key,
                        sample.label_path,
                        sample.label_size,
                        sample.label_crc32c,
                        sample.label_generation,
                    )
                )
            elif not _is_empty_file(root / sample.label_path):
                empty.append(root / sample.label_path)
            else:
                kept += 1
            for key, relative, size, crc, generation in targets:
                path = root / relative
                decision, mtime = _present(path, size, crc, recorded.get(relative), conflict)
                if mtime is not None:
                    kept += 1
                    # The manifest vouches only for checked files: one kept on its size alone is not recorded.
                    if conflict != "skip" or recorded.get(relative) == (crc, size, mtime):
                        found[relative] = mtime
                    continue
                file = PlannedFile(
                    key, path, size, crc, None, generation, "transfer", decision.reason, decision.replaces
                )
                cached = self._cached_label(key, generation, crc, size) if relative == sample.label_path else None
                if cached is not None:
                    copies.append((file, cached))
                else:
                    todo.append(file)
        copied = replaced = 0
        for file, data in copies:
            if cancel.is_set():
                break
            write_atomic(file.path, data)
            copied += 1
            replaced += file.replaces
        outcomes = self.engine.move_files(self.config.ml_bucket, todo, progress=progress, cancel=cancel)
        for path in empty:
            write_atomic(path, b"")
        failed = tuple(
            (str(o.file.path.relative_to(root)), o.error or o.status) for o in outcomes if o.status == "failed"
        )
        cancelled = cancel.is_set()
        removed = 0
        if not failed and not cancelled:
            for file in (*todo, *(file for file, _ in copies)):
                # Read once more, mtime first, so that a file changed since its download is not recorded as complete.
                mtime = _complete(file.path, file.size, file.crc32c, None)
                if mtime is not None:
                    found[str(file.path.relative_to(root))] = mtime
            removed = _remove_unlisted(root, plan.samples)
            _write_if_changed(root / "data.yaml", _data_yaml(plan))
            _write_if_changed(root / MANIFEST, _manifest(plan, found))
        return DatasetResult(
            plan,
            downloaded=sum(1 for o in outcomes if o.status == "transferred"),
            written=len(empty),
            kept=kept,
            removed=removed,
            failed=failed,
            cancelled=cancelled,
            bytes=sum(o.bytes for o in outcomes),
            seconds=time.perf_counter() - started,
            copied=copied,
            replaced=replaced + sum(1 for o in outcomes if o.status == "transferred" and o.file.replaces),
        )


def _select_runs(runs: pd.DataFrame, options: DatasetOptions) -> pd.DataFrame:
    day = runs["start_time"].dt.date
    mask = pd.Series(True, index=runs.index)
    if options.since is not None:
        mask &= day >= options.since
    if options.until is not None:
        mask &= day <= options.until
    if options.min_coverage_pct is not None:
        # NaN (no raw bags, so no coverage) compares False and is excluded, as documented.
        mask &= runs["coverage_pct"] >= options.min_coverage_pct
    return runs[mask]


def _run_paths(table: pd.DataFrame) -> pd.Series:
    """``cid/regionid/fieldid/twid/lbid/timestamp`` of every row, as one text column."""
    path = table[COORD_COLUMNS[0]].astype(str)
    for column in COORD_COLUMNS[1:]:
        path = path + "/" + table[column].astype(str)
    return path


def _ml_objects(entries: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The frames and labels of ``runs``, with their run path in a ``run`` column."""
    ml = entries[((entries["role"] == "ml") & entries["kind"].isin(["frame", "label"])).to_numpy()]
    run = _run_paths(ml)
    chosen = run.isin(_run_paths(runs)).to_numpy()
    return ml[chosen].assign(run=run[chosen])


_LABEL_COLUMNS = {"key": "label_key", "size": "label_size", "generation": "label_generation", "crc32c": "label_crc32c"}


def _pair(ml: pd.DataFrame) -> pd.DataFrame:
    """One row per frame, in key order, with its label's ``label_*`` columns (``label_key`` None: no label).

    A label belongs to the frame with its stem (the name without its suffix) in the same run and bag.
    """
    kind = ml["kind"].astype(str).map({"frame": "frames", "label": "labels"})
    bag = ml["bag"].astype(str)
    name = ml["name"].astype(str)
    folder = ml["run"] + "/" + bag + "/" + kind
    # A key is its folder, built by the layout once per folder, plus the file name.
    folders = pd.DataFrame({"folder": folder, "run": ml["run"], "bag": bag, "kind": kind}).drop_duplicates("folder")
    prefixes = {
        path: ml_file_key(RunCoordinate.parse(run), bag_dir, kind_dir, "")
        for path, run, bag_dir, kind_dir in folders.itertuples(index=False)
    }
    table = pd.DataFrame(
        {
            "run": ml["run"],
            "bag": bag,
            "name": name,
            "stem": name.str.rsplit(".", n=1).str[0],
            "key": folder.map(prefixes) + name,
            "size": ml["size"].astype("int64"),
            "generation": ml["generation"].fillna(0).astype("int64"),
            "crc32c": ml["crc32c"].fillna("").astype(str),
        }
    )
    is_frame = (kind == "frames").to_numpy()
    by_stem = ["run", "bag", "stem"]
    # A stem labelled twice keeps its last label, as a later object replaces an earlier one.
    labels = table[~is_frame].drop_duplicates(by_stem, keep="last")
    pairs = table[is_frame].merge(
        labels[[*by_stem, *_LABEL_COLUMNS]].rename(columns=_LABEL_COLUMNS), on=by_stem, how="left"
    )
    pairs = pairs.sort_values("key", ignore_index=True)
    has_label = pairs["label_key"].notna()
    return pairs.assign(
        label_key=pairs["label_key"].astype(object).where(has_label, None),
        label_size=pairs["label_size"].fillna(0).astype("int64"),
        label_generation=pairs["label_generation"].fillna(0).astype("int64"),
        label_crc32c=pairs["label_crc32c"].astype(object).where(has_label, _crc(b"")),
    )


def _split_runs(coords: Iterable[RunCoordinate], val_fraction: float, seed: int) -> dict[RunCoordinate, Split]:
    """Split by run, so no run is in both: rank runs by a seeded hash, the first share go to validation.

    A hash rank (not a shuffle of the list) keeps each run's rank when other runs join or leave the
    selection, so a changed selection moves as few runs between splits as possible.
    """
    ranked = sorted(
        coords,
        key=lambda c: hashlib.sha256(f"{seed}:{c.to_path_str()}".encode()).hexdigest(),
    )
    count = round(len(ranked) * val_fraction)
    if len(ranked) >= 2 and 0 < val_fraction < 1:
        count = min(max(count, 1), len(ranked) - 1)  # both splits non-empty whenever that is possible
    return {coord: ("val" if index < count else "train") for index, coord in enumerate(ranked)}


def _sample_name(coord: RunCoordinate, bag: str, stem: str, frame_key: str) -> str:
    """A sample's file name without suffix: ``<cid>_<regionid>_…_<timestamp>_<bag>_<stem>_<hash>``.

    The readable part joins the coordinate parts, the bag and the frame stem with ``_`` (characters other than
    letters, digits, ``.``, ``_`` and ``-`` become ``-``), so different sources can join to the same text
    (``client_002/region_east`` and ``client/002_region_east``); the hash of the frame's full object key tells
    them apart.
    """
    readable = "_".join([*coord.to_path_tuple()[:5], coord.timestamp, bag.lstrip("_"), stem])
    readable = _UNSAFE.sub("-", readable)[:_READABLE_MAX].lstrip(".-")
    digest = hashlib.sha256(frame_key.encode("utf-8", "surrogatepass")).hexdigest()[:_KEY_HASH_CHARS]
    return f"{readable}_{digest}"


def _sample(coord: RunCoordinate, pair: dict[str, Any], classes: tuple[int, ...], split: Split) -> DatasetSample:
    """The sample of one row of :func:`_pair`."""
    stem, _, suffix = pair["name"].rpartition(".")
    base = _sample_name(coord, pair["bag"], stem, pair["key"])
    suffix = _UNSAFE.sub("-", suffix)
    return DatasetSample(
        coordinate=coord,
        bag=pair["bag"],
        frame_key=pair["key"],
        frame_generation=pair["generation"],
        frame_crc32c=pair["crc32c"],
        frame_size=pair["size"],
        label_key=pair["label_key"],
        label_generation=pair["label_generation"],
        label_crc32c=pair["label_crc32c"],
        label_size=pair["label_size"],
        classes=classes,
        split=split,
        image_name=f"{base}.{suffix}",
        label_name=f"{base}.txt",
    )


def _check_targets(samples: Iterable[DatasetSample]) -> None:
    """Refuse a plan in which two frames would be written to one file (an image paired with another's label).

    Sample names are made unique by their key hash; this is the check that they are, before anything is written.
    """
    source: dict[str, str] = {}
    for sample in samples:
        for target in (sample.image_path, sample.label_path):
            other = source.setdefault(target, sample.frame_key)
            if other != sample.frame_key:
                raise DatasetError(
                    f"Two samples would be written to {target}: the frames {other} and {sample.frame_key}. "
                    "Nothing was fetched; please report this, with both keys."
                )


def _too_large(size: str, cap: int) -> str:
    """Why a label over the cap was not read."""
    return f"{size}, larger than the {format_bytes(cap)} a label may have (max_label_bytes); not read"


def _crc(data: bytes) -> str:
    checker = Crc32cChecker("")
    checker.update(data)
    return checker.value


def _recorded(root: Path) -> dict[str, tuple[str, int, int]]:
    """(CRC32C, size, mtime in ns) by target path, as the manifest of the last complete execution found each file."""
    try:
        samples = json.loads((root / MANIFEST).read_bytes())["samples"]
        return {
            part["target"]: (part["crc32c"], part["size"], part["mtime_ns"])
            for sample in samples
            for part in (sample["frame"], sample["label"])
            if "mtime_ns" in part
        }
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        # No manifest, or one damaged or from an older version: that only costs speed, as every file
        # present is then read and its CRC32C checked.
        return {}


def _present(
    path: Path, size: int, crc: str, recorded: tuple[str, int, int] | None, conflict: ConflictMode
) -> tuple[ConflictDecision, int | None]:
    """How ``conflict`` decides the file at ``path`` (see :meth:`DatasetService.execute`), and the file's mtime
    (ns) when it is kept."""
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        stat = None
    if stat is None or not S_ISREG(stat.st_mode):
        return decide(conflict, size, None, lambda: False, missing=NOT_IN_DATASET), None
    decision = decide(
        conflict,
        size,
        stat.st_size,
        # The mtime was taken before the file is read, so a change made while it is checked is seen next time.
        lambda: recorded == (crc, size, stat.st_mtime_ns) or file_crc32c(path) == crc,
        missing=NOT_IN_DATASET,
    )
    return decision, (stat.st_mtime_ns if decision.action == "skip" else None)


def _complete(path: Path, size: int, crc: str, recorded: tuple[str, int, int] | None) -> int | None:
    """The file's mtime (ns) if it already holds the object (size and CRC32C, so it needs no download), else None.

    A file with the size and mtime that the last manifest recorded for this CRC32C is not read again (the
    quick check of rsync and make): a file only reaches its final path complete (temp file + rename), and
    writing to it afterwards changes its mtime. Any other file of the right size is read and checked.
    """
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not S_ISREG(stat.st_mode) or stat.st_size != size:
        return None
    # The mtime is taken before the file is read, so a change made while it is checked is seen next time.
    if recorded == (crc, size, stat.st_mtime_ns) or file_crc32c(path) == crc:
        return stat.st_mtime_ns
    return None


def _is_empty_file(path: Path) -> bool:
    return path.is_file() and path.stat().st_size == 0


def _remove_unlisted(root: Path, samples: Iterable[DatasetSample]) -> int:
    """Delete the image and label files of samples no longer selected; return how many were removed."""
    keep = {p for s in samples for p in (s.image_path, s.label_path)}
    removed = 0
    for folder in ("images", "labels"):
        for split in SPLITS:
            directory = root / folder / split
            if not directory.is_dir():
                continue
            for entry in os.scandir(directory):
                if entry.is_file() and f"{folder}/{split}/{entry.name}" not in keep:
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically unless the file already holds exactly it (compared only when the
    sizes agree), so tools watching the dataset's mtimes see no change when there is none."""
    data = text.encode("utf-8")
    try:
        same = path.stat().st_size == len(data) and path.read_bytes() == data
    except FileNotFoundError:
        same = False
    if not same:
        write_atomic(path, data)


def _data_yaml(plan: DatasetPlan) -> str:
    """The YOLO dataset file; ``nc``/``names`` only when classes are known (ids up to the largest seen)."""
    data: dict[str, Any] = {"path": str(plan.root), "train": "images/train", "val": "images/val"}
    seen = set(plan.class_ids) | set(plan.options.classes or ())
    if seen:
        count = max(seen) + 1
        data["nc"] = count
        data["names"] = {i: f"class_{i}" for i in range(count)}
    return yaml.safe_dump(data, sort_keys=False)


def _manifest(plan: DatasetPlan, mtimes: dict[str, int]) -> str:
    """The manifest, with each file's mtime as it was found complete; one sample per line."""
    head = {
        "name": plan.name,
        "filters": plan.filters.to_dict(),
        "options": plan.options.to_dict(),
        "totals": plan.to_dict()["samples"] | {"runs": plan.runs, "bytes": plan.bytes},
        "rejected": [{"key": key, "reason": reason} for key, reason in plan.rejected],
    }
    lines = []
    for sample in plan.samples:
        entry = sample.to_dict()
        for part in (entry["frame"], entry["label"]):
            if part["target"] in mtimes:
                part["mtime_ns"] = mtimes[part["target"]]
        lines.append(json.dumps(entry))
    # Samples are encoded one by one without indent (json's fast C encoder), then set into the indented head:
    # "...\n}" becomes "...,\n "samples": [\n  {...},\n  {...}\n ]\n}".
    samples = ",\n  ".join(lines)
    return json.dumps(head, indent=1)[: -len("\n}")] + f',\n "samples": [\n  {samples}\n ]\n}}\n'
