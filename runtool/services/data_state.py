"""Read views over the cloud inventory and the local index: runs, filters, coverage and sync state."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from runtool.analysis import daily_totals, laser_box_day_totals, laser_box_totals, with_coverage
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


def _issues(row: Any, under_labelled_pct: float) -> str:
    """Human-readable problems of one run (a row of the run table), '; '-joined."""
    found: list[str] = []
    if row.raw_bags and row.local_bags and row.raw_bags != row.local_bags:
        found.append(f"Bag count mismatch: cloud={row.raw_bags}, local={row.local_bags}")
    elif row.raw_bags and row.local_bags and row.raw_bytes != row.local_raw_bytes:
        found.append(f"Bag size mismatch: cloud={row.raw_bytes:,} B, local={row.local_raw_bytes:,} B")
    cloud_ml, local_ml = row.ml_frames + row.ml_labels, row.local_frames + row.local_labels
    if cloud_ml and local_ml and (cloud_ml != local_ml or row.ml_bytes != row.local_ml_bytes):
        found.append(
            f"ML sample mismatch: cloud={row.ml_frames} frames/{row.ml_labels} labels, "
            f"local={row.local_frames} frames/{row.local_labels} labels"
        )
    if row.ml_only:
        found.append("ML only: samples without raw bags")
    if row.under_labelled:
        found.append(f"Under-labelled: {row.coverage_pct:.1f} % < {under_labelled_pct:g} %")
    if row.ml_frames > row.ml_labels and row.raw_bags:
        found.append(f"{row.ml_frames - row.ml_labels} frames without labels")
    return "; ".join(found)


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
        return [RunCoordinate(*parts) for parts in runs[list(COORD_COLUMNS)].astype(str).itertuples(index=False)]

    # -- coverage ------------------------------------------------------------------------------

    def temporal_coverage(self, filters: Filters, settings: CoverageSettings | None = None) -> TemporalData:
        """Every selected run as a point in start-time order (the single-laser-box timeline)."""
        settings = settings or self.settings
        runs = self.runs(filters, settings).sort_values("start_time")
        return TemporalData(filters, settings, tuple(self._points(runs)))

    @staticmethod
    def _points(runs: pd.DataFrame) -> Iterable[CoveragePoint]:
        for row in runs.itertuples(index=False):
            yield CoveragePoint(
                coordinate=RunCoordinate(row.cid, row.regionid, row.fieldid, row.twid, row.lbid, row.timestamp),
                start_time=row.start_time.to_pydatetime(),
                raw_bags=int(row.raw_bags),
                ml_frames=int(row.ml_frames),
                ml_labels=int(row.ml_labels),
                coverage_pct=None if np.isnan(row.coverage_pct) else float(row.coverage_pct),
                under_labelled=bool(row.under_labelled),
            )

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
            tuple(
                LaserBoxDay(row.lb_key, row.day.date(), int(row.raw_bags), int(row.ml_labels), _opt(row.coverage_pct),
                            int(row.runs), RunCoordinate.parse(f"{row.lb_key}/{row.only_timestamp}")
                            if isinstance(row.only_timestamp, str) else None)
                for row in cells.itertuples(index=False)
            ),
        )

    def coverage_statistics(self, filters: Filters, settings: CoverageSettings | None = None) -> CoverageStatistics:
        settings = settings or self.settings
        runs = self.runs(filters, settings)
        with_bags = runs[runs["raw_bags"] > 0]
        total_bags = int(with_bags["raw_bags"].sum())
        expected = total_bags * settings.expected_samples_per_bag
        covered = int(with_bags["ml_labels"].sum())
        worst = runs[runs["under_labelled"]].sort_values(["coverage_pct", "start_time"])
        return CoverageStatistics(
            total_runs=len(runs),
            runs_with_bags=len(with_bags),
            total_bags=total_bags,
            total_frames=int(runs["ml_frames"].sum()),
            total_labels=int(runs["ml_labels"].sum()),
            expected_samples=expected,
            overall_coverage_pct=min(100.0, 100.0 * covered / expected) if expected else None,
            average_coverage_pct=_opt(with_bags["coverage_pct"].mean()) if len(with_bags) else None,
            under_labelled=tuple(self._points(worst)),
            ml_only_runs=int(runs["ml_only"].sum()),
            average_bags_per_run=total_bags / len(with_bags) if len(with_bags) else None,
            average_labels_per_run=covered / len(with_bags) if len(with_bags) else None,
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
        """The selected runs with sync statuses and an ``issues`` text column."""
        settings = settings or self.settings
        runs = self.runs(filters, settings).copy()
        runs["issues"] = [_issues(row, settings.under_labelled_pct) for row in runs.itertuples(index=False)]
        return runs

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
            issues.append(f"Sample size mismatch: cloud={cloud_ml.total_bytes:,} B, local={local.ml.total_bytes:,} B")
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
            issues.append(f"Bag count mismatch: cloud={len(cloud)}, local={len(local)}")
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


def _few(names: list[str]) -> str:
    """The first three names, and an ellipsis when there are more."""
    return ", ".join(names[:3]) + ("…" if len(names) > 3 else "")


def _opt(value: Any) -> float | None:
    """A float, or None for NaN/None (JSON-friendly optional numbers)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or pd.isna(value):
        return None
    return float(value)
