"""The cloud inventory: one flat, sharded, parallel listing per bucket, kept as a Parquet cache.

The cache is one Parquet file holding every raw bag, every ML frame and label, and every object whose
key does not fit the layout (an anomaly, with its reason), plus a small delta file beside it: the fresh rows of
the prefixes refreshed since the big file was written, which replace that file's rows under those prefixes when
the cache is read. A one-run refresh rewrites only the delta (milliseconds, where the big file of a
100,000-run fleet takes seconds); once the delta holds many prefixes or rows, a refresh writes the big file
again and the delta goes. The delta names the big file it belongs to (an id written into both), so a delta left
over from before a full rewrite is ignored. Each file is replaced atomically, so a failed or cancelled scan
never touches the previous inventory. Writers take turns under a cross-process lock beside the cache, and a
refresh of one prefix merges into the cache as it is on disk then, so refreshes of different prefixes in
different processes all land.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
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
DELTA_FILE = "inventory.delta.parquet"
LOCK_FILE = ".inventory.lock"
COORD_COLUMNS: tuple[str, ...] = (*LEVELS, "timestamp")
Role = Literal["raw", "ml"]
# A refresh writes the whole cache again instead of the delta beyond this many prefixes (each is a mask over
# every row when the cache is read) or rows (a share of the cache, at least _DELTA_MIN_ROWS).
_DELTA_MAX_SCOPES = 64
_DELTA_MIN_ROWS, _DELTA_ROW_SHARE = 20_000, 0.05
_MAX_SLICES = 64
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
    """The cache file and its delta."""
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

    def __init__(self, objects: pd.DataFrame, scanned_at: datetime, runs: pd.DataFrame | None = None) -> None:
        self.objects = objects
        self.scanned_at = scanned_at
        self._runs = runs
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
                self._runs = _run_totals(self.objects)
            return self._runs


def _codes(column: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes and the values they stand for (a categorical's own; others are factorised)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(), column.cat.categories
    codes, uniques = pd.factorize(column.to_numpy())
    return codes, pd.Index(uniques)


def _run_totals(objects: pd.DataFrame) -> pd.DataFrame:
    """Per-run totals of the objects that fit the layout, on integer codes (no groupby over a million rows)."""
    rows = np.flatnonzero(objects["reason"].isna().to_numpy())
    run_ids = np.zeros(len(rows), dtype=np.int64)
    levels = []
    span = 1
    for column in COORD_COLUMNS:
        codes, values = _codes(objects[column])
        codes = codes[rows].astype(np.int64)
        levels.append((codes, values))
        if span * (len(values) + 1) >= 2**62:
            # Compacted before the combined code could overflow: then it stays below the number of rows.
            run_ids, _ = pd.factorize(run_ids)
            span = len(rows) + 1
        run_ids = run_ids * (len(values) + 1) + codes
        span *= len(values) + 1
    run_ids, _ = pd.factorize(run_ids)
    count = int(run_ids.max()) + 1 if len(run_ids) else 0
    kind_codes, kinds = _codes(objects["kind"])
    kind = kind_codes[rows]
    role_codes, roles = _codes(objects["role"])
    is_ml = role_codes[rows] == (roles.get_loc("ml") if "ml" in roles else -2)
    size = objects["size"].to_numpy()[rows]

    def per_run(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        chosen = None if weights is None else weights[mask]
        return np.bincount(run_ids[mask], weights=chosen, minlength=count).astype(np.int64)

    def is_kind(name: str) -> np.ndarray:
        return kind == (kinds.get_loc(name) if name in kinds else -2)

    bag = is_kind("bag")
    bag_codes, _ = objects["bag"].take(rows[is_ml]).factorize()
    ml_bag_pairs = np.unique(run_ids[is_ml] * (int(bag_codes.max()) + 2 if len(bag_codes) else 1) + bag_codes + 1)
    first = np.zeros(count, dtype=np.int64)
    first[run_ids[::-1]] = np.arange(len(run_ids))[::-1]
    runs = pd.DataFrame({
        column: np.asarray(values, dtype=object)[codes[first]] for column, (codes, values) in zip(
            COORD_COLUMNS, levels, strict=True)
    })
    for column in COORD_COLUMNS:
        runs[column] = runs[column].astype(str)
    runs["raw_bags"] = per_run(bag)
    runs["raw_bytes"] = per_run(bag, size)
    runs["ml_bags"] = np.bincount(
        ml_bag_pairs // (int(bag_codes.max()) + 2 if len(bag_codes) else 1), minlength=count
    ).astype(np.int64)
    runs["ml_frames"] = per_run(is_kind("frame"))
    runs["ml_labels"] = per_run(is_kind("label"))
    runs["ml_bytes"] = per_run(~bag, size)
    stamp_codes, stamps = pd.factorize(runs["timestamp"].to_numpy())
    parsed = pd.to_datetime(pd.Index(stamps, dtype=object).str.replace("_", "-", regex=False),
                            format="%Y-%m-%dT%H:%M:%SZ", utc=True)
    runs.insert(6, "start_time", parsed.take(stamp_codes) if len(stamps) else pd.to_datetime([], utc=True))
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
        # Text columns stay text even when empty (an empty list would make them float), of the type a read of the
        # cache gives them: concatenating other types would convert a million values on a one-run refresh.
        frame[name] = frame[name].astype("str")
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
        self.delta_path = config.cache_dir / DELTA_FILE
        self.lock_path = config.cache_dir / LOCK_FILE
        self._snapshot: InventorySnapshot | None = None
        self._stamp: tuple[tuple[int, int, int], tuple[int, int, int] | None] | None = None
        """(inode, size, mtime) of the cache file and of the delta the snapshot was read from or written to."""
        self._base_id: str | None = None
        """The id of the cache file the snapshot was read from or written to (None: no delta may refer to it)."""
        self._delta = _Delta(_empty_objects(), [])
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
            stamp = (_file_stamp(self.cache_path), _delta_stamp(self.delta_path))
            table = pq.read_table(self.cache_path)
            info = _cache_metadata(table.schema.metadata)
            objects = table.to_pandas()
            delta = _Delta(_empty_objects(), [])
            if info["version"] == CACHE_VERSION and set(objects.columns) == set(_COLUMNS):
                _check_rows(objects)
                delta = _read_delta(self.delta_path, info.get("base_id"))
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
        self._stamp, self._base_id, self._delta = stamp, info.get("base_id"), delta
        if delta.scopes:
            objects = _merge(objects, delta.objects, delta.scopes)
        return InventorySnapshot(objects, info["scanned_at"])

    def cache_stamp(self) -> CacheStamp:
        """This service's :func:`cache_stamp`."""
        return cache_stamp(self.config.cache_dir)

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
            size_bytes=sum(path.stat().st_size for path in (self.cache_path, self.delta_path) if path.exists()),
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
                    self._remove_stale_temporaries()
                    parts = scope.prefix_parts()
                    if partial and parts:
                        assert previous is not None
                        base = self._latest(previous)
                        snapshot = InventorySnapshot(
                            _merge(base.objects, fresh, [parts]), base.scanned_at,
                            _replace_runs(base.runs(), fresh, parts),
                        )
                        self._write_delta(snapshot, fresh, parts)
                    else:
                        if partial:
                            assert previous is not None
                            base = self._latest(previous)
                            fresh, started = _merge(base.objects, fresh, [parts]), base.scanned_at
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

    def _remove_stale_temporaries(self) -> None:
        """Remove the temporary files of cache writes whose process was killed (under the cache lock, when no
        other process writes one): each is as large as what it was writing, a whole cache at fleet scale."""
        for path in (self.cache_path, self.delta_path):
            for stale in path.parent.glob(f".{path.name}.tmp-*"):
                stale.unlink(missing_ok=True)

    def _latest(self, loaded: InventorySnapshot) -> InventorySnapshot:
        """The cache as it is on disk now (``loaded`` unless another process replaced the file since).

        Called under the cache lock. A replacement that cannot be used (unreadable, other buckets) is set aside
        for ``loaded``, as a refresh without a usable cache would have been.
        """
        try:
            if (_file_stamp(self.cache_path), _delta_stamp(self.delta_path)) == self._stamp:
                return loaded
        except FileNotFoundError:
            return loaded
        replaced = self._load()
        if replaced is None:
            self._base_id = None  # the next write is a whole cache: no delta can refer to the unusable file
        return replaced or loaded

    def _write(self, snapshot: InventorySnapshot) -> None:
        """Write the cache to a temporary file beside it, then rename it over the old one (under the cache lock)."""
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        base_id = secrets.token_hex(8)
        info = {
            "version": CACHE_VERSION,
            "raw_bucket": self.config.raw_bucket,
            "ml_bucket": self.config.ml_bucket,
            "scanned_at": snapshot.scanned_at.isoformat(),
            "base_id": base_id,
        }
        with replacing(self.cache_path) as tmp:
            pq.write_table(_with_metadata(snapshot.objects, info), tmp, compression="zstd")
        # A delta left behind (a crash before this unlink) names the previous id and is ignored on reading.
        self.delta_path.unlink(missing_ok=True)
        self._base_id, self._delta = base_id, _Delta(_empty_objects(), [])
        self._stamp = (_file_stamp(self.cache_path), None)

    def _write_delta(self, snapshot: InventorySnapshot, fresh: pd.DataFrame, parts: tuple[str, ...]) -> None:
        """Record a refreshed prefix in the delta file (under the cache lock); the whole cache is written instead
        when there is no usable cache file to refer to or the delta has grown too big."""
        scopes = [*(scope for scope in self._delta.scopes if scope[: len(parts)] != parts), parts]
        rows = _merge(self._delta.objects, fresh, [parts])
        limit = max(_DELTA_MIN_ROWS, int(_DELTA_ROW_SHARE * len(snapshot.objects)))
        if self._base_id is None or len(scopes) > _DELTA_MAX_SCOPES or len(rows) > limit:
            self._write(snapshot)
            return
        info = {"version": CACHE_VERSION, "base_id": self._base_id, "scopes": [list(scope) for scope in scopes]}
        with replacing(self.delta_path) as tmp:
            pq.write_table(_with_metadata(rows, info), tmp, compression="zstd")
        self._delta = _Delta(rows, scopes)
        self._stamp = (_file_stamp(self.cache_path), _delta_stamp(self.delta_path))


