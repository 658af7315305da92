"""Tests for the coverage arithmetic on small hand-made run tables (expected values worked out by hand)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from runtool.analysis.coverage import coverage_pct, daily_totals, laser_box_totals, with_coverage
from runtool.models import CoverageSettings

E17 = CoverageSettings()  # E = 17, under-labelled below 80 %
LB1 = "client_001/region_a/field_x/TW_001/LB_0001"
LB2 = "client_001/region_a/field_x/TW_001/LB_0002"


def run(lbid: str, when: str, bags: int, frames: int, labels: int) -> dict[str, Any]:
    """One run row; ``when`` is ISO (``2025-08-01T08:00:00``, UTC)."""
    return {
        "cid": "client_001", "regionid": "region_a", "fieldid": "field_x", "twid": "TW_001", "lbid": lbid,
        "timestamp": when.replace("-", "_") + "Z",
        "start_time": pd.Timestamp(when, tz="UTC"),
        "raw_bags": bags, "ml_frames": frames, "ml_labels": labels,
    }


def table(*rows: dict[str, Any]) -> pd.DataFrame:
    columns = ["cid", "regionid", "fieldid", "twid", "lbid", "timestamp", "start_time", "raw_bags", "ml_frames",
               "ml_labels"]
    frame = pd.DataFrame(list(rows), columns=columns)
    frame["start_time"] = pd.to_datetime(frame["start_time"], utc=True)
    for column in ("raw_bags", "ml_frames", "ml_labels"):
        frame[column] = frame[column].astype("int64")
    return frame


def utc_day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# The fleet used by the aggregate tests (E = 17):
#   A  LB_0001 Aug 1 08:00  4 bags 40 frames 34 labels  → 100·34/68  = 50.0 %
#   B  LB_0001 Aug 1 14:00  2 bags 20 frames 17 labels  → 100·17/34  = 50.0 %
#   C  LB_0001 Aug 4 23:30  3 bags 30 frames 51 labels  → 100·51/51  = 100.0 %
#   D  LB_0002 Aug 2 09:00  0 bags  5 frames  5 labels  → ML only, no coverage
#   F  LB_0002 Aug 3 10:00  1 bag  10 frames 10 labels  → 100·10/17  = 58.82 %
FLEET = table(
    run("LB_0001", "2025-08-01T08:00:00", 4, 40, 34),
    run("LB_0001", "2025-08-01T14:00:00", 2, 20, 17),
    run("LB_0001", "2025-08-04T23:30:00", 3, 30, 51),
    run("LB_0002", "2025-08-02T09:00:00", 0, 5, 5),
    run("LB_0002", "2025-08-03T10:00:00", 1, 10, 10),
)


# --- coverage_pct --------------------------------------------------------------------------------------------------


def test_coverage_pct_examples() -> None:
    pct = coverage_pct(np.array([34, 0, 100, 25, 5]), np.array([4, 3, 1, 2, 0]), 17.0)
    assert pct[0] == pytest.approx(50.0)  # 100·34/(4·17) = 3400/68 = 50
    assert pct[1] == 0.0  # no labels
    assert pct[2] == 100.0  # 100·100/17 = 588 %, capped at 100
    assert pct[3] == pytest.approx(73.529411, rel=1e-6)  # 100·25/34 = 73.5294…
    assert math.isnan(pct[4])  # no bags: no coverage


def test_coverage_pct_with_no_bags_is_nan_even_without_labels() -> None:
    assert math.isnan(coverage_pct(pd.Series([0]), pd.Series([0]), 17.0)[0])


def test_coverage_pct_accepts_series_and_a_fractional_expectation() -> None:
    pct = coverage_pct(pd.Series([25, 50]), pd.Series([4, 4]), 12.5)
    # 100·25/(4·12.5) = 2500/50 = 50 ; 100·50/50 = 100
    assert list(pct) == [pytest.approx(50.0), pytest.approx(100.0)]


def test_coverage_pct_exactly_full_is_100() -> None:
    assert coverage_pct(np.array([68]), np.array([4]), 17.0)[0] == pytest.approx(100.0)  # 68/68


# --- with_coverage -------------------------------------------------------------------------------------------------


def test_with_coverage_threshold_is_strict() -> None:
    settings = CoverageSettings(expected_samples_per_bag=10, under_labelled_pct=80)
    runs = table(
        run("LB_0001", "2025-08-01T08:00:00", 100, 799, 799),  # 100·799/(100·10) = 79.9 % → flagged
        run("LB_0001", "2025-08-01T09:00:00", 100, 800, 800),  # 100·800/1000 = 80.0 % → not flagged
        run("LB_0001", "2025-08-01T10:00:00", 1, 0, 0),  # 0 % → flagged
    )
    out = with_coverage(runs, settings)
    assert list(out["coverage_pct"]) == [pytest.approx(79.9), pytest.approx(80.0), 0.0]
    assert list(out["under_labelled"]) == [True, False, True]


def test_with_coverage_flags_ml_only_runs_and_keeps_their_labels_out() -> None:
    runs = table(
        run("LB_0001", "2025-08-01T08:00:00", 0, 0, 3),  # labels, no bags → ML only
        run("LB_0001", "2025-08-01T09:00:00", 0, 4, 0),  # frames, no bags → ML only
        run("LB_0001", "2025-08-01T10:00:00", 0, 0, 0),  # nothing at all → not ML only
        run("LB_0001", "2025-08-01T11:00:00", 2, 34, 34),  # 100·34/34 = 100 %
    )
    out = with_coverage(runs, E17)
    assert list(out["ml_only"]) == [True, True, False, False]
    assert list(out["covered_labels"]) == [0, 0, 0, 34]
    assert list(out["under_labelled"]) == [False, False, False, False]  # no bags: never "under-labelled"
    assert [math.isnan(v) for v in out["coverage_pct"]] == [True, True, True, False]
    assert out["coverage_pct"].iloc[3] == pytest.approx(100.0)


def test_with_coverage_adds_day_and_lb_key_on_the_utc_day() -> None:
    runs = table(
        run("LB_0001", "2025-08-01T23:30:00", 1, 1, 1),
        run("LB_0002", "2025-08-02T00:00:00", 1, 1, 1),
    )
    out = with_coverage(runs, E17)
    assert list(out["day"]) == [utc_day("2025-08-01"), utc_day("2025-08-02")]
    assert list(out["lb_key"]) == [LB1, LB2]


def test_with_coverage_leaves_its_input_alone() -> None:
    runs = FLEET.copy()
    with_coverage(runs, E17)
    pd.testing.assert_frame_equal(runs, FLEET)


def test_with_coverage_keeps_rows_aligned_under_a_shuffled_index() -> None:
    runs = FLEET.copy()
    runs.index = [40, 10, 30, 0, 20]
    out = with_coverage(runs, E17)
    # each row keeps its own numbers: C (index 30) is 100 %, D (index 0) is ML only
    assert out.loc[30, "coverage_pct"] == pytest.approx(100.0)
    assert bool(out.loc[0, "ml_only"]) is True
    assert out.loc[0, "covered_labels"] == 0
    assert out.loc[30, "day"] == utc_day("2025-08-04")
    assert out.loc[40, "day"] == utc_day("2025-08-01")


def test_with_coverage_on_the_fleet() -> None:
    out = with_coverage(FLEET, E17)
    pct = list(out["coverage_pct"])
    assert pct[0] == pytest.approx(50.0)  # 34/68
    assert pct[1] == pytest.approx(50.0)  # 17/34
    assert pct[2] == pytest.approx(100.0)  # 51/51
    assert math.isnan(pct[3])
    assert pct[4] == pytest.approx(100 * 10 / 17)  # 58.82
    assert list(out["under_labelled"]) == [True, True, False, False, True]
    assert list(out["ml_only"]) == [False, False, False, True, False]


# --- daily_totals --------------------------------------------------------------------------------------------------


def test_daily_totals_fill_calendar_gaps_with_zero_rows() -> None:
    runs = table(
        run("LB_0001", "2025-08-01T08:00:00", 4, 40, 34),
        run("LB_0002", "2025-08-04T08:00:00", 2, 20, 17),
    )
    days = daily_totals(with_coverage(runs, E17), E17)
    # Aug 1, 2, 3, 4 → 4 rows
    assert list(days["day"]) == [utc_day(f"2025-08-0{d}") for d in (1, 2, 3, 4)]
    assert list(days["runs"]) == [1, 0, 0, 1]
    assert list(days["raw_bags"]) == [4, 0, 0, 2]
    assert list(days["ml_frames"]) == [40, 0, 0, 20]
    assert list(days["ml_labels"]) == [34, 0, 0, 17]
    assert list(days["laser_boxes"]) == [1, 0, 0, 1]
    pct = list(days["coverage_pct"])
    assert pct[0] == pytest.approx(50.0)  # 34/(4·17)
    assert math.isnan(pct[1])
    assert math.isnan(pct[2])
    assert pct[3] == pytest.approx(50.0)  # 17/(2·17)


def test_daily_totals_on_the_fleet() -> None:
    days = daily_totals(with_coverage(FLEET, E17), E17)
    assert list(days.columns) == ["day", "runs", "raw_bags", "ml_frames", "ml_labels", "coverage_pct",
                                  "laser_boxes"]
    # C at 23:30Z on Aug 4 stays on Aug 4: the calendar ends there, not on Aug 5
    assert list(days["day"]) == [utc_day(f"2025-08-0{d}") for d in (1, 2, 3, 4)]
    assert list(days["runs"]) == [2, 1, 1, 1]  # A+B, D, F, C
    assert list(days["raw_bags"]) == [6, 0, 1, 3]  # 4+2, 0, 1, 3
    assert list(days["ml_frames"]) == [60, 5, 10, 30]  # 40+20, 5, 10, 30
    assert list(days["ml_labels"]) == [51, 5, 10, 51]  # 34+17, 5 (ML only, still counted), 10, 51
    assert list(days["laser_boxes"]) == [1, 1, 1, 1]
    pct = list(days["coverage_pct"])
    assert pct[0] == pytest.approx(50.0)  # 51/(6·17) = 51/102
    assert math.isnan(pct[1])  # only an ML-only run: no bags, no coverage
    assert pct[2] == pytest.approx(100 * 10 / 17)  # 58.82
    assert pct[3] == pytest.approx(100.0)  # 51/51


def test_daily_totals_keep_ml_only_labels_out_of_the_day_coverage() -> None:
    runs = table(
        run("LB_0001", "2025-08-01T08:00:00", 2, 17, 17),  # 17/34 = 50 %
        run("LB_0002", "2025-08-01T09:00:00", 0, 17, 17),  # ML only: must not lift the day to 100 %
    )
    days = daily_totals(with_coverage(runs, E17), E17)
    assert len(days) == 1
    assert days["ml_labels"].iloc[0] == 34
    assert days["coverage_pct"].iloc[0] == pytest.approx(50.0)  # 17/(2·17), not 34/34
    assert days["laser_boxes"].iloc[0] == 2


def test_daily_totals_use_the_utc_day_across_midnight() -> None:
    runs = table(
        run("LB_0001", "2025-08-01T23:30:00", 1, 1, 1),
        run("LB_0001", "2025-08-02T00:30:00", 1, 1, 1),
    )
    days = daily_totals(with_coverage(runs, E17), E17)
    assert list(days["day"]) == [utc_day("2025-08-01"), utc_day("2025-08-02")]
    assert list(days["runs"]) == [1, 1]


def test_daily_totals_of_nothing() -> None:
    days = daily_totals(with_coverage(table(), E17), E17)
    assert days.empty
    assert list(days.columns) == ["day", "runs", "raw_bags", "ml_frames", "ml_labels", "coverage_pct",
                                  "laser_boxes"]


# --- laser_box_totals ----------------------------------------------------------------------------------------------


def test_laser_box_totals_on_the_fleet() -> None:
    boxes = laser_box_totals(with_coverage(FLEET, E17), E17)
    assert list(boxes["lb_key"]) == [LB1, LB2]
    assert list(boxes["lbid"]) == ["LB_0001", "LB_0002"]
    assert list(boxes["runs"]) == [3, 2]
    assert list(boxes["total_bags"]) == [9, 1]  # 4+2+3 ; 0+1
    assert list(boxes["total_frames"]) == [90, 15]  # 40+20+30 ; 5+10
    assert list(boxes["total_labels"]) == [102, 15]  # 34+17+51 ; 5+10
    # LB_0001 recorded bags on Aug 1 and Aug 4; LB_0002 only on Aug 3 (its Aug 2 run has no bags)
    assert list(boxes["active_days"]) == [2, 1]
    cov = list(boxes["coverage_pct"])
    assert cov[0] == pytest.approx(100 * 102 / 153)  # 102/(9·17) = 66.67 %
    assert cov[1] == pytest.approx(100 * 10 / 17)  # ML-only labels left out: 10/(1·17) = 58.82 %
    assert list(boxes["avg_bags_per_day"]) == [pytest.approx(4.5), pytest.approx(1.0)]  # 9/2 ; 1/1
    # per active day, counting only labels of runs with bags: 102/2 ; 10/1
    assert list(boxes["avg_labels_per_day"]) == [pytest.approx(51.0), pytest.approx(10.0)]


def test_laser_box_with_only_ml_only_runs_has_no_active_days() -> None:
    runs = table(
        run("LB_0003", "2025-08-01T08:00:00", 0, 5, 5),
        run("LB_0001", "2025-08-01T09:00:00", 1, 17, 17),
    )
    boxes = laser_box_totals(with_coverage(runs, E17), E17).set_index("lbid")
    assert boxes.loc["LB_0003", "active_days"] == 0
    assert boxes.loc["LB_0003", "total_labels"] == 5
    assert math.isnan(boxes.loc["LB_0003", "coverage_pct"])
    assert math.isnan(boxes.loc["LB_0003", "avg_bags_per_day"])
    assert math.isnan(boxes.loc["LB_0003", "avg_labels_per_day"])
    assert boxes.loc["LB_0001", "coverage_pct"] == pytest.approx(100.0)  # 17/17
    assert boxes.loc["LB_0001", "active_days"] == 1


def test_laser_box_totals_separate_same_lbid_under_different_parents() -> None:
    other = run("LB_0001", "2025-08-01T08:00:00", 2, 0, 0)
    other["twid"] = "TW_002"
    runs = table(run("LB_0001", "2025-08-01T08:00:00", 1, 0, 0), other)
    boxes = laser_box_totals(with_coverage(runs, E17), E17)
    assert list(boxes["lb_key"]) == [LB1, "client_001/region_a/field_x/TW_002/LB_0001"]
    assert list(boxes["total_bags"]) == [1, 2]


def test_laser_box_totals_of_nothing() -> None:
    boxes = laser_box_totals(with_coverage(table(), E17), E17)
    assert boxes.empty
    assert "active_days" in boxes.columns


# --- settings ------------------------------------------------------------------------------------------------------


def test_coverage_settings_defaults_and_validation() -> None:
    assert CoverageSettings() == CoverageSettings(expected_samples_per_bag=17.0, under_labelled_pct=80.0)
    with pytest.raises(ValueError):
        CoverageSettings(expected_samples_per_bag=0)
    with pytest.raises(ValueError):
        CoverageSettings(under_labelled_pct=150)
    with pytest.raises(ValueError):
        CoverageSettings(expected_samples_per_bag=float("nan"))
