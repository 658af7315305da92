"""The cloud inventory: one flat, sharded, parallel listing per bucket, kept as a Parquet cache.

The cache is one Parquet file holding every raw bag, every ML frame and label, and every object whose
key does not fit the layout (an anomaly, with its reason). It is replaced atomically, so a failed or
cancelled scan never touches the previous inventory. Writers take turns under a cross-process lock beside the
cache, and a refresh of one prefix merges into the cache as it is on disk then, so refreshes of different
prefixes in different processes all land.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api.types import union_categoricals

from runtool.config import RuntoolConfig
from runtool.errors import ReadOnlyError, RuntoolError
from runtool.files import LockWaitStopped, exclusive_lock, replacing
from runtool.models import LEVELS, Filters
from runtool.models.coordinates import check_part, parse_timestamp
from runtool.storage import (
    Anomaly,
    ObjectRecord,
    RawBagEntry,
    StorageError,
    iter_objects,
    list_prefixes,
    ml_prefix,
    parse_ml_key,
    parse_raw_key,
    raw_prefix,
)

if TYPE_CHECKING:
    from google.cloud import storage  # the client is built on first refresh (ServiceContainer.make_client)

__all__ = [
    "CACHE_VERSION",
    "CacheInfo",
    "CloudInventoryService",
    "InventoryError",
    "InventorySnapshot",
    "RefreshCancelled",
    "RefreshProgress",
]

log = logging.getLogger(__name__)

CACHE_VERSION = "2"
CACHE_FILE = "inventory.parquet"
LOCK_FILE = ".inventory.lock"
COORD_COLUMNS: tuple[str, ...] = (*LEVELS, "timestamp")
Role = Literal["raw", "ml"]
# How deep shard discovery may go (levels below the bucket's coordinate root) and how many shards it aims for.
_MAX_SHARD_DEPTH = 3


class InventoryError(RuntoolError):
    """A refresh failed or the cache cannot be used; the previous inventory is kept."""


class RefreshCancelled(InventoryError):
    """The refresh was cancelled; the previous inventory is kept."""


@dataclass(frozen=True)
class RefreshProgress:
    """Reported while a refresh runs."""

    objects: int
    shards_done: int
    shards_total: int
    stage: str


@dataclass(frozen=True)
class CacheInfo:
    """What the loaded inventory holds and how old it is."""

    path: Path
    exists: bool
    scanned_at: datetime | None
    objects: int
    runs: int
    anomalies: int
    size_bytes: int
    raw_bucket: str
    ml_bucket: str
    warning: str | None = None

    @property
    def age_seconds(self) -> float | None:
        if self.scanned_at is None:
            return None
        return (datetime.now(UTC) - self.scanned_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "exists": self.exists,
            "scanned_at": self.scanned_at.isoformat() if self.scanned_at else None,
            "age_seconds": self.age_seconds,
            "objects": self.objects,
            "runs": self.runs,
            "anomalies": self.anomalies,
            "size_bytes": self.size_bytes,
            "raw_bucket": self.raw_bucket,
            "ml_bucket": self.ml_bucket,
            "warning": self.warning,
        }


class InventorySnapshot:
    """An immutable inventory: the object table plus derived per-run totals (computed once)."""

    def __init__(self, objects: pd.DataFrame, scanned_at: datetime) -> None:
        self.objects = objects
        self.scanned_at = scanned_at
        self._runs: pd.DataFrame | None = None
        self._lock = threading.Lock()

    @property
    def entries(self) -> pd.DataFrame:
        """Objects that fit the layout."""
        return self.objects[self.objects["reason"].isna()]

    @property
    def anomalies(self) -> pd.DataFrame:
        """Objects that do not fit the layout: role, key (in ``name``), size and reason."""
        found = self.objects[self.objects["reason"].notna()]
        return found[["role", "name", "size", "reason"]].rename(columns={"name": "key"}).reset_index(drop=True)

    def runs(self) -> pd.DataFrame:
        """One row per run seen in either bucket.

        Columns: the six coordinate parts, ``start_time`` (UTC), ``raw_bags``, ``raw_bytes``,
        ``ml_bags``, ``ml_frames``, ``ml_labels``, ``ml_bytes``.
        """
        with self._lock:
            if self._runs is None:
                self._runs = _run_totals(self.entries)
            return self._runs


def _run_totals(entries: pd.DataFrame) -> pd.DataFrame:
    keys = list(COORD_COLUMNS)
    frame = entries.assign(
        is_bag=(entries["kind"] == "bag").astype("int64"),
        is_frame=(entries["kind"] == "frame").astype("int64"),
        is_label=(entries["kind"] == "label").astype("int64"),
    )
    frame = frame.assign(
        bag_bytes=frame["size"] * frame["is_bag"],
        ml_bytes=frame["size"] * (1 - frame["is_bag"]),
        ml_bag=frame["bag"].where(frame["role"] == "ml"),
    )
    grouped = frame.groupby(keys, observed=True, sort=False)
    runs = grouped.agg(
        raw_bags=("is_bag", "sum"),
        raw_bytes=("bag_bytes", "sum"),
        ml_bags=("ml_bag", "nunique"),
        ml_frames=("is_frame", "sum"),
        ml_labels=("is_label", "sum"),
        ml_bytes=("ml_bytes", "sum"),
    ).reset_index()
    for column in keys:
        runs[column] = runs[column].astype(str)
    stamps = runs["timestamp"].str.replace("_", "-", regex=False)
    runs.insert(6, "start_time", pd.to_datetime(stamps, format="%Y-%m-%dT%H:%M:%SZ", utc=True))
    return runs.sort_values([*LEVELS, "start_time"], ignore_index=True)


_COLUMNS = ("role", *COORD_COLUMNS, "bag", "kind", "name", "size", "generation", "crc32c", "reason")


def _empty_objects() -> pd.DataFrame:
    return _objects_frame({name: [] for name in _COLUMNS})


def _objects_frame(columns: dict[str, list[Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(columns)
    for name in ("role", *COORD_COLUMNS, "kind"):
        frame[name] = frame[name].astype("category")
    for name in ("size", "generation"):
        frame[name] = frame[name].astype("int64")
    for name in ("bag", "name", "crc32c", "reason"):
        # Text columns stay text even when empty (an empty list would make them float).
        frame[name] = frame[name].astype(object)
    return frame


def _records_to_columns(role: Role, records: Iterable[ObjectRecord]) -> dict[str, list[Any]]:
    """Parse listed objects into table columns; keys that do not fit become anomaly rows."""
    columns: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
    parse = parse_raw_key if role == "raw" else parse_ml_key
    for record in records:
        parsed = parse(record.name)
        columns["role"].append(role)
        columns["size"].append(record.size)
        columns["generation"].append(record.generation)
        columns["crc32c"].append(record.crc32c)
        if isinstance(parsed, Anomaly):
            for part in COORD_COLUMNS:
                columns[part].append(None)
            columns["bag"].append(None)
            columns["kind"].append("anomaly")
            columns["name"].append(record.name)
            columns["reason"].append(parsed.reason)
            continue
        for part, value in zip(COORD_COLUMNS, parsed.coordinate.to_path_tuple(), strict=True):
            columns[part].append(value)
        if isinstance(parsed, RawBagEntry):
            columns["bag"].append(parsed.bag[: -len(".bag")])
            columns["kind"].append("bag")
            columns["name"].append(parsed.bag)
        else:
            columns["bag"].append(parsed.bag_dir)
            columns["kind"].append("frame" if parsed.kind == "frames" else "label")
            columns["name"].append(parsed.name)
        columns["reason"].append(None)
    return columns


class CloudInventoryService:
    """Lists the raw and ML buckets and answers from an in-memory, Parquet-cached table."""

    def __init__(
        self,
        config: RuntoolConfig,
        client_factory: Callable[[], storage.Client],
        read_only: bool = False,
    ) -> None:
        self.config = config
        self._client_factory = client_factory
        self._client: storage.Client | None = None
        self.read_only = read_only
        self.cache_path = config.cache_dir / CACHE_FILE
        self.lock_path = config.cache_dir / LOCK_FILE
        self._snapshot: InventorySnapshot | None = None
        self._stamp: tuple[int, int, int] | None = None
        """(inode, size, mtime) of the cache file the snapshot was read from or written to."""
        self._loaded = False
        self.warning: str | None = None
        self._refresh_lock = threading.Lock()
        self.listeners: list[Callable[[Filters | None], None]] = []

    # -- reading -------------------------------------------------------------------------------

    @property
    def client(self) -> storage.Client:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    @property
    def snapshot(self) -> InventorySnapshot:
        """The current inventory (empty when nothing was scanned yet)."""
        if not self._loaded:
            self._snapshot = self._load()
            self._loaded = True
        if self._snapshot is None:
            return InventorySnapshot(_empty_objects(), datetime.fromtimestamp(0, UTC))
        return self._snapshot

    @property
    def has_data(self) -> bool:
        """Whether a usable inventory is loaded (a scan happened and its cache was readable)."""
        self.snapshot  # noqa: B018 - loads the cache on first use
        return self._snapshot is not None

    def _load(self) -> InventorySnapshot | None:
        """The cache as a snapshot, or None (with :attr:`warning` set) when it is missing or cannot be used."""
        try:
            # Stamped before reading: if the file is replaced meanwhile, the stamp is the older one's, so the
            # next merge reads the file again rather than missing the change.
            stamp = _file_stamp(self.cache_path)
            table = pq.read_table(self.cache_path)
            info = _cache_metadata(table.schema.metadata)
            objects = table.to_pandas()
            if info["version"] == CACHE_VERSION and set(objects.columns) == set(_COLUMNS):
                _check_rows(objects)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, pa.ArrowException) as exc:
            # ValueError covers bad JSON, text and dates as well as metadata of the wrong shape.
            self.warning = f"The inventory cache {self.cache_path} is unreadable ({exc}); it will be rebuilt."
            log.warning(self.warning)
            return None
        if (
            info["version"] != CACHE_VERSION
            or set(objects.columns) != set(_COLUMNS)
            or not all(pd.api.types.is_integer_dtype(objects[name]) for name in ("size", "generation"))
        ):
            self.warning = f"The inventory cache {self.cache_path} has an old format; it will be rebuilt."
            log.warning(self.warning)
            return None
        if (info["raw_bucket"], info["ml_bucket"]) != (self.config.raw_bucket, self.config.ml_bucket):
            self.warning = (
                f"The inventory cache lists buckets {info['raw_bucket']} / {info['ml_bucket']}, "
                f"not the configured {self.config.raw_bucket} / {self.config.ml_bucket}; refresh to scan them."
            )
            log.warning(self.warning)
            return None
        self._stamp = stamp
        return InventorySnapshot(objects, info["scanned_at"])

    def cache_info(self) -> CacheInfo:
        snap = self.snapshot
        anomalies = int(snap.objects["reason"].notna().sum())
        return CacheInfo(
            path=self.cache_path,
            exists=self.cache_path.exists(),
            scanned_at=snap.scanned_at if self._snapshot is not None else None,
            objects=len(snap.objects) - anomalies,
            runs=len(snap.runs()),
            anomalies=anomalies,
            size_bytes=self.cache_path.stat().st_size if self.cache_path.exists() else 0,
            raw_bucket=self.config.raw_bucket,
            ml_bucket=self.config.ml_bucket,
            warning=self.warning,
        )

    # -- scanning ------------------------------------------------------------------------------

    def refresh(
        self,
        filters: Filters | None = None,
        progress: Callable[[RefreshProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> CacheInfo:
        """Scan both buckets (or just the part a selection covers) and replace the cache atomically.

        The scan runs unlocked; the write takes the cache's cross-process lock, and a prefix's rows are merged
        into the cache as it is on disk at that moment (re-read if another process replaced it since it was
        loaded), so concurrent refreshes of different prefixes all land.

        Raises:
            ReadOnlyError: the services run read-only.
            RefreshCancelled: ``cancel`` was set; nothing changed.
            InventoryError: a bucket is missing, refuses access or the service failed, or the cache cannot be
                written; nothing changed.
        """
        if self.read_only:
            raise ReadOnlyError("Refreshing the inventory is not allowed in read-only mode.")
        filters = filters or Filters()
        with self._refresh_lock:
            previous = self._snapshot if self.has_data else None
            partial = previous is not None and not filters.is_empty()
            scope = filters if partial else Filters()
            started = datetime.now(UTC)
            scan = _Scan(self.client, self.config, cancel, progress)
            try:
                columns = scan.run([("raw", raw_prefix(scope)), ("ml", ml_prefix(scope))])
            except StorageError as exc:
                kept = " The previous inventory is kept." if previous is not None else ""
                raise InventoryError(f"Inventory refresh failed: {exc}.{kept}") from exc
            fresh = _objects_frame(columns)
            try:
                with exclusive_lock(self.lock_path, cancel):
                    if partial:
                        assert previous is not None
                        base = self._latest(previous)
                        fresh = _merge(base.objects, fresh, scope)
                        started = base.scanned_at
                    snapshot = InventorySnapshot(fresh, started)
                    self._write(snapshot)
            except LockWaitStopped as exc:
                raise RefreshCancelled("Inventory refresh cancelled; the previous inventory is kept.") from exc
            except OSError as exc:
                raise InventoryError(
                    f"Cannot write the inventory cache {self.cache_path}: {exc.strerror or exc}. "
                    "The previous inventory is kept."
                ) from exc
            self._snapshot, self._loaded, self.warning = snapshot, True, None
        for listener in list(self.listeners):
            listener(scope if partial else None)
        return self.cache_info()

    def _latest(self, loaded: InventorySnapshot) -> InventorySnapshot:
        """The cache as it is on disk now (``loaded`` unless another process replaced the file since).

        Called under the cache lock. A replacement that cannot be used (unreadable, other buckets) is set aside
        for ``loaded``, as a refresh without a usable cache would have been.
        """
        try:
            if _file_stamp(self.cache_path) == self._stamp:
                return loaded
        except FileNotFoundError:
            return loaded
        return self._load() or loaded

    def _write(self, snapshot: InventorySnapshot) -> None:
        """Write the cache to a temporary file beside it, then rename it over the old one (under the cache lock)."""
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        info = {
            "version": CACHE_VERSION,
            "raw_bucket": self.config.raw_bucket,
            "ml_bucket": self.config.ml_bucket,
            "scanned_at": snapshot.scanned_at.isoformat(),
        }
        table = pa.Table.from_pandas(snapshot.objects, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), "runtool": json.dumps(info)})
        with replacing(self.cache_path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        self._stamp = _file_stamp(self.cache_path)


def _file_stamp(path: Path) -> tuple[int, int, int]:
    """(inode, size, mtime in ns): changes whenever the cache file is replaced."""
    stat = os.stat(path)
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _cache_metadata(metadata: dict[bytes, bytes] | None) -> dict[str, Any]:
    """The cache's ``runtool`` metadata with ``scanned_at`` parsed; ValueError says what is wrong with it."""
    text = (metadata or {}).get(b"runtool")
    if text is None:
        raise ValueError("it has no runtool metadata")
    info = json.loads(text)
    if not isinstance(info, dict):
        raise ValueError(f"its metadata is a {type(info).__name__}, not an object")
    for key in ("version", "raw_bucket", "ml_bucket", "scanned_at"):
        if not isinstance(info.get(key), str):
            raise ValueError(f"its metadata {key!r} is {info.get(key)!r}, not text")
    scanned_at = datetime.fromisoformat(info["scanned_at"])
    if scanned_at.tzinfo is None:
        # A naive time cannot be compared with the current UTC time, which the cache's age needs.
        raise ValueError(f"its scan time {info['scanned_at']!r} has no time zone")
    return {**info, "scanned_at": scanned_at}