@dataclass(frozen=True)
class _Delta:
    """The delta file's rows and the prefixes (coordinate parts) they replace in the cache file."""

    objects: pd.DataFrame
    scopes: list[tuple[str, ...]]


def _with_metadata(objects: pd.DataFrame, info: dict[str, Any]) -> pa.Table:
    table = pa.Table.from_pandas(objects, preserve_index=False)
    return table.replace_schema_metadata({**(table.schema.metadata or {}), "runtool": json.dumps(info)})


CacheStamp = tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]


def cache_stamp(cache_dir: Path) -> CacheStamp:
    """(inode, size, mtime in ns) of the inventory cache file in ``cache_dir`` and of its delta, None for one
    that does not exist.

    Any write of the cache by any process (a full refresh replaces the file, a one-run refresh writes the
    delta) changes it, so comparing two stamps tells whether the inventory on disk changed in between: the one
    test for it, used by preheated pages and pipeline workers alike.
    """
    return _delta_stamp(cache_dir / CACHE_FILE), _delta_stamp(cache_dir / DELTA_FILE)


def _delta_stamp(path: Path) -> tuple[int, int, int] | None:
    """The file's stamp (:func:`_file_stamp`), None when there is no file (no delta, or no cache yet)."""
    try:
        return _file_stamp(path)
    except FileNotFoundError:
        return None


