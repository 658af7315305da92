"""The fleet KPI table: one row per analysed run of a selection, read from the analysis caches, never computed.

:class:`KpiService` keeps an in-memory index of every run's ``analysis/kpis.json``: its stat stamp (inode,
``mtime_ns``, size), whether the cache is current, and its KPIs as columns. A query filters that table.

What is checked when:

- **every query** of a service filters the in-memory table; nothing on disk is touched while no check is due;
- **a sweep** (one ``stat`` per analysable run of the run table, no file opened) runs on the first query of a
  service, when the run table or the local state changed since the last sweep, when ``recheck_s`` passed since
  it, or on ``refresh=True``. A cache whose stamp differs from the index's (rewritten, replaced, or new) is read
  again, fingerprint and all; the row of a cache that is gone, or of a run no longer in the run table, is
  dropped. So a ``kpis.json`` written by another process is seen at most ``recheck_s`` later (at once with
  ``refresh=True``, and on a new service's first query). Analysis writes each cache as a new file (a new inode);
  only an in-place edit keeping the size within one filesystem timestamp tick could go unseen;
- **regression flags** are computed again only when a sweep changed the index (or the index was built by
  another rule); otherwise the flags saved with the index are used as they are.

Re-reading 10,000 JSON files takes seconds, a ``stat`` sweep tens of milliseconds and a filter a few
(``docs/performance.md``, issue 9 (a)). Unless read-only, the index is kept in ``<cache_dir>/kpi_index.parquet``
with the regression flags of the rule that wrote it (the rule is in the file's metadata), so a new process (a
CLI call, a page kernel) only sweeps; it rebuilds the index when the file was written for another cache version
or processed root, and recomputes the flags when they were saved for another rule.

A cache is *current* when it has this library's :data:`~runtool.services.analytics.CACHE_VERSION`, names
its own run, and its fingerprint matches the run's extraction outputs, exactly as
:meth:`~runtool.services.analytics.AnalyticsService.load_cached` decides; a run whose cache is not current
counts as not analysed.

**Regressions.** For each KPI of :data:`REGRESSION_KPIS` a run is compared with the median of the same KPI
over the previous ``window`` analysed runs of its laser box (by start time, whatever the selection; runs
without the KPI are skipped), once at least ``min_previous`` of them have it. The run is flagged when it is
worse (lower for rates, higher for shares, drops, latencies and failed bags) by more than
``max(relative_margin × |median|, the KPI's floor)``; the floor keeps a median of 0 dropped frames from
flagging every single drop. Each flag carries its reason.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from runtool.config import RuntoolConfig
from runtool.errors import RuntoolError
from runtool.models import LEVELS, Filters
from runtool.services.analytics import CACHE_VERSION, checked_kpis, extraction_fingerprint
from runtool.services.data_state import DataStateService
from runtool.services.local_state import ANALYSIS_MARKER

__all__ = [
    "INDEX_FILE",
    "REGRESSION_KPIS",
    "KpiError",
    "KpiService",
    "KpiTable",
    "RegressionRule",
]

log = logging.getLogger(__name__)

INDEX_FILE = "kpi_index.parquet"
_INDEX_FORMAT = "2"
"""2: KPI values are checked when a cache is read, so an index of format 1 may hold text or lists as KPIs."""
_COORD = (*LEVELS, "timestamp")
_STAMP = ("ino", "mtime_ns", "size")
_COUNT_SUFFIXES = ("_messages", "_dropped_frames", "failed_bags", "total_tracks")
"""KPIs that are counts: JSON ints in ``analyze --json``, kept as ints in the table's records."""

REGRESSION_KPIS: dict[str, tuple[Literal["higher", "lower"], float]] = {
    **{f"{stream}_{name}": ("higher", 0.5) for stream in ("frames", "detections", "tracking")
       for name in ("median_fps", "p5_fps")},
    **{f"{stream}_share_below_target": ("lower", 0.02) for stream in ("frames", "detections", "tracking")},
    **{f"{stream}_dropped_frames": ("lower", 1.0) for stream in ("frames", "detections", "tracking")},
    **{f"{prefix}_{name}": ("lower", 1.0) for prefix in ("detection_latency", "tracking_latency")
       for name in ("p95_ms", "p99_ms")},
    "failed_bags": ("lower", 0.5),
}
"""KPI → (which way is better, the smallest difference that counts: FPS, share, frames, ms, bags)."""


