"""Perception metrics on tiny hand-made tables; every expected value is worked out in the comments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtool.analysis.perception import (
    DETECTION_CONFIDENCE_BINS,
    TRACK_COLUMNS,
    TRACK_CONFIDENCE_BINS,
    ExtractionTables,
    analyze,
    fps_table,
    histogram,
    latency_kpis,
    latency_ms,
    message_table,
    run_duration_s,
    stream_kpis,
    track_lifecycles,
    track_summary,
)

NAN = float("nan")


def messages(stamps: list[float], bags: list[str] | None = None, **extra: list[float]) -> pd.DataFrame:
    bags = bags or ["bag_0"] * len(stamps)
    return pd.DataFrame({"bag_file": bags, "bag_timestamp_s": stamps, "header_timestamp_s": stamps, **extra})


def same(actual: pd.Series | np.ndarray, expected: list[float]) -> None:
    """Equal element-wise, NaN where NaN is expected."""
    np.testing.assert_allclose(np.asarray(actual, dtype="float64"), expected, rtol=1e-12, equal_nan=True)


# -- FPS ------------------------------------------------------------------------------------------


def test_interval_is_nan_on_the_first_row_and_at_every_bag_boundary() -> None:
    # bag a: 0.00, 0.04, 0.08 -> intervals NaN (first row), 0.04, 0.04
    # bag b: 10.00, 10.05     -> NaN (bag changed, the 9.92 s gap is not an interval), 0.05
    # bag a again: 10.10      -> NaN (changed back), even though 10.10 - 10.05 = 0.05 > 0
    table = fps_table(messages([0.0, 0.04, 0.08, 10.0, 10.05, 10.10], ["a", "a", "a", "b", "b", "a"]))
    same(table["interval_s"], [NAN, 0.04, 0.04, NAN, 0.05, NAN])
    same(table["instant_fps"], [NAN, 25.0, 25.0, NAN, 20.0, NAN])  # 1/0.04 = 25, 1/0.05 = 20


def test_zero_and_negative_intervals_have_no_instant_fps() -> None:
    # stamps 0, 0.1, 0.1 (duplicate), 0.05 (out of order), 0.25
    # intervals NaN, 0.1, 0, -0.05, 0.2 -> instant NaN, 10, NaN, NaN, 5
    table = fps_table(messages([0.0, 0.1, 0.1, 0.05, 0.25]))
    same(table["interval_s"], [NAN, 0.1, 0.0, -0.05, 0.2])
    same(table["instant_fps"], [NAN, 10.0, NAN, NAN, 5.0])


def test_rolling_fps_uses_25_rows_needs_5_values_and_runs_across_bags() -> None:
    # Bag a, rows 0..29: row r >= 1 comes 1/r s after row r-1, so its instant FPS is exactly r (row 0: NaN).
    # Bag b, rows 30..31: row 30 is a boundary (NaN), row 31 comes 1/2 s later (instant 2).
    gaps = [1.0 / r for r in range(1, 30)]
    stamps_a = list(np.concatenate([[0.0], np.cumsum(gaps)]))
    table = fps_table(messages([*stamps_a, 100.0, 100.5], ["a"] * 30 + ["b"] * 2))
    same(table["instant_fps"][1:30], list(range(1, 30)))
    rolling = table["rolling_fps"]
    # rows 0..4: at most 4 values (1..4) in the window -> NaN
    assert rolling[:5].isna().all()
    assert rolling[5] == pytest.approx(3.0)  # mean(1..5) = 15/5
    assert rolling[24] == pytest.approx(12.5)  # rows 0..24 -> values 1..24, mean 300/24
    assert rolling[25] == pytest.approx(13.0)  # rows 1..25 -> values 1..25 (row 0 left the window), 325/25
    assert rolling[29] == pytest.approx(17.0)  # rows 5..29 -> values 5..29, mean (5+29)/2
    # Not reset at the bag boundary: row 30 (NaN) still averages rows 6..29 -> (6+29)/2 = 17.5,
    # and row 31 averages 7..29 and 2 -> (23 * 18 + 2) / 24 = 416/24.
    assert rolling[30] == pytest.approx(17.5)
    assert rolling[31] == pytest.approx(416 / 24)


def per_row_fps(stamps: list[float], bags: list[str]) -> tuple[list[float], list[float]]:
    """The legacy formulas written out row by row, as the reference for the property test."""
    instant: list[float] = []
    for i, stamp in enumerate(stamps):
        interval = stamp - stamps[i - 1] if i and bags[i] == bags[i - 1] else NAN
        instant.append(1.0 / interval if interval > 0 else NAN)
    rolling = []
    for i in range(len(stamps)):
        window = [v for v in instant[max(0, i - 24) : i + 1] if not math.isnan(v)]
        rolling.append(sum(window) / len(window) if len(window) >= 5 else NAN)
    return instant, rolling


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(-3, 50)), max_size=80))
def test_fps_matches_the_row_by_row_formulas(rows: list[tuple[str, int]]) -> None:
    bags = [bag for bag, _ in rows]
    stamps = list(np.cumsum([step / 100 for _, step in rows]))
    table = fps_table(messages(stamps, bags))
    instant, rolling = per_row_fps(stamps, bags)
    np.testing.assert_allclose(table["instant_fps"], instant, rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(table["rolling_fps"], rolling, rtol=1e-9, equal_nan=True)


# -- latency, counts, histograms --------------------------------------------------------------------


def test_latency_keeps_the_sign() -> None:
    # 1000 * (10.00 - 10.05) = -50 ms (header stamped before its image: a clock problem to show, not hide)
    # 1000 * (10.10 - 10.08) = +20 ms
    table = messages([10.0, 10.1], image_timestamp_s=[10.05, 10.08], num_detections=[3, 0])
    same(latency_ms(table), [-50.0, 20.0])
    series = message_table(table, "detections")
    same(series["latency_ms"], [-50.0, 20.0])
    same(series["count"], [3, 0])
    assert list(series.columns) == [
        "bag_file", "header_timestamp_s", "interval_s", "instant_fps", "rolling_fps", "latency_ms", "count",
    ]


def test_histograms_have_fixed_edges_and_drop_values_outside() -> None:
    # Detection: 20 bins of 0.05 over [0, 1]. 0.0 and 0.049 -> bin 0; 0.06 -> bin 1; 0.52 -> bin 10;
    # 1.0 -> bin 19 (the last bin includes its right edge); -0.01, 1.01 and NaN are dropped.
    scores = [0.0, 0.049, 0.06, 0.52, 1.0, -0.01, 1.01, NAN]
    detection = histogram(scores, DETECTION_CONFIDENCE_BINS)
    same(detection.edges, [i * 0.05 for i in range(21)])
    expected = [0] * 20
    expected[0], expected[1], expected[10], expected[19] = 2, 1, 1, 1
    assert detection.counts.tolist() == expected
    assert detection.total == 5
    same(detection.centres[:2], [0.025, 0.075])
    # Track: 24 bins of 0.05 over [0, 1.2]. 1.01 -> bin 20; 1.1 -> bin 22; 1.2 -> bin 23 (right edge);
    # 1.25 and -0.01 are dropped.
    track = histogram([1.01, 1.1, 1.2, 1.25, -0.01], TRACK_CONFIDENCE_BINS)
    assert len(track.edges) == 25
    assert track.edges[-1] == pytest.approx(1.2)
    assert track.counts.nonzero()[0].tolist() == [20, 22, 23]
    assert track.total == 3


# -- track lifecycles ---------------------------------------------------------------------------------


def tracked(rows: list[tuple[str, int, int, float]]) -> pd.DataFrame:
    """(bag_file, seq of the tracking message, tracking_id, score) per tracked object."""
    return pd.DataFrame(rows, columns=["bag_file", "seq", "tracking_id", "score"])


def test_track_lifecycle_counts_active_frames_span_and_density() -> None:
    # Track 7 appears in the tracking messages with seq 10, 11 and 13 (missing at 12):
    # active 3, span 13 - 10 + 1 = 4, density 3/4 = 0.75; scores 0.5, 0.7, 0.9 -> avg 0.7, max 0.9, min 0.5.
    tracks = track_lifecycles(tracked([("a", 10, 7, 0.5), ("a", 11, 7, 0.7), ("a", 13, 7, 0.9)]))
    assert list(tracks.columns) == list(TRACK_COLUMNS)
    row = tracks.iloc[0]
    assert (row["track_id"], row["active_frames"], row["track_span"]) == (7, 3, 4)
    assert (row["first_seq"], row["last_seq"]) == (10, 13)
    assert row["density"] == pytest.approx(0.75)
    assert (row["avg_confidence"], row["max_confidence"], row["min_confidence"]) == pytest.approx((0.7, 0.9, 0.5))


def test_equal_track_ids_in_two_bags_are_two_tracks() -> None:
    # Id 7 in bag a at seq 10, 11, 13 and in bag b at seq 2 (the tracker restarted with the new bag).
    # The legacy merged them into one track spanning 2..13; per bag they are span 4 and span 1.
    tracks = track_lifecycles(
        tracked([("a", 10, 7, 0.5), ("a", 11, 7, 0.7), ("a", 13, 7, 0.9), ("b", 2, 7, 0.4)])
    ).set_index("bag_file")
    assert tracks.loc["a", ["active_frames", "track_span"]].tolist() == [3, 4]
    assert tracks.loc["b", ["active_frames", "track_span"]].tolist() == [1, 1]
    assert tracks.loc["b", "density"] == 1.0
    summary = track_summary(tracks.reset_index())
    # 2 tracks; mean span (4 + 1) / 2 = 2.5; mean density (0.75 + 1) / 2 = 0.875;
    # density histogram (20 bins over [0, 1]): 0.75 -> bin 15, 1.0 -> bin 19.
    assert summary.total_tracks == 2
    assert summary.avg_track_lifetime == pytest.approx(2.5)
    assert summary.mean_density == pytest.approx(0.875)
    assert summary.density.counts.nonzero()[0].tolist() == [15, 19]


def test_span_below_one_gives_density_zero_and_nan_scores_are_skipped() -> None:
    # Track 8 seen at seq 20 then 5 (the seq counter restarted): span 5 - 20 + 1 = -14 <= 0 -> density 0.
    # Its scores NaN and 0.3: confidences skip the NaN -> 0.3.
    row = track_lifecycles(tracked([("a", 20, 8, NAN), ("a", 5, 8, 0.3)])).iloc[0]
    assert (row["first_seq"], row["last_seq"], row["track_span"], row["density"]) == (20, 5, -14, 0.0)
    assert row["avg_confidence"] == pytest.approx(0.3)


# -- KPIs ---------------------------------------------------------------------------------------------


def ten_frames() -> pd.DataFrame:
    # Steps in 1/32 s (exact in binary): 1,1,1,1,2,1,1,3,1 -> intervals NaN, 1/32 x4, 2/32, 1/32 x2, 3/32, 1/32
    steps = [0, 1, 1, 1, 1, 2, 1, 1, 3, 1]
    return messages(list(100.0 + np.cumsum(steps) / 32))


def test_stream_kpis_on_ten_frames() -> None:
    kpis = stream_kpis(fps_table(ten_frames()))
    # instant FPS: NaN, 32, 32, 32, 32, 16, 32, 32, 10.667, 32 -> 9 values, sorted 10.667, 16, 32 x 7
    assert kpis.messages == 10
    assert kpis.median_fps == pytest.approx(32.0)  # the 5th of 9 sorted values
    # 5th percentile: position 0.05 * (9 - 1) = 0.4 -> 32/3 + 0.4 * (16 - 32/3) = 12.8
    assert kpis.p5_fps == pytest.approx(12.8)
    # Below 25 FPS: the 2/32 and 3/32 intervals = 5/32 s out of 7/32 + 2/32 + 3/32 = 12/32 s -> 5/12
    assert kpis.share_below_target == pytest.approx(5 / 12)
    # Exactly at the target is not below it: with a 32 FPS target the 32 FPS intervals still count as met.
    assert stream_kpis(fps_table(ten_frames()), target=32.0).share_below_target == pytest.approx(5 / 12)
    # Nominal 32 FPS: 1/32 s -> round(1) - 1 = 0; 2/32 -> 2 - 1 = 1; 3/32 -> 3 - 1 = 2; total 3
    assert kpis.dropped_frames == 3


def test_dropped_frames_never_negative_and_rounds_half_up() -> None:
    # One bag; intervals 0.1, 0.1, 0.1, 0.01, 0.25 -> instant 10, 10, 10, 100, 4; median 10.
    # 0.01 * 10 = 0.1 -> round 0 - 1 = -1, floored at 0; 0.25 * 10 = 2.5 -> rounds half up to 3 -> 2 dropped.
    kpis = stream_kpis(fps_table(messages([0.0, 0.1, 0.2, 0.3, 0.31, 0.56])))
    assert kpis.median_fps == pytest.approx(10.0)
    assert kpis.dropped_frames == 2


def test_latency_kpis_are_percentiles_with_linear_interpolation() -> None:
    # Sorted 10, 20, 30, 40 ms: p50 at position 1.5 -> 25; p95 at 2.85 -> 38.5; p99 at 2.97 -> 39.7; mean 25
    kpis = latency_kpis(pd.Series([40.0, 10.0, NAN, 30.0, 20.0]))
    assert (kpis.mean_ms, kpis.p50_ms, kpis.p95_ms, kpis.p99_ms) == pytest.approx((25.0, 25.0, 38.5, 39.7))


def test_run_kpis_combine_the_tables() -> None:
    frames = ten_frames()
    frames["bag_timestamp_s"] = [0.0, 30.0] + [10.0] * 8  # bag_0 recorded 0..30 s
    later = messages([200.0, 230.0], ["bag_1", "bag_1"])  # bag_1 recorded 200..230 s (the gap is not counted)
    detections = pd.concat([frames.head(2), later], ignore_index=True).assign(
        image_timestamp_s=lambda t: t["header_timestamp_s"] - 0.02, num_detections=[1, 2, 3, 4]
    )
    tables = ExtractionTables(
        frames=frames,
        detections=detections,
        tracking=detections.head(0).rename(columns={"num_detections": "num_tracked"}),
        detection_objects=pd.DataFrame({"score": [0.2, 0.4, NAN]}),
        tracked_objects=tracked([("bag_0", 1, 1, 0.9), ("bag_0", 2, 2, 0.8), ("bag_1", 1, 1, 0.7)]),
        bags=pd.DataFrame({"name": ["bag_0", "bag_1", "bag_2"], "status": ["ok", "ok", "failed"],
                           "error": [None, None, "unindexed bag"]}),
    )
    kpis = analyze(tables).kpis.to_dict()
    assert kpis["frames_dropped_frames"] == 3
    assert kpis["run_duration_s"] == pytest.approx(60.0)  # (30 - 0) + (230 - 200)
    assert kpis["total_tracks"] == 3  # id 1 in bag_0 and id 1 in bag_1 are different tracks
    assert kpis["tracks_per_minute"] == pytest.approx(3.0)  # 3 tracks / 1 minute
    assert kpis["mean_detections_per_frame"] == pytest.approx(2.5)  # (1 + 2 + 3 + 4) / 4
    assert kpis["avg_detection_confidence"] == pytest.approx(0.3)  # (0.2 + 0.4) / 2, NaN skipped
    assert kpis["detection_latency_p50_ms"] == pytest.approx(20.0)
    assert kpis["failed_bags"] == 1
    assert kpis["tracking_messages"] == 0
    assert kpis["tracking_median_fps"] is None  # no tracking messages: "no data", not 0
    assert kpis["tracking_latency_p95_ms"] is None


# -- empty input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", [pd.DataFrame(), messages([])], ids=["no columns", "headers only"])
def test_every_function_accepts_an_empty_table(table: pd.DataFrame) -> None:
    assert fps_table(table).empty
    assert latency_ms(table).empty
    assert message_table(table, "tracking").empty
    assert track_lifecycles(table).empty
    assert list(track_lifecycles(table).columns) == list(TRACK_COLUMNS)
    assert math.isnan(run_duration_s(table, table))
    kpis = stream_kpis(fps_table(table))
    assert (kpis.messages, kpis.dropped_frames) == (0, None)
    assert math.isnan(kpis.median_fps) and math.isnan(kpis.share_below_target)
    assert histogram(np.array([]), DETECTION_CONFIDENCE_BINS).total == 0
    summary = track_summary(track_lifecycles(table))
    assert summary.total_tracks == 0 and math.isnan(summary.avg_track_lifetime)


def test_analyze_an_empty_run() -> None:
    result = analyze(ExtractionTables())
    assert result.frames.empty and result.tracks.empty
    assert result.detection_confidence.counts.tolist() == [0] * 20
    assert result.track_confidence.counts.tolist() == [0] * 24
    kpis = result.kpis.to_dict()
    assert kpis["total_tracks"] == 0 and kpis["failed_bags"] == 0
    assert kpis["frames_median_fps"] is None and kpis["tracks_per_minute"] is None