def _read_delta(path: Path, base_id: str | None) -> _Delta:
    """The delta that belongs to the cache file ``base_id`` (empty when there is none or it is older).

    Raises ValueError (or an OSError / ArrowException) when the delta cannot be used, like the cache file.
    """
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        return _Delta(_empty_objects(), [])
    text = (table.schema.metadata or {}).get(b"runtool")
    if text is None:
        raise ValueError(f"its delta {path.name} has no runtool metadata")
    info = json.loads(text)
    if not isinstance(info, dict) or info.get("version") != CACHE_VERSION:
        raise ValueError(f"its delta {path.name} has metadata of the wrong shape")
    if base_id is None or info.get("base_id") != base_id:
        return _Delta(_empty_objects(), [])
    scopes = info.get("scopes")
    if not isinstance(scopes, list) or not all(
        isinstance(scope, list) and 0 < len(scope) <= len(COORD_COLUMNS) and all(isinstance(p, str) for p in scope)
        for scope in scopes
    ):
        raise ValueError(f"its delta {path.name} lists prefixes of the wrong shape")
    objects = table.to_pandas()
    if set(objects.columns) != set(_COLUMNS):
        raise ValueError(f"its delta {path.name} has other columns")
    _check_rows(objects)
    for scope in scopes:
        for column, value in zip(COORD_COLUMNS, scope, strict=False):
            if column == "timestamp":
                parse_timestamp(value)
            else:
                check_part(column, value)
    return _Delta(objects, [tuple(scope) for scope in scopes])


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
        strange = set(_distinct(objects[column])) - allowed
        if strange:
            raise ValueError(f"its {column} column holds {sorted(map(str, strange))[0]!r}")
    for column in COORD_COLUMNS:
        for value in _distinct(objects[column]):
            if not isinstance(value, str):
                raise ValueError(f"its {column} column holds {value!r}, not text")
            if column == "timestamp":
                parse_timestamp(value)
            else:
                check_part(column, value)
    if not pd.api.types.is_string_dtype(objects["name"]) or objects["name"].isna().any():
        raise ValueError("its name column holds values that are not object names")


