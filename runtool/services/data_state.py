"""Read views over the cloud inventory and the local index: runs, filters, coverage and sync state."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from runtool.analysis import daily_totals, laser_box_day_totals, laser_box_keys, laser_box_totals, with_coverage
from runtool.formatting import format_bytes
from runtool.models import (
    LEVELS,
    AggregatedTemporalData,
    CloudMLStatus,
    CloudRawStatus,
    CoveragePoint,
    CoverageSettings,
    CoverageStatistics,
    DayCoverage,
    Filters,
    LaserBoxDay,
    LaserBoxStats,
    RowSequence,
    RunCoordinate,
    RunState,
    SyncStatus,
    TemporalData,
)
from runtool.services.inventory import COORD_COLUMNS, CloudInventoryService
from runtool.services.local_state import LocalStateService
from runtool.storage import local_to_cloud_name

__all__ = ["RUN_COLUMNS", "DataStateService"]

RUN_COLUMNS = [
    *COORD_COLUMNS,
    "start_time",
    "raw_bags",
    "raw_bytes",
    "ml_bags",
    "ml_frames",
    "ml_labels",
    "ml_bytes",
    "local_bags",
    "local_raw_bytes",
    "local_frames",
    "local_labels",
    "local_ml_bytes",
    "extracted",
    "analyzed",
]
_COUNTS = [c for c in RUN_COLUMNS[7:] if c not in ("extracted", "analyzed")]


def _sync(cloud_count: np.ndarray, local_count: np.ndarray, same: np.ndarray) -> np.ndarray:
    return np.select(
        [(cloud_count == 0) & (local_count == 0), local_count == 0, cloud_count == 0, same],
        [SyncStatus.MISSING.value, SyncStatus.CLOUD_ONLY.value, SyncStatus.LOCAL_ONLY.value, SyncStatus.SYNCED.value],
        default=SyncStatus.MISMATCH.value,
    )


def _issues(runs: pd.DataFrame, under_labelled_pct: float) -> tuple[np.ndarray, np.ndarray]:
    """Human-readable problems of each run (rows of the run table with coverage), '; '-joined, vectorised: those of
    its raw bags and those of its ML samples.

    Raw bags: the local copy differs from the bucket's, there are none (ML only), or too few of them are labelled
    (under-labelled). ML samples: the local copy differs from the bucket's, or frames have no labels. Each kind of
    problem is tested on whole columns; only the rows that have it format its text.
    """
    column = {name: runs[name].to_numpy() for name in (
        "raw_bags", "local_bags", "raw_bytes", "local_raw_bytes", "ml_frames", "ml_labels", "local_frames",
        "local_labels", "ml_bytes", "local_ml_bytes", "ml_only", "under_labelled", "coverage_pct")}
    raw, local = column["raw_bags"], column["local_bags"]
    both = (raw > 0) & (local > 0)
    cloud_ml = column["ml_frames"] + column["ml_labels"]
    local_ml = column["local_frames"] + column["local_labels"]
    ml_differs = (cloud_ml > 0) & (local_ml > 0) & (
        (cloud_ml != local_ml) | (column["ml_bytes"] != column["local_ml_bytes"])
    )
    column["unlabelled"] = column["ml_frames"] - column["ml_labels"]

    def texts(mask: np.ndarray, make: Callable[..., str], *names: str) -> tuple[np.ndarray, list[str]]:
        rows = np.flatnonzero(mask)
        if not names:
            return rows, [make()] * len(rows)
        if len(names) == 1:
            # One text per distinct value (a coverage % or a count: few distinct values over 100,000 runs).
            distinct, inverse = np.unique(column[names[0]][rows], return_inverse=True)
            return rows, np.asarray([make(value) for value in distinct.tolist()], dtype=object)[inverse].tolist()
        values = [column[name][rows].tolist() for name in names]
        return rows, [make(*args) for args in zip(*values, strict=True)]

    raw_issues = _joined(len(runs), (
        texts(both & (raw != local), lambda c, lo: f"Bag count mismatch: {c:,} in the bucket, {lo:,} on disk",
              "raw_bags", "local_bags"),
        texts(both & (raw == local) & (column["raw_bytes"] != column["local_raw_bytes"]),
              lambda c, lo: size_mismatch("Bag", c, lo), "raw_bytes", "local_raw_bytes"),
        texts(column["ml_only"], lambda: "ML only: samples without raw bags"),
        texts(column["under_labelled"], lambda pct: f"Under-labelled: {pct:.1f} % < {under_labelled_pct:g} %",
              "coverage_pct"),
    ))
    ml_issues = _joined(len(runs), (
        texts(ml_differs, lambda f, la, lf, ll: f"ML sample mismatch: {f:,} frames/{la:,} labels in the bucket, "
              f"{lf:,} frames/{ll:,} labels on disk", "ml_frames", "ml_labels", "local_frames", "local_labels"),
        texts((column["unlabelled"] > 0) & (raw > 0), lambda n: f"{n} frames without labels", "unlabelled"),
    ))
    return raw_issues, ml_issues


def size_mismatch(what: str, cloud: int, local: int) -> str:
    """An issue text for sizes that differ, in sizes a reader takes in ("1.6 MiB"), with the difference (two sizes
    can round to the same text)."""
    side = "less" if local < cloud else "more"
    return (f"{what} size mismatch: {format_bytes(cloud)} in the bucket, {format_bytes(local)} on disk "
            f"({format_bytes(abs(cloud - local))} {side} on disk)")


def _joined(count: int, found: Iterable[tuple[np.ndarray, Sequence[str]]]) -> np.ndarray:
    """Per row, the texts found for it ('; '-joined, in the order given); ``found`` pairs row positions with texts."""
    joined = np.full(count, "", dtype=object)
    for rows, parts in found:
        if not len(rows):
            continue
        before = joined[rows]
        joined[rows] = np.where(before == "", parts, before + "; " + np.asarray(parts, dtype=object))
    return joined


class DataStateService:
    """Answers every read question of the pages and the CLI from in-memory tables."""

    def __init__(self, inventory: CloudInventoryService, local: LocalStateService, settings: CoverageSettings) -> None:
        self.inventory = inventory
        self.local = local
        self.settings = settings
        self._cache_key: tuple[int, int] | None = None
        self._runs: pd.DataFrame | None = None
        self._lock = threading.Lock()

    # -- the run table -------------------------------------------------------------------------

    def all_runs(self) -> pd.DataFrame:
        """Cloud and local runs joined on the coordinate (counts 0 where a side has nothing)."""
        cloud = self.inventory.snapshot
        local_table = self.local.table()
        key = (id(cloud), self.local.version)
        with self._lock:
            if self._runs is None or self._cache_key != key:
                self._runs = self._join(cloud.runs(), local_table)
                self._cache_key = key
            return self._runs

    @staticmethod
    def _join(cloud: pd.DataFrame, local: pd.DataFrame) -> pd.DataFrame:
        keys = list(COORD_COLUMNS)
        merged = cloud.merge(local, on=keys, how="outer") if len(local) else cloud.reindex(columns=RUN_COLUMNS)
        for column in _COUNTS:
            merged[column] = merged[column].fillna(0).astype("int64")
        for column in ("extracted", "analyzed"):
            merged[column] = merged[column].eq(True)
        missing_time = merged["start_time"].isna()
        if missing_time.any():
            stamps = merged.loc[missing_time, "timestamp"].astype(str).str.replace("_", "-", regex=False)
            merged.loc[missing_time, "start_time"] = pd.to_datetime(stamps, format="%Y-%m-%dT%H:%M:%SZ", utc=True)
        merged["start_time"] = pd.to_datetime(merged["start_time"], utc=True)
        same_raw = (merged["raw_bags"] == merged["local_bags"]) & (merged["raw_bytes"] == merged["local_raw_bytes"])
        cloud_ml = merged["ml_frames"] + merged["ml_labels"]
        local_ml = merged["local_frames"] + merged["local_labels"]
        same_ml = (cloud_ml == local_ml) & (merged["ml_bytes"] == merged["local_ml_bytes"])
        merged["raw_sync"] = _sync(merged["raw_bags"].to_numpy(), merged["local_bags"].to_numpy(), same_raw.to_numpy())
        merged["ml_sync"] = _sync(cloud_ml.to_numpy(), local_ml.to_numpy(), same_ml.to_numpy())
        merged["lb_key"] = laser_box_keys(merged)  # once here, not on every query of the table
        return merged.sort_values([*LEVELS, "start_time"], ignore_index=True)

    def runs(self, filters: Filters | None = None, settings: CoverageSettings | None = None) -> pd.DataFrame:
        """The selected runs with coverage columns, in hierarchy then start-time order."""
        table = self.all_runs()
        if filters is not None:
            mask = np.ones(len(table), dtype=bool)
            for name, value in filters.to_dict().items():
                mask &= (table[name] == value).to_numpy()
            table = table[mask]
        return with_coverage(table, settings or self.settings)

    # -- selection helpers ---------------------------------------------------------------------

    def filter_options(self, filters: Filters) -> dict[str, list[str]]:
        """For each level, the values present under the levels above it (from raw, ML and local runs)."""
        table = self.all_runs()
        options: dict[str, list[str]] = {}
        mask = np.ones(len(table), dtype=bool)
        for level in LEVELS:
            options[level] = sorted(pd.unique(table.loc[mask, level].astype(str)))
            value = getattr(filters, level)
            if value is not None:
                mask &= (table[level] == value).to_numpy()
        return options

    def available_timestamps(self, filters: Filters) -> list[str]:
        """Run timestamps of a selection, newest first."""
        runs = self.runs(filters)
        return runs.sort_values("start_time", ascending=False)["timestamp"].astype(str).tolist()

    def generate_coordinates_from_filters(self, filters: Filters) -> list[RunCoordinate]:
        runs = self.runs(filters)
        parts = [runs[column].astype(str).tolist() for column in COORD_COLUMNS]
        return [RunCoordinate.from_checked_parts(*run) for run in zip(*parts, strict=True)]

    # -- coverage ------------------------------------------------------------------------------

    def temporal_coverage(self, filters: Filters, settings: CoverageSettings | None = None) -> TemporalData:
        """Every selected run as a point in start-time order (the single-laser-box timeline)."""
        settings = settings or self.settings
        runs = self.runs(filters, settings).sort_values("start_time")
        return TemporalData(filters, settings, self._points(runs))

    @staticmethod
    def _points(runs: pd.DataFrame, rows: np.ndarray | None = None) -> RowSequence[CoveragePoint]:
        """The runs (those at positions ``rows``, in that order, if given) as coverage points, each built when it
        is read: nothing is converted per run up front, and the parts come from the parsed inventory."""
        order = np.arange(len(runs)) if rows is None else rows
        parts = [runs[column] for column in COORD_COLUMNS]
        starts = runs["start_time"].to_numpy(dtype="datetime64[ns]")  # UTC
        counts = [runs[column].to_numpy() for column in ("raw_bags", "ml_frames", "ml_labels")]
        pct = runs["coverage_pct"].to_numpy(dtype="float64")
        under = runs["under_labelled"].to_numpy(dtype=bool)

        def point(i: int) -> CoveragePoint:
            row = int(order[i])
            cid, regionid, fieldid, twid, lbid, timestamp = (str(part.iat[row]) for part in parts)
            return CoveragePoint(
                coordinate=RunCoordinate.from_checked_parts(cid, regionid, fieldid, twid, lbid, timestamp),
                start_time=pd.Timestamp(starts[row], tz="UTC").to_pydatetime(),
                raw_bags=int(counts[0][row]),
                ml_frames=int(counts[1][row]),
                ml_labels=int(counts[2][row]),
                coverage_pct=None if np.isnan(pct[row]) else float(pct[row]),
                under_labelled=bool(under[row]),
            )

        return RowSequence(len(order), point)

    def aggregated_coverage(self, filters: Filters, settings: CoverageSettings | None = None) -> AggregatedTemporalData:
        """Per-day totals over all laser boxes of a selection, plus laser-box × day cells for a heatmap."""
        settings = settings or self.settings
        runs = self.runs(filters, settings)
        days = daily_totals(runs, settings)
        cells = laser_box_day_totals(runs, settings)
        return AggregatedTemporalData(
            filters,
            settings,
            tuple(
                DayCoverage(
                    row.day.date(),
                    int(row.runs),
                    int(row.raw_bags),
                    int(row.ml_frames),
                    int(row.ml_labels),
                    _opt(row.coverage_pct),
                    int(row.laser_boxes),
                )
                for row in days.itertuples(index=False)
            ),
            self._cells(cells),
        )

    @staticmethod
    def _cells(cells: pd.DataFrame) -> RowSequence[LaserBoxDay]:
        """Heatmap cells, each built when it is read (one per laser box and day: up to one per run)."""
        keys = cells["lb_key"].to_numpy(dtype=object)
        days = pd.DatetimeIndex(cells["day"]).date if len(cells) else np.array([], dtype=object)
        counts = [cells[column].to_numpy() for column in ("raw_bags", "ml_labels", "runs")]
        pct = cells["coverage_pct"].to_numpy(dtype="float64")
        only = cells["only_timestamp"].to_numpy(dtype=object)

        def cell(i: int) -> LaserBoxDay:
            key = str(keys[i])
            stamp = only[i]
            return LaserBoxDay(
                key, days[i], int(counts[0][i]), int(counts[1][i]), None if np.isnan(pct[i]) else float(pct[i]),
                int(counts[2][i]),
                RunCoordinate.from_checked_parts(*_levels(key), str(stamp)) if isinstance(stamp, str) else None,
            )

        return RowSequence(len(cells), cell)

    def coverage_statistics(self, filters: Filters, settings: CoverageSettings | None = None) -> CoverageStatistics:
        settings = settings or self.settings
        runs = self.runs(filters, settings)
        bags = runs["raw_bags"].to_numpy()
        has_bags = bags > 0
        labels = runs["ml_labels"].to_numpy()
        with_bags = int(has_bags.sum())
        total_bags = int(bags.sum())
        expected = total_bags * settings.expected_samples_per_bag
        covered = int(labels[has_bags].sum())
        under = np.flatnonzero(runs["under_labelled"].to_numpy())
        starts = runs["start_time"].to_numpy(dtype="datetime64[ns]")[under]
        pct = runs["coverage_pct"].to_numpy(dtype="float64")
        # Worst first, then oldest: the page lists the first few, so points are built only as they are read.
        worst = under[np.lexsort((starts, pct[under]))]
        return CoverageStatistics(
            total_runs=len(runs),
            runs_with_bags=with_bags,
            total_bags=total_bags,
            total_frames=int(runs["ml_frames"].sum()),
            total_labels=int(labels.sum()),
            expected_samples=expected,
            overall_coverage_pct=min(100.0, 100.0 * covered / expected) if expected else None,
            average_coverage_pct=_opt(pct[has_bags].mean()) if with_bags else None,
            under_labelled=self._points(runs, worst),
            ml_only_runs=int(runs["ml_only"].sum()),
            average_bags_per_run=total_bags / with_bags if with_bags else None,
            average_labels_per_run=covered / with_bags if with_bags else None,
        )

    def laser_box_stats(self, filters: Filters, settings: CoverageSettings | None = None) -> list[LaserBoxStats]:
        settings = settings or self.settings
        totals = laser_box_totals(self.runs(filters, settings), settings)
        return [
            LaserBoxStats(
                lb_key=row.lb_key,
                lbid=row.lbid,
                runs=int(row.runs),
                total_bags=int(row.total_bags),
                total_frames=int(row.total_frames),
                total_labels=int(row.total_labels),
                coverage_pct=_opt(row.coverage_pct),
                active_days=int(row.active_days),
                avg_bags_per_day=_opt(row.avg_bags_per_day),
                avg_labels_per_day=_opt(row.avg_labels_per_day),
            )
            for row in totals.itertuples(index=False)
        ]

    # -- sync state ----------------------------------------------------------------------------

    def state_overview(self, filters: Filters, settings: CoverageSettings | None = None) -> pd.DataFrame:
        """The selected runs with sync statuses and the issue texts: ``raw_issues`` of the raw bags, ``ml_issues``
        of the ML samples, ``issues`` both."""
        settings = settings or self.settings
        runs = self.runs(filters, settings)
        raw_issues, ml_issues = _issues(runs, settings.under_labelled_pct)
        issues = np.where((raw_issues != "") & (ml_issues != ""), raw_issues + "; " + ml_issues,
                          raw_issues + ml_issues)
        return runs.assign(raw_issues=raw_issues, ml_issues=ml_issues, issues=issues)

    def run_records(self, filters: Filters, settings: CoverageSettings | None = None) -> list[dict[str, Any]]:
        """JSON-ready rows of :meth:`state_overview` (what ``runtool runs --json`` prints)."""
        runs = self.state_overview(filters, settings)
        columns = [
            *RUN_COLUMNS[:-1],
            "coverage_pct",
            "under_labelled",
            "ml_only",
            "analyzed",
            "raw_sync",
            "ml_sync",
            "issues",
        ]
        records = []
        for row in runs[columns].itertuples(index=False):
            record = dict(zip(columns, row, strict=True))
            record["start_time"] = row.start_time.isoformat()
            record["coverage_pct"] = _opt(row.coverage_pct)
            for name in columns:
                if isinstance(record[name], np.generic):
                    record[name] = record[name].item()
            records.append(record)
        return records

    def get_complete_run_state(self, coord: RunCoordinate) -> RunState:
        """Cloud, local and extraction state of one run, compared bag by bag."""
        entries = self.inventory.snapshot.entries
        mask = np.ones(len(entries), dtype=bool)
        for column, value in zip(COORD_COLUMNS, coord.to_path_tuple(), strict=True):
            mask &= (entries[column] == value).to_numpy()
        mine = entries[mask]
        bags = mine[mine["kind"] == "bag"]
        ml = mine[mine["role"] == "ml"]
        cloud_raw = CloudRawStatus(dict(zip(bags["name"].astype(str), bags["size"].astype(int), strict=True)))
        per_kind = ml.groupby(["kind", "bag"], observed=True).size()
        cloud_ml = CloudMLStatus(
            frames={str(b): int(n) for (k, b), n in per_kind.items() if k == "frame"},
            labels={str(b): int(n) for (k, b), n in per_kind.items() if k == "label"},
            total_bytes=int(ml["size"].sum()),
        )
        local = self.local.run(coord)
        issues: list[str] = []
        local_cloud_names = {}
        for name, size in local.raw.bag_sizes.items():
            if name.startswith("rosbag_"):
                local_cloud_names[local_to_cloud_name(name)] = size
            else:
                issues.append(f"Unexpected local bag name: {name}")
        raw_sync = self._compare(cloud_raw.bag_sizes, local_cloud_names, "Bag", issues)
        cloud_samples = {
            **{f"{b}/frames": n for b, n in cloud_ml.frames.items()},
            **{f"{b}/labels": n for b, n in cloud_ml.labels.items()},
        }
        local_samples = {}
        for kind, counts in (("frames", local.ml.frames), ("labels", local.ml.labels)):
            for bag_dir, count in counts.items():
                name = local_to_cloud_name(bag_dir) if bag_dir.startswith("rosbag_") else bag_dir
                local_samples[f"{name}/{kind}"] = count
        ml_sync = self._compare(cloud_samples, local_samples, "Sample", issues)
        if ml_sync is SyncStatus.SYNCED and cloud_ml.total_bytes != local.ml.total_bytes:
            ml_sync = SyncStatus.MISMATCH
            issues.append(size_mismatch("Sample", cloud_ml.total_bytes, local.ml.total_bytes))
        if not cloud_raw.exists and cloud_ml.exists:
            issues.append("ML only: samples without raw bags")
        differing = tuple(sorted(
            name for name, size in local_cloud_names.items() if cloud_raw.bag_sizes.get(name, size) != size
        ))
        # Only a partial copy: a run with no local bag at all is downloaded anyway, or was extracted and its
        # bags deliberately removed.
        missing = tuple(sorted(set(cloud_raw.bag_sizes) - set(local_cloud_names))) if local_cloud_names else ()
        return RunState(
            coord, cloud_raw, cloud_ml, local.raw, local.ml, local.extraction, raw_sync, ml_sync, tuple(issues),
            differing, missing,
        )

    @staticmethod
    def _compare(cloud: dict[str, int], local: dict[str, int], what: str, issues: list[str]) -> SyncStatus:
        if not cloud and not local:
            return SyncStatus.MISSING
        if not local:
            return SyncStatus.CLOUD_ONLY
        if not cloud:
            return SyncStatus.LOCAL_ONLY
        if cloud == local:
            return SyncStatus.SYNCED
        if len(cloud) != len(local) and what == "Bag":
            issues.append(f"Bag count mismatch: {len(cloud):,} in the bucket, {len(local):,} on disk")
        missing = sorted(set(cloud) - set(local))
        extra = sorted(set(local) - set(cloud))
        differ = sorted(k for k in set(cloud) & set(local) if cloud[k] != local[k])
        if missing:
            issues.append(f"{what}s not downloaded: {len(missing)} ({_few(missing)})")
        if extra:
            issues.append(f"{what}s only local: {len(extra)} ({_few(extra)})")
        if differ:
            issues.append(f"{what} {'size' if what == 'Bag' else 'count'} differs: {_few(differ)}")
        return SyncStatus.MISMATCH

    def anomalies(self, filters: Filters | None = None) -> pd.DataFrame:
        """Cloud objects and local folders that do not fit the layout, with the reason.

        With ``filters``, only those whose key starts with the selected levels (after the ML bucket's leading
        ``raw/``): a key too broken to show its levels belongs to no selection, only to the whole fleet.
        """
        cloud = self.inventory.snapshot.anomalies.assign(source=lambda f: f["role"].astype(str) + " bucket")
        local = pd.DataFrame(self.local.anomalies, columns=["key", "reason"]).assign(source="local", size=0)
        table = pd.concat(
            [cloud[["source", "key", "size", "reason"]], local[["source", "key", "size", "reason"]]], ignore_index=True
        )
        chosen = [(i, getattr(filters, level)) for i, level in enumerate(LEVELS) if filters and getattr(filters, level)]
        if not chosen or table.empty:
            return table
        parts = table["key"].astype(str).str.replace(r"^raw/", "", regex=True).str.split("/")
        keep = np.ones(len(table), dtype=bool)
        for position, value in chosen:
            keep &= (parts.str[position] == value).to_numpy(dtype=bool, na_value=False)
        return table[keep].reset_index(drop=True)


def _levels(lb_key: str) -> tuple[str, str, str, str, str]:
    """The five levels of a laser-box key (no level holds a '/')."""
    cid, regionid, fieldid, twid, lbid = lb_key.split("/")
    return cid, regionid, fieldid, twid, lbid


def _few(names: list[str]) -> str:
    """The first three names, and an ellipsis when there are more."""
    return ", ".join(names[:3]) + ("…" if len(names) > 3 else "")


def _opt(value: Any) -> float | None:
    """A float, or None for NaN/None (JSON-friendly optional numbers)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or pd.isna(value):
        return None
    return float(value)