class KpiError(RuntoolError):
    """The KPI table cannot be built: a bad rule or date range, or the index cannot be written."""


@dataclass(frozen=True)
class RegressionRule:
    """When a run counts as regressed against its laser box's earlier runs (see the module docstring)."""

    window: int = 5
    min_previous: int = 3
    relative_margin: float = 0.10

    def __post_init__(self) -> None:
        if not 1 <= self.min_previous <= self.window:
            raise KpiError(f"The regression rule needs 1 ≤ min_previous ≤ window, not {self.min_previous} "
                           f"and {self.window}.")
        if not (self.relative_margin >= 0 and math.isfinite(self.relative_margin)):
            raise KpiError(f"The regression margin must be a finite share ≥ 0, not {self.relative_margin}.")


@dataclass(frozen=True, eq=False)
class KpiTable:
    """One row per analysed run of a selection, and how many of its runs are not analysed (or out of date).

    ``rows`` holds the coordinate columns, ``start_time`` (UTC), ``lb_key``, ``analysed_at``, one column per
    KPI (``kpi_names``, the names of ``runtool analyze --json``; NaN where a run has none), ``regressed``
    and ``regressions`` (a tuple of reason texts), in laser box then start-time order.
    """

    rows: pd.DataFrame
    kpi_names: tuple[str, ...]
    not_analysed: int
    first_not_analysed: date | None = None
    """The start day (UTC) of the earliest run of the selection that is not analysed, if any."""

    def records(self) -> list[dict[str, Any]]:
        """The rows as flat JSON-ready objects: coordinate parts, start time, KPIs (null where none), flags."""
        out: list[dict[str, Any]] = []
        columns = [*_COORD, "start_time", "analysed_at", *self.kpi_names, "regressed", "regressions"]
        counts = {name for name in self.kpi_names if name.endswith(_COUNT_SUFFIXES)}
        for values in self.rows[columns].itertuples(index=False, name=None):
            record = dict(zip(columns, values, strict=True))
            record["start_time"] = record["start_time"].isoformat()
            for name in self.kpi_names:
                value = record[name]
                if value is None or (isinstance(value, float) and not math.isfinite(value)):
                    record[name] = None
                elif name in counts:
                    record[name] = int(value)
                else:
                    record[name] = float(value)
            record["regressed"] = bool(record["regressed"])
            record["regressions"] = list(record["regressions"])
            out.append(record)
        return out