def _inside(objects: pd.DataFrame, scopes: list[tuple[str, ...]]) -> np.ndarray:
    """Which rows lie under any of the prefixes (compared on the columns' integer codes)."""
    inside = np.zeros(len(objects), dtype=bool)
    codes: dict[str, tuple[np.ndarray, pd.Index]] = {}
    for parts in scopes:
        mask = np.ones(len(objects), dtype=bool)
        for column, value in zip(COORD_COLUMNS, parts, strict=False):
            if column not in codes:
                codes[column] = _codes(objects[column])
            column_codes, values = codes[column]
            position = int(values.get_indexer([value])[0])
            if position < 0:  # -1 is also the code of an anomaly's missing value: nothing matches
                mask[:] = False
                break
            mask &= column_codes == position
        inside |= mask
    return inside


def _distinct(column: pd.Series) -> list[Any]:
    """The distinct values of a column: a categorical's categories (a superset of those in use), not a scan of
    a million rows."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return list(column.cat.categories)
    return list(column.dropna().unique())


def _merge(previous: pd.DataFrame, fresh: pd.DataFrame, scopes: list[tuple[str, ...]]) -> pd.DataFrame:
    """Replace the rows under the scanned prefixes (coordinate parts) with the fresh ones."""
    inside = _inside(previous, scopes)
    prefixes = tuple(
        prefix for parts in scopes for prefix in (raw_prefix(_prefix_filters(parts)), ml_prefix(_prefix_filters(parts)))
    )
    anomalies = np.flatnonzero(previous["reason"].notna().to_numpy())
    if len(anomalies):
        names = previous["name"].take(anomalies)
        inside[anomalies[names.str.startswith(prefixes).to_numpy(dtype=bool)]] = True
    keep = ~inside
    if fresh.empty and keep.all():
        return previous
    # The rows of a prefix are a few contiguous blocks (listings come in key order), so what is kept is a few
    # slices, which cost nothing, instead of a copy of a million rows.
    edges = np.flatnonzero(np.diff(np.concatenate(([False], keep, [False])).astype(np.int8)))
    if len(edges) <= 2 * _MAX_SLICES:
        pieces = [previous.iloc[start:stop] for start, stop in zip(edges[::2], edges[1::2], strict=True)]
    else:
        pieces = [previous[keep]]
    pieces = [piece for piece in (*pieces, fresh) if len(piece)]
    if len(pieces) <= 1:
        return (pieces[0] if pieces else fresh).reset_index(drop=True)
    merged: dict[str, Any] = {}
    for name in _COLUMNS:
        columns = [piece[name] for piece in pieces]
        if isinstance(columns[0].dtype, pd.CategoricalDtype):
            merged[name] = union_categoricals(columns, ignore_order=True)
        else:
            merged[name] = pd.concat(columns, ignore_index=True)
    return pd.DataFrame(merged)


def _prefix_filters(parts: tuple[str, ...]) -> Filters:
    return Filters(**dict(zip(COORD_COLUMNS, parts, strict=False)))


def _replace_runs(runs: pd.DataFrame, fresh: pd.DataFrame, parts: tuple[str, ...]) -> pd.DataFrame:
    """The run totals with the runs under the prefix replaced by those of the fresh rows (no full recount)."""
    inside = np.ones(len(runs), dtype=bool)
    for column, value in zip(COORD_COLUMNS, parts, strict=False):
        inside &= (runs[column] == value).to_numpy(dtype=bool)
    added = _run_totals(fresh)
    replaced = np.flatnonzero(inside)
    if len(replaced) == len(added) == 1:
        # One run refreshed in place (the usual case after an operation): its position in the order is the same.
        updated = runs.copy()
        for column in added.columns:
            updated[column] = _with_value(updated[column], int(replaced[0]), added[column].iloc[0])
        return updated
    if added.empty:
        return runs[~inside].reset_index(drop=True)
    return pd.concat([runs[~inside], added], ignore_index=True).sort_values([*LEVELS, "start_time"], ignore_index=True)


def _with_value(column: pd.Series, position: int, value: Any) -> pd.Series:
    if column.iloc[position] == value:
        return column
    values = column.copy()
    values.iloc[position] = value
    return values


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