_KINDS = frozenset({"bag", "frame", "label", "anomaly"})


def _check_rows(objects: pd.DataFrame) -> None:
    """ValueError naming the first value of the cache a scan could not have written (checked per distinct value)."""
    for column, allowed in (("role", {"raw", "ml"}), ("kind", _KINDS)):
        strange = set(objects[column].dropna().unique()) - allowed
        if strange:
            raise ValueError(f"its {column} column holds {sorted(map(str, strange))[0]!r}")
    for column in COORD_COLUMNS:
        for value in objects[column].dropna().unique():
            if not isinstance(value, str):
                raise ValueError(f"its {column} column holds {value!r}, not text")
            if column == "timestamp":
                parse_timestamp(value)
            else:
                check_part(column, value)
    if not pd.api.types.is_string_dtype(objects["name"]) or objects["name"].isna().any():
        raise ValueError("its name column holds values that are not object names")


def _merge(previous: pd.DataFrame, fresh: pd.DataFrame, scope: Filters) -> pd.DataFrame:
    """Replace the rows under the scanned prefix with the fresh ones."""
    parts = scope.prefix_parts()
    inside = pd.Series(True, index=previous.index)
    for column, value in zip(COORD_COLUMNS, parts, strict=False):
        inside &= previous[column] == value
    prefixes = (raw_prefix(scope), ml_prefix(scope))
    stray = previous["reason"].notna() & previous["name"].str.startswith(prefixes)
    kept = previous[~(inside | stray)]
    merged: dict[str, Any] = {}
    if fresh.empty or kept.empty:
        return (kept if fresh.empty else fresh).reset_index(drop=True)
    for name in _COLUMNS:
        if isinstance(kept[name].dtype, pd.CategoricalDtype):
            merged[name] = union_categoricals([kept[name], fresh[name]], ignore_order=True)
        else:
            merged[name] = pd.concat([kept[name], fresh[name]], ignore_index=True)
    return pd.DataFrame(merged)