class KpiService:
    """Answers KPI table queries from an in-memory index of the analysis caches (see the module docstring)."""

    def __init__(
        self,
        config: RuntoolConfig,
        data_state: DataStateService,
        read_only: bool = False,
        rule: RegressionRule | None = None,
        recheck_s: float = 5.0,
    ) -> None:
        self.config = config
        self.data_state = data_state
        self.read_only = read_only
        self.rule = rule or RegressionRule()
        self.recheck_s = recheck_s
        self._index: pd.DataFrame | None = None
        self._flagged: pd.DataFrame | None = None
        self._saved_flags: pd.DataFrame | None = None
        self._kpi_names: tuple[str, ...] = ()
        self._checked: tuple[object, float] | None = None
        self._lock = threading.Lock()

    @property
    def index_path(self) -> Path:
        return self.config.cache_dir / INDEX_FILE

    def table(
        self,
        filters: Filters | None = None,
        since: date | None = None,
        until: date | None = None,
        refresh: bool = False,
    ) -> KpiTable:
        """The analysed runs of the selection (start on or after ``since``, on or before ``until``, UTC days).

        ``refresh`` re-checks every cache now instead of within ``recheck_s``.

        Raises:
            KpiError: ``since`` is after ``until``.
        """
        if since is not None and until is not None and since > until:
            raise KpiError(f"The date range is empty: since {since} is after until {until}.")
        runs = self.data_state.all_runs()
        with self._lock:
            flagged = self._current(runs, refresh)
            kpi_names = self._kpi_names
        selected = _select(flagged, filters, since, until)
        analysable = _select(runs[_analysable(runs)], filters, since, until)
        missing = analysable[~np.isin(_paths(analysable), _paths(selected))]
        first = pd.to_datetime(missing["start_time"], utc=True).min().date() if len(missing) else None
        return KpiTable(selected.reset_index(drop=True), kpi_names, len(missing), first)

    def _current(self, runs: pd.DataFrame, refresh: bool) -> pd.DataFrame:
        """The flagged table of current caches, after a sweep when one is due."""
        key = (id(runs), self.data_state.local.version)
        now = time.monotonic()
        due = (refresh or self._flagged is None or self._checked is None or self._checked[0] != key
               or now - self._checked[1] >= self.recheck_s)
        if due:
            if self._index is None:
                self._index, self._saved_flags = self._load_index()
            index, changed = self._sweep(self._index, runs[_analysable(runs)])
            if changed or self._flagged is None:
                self._index = index
                current = index[index["current"].astype(bool).to_numpy()]
                self._kpi_names = tuple(c for c in current.columns if c not in _INDEX_COLUMNS)
                if not changed and self._saved_flags is not None:
                    self._flagged = self._saved_flags  # the index on disk is unchanged: so are its flags
                else:
                    flagged = _flag_regressions(current, self._kpi_names, self.rule)
                    if not self.read_only:
                        self._save_index(index, flagged)
                    self._flagged = flagged.reset_index(drop=True)
                self._saved_flags = None
            self._checked = (key, now)
        assert self._flagged is not None
        return self._flagged

    def _sweep(self, index: pd.DataFrame, runs: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
        """Stat every run's cache; read those that are new or changed; drop those that are gone."""
        keys = _paths(runs)
        root = str(self.config.processed_root)
        stamps = np.zeros((len(keys), 3), dtype="int64")
        present = np.zeros(len(keys), dtype=bool)
        for i, path in enumerate([f"{root}/{key}/{ANALYSIS_MARKER}" for key in keys]):
            try:
                stat = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            present[i] = True
            stamps[i] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        # Positions, not reindex: a reindex that adds rows turns the int64 stamps into float64, which cannot hold a
        # mtime_ns exactly, so every cache would look changed on every sweep once one run had none.
        position = index.index.get_indexer(keys)
        known = index[list(_STAMP)].to_numpy(dtype="int64")[np.maximum(position, 0)] if len(index) else stamps
        same = present & (position >= 0) & (known == stamps).all(axis=1)
        stale = present & ~same
        gone = len(index) - int(same.sum())
        if not stale.any() and not gone:
            return index, False
        fresh = runs.iloc[np.flatnonzero(stale)]
        read = [self._read_entry(key, stamp, row) for key, stamp, row in
                zip(keys[stale], stamps[stale], fresh[[*_COORD, "start_time"]].itertuples(index=False), strict=True)]
        kept = index.loc[keys[same]]
        if not read:
            return kept, True
        fresh_index = pd.DataFrame.from_records(read, index="key")
        return (pd.concat([kept, fresh_index], sort=False) if len(kept) else fresh_index), True

    def _read_entry(self, key: str, stamp: np.ndarray, row: tuple[Any, ...]) -> dict[str, Any]:
        """One cache as an index row; ``current`` false when its version, run or fingerprint do not match."""
        entry: dict[str, Any] = {"key": key, **dict(zip(_COORD, (str(v) for v in row[:6]), strict=True)),
                                 "start_time": row[6], "lb_key": key.rsplit("/", 1)[0],
                                 **dict(zip(_STAMP, (int(v) for v in stamp), strict=True)),
                                 "current": False, "analysed_at": None}
        folder = self.config.processed_root / key
        try:
            document = json.loads((folder / ANALYSIS_MARKER).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("The analysis cache of run %s is unreadable (%s); it counts as not analysed.", key, exc)
            return entry
        if (not isinstance(document, dict) or document.get("version") != CACHE_VERSION
                or document.get("coordinate") != key or document.get("fingerprint") != extraction_fingerprint(folder)):
            return entry
        try:
            kpis = checked_kpis(document.get("kpis"))
            clash = next((name for name in kpis if name in _INDEX_COLUMNS or name in _FLAG_COLUMNS), None)
            if clash is not None:
                raise ValueError(f"KPI {clash!r} has the name of a column of the KPI table")
        except ValueError as exc:
            log.warning("The analysis cache of run %s is unreadable (%s); it counts as not analysed.", key, exc)
            return entry
        kpis = {name: (np.nan if value is None else value) for name, value in kpis.items()}
        return {**entry, **kpis, "current": True, "analysed_at": document.get("analysed_at")}

    def _load_index(self) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        """The persisted index when it was written for this cache version and processed root, else empty.

        Also the flagged table saved with it, when its regression rule is this service's (else None).
        """
        empty = pd.DataFrame(columns=[c for c in _INDEX_COLUMNS if c != "key"], index=pd.Index([], name="key"))
        try:
            table = pq.read_table(self.index_path)
        except FileNotFoundError:
            return empty, None
        except (OSError, pa.ArrowException) as exc:
            log.warning("The KPI index %s is unreadable (%s); it is rebuilt.", self.index_path, exc)
            return empty, None
        meta = table.schema.metadata or {}
        if meta.get(b"runtool_kpi_index") != _stamp_meta(self.config)[b"runtool_kpi_index"]:
            return empty, None
        flags = {name: table[name] for name in _FLAG_COLUMNS if name in table.column_names}
        frame = table.drop_columns(list(flags)).to_pandas()
        index = frame.set_index("key")
        if meta.get(_FLAGS_META) != _rule_meta(self.rule) or len(flags) != len(_FLAG_COLUMNS):
            return index, None
        current = frame["current"].astype(bool).to_numpy()
        flagged = frame[current].drop(columns="key").reset_index(drop=True)
        reasons = [tuple(texts) for texts in flags["regressions"].to_pylist()]
        flagged["regressions"] = pd.Series(reasons, dtype=object)[current].reset_index(drop=True)
        flagged["regressed"] = flags["regressed"].to_numpy()[current].astype(bool)
        return index, flagged

    def _save_index(self, index: pd.DataFrame, flagged: pd.DataFrame) -> None:
        """Write the index and its regression flags beside the inventory cache (temporary file, then rename).

        The current rows come first, in ``flagged``'s order (laser box, start time), so a reader takes the
        flagged table as it is.
        """
        path = self.index_path
        others = index[~index["current"].astype(bool).to_numpy()].copy()
        others["regressions"] = pd.Series([()] * len(others), index=others.index, dtype=object)
        others["regressed"] = False
        rows = pd.concat([flagged, others], sort=False) if len(others) else flagged
        rows = rows.assign(regressions=[list(texts) for texts in rows["regressions"]])
        table = pa.Table.from_pandas(rows.rename_axis("key").reset_index(), preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **_stamp_meta(self.config),
                                               _FLAGS_META: _rule_meta(self.rule)})
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, temporary)
            os.replace(temporary, path)
        except (OSError, pa.ArrowException) as exc:
            temporary.unlink(missing_ok=True)
            raise KpiError(f"Could not write the KPI index {path}: {exc}") from exc


