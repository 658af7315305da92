"""Pure metric functions (pandas/numpy) used by the services."""

from __future__ import annotations

from runtool.analysis.coverage import (
    LB_COLUMNS,
    coverage_pct,
    daily_totals,
    group_sums,
    laser_box_day_totals,
    laser_box_keys,
    laser_box_totals,
    with_coverage,
)

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
