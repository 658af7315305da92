"""Coverage arithmetic on run tables (vectorised, no I/O).

A run's coverage is ``min(100, 100 · labels / (bags · E))`` with E the expected labelled samples per bag.
A run without raw bags has no coverage: when it has ML samples it is flagged "ML only" and its labels
are kept out of every coverage ratio, so they cannot make other runs look covered.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from runtool.models import CoverageSettings

__all__ = [
    "LB_COLUMNS",
    "coverage_pct",
    "daily_totals",
    "group_sums",
    "laser_box_day_totals",
    "laser_box_keys",
    "laser_box_totals",
    "with_coverage",
]

LB_COLUMNS = ["cid", "regionid", "fieldid", "twid", "lbid"]


def coverage_pct(labels: pd.Series | np.ndarray, bags: pd.Series | np.ndarray, expected: float) -> np.ndarray:
    """Coverage % per element; NaN where there are no bags."""
    labels_arr = np.asarray(labels, dtype="float64")
    expected_arr = np.asarray(bags, dtype="float64") * expected
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.minimum(100.0, 100.0 * labels_arr / expected_arr)
    return np.where(expected_arr > 0, pct, np.nan)


def with_coverage(runs: pd.DataFrame, settings: CoverageSettings) -> pd.DataFrame:
    """Add ``coverage_pct``, ``under_labelled``, ``ml_only``, ``covered_labels``, ``day`` and ``lb_key``."""
    pct = coverage_pct(runs["ml_labels"], runs["raw_bags"], settings.expected_samples_per_bag)
    has_bags = runs["raw_bags"].to_numpy() > 0
    out = runs.assign(
        coverage_pct=pct,
        under_labelled=has_bags & (np.nan_to_num(pct, nan=0.0) < settings.under_labelled_pct),
        ml_only=~has_bags & ((runs["ml_labels"] > 0) | (runs["ml_frames"] > 0)).to_numpy(),
        covered_labels=np.where(has_bags, runs["ml_labels"].to_numpy(), 0),
        day=runs["start_time"].dt.floor("D"),
    )
    if "lb_key" not in out:
        out["lb_key"] = laser_box_keys(out)
    return out


def laser_box_keys(runs: pd.DataFrame) -> pd.Series:
    """``cid/regionid/fieldid/twid/lbid`` per run (a run table may carry it, computed once: see ``all_runs``)."""
    key = runs["cid"].astype(str)
    for column in LB_COLUMNS[1:]:
        key = key + "/" + runs[column].astype(str)
    return key


def group_sums(
    keys: list[np.ndarray | pd.Series], values: dict[str, np.ndarray]
) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Sum ``values`` per distinct key tuple (sorted), with numpy: pandas' groupby costs tens of milliseconds
    of fixed overhead per call, which dominates on the few hundred runs a page shows.

    Keys are factorised by hashing (sorting only the distinct values; a text column stays in Arrow, a Series is
    factorised there): sorting 100,000 text keys themselves costs a hundred milliseconds.
    """
    combined = np.zeros(len(keys[0]) if keys else 0, dtype=np.int64)
    factorised = []
    for key in keys:
        code, unique = pd.factorize(key if isinstance(key, pd.Series) else np.asarray(key), sort=True)
        factorised.append((code, unique))
        # Re-factorised after each level, so the combined code stays below the number of rows (no overflow).
        combined, _ = pd.factorize(combined * len(unique) + code, sort=True)
    groups, inverse = np.unique(combined, return_inverse=True)
    first = np.full(len(groups), -1, dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(inverse))[::-1]
    group_keys = [np.asarray(unique)[code[first]] for code, unique in factorised]
    sums = {name: np.bincount(inverse, weights=np.asarray(v, dtype="float64"), minlength=len(groups))
            for name, v in values.items()}
    sums["size"] = np.bincount(inverse, minlength=len(groups)).astype("float64")
    return group_keys, sums


def _counts(runs: pd.DataFrame) -> dict[str, np.ndarray]:
    return {name: runs[name].to_numpy() for name in ("raw_bags", "ml_frames", "ml_labels", "covered_labels")}