_INDEX_COLUMNS = ("key", *_COORD, "start_time", "lb_key", *_STAMP, "current", "analysed_at")
_FLAG_COLUMNS = ("regressions", "regressed")
_FLAGS_META = b"runtool_kpi_flags"


def _rule_meta(rule: RegressionRule) -> bytes:
    """What saved regression flags must match to be reused: the rule and the KPIs it checks, which way, floors."""
    return json.dumps([rule.window, rule.min_previous, rule.relative_margin, REGRESSION_KPIS]).encode()


def _stamp_meta(config: RuntoolConfig) -> dict[bytes, bytes]:
    """What a persisted index must match to be reused: its format, the analysis cache version, the root."""
    return {b"runtool_kpi_index": json.dumps(
        [_INDEX_FORMAT, CACHE_VERSION, str(config.processed_root)]).encode()}


def _analysable(runs: pd.DataFrame) -> pd.Series:
    """Runs that have raw bags somewhere or an extraction: the others (ML only) can never be analysed."""
    return (runs["raw_bags"] > 0) | (runs["local_bags"] > 0) | runs["extracted"]


def _paths(runs: pd.DataFrame) -> np.ndarray:
    """``cid/regionid/fieldid/twid/lbid/timestamp`` of every row, vectorised."""
    text = runs[_COORD[0]].astype(str)
    for column in _COORD[1:]:
        text = text + "/" + runs[column].astype(str)
    return text.to_numpy(dtype=object)