class _Scan:
    """One refresh: discovers shards per bucket, lists them in parallel, parses the keys."""

    def __init__(
        self,
        client: storage.Client,
        config: RuntoolConfig,
        cancel: threading.Event | None,
        progress: Callable[[RefreshProgress], None] | None,
    ) -> None:
        self.client = client
        self.config = config
        self.cancel = cancel or threading.Event()
        self.stop = threading.Event()
        self.progress = progress
        self.objects = 0
        self.shards_done = 0
        self.shards_total = 0
        self._lock = threading.Lock()

    def _report(self, stage: str, objects: int = 0, shards: int = 0) -> None:
        with self._lock:
            self.objects += objects
            self.shards_done += shards
            snapshot = RefreshProgress(self.objects, self.shards_done, self.shards_total, stage)
        if self.progress is not None:
            self.progress(snapshot)

    def _check_cancel(self) -> None:
        if self.stop.is_set() and not self.cancel.is_set():
            raise RefreshCancelled("stopped because another shard failed")
        if self.cancel.is_set():
            raise RefreshCancelled("Inventory refresh cancelled; the previous inventory is kept.")

    def run(self, scopes: list[tuple[Role, str]]) -> dict[str, list[Any]]:
        columns: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
        workers = self.config.list_workers
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inventory") as pool:
            shards: list[tuple[Role, str, str]] = []
            for role, prefix in scopes:
                bucket = self.config.raw_bucket if role == "raw" else self.config.ml_bucket
                leaves, stray = self._discover(pool, bucket, prefix, workers * 2)
                _extend(columns, _records_to_columns(role, stray))
                shards.extend((role, bucket, leaf) for leaf in leaves)
            self.shards_total = len(shards)
            self._report("listing")
            futures = [pool.submit(self._list_shard, role, bucket, leaf) for role, bucket, leaf in shards]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((future for future in done if future.exception() is not None), None)
            if failed is not None:
                # Stop the other shards at their next page; the scan as a whole has failed.
                self.stop.set()
                for future in futures:
                    future.cancel()
                raise failed.exception()  # type: ignore[misc]
            self._check_cancel()
            for future in futures:
                _extend(columns, future.result())
        self._report("done")
        return columns

    def _discover(
        self, pool: ThreadPoolExecutor, bucket: str, prefix: str, target: int
    ) -> tuple[list[str], list[ObjectRecord]]:
        """Split ``prefix`` into sub-prefixes by delimiter listings until there are ``target`` of them.

        Objects sitting directly at a discovered level are returned too (they are never in a shard).
        """
        leaves, stray = [prefix], []
        for _ in range(_MAX_SHARD_DEPTH):
            if len(leaves) >= target:
                break
            self._check_cancel()
            listings: list[Future[tuple[list[str], list[ObjectRecord]]]] = [
                pool.submit(list_prefixes, self.client, bucket, leaf, self.config.request_retry_s) for leaf in leaves
            ]
            children: list[str] = []
            for future in listings:
                subprefixes, objects = future.result()
                children.extend(subprefixes)
                stray.extend(objects)
            if not children:
                return [], stray
            leaves = children
        return leaves, stray

    def _list_shard(self, role: Role, bucket: str, prefix: str) -> dict[str, list[Any]]:
        def on_page(count: int) -> None:
            self._check_cancel()
            self._report("listing", objects=count)

        records = list(iter_objects(self.client, bucket, prefix, on_page, self.config.request_retry_s))
        self._report("listing", shards=1)
        return _records_to_columns(role, records)


def _extend(columns: dict[str, list[Any]], more: dict[str, list[Any]]) -> None:
    for name, values in more.items():
        columns[name].extend(values)