def daily_totals(runs: pd.DataFrame, settings: CoverageSettings) -> pd.DataFrame:
    """Per UTC day from the first to the last day with runs; days without runs are rows of zeros."""
    columns = ["day", "runs", "raw_bags", "ml_frames", "ml_labels", "coverage_pct", "laser_boxes"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    days = runs["day"].to_numpy(dtype="datetime64[ns]")
    (day_keys,), sums = group_sums([days], _counts(runs))
    (pair_days, _), _ = group_sums([days, runs["lb_key"]], {})
    boxes = pd.Series(pair_days).value_counts()
    totals = pd.DataFrame({name: sums[name].astype("int64") for name in ("raw_bags", "ml_frames", "ml_labels",
                                                                         "covered_labels")},
                          index=pd.DatetimeIndex(day_keys, tz="UTC", name="day"))
    totals["runs"] = sums["size"].astype("int64")
    totals["laser_boxes"] = boxes.reindex(day_keys).to_numpy().astype("int64")
    calendar = pd.date_range(totals.index.min(), totals.index.max(), freq="D", tz="UTC", name="day")
    totals = totals.reindex(calendar, fill_value=0)
    totals["coverage_pct"] = coverage_pct(
        totals["covered_labels"], totals["raw_bags"], settings.expected_samples_per_bag
    )
    return totals.reset_index()[columns]


def laser_box_day_totals(runs: pd.DataFrame, settings: CoverageSettings) -> pd.DataFrame:
    """One row per laser box and day it recorded: runs, bags, labels and coverage (the fleet heatmap's cells).

    ``only_timestamp`` is the run's timestamp on a day with a single run (so a cell can open that run), else None.
    """
    columns = ["lb_key", "day", "runs", "raw_bags", "ml_labels", "coverage_pct", "only_timestamp"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    # The sum of row positions of a one-run group is that run's position.
    (lb_keys, days), sums = group_sums(
        [runs["lb_key"], runs["day"].to_numpy(dtype="datetime64[ns]")],
        {**_counts(runs), "position": np.arange(len(runs))},
    )
    single = sums["size"] == 1
    only = np.full(len(single), None, dtype=object)
    only[single] = runs["timestamp"].take(sums["position"][single].astype("int64")).to_numpy(dtype=object)
    return pd.DataFrame({
        "lb_key": lb_keys,
        "day": pd.DatetimeIndex(days, tz="UTC"),
        "runs": sums["size"].astype("int64"),
        "raw_bags": sums["raw_bags"].astype("int64"),
        "ml_labels": sums["ml_labels"].astype("int64"),
        "coverage_pct": coverage_pct(sums["covered_labels"], sums["raw_bags"], settings.expected_samples_per_bag),
        "only_timestamp": only,
    })[columns]


def laser_box_totals(runs: pd.DataFrame, settings: CoverageSettings) -> pd.DataFrame:
    """Per laser box: runs, bags, frames, labels, coverage %, active days and per-active-day averages."""
    columns = ["lb_key", "lbid", "runs", "total_bags", "total_frames", "total_labels", "coverage_pct",
               "active_days", "avg_bags_per_day", "avg_labels_per_day"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    lb = runs["lb_key"]
    (lb_keys, lbids), sums = group_sums([lb, runs["lbid"]], _counts(runs))
    active = runs["raw_bags"].to_numpy() > 0
    (active_lbs, _), _ = group_sums([lb[active], runs["day"].to_numpy(dtype="datetime64[ns]")[active]], {})
    active_days = pd.Series(active_lbs).value_counts().reindex(lb_keys, fill_value=0).to_numpy()
    days = np.where(active_days > 0, active_days, np.nan)
    return pd.DataFrame({
        "lb_key": lb_keys,
        "lbid": lbids,
        "runs": sums["size"].astype("int64"),
        "total_bags": sums["raw_bags"].astype("int64"),
        "total_frames": sums["ml_frames"].astype("int64"),
        "total_labels": sums["ml_labels"].astype("int64"),
        "coverage_pct": coverage_pct(sums["covered_labels"], sums["raw_bags"], settings.expected_samples_per_bag),
        "active_days": active_days.astype("int64"),
        "avg_bags_per_day": sums["raw_bags"] / days,
        "avg_labels_per_day": sums["covered_labels"] / days,
    })[columns]