def _select(table: pd.DataFrame, filters: Filters | None, since: date | None, until: date | None) -> pd.DataFrame:
    mask = np.ones(len(table), dtype=bool)
    if filters is not None:
        for level, value in filters.to_dict().items():
            mask &= (table[level] == value).to_numpy()
    if since is not None or until is not None:
        days = pd.to_datetime(table["start_time"], utc=True).dt.date.to_numpy()
        if since is not None:
            mask &= days >= since
        if until is not None:
            mask &= days <= until
    return table[mask]


def _flag_regressions(current: pd.DataFrame, kpi_names: Sequence[str], rule: RegressionRule) -> pd.DataFrame:
    """The current rows in laser box then start-time order (index kept), with ``regressed`` and ``regressions``."""
    frame = current.sort_values(["lb_key", "start_time"], kind="stable")
    checked = [name for name in REGRESSION_KPIS if name in kpi_names]
    reasons: list[tuple[str, ...]] = [()] * len(frame)
    if checked and len(frame):
        value = frame[checked].to_numpy(dtype="float64")
        base, counted = _previous_medians(value, _group_starts(frame["lb_key"].to_numpy()), rule)
        better_higher = np.array([REGRESSION_KPIS[name][0] == "higher" for name in checked])
        floors = np.array([REGRESSION_KPIS[name][1] for name in checked])
        worse_by = np.where(better_higher, base - value, value - base)
        margin = np.maximum(rule.relative_margin * np.abs(base), floors)
        with np.errstate(invalid="ignore"):
            worse = worse_by > margin  # NaN (no value or no baseline yet) compares False
        found: dict[int, list[str]] = {}
        lbids = frame["lbid"].to_numpy()
        for row, column in zip(*np.nonzero(worse), strict=True):
            found.setdefault(int(row), []).append(
                f"{checked[column]} {value[row, column]:.4g} is worse than {base[row, column]:.4g}, the median of "
                f"{lbids[row]}'s previous {int(counted[row, column])} runs, by more than {margin[row, column]:.3g}"
            )
        for row, texts in found.items():
            reasons[row] = tuple(texts)
    frame["regressions"] = pd.Series(reasons, index=frame.index, dtype=object)
    frame["regressed"] = frame["regressions"].map(bool).astype(bool)
    return frame


def _group_starts(groups: np.ndarray) -> np.ndarray:
    """For rows sorted by group, the position of each row's group's first row."""
    positions = np.arange(len(groups))
    first = np.ones(len(groups), dtype=bool)
    first[1:] = groups[1:] != groups[:-1]
    return np.maximum.accumulate(np.where(first, positions, 0))


def _previous_medians(values: np.ndarray, starts: np.ndarray, rule: RegressionRule) -> tuple[np.ndarray, np.ndarray]:
    """Per row and KPI, the median of the KPI over the group's previous ``rule.window`` rows and how many had it.

    ``values`` is (rows, KPIs) in group then time order; NaN (no value) is skipped. The median is NaN where
    fewer than ``rule.min_previous`` of those rows have a value. Vectorised: the previous rows are gathered into
    a (rows, window, KPIs) block and sorted along the window, NaN last.
    """
    rows = np.arange(len(values))
    back = rows[:, None] - 1 - np.arange(rule.window)[None, :]
    block = values[np.maximum(back, 0)]
    block[back < starts[:, None]] = np.nan
    counts = np.count_nonzero(~np.isnan(block), axis=1)
    ordered = np.sort(block, axis=1)
    low = np.take_along_axis(ordered, np.maximum(counts - 1, 0)[:, None, :] // 2, axis=1)[:, 0, :]
    high = np.take_along_axis(ordered, (counts // 2)[:, None, :], axis=1)[:, 0, :]
    with np.errstate(invalid="ignore"):
        medians = np.where(counts >= rule.min_previous, (low + high) / 2, np.nan)
    return medians, counts
