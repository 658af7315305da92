"""Coverage arithmetic on run tables (vectorised, no I/O).

A run's coverage is ``min(100, 100 · labels / (bags · E))`` with E the expected labelled samples per bag.
A run without raw bags has no coverage: when it has ML samples it is flagged "ML only" and its labels
are kept out of every coverage ratio, so they cannot make other runs look covered.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from runtool.models import CoverageSettings

__all__ = ["LB_COLUMNS", "coverage_pct", "daily_totals", "laser_box_totals", "with_coverage"]

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
    key = out["cid"].astype(str)
    for column in LB_COLUMNS[1:]:
        key = key + "/" + out[column].astype(str)
    out["lb_key"] = key
    return out


def daily_totals(runs: pd.DataFrame, settings: CoverageSettings) -> pd.DataFrame:
    """Per UTC day from the first to the last day with runs; days without runs are rows of zeros."""
    columns = ["day", "runs", "raw_bags", "ml_frames", "ml_labels", "coverage_pct", "laser_boxes"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    grouped = runs.groupby("day").agg(
        runs=("timestamp", "size"),
        raw_bags=("raw_bags", "sum"),
        ml_frames=("ml_frames", "sum"),
        ml_labels=("ml_labels", "sum"),
        covered_labels=("covered_labels", "sum"),
        laser_boxes=("lb_key", "nunique"),
    )
    calendar = pd.date_range(grouped.index.min(), grouped.index.max(), freq="D", tz="UTC", name="day")
    grouped = grouped.reindex(calendar, fill_value=0)
    grouped["coverage_pct"] = coverage_pct(
        grouped["covered_labels"], grouped["raw_bags"], settings.expected_samples_per_bag
    )
    return grouped.reset_index()[columns]


def laser_box_totals(runs: pd.DataFrame, settings: CoverageSettings) -> pd.DataFrame:
    """Per laser box: runs, bags, frames, labels, coverage %, active days and per-active-day averages."""
    columns = ["lb_key", "lbid", "runs", "total_bags", "total_frames", "total_labels", "coverage_pct",
               "active_days", "avg_bags_per_day", "avg_labels_per_day"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    active = runs[runs["raw_bags"] > 0]
    totals = runs.groupby("lb_key").agg(
        lbid=("lbid", "first"),
        runs=("timestamp", "size"),
        total_bags=("raw_bags", "sum"),
        total_frames=("ml_frames", "sum"),
        total_labels=("ml_labels", "sum"),
        covered_labels=("covered_labels", "sum"),
    )
    totals["active_days"] = active.groupby("lb_key")["day"].nunique().reindex(totals.index, fill_value=0)
    totals["coverage_pct"] = coverage_pct(
        totals["covered_labels"], totals["total_bags"], settings.expected_samples_per_bag
    )
    days = totals["active_days"].where(totals["active_days"] > 0)
    totals["avg_bags_per_day"] = totals["total_bags"] / days
    totals["avg_labels_per_day"] = totals["covered_labels"] / days
    return totals.reset_index().sort_values("lb_key", ignore_index=True)[columns]
