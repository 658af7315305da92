"""Perception metrics on tiny hand-made tables; every expected value is worked out in the comments.

Most streams step by 1/8 or 1/32 s, exact in binary, so window edges fall exactly where the comments say.
"""

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
    bag_starts_s,
    fps_table,
    frame_gap_estimate,
    histogram,
    latency_kpis,
    latency_ms,
    message_table,
    run_duration_s,
    stream_kpis,
    track_lifecycles,
    track_summary,
    unanswered_frames,
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


def test_rate_counts_the_stamps_of_the_last_second_once_the_window_is_full() -> None:
    # 8 Hz for 2 s: stamps k/8, k = 0..16. Row k's window is (k/8 - 1, k/8]; it is full from k = 8 (1 s after
    # the first stamp) and then holds stamps k-7..k: 8 of them -> 8 FPS. Rows 0..7: NaN (window not full).
    table = fps_table(messages([k / 8 for k in range(17)]))
    same(table["rate_fps"], [NAN] * 8 + [8.0] * 9)
    # Each distinct stamp stands for the 1/8 s since the previous one; the first stands for nothing.
    same(table["rate_weight_s"], [0.0] + [0.125] * 16)
    kpis = stream_kpis(table, dropped_frames=None)
    assert (kpis.median_fps, kpis.p5_fps, kpis.share_below_target) == (8.0, 8.0, 1.0)  # 8 < the 25 FPS target


def test_a_two_second_window_halves_each_count() -> None:
    # 8 Hz for 3 s with a 2 s window: full from row 16 (t = 2), holding 16 stamps -> 16 / 2 = 8 FPS.
    table = fps_table(messages([k / 8 for k in range(25)]), window_s=2.0)
    same(table["rate_fps"], [NAN] * 16 + [8.0] * 9)


def test_rate_kpis_are_weighted_by_time() -> None:
    # 8 Hz from 0 to 3 s (k = 0..24), nothing for a second, then 8 Hz from 4 to 6 s (16 + 1 stamps).
    # Rates: 8 from t = 1 to 3 (17 rows, 0.125 s each = 2.125 s); at t = 4 the window (3, 4] holds only
    # itself -> 1 FPS, standing for the whole 1 s gap; at 4 + m/8 (m = 1..6) it holds m + 1 stamps ->
    # 2..7 FPS, 0.125 s each (0.75 s); from 4.875 to 6 (10 rows) 8 FPS again (1.25 s). Total 5.125 s.
    stamps = [k / 8 for k in range(25)] + [4 + m / 8 for m in range(17)]
    table = fps_table(messages(stamps))
    same(table["rate_fps"][24:33], [8.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    kpis = stream_kpis(table, dropped_frames=None, target=7.5)
    # Below 7.5 FPS: 1.0 s (at 1 FPS) + 0.75 s (2..7 FPS) out of 5.125 s.
    assert kpis.share_below_target == pytest.approx(1.75 / 5.125)
    # 5 % of 5.125 s = 0.256 s is reached within the 1 s at 1 FPS; half (2.56 s) only among the 8 FPS rows.
    assert (kpis.p5_fps, kpis.median_fps) == (1.0, 8.0)
    # Counted per message instead, the single 1 FPS row would be 1 of 34 (3 %) and the p5 would hide the gap.
    # The camera gap estimate: nominal gap 1/8 s (the median); the 1 s gap is 8 nominal gaps -> 7 missing.
    assert frame_gap_estimate(table) == 7


def test_steady_30_hz_detections_with_30_ms_latency_jitter_and_no_loss() -> None:
    # Frames every 1/30 s for 20 s; each answered by one detection stamped 20..80 ms (50 ± 30 ms) later,
    # written in stamp order. The window (t - 1, t] then holds 30 detections give or take the few whose
    # latency moved them across one of its ends: 60 ms of jitter is under two frame intervals, so at most
    # 2 on either end -> every rate within 28..32 and the stream's median at its throughput, 30 per second.
    rng = np.random.default_rng(30)
    count = 600
    image = 1_756_112_400.0 + np.arange(count) / 30
    header = image + rng.uniform(0.020, 0.080, count)
    order = np.argsort(header)
    detections = messages(list(header[order]), image_timestamp_s=list(image[order]), num_detections=[1] * count)
    frames = messages(list(image))
    kpis = analyze(ExtractionTables(frames=frames, detections=detections, tracking=detections.rename(
        columns={"num_detections": "num_tracked"}))).kpis.to_dict()
    throughput = (count - 1) / (header.max() - header.min())
    assert throughput == pytest.approx(30.0, rel=0.01)
    assert kpis["detections_median_fps"] == pytest.approx(throughput, rel=0.04)
    assert 28.0 <= kpis["detections_p5_fps"] <= 30.0
    assert kpis["detections_share_below_target"] == 0.0  # never under 25 FPS
    assert kpis["detections_dropped_frames"] == 0 and kpis["tracking_dropped_frames"] == 0
    rates = fps_table(detections)["rate_fps"].dropna()
    assert rates.between(28.0, 32.0).all()
    # The legacy instant FPS of the same stream spreads far wider: the jitter is not a rate.
    instant = fps_table(detections)["instant_fps"].dropna()
    assert instant.max() > 60.0 and instant.min() < 20.0


def test_every_fifth_detection_missing_drops_a_fifth_of_the_frames() -> None:
    # 300 frames at 30 Hz (10 s); frames k with k % 5 == 4 get no detection -> 240 detections, 60 dropped.
    # Any 30 consecutive frames hold exactly 6 unanswered ones, so every full window counts 24 detections:
    # 24 FPS, just under the 25 FPS target all the time.
    image = 500.0 + np.arange(300) / 30
    answered = image[np.arange(300) % 5 != 4]
    detections = messages(list(answered + 0.04), image_timestamp_s=list(answered), num_detections=[2] * 240)
    tables = ExtractionTables(frames=messages(list(image)), detections=detections)
    kpis = analyze(tables).kpis.to_dict()
    assert kpis["detections_messages"] == 240
    assert kpis["detections_dropped_frames"] == 60 == 300 // 5
    assert kpis["detections_median_fps"] == pytest.approx(24.0)
    assert kpis["detections_p5_fps"] == pytest.approx(24.0)
    assert kpis["detections_share_below_target"] == 1.0
    assert kpis["frames_dropped_frames"] == 0 and kpis["frames_median_fps"] == pytest.approx(30.0)


def test_a_run_with_frames_and_no_detection_stream_has_no_detection_figures() -> None:
    # Frames only: the detection and tracking rates, shares and dropped frames are unknown (None), not 0
    # FPS and not "every frame dropped".
    kpis = analyze(ExtractionTables(frames=messages([k / 8 for k in range(17)]))).kpis.to_dict()
    assert kpis["frames_median_fps"] == 8.0 and kpis["frames_dropped_frames"] == 0
    for stream in ("detections", "tracking"):
        assert kpis[f"{stream}_messages"] == 0
        for name in ("median_fps", "p5_fps", "share_below_target", "dropped_frames"):
            assert kpis[f"{stream}_{name}"] is None, f"{stream}_{name}"
    assert kpis["detection_latency_p50_ms"] is None


def test_duplicated_and_out_of_order_stamps_change_nothing() -> None:
    # The 8 Hz stream of the first test, with the stamp 1.0 recorded twice and 1.25 written before 1.125.
    # Stamps are counted in time order and once each, so every message keeps the rate of its stamp.
    clean = [k / 8 for k in range(17)]
    messy = [*clean[:9], 1.0, 1.25, 1.125, *clean[11:]]
    table = fps_table(messages(messy))
    same(table["rate_fps"], [NAN] * 8 + [8.0] * 10)
    # The repeated stamp stands for no time; 1.25 stands for the 1/8 s after 1.125 wherever it is written.
    same(table["rate_weight_s"], [0.0] + [0.125] * 8 + [0.0] + [0.125] * 8)
    assert frame_gap_estimate(table) == 0  # the legacy intervals (0, then 0.25) would claim one lost frame
    kpis = stream_kpis(table, dropped_frames=None)
    assert (kpis.messages, kpis.median_fps, kpis.share_below_target) == (18, 8.0, 1.0)
    # A detection stream answering each frame, itself duplicated and out of order: nothing is unanswered.
    answers = messages([s + 0.05 for s in messy], image_timestamp_s=messy)
    assert unanswered_frames(messages(clean), answers) == 0
    assert unanswered_frames(messages(clean), answers.drop(index=[9, 10])) == 1  # 1.0 is still answered once


def test_a_bag_boundary_of_a_split_recording_is_invisible_to_the_rate() -> None:
    # Bag a holds 0..0.875 s, bag b 1.0..2.0 s at 8 Hz: one recording split in two. At t = 1.0 (bag b's
    # first row) the window (0, 1] reaches back into bag a: 8 stamps -> 8 FPS, no restart, no dip.
    stamps = [k / 8 for k in range(17)]
    table = fps_table(messages(stamps, ["a"] * 8 + ["b"] * 9))
    same(table["rate_fps"], [NAN] * 8 + [8.0] * 9)
    assert np.isnan(table["instant_fps"][8])  # the legacy diagnostic still drops the boundary interval
    assert frame_gap_estimate(table) == 0


def test_time_between_bags_that_was_not_recorded_is_no_outage() -> None:
    # Bag a: 0..2 s at 8 Hz; bag b starts 60 s later (a bag in between failed): more than a window after
    # bag a's end, so b is a new segment. Its first second has no rate (the window restarts), and the 58 s
    # between the bags are neither below the target nor 463 lost frames.
    stamps = [k / 8 for k in range(17)] + [60 + k / 8 for k in range(17)]
    table = fps_table(messages(stamps, ["a"] * 17 + ["b"] * 17))
    same(table["rate_fps"], ([NAN] * 8 + [8.0] * 9) * 2)
    assert table["rate_weight_s"][17] == 0.0
    assert frame_gap_estimate(table) == 0
    kpis = stream_kpis(table, dropped_frames=None, target=8.0)
    assert kpis.share_below_target == 0.0
    # Recorded across the boundary: a detection in bag b answering bag a's last frame still counts.
    frames = messages(stamps[:17], ["a"] * 17)
    detections = messages([s + 0.05 for s in stamps[:17]], ["a"] * 16 + ["b"], image_timestamp_s=stamps[:17])
    assert unanswered_frames(frames, detections) == 0


def test_a_run_with_one_message() -> None:
    # One frame and one detection answering it: no rate (no window is ever full) and no gap to estimate,
    # but the frame was answered: 0 dropped detection frames.
    frames = messages([100.0])
    detections = messages([100.05], image_timestamp_s=[100.0], num_detections=[3])
    result = analyze(ExtractionTables(frames=frames, detections=detections))
    kpis = result.kpis.to_dict()
    assert kpis["frames_messages"] == 1 and kpis["detections_messages"] == 1
    for name in ("frames_median_fps", "frames_p5_fps", "frames_share_below_target", "frames_dropped_frames",
                 "detections_median_fps", "detections_share_below_target"):
        assert kpis[name] is None, name
    assert kpis["detections_dropped_frames"] == 0
    assert kpis["detection_latency_p50_ms"] == pytest.approx(50.0)
    same(result.detections["time_s"], [0.05])  # from the run's first stamp (the frame at 100.0)


def test_time_counts_from_the_earliest_stamp_of_any_stream_and_bags_start_where_they_first_appear() -> None:
    # Detections start at 99.5, frames at 100.0: the run starts at 99.5 for both series.
    frames = messages([100.0, 100.5, 101.0], ["a", "a", "b"])
    detections = messages([99.5, 100.6, 100.9], ["a", "b", "b"], image_timestamp_s=[99.4, 100.5, 100.8],
                          num_detections=[1, 1, 1])
    result = analyze(ExtractionTables(frames=frames, detections=detections))
    same(result.frames["time_s"], [0.5, 1.0, 1.5])
    same(result.detections["time_s"], [0.0, 1.1, 1.4])
    # Bag a first appears at 0.0 (a detection), bag b at 1.1 (a detection before its first frame at 1.5).
    starts = bag_starts_s(result.frames, result.detections)
    assert starts.index.tolist() == ["a", "b"]
    same(starts.to_numpy(), [0.0, 1.1])
    assert bag_starts_s().empty


def per_row_rates(stamps: list[float], bags: list[str], window: float) -> list[float]:
    """The windowed rate written out message by message, as the reference for the property test."""
    segment, segments = 0, []
    for i, bag in enumerate(bags):
        if i and bag != bags[i - 1]:
            previous = [stamps[j] for j in range(i) if bags[j] == bags[i - 1] and all(
                bags[k] == bags[i - 1] for k in range(j, i))]
            current = [stamps[j] for j in range(i, len(bags)) if bags[j] == bag and all(
                bags[k] == bag for k in range(i, j + 1))]
            if min(current) - max(previous) > window:
                segment += 1
        segments.append(segment)
    rates = []
    for stamp, own in zip(stamps, segments, strict=True):
        mine = {round(s, 9) for s, g in zip(stamps, segments, strict=True) if g == own}
        full = stamp - min(mine) >= window - 1e-9
        inside = [s for s in mine if stamp - window + 1e-9 < s <= stamp + 1e-9]
        rates.append(len(inside) / window if full else NAN)
    return rates


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(-3, 50)), max_size=80),
       st.sampled_from([0.25, 0.5, 1.0]))
def test_rate_matches_the_message_by_message_definition(rows: list[tuple[str, int]], window: float) -> None:
    # Steps of whole hundredths of -0.03..0.5 s: duplicates, reordering, gaps and bag changes all occur.
    bags = [bag for bag, _ in rows]
    stamps = [round(s, 2) for s in np.cumsum([step / 100 for _, step in rows])]
    table = fps_table(messages(stamps, bags), window_s=window)
    np.testing.assert_allclose(table["rate_fps"], per_row_rates(stamps, bags, window), rtol=1e-9, equal_nan=True)


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
        "bag_file", "header_timestamp_s", "time_s", "interval_s", "instant_fps", "rate_fps", "rate_weight_s",
        "latency_ms", "count",
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


def test_frame_gap_estimate_on_ten_frames() -> None:
    # Gaps 1/32 x4, 2/32, 1/32 x2, 3/32, 1/32: nominal (median) 1/32 s. 2/32 -> 2 - 1 = 1 missing,
    # 3/32 -> 3 - 1 = 2 missing; total 3.
    assert frame_gap_estimate(fps_table(ten_frames())) == 3


def test_frame_gap_estimate_never_negative_and_rounds_half_up() -> None:
    # Gaps 0.1, 0.1, 0.1, 0.01, 0.25 s; nominal 0.1. 0.01 / 0.1 -> round 0 - 1 = -1, floored at 0;
    # 0.25 / 0.1 = 2.5 -> rounds half up to 3 -> 2 missing.
    assert frame_gap_estimate(fps_table(messages([0.0, 0.1, 0.2, 0.3, 0.31, 0.56]))) == 2
    assert frame_gap_estimate(fps_table(messages([5.0]))) is None  # one stamp: no gap to measure


def test_unanswered_frames_match_image_stamps_within_a_microsecond() -> None:
    # Frames 1.0, 1.1, 1.2, 1.3. Answers refer to 1.0 (read back 0.3 µs off, as float64 epochs are),
    # 1.2, and 1.25 (no such frame): 1.1 and 1.3 are unanswered.
    frames = messages([1.0, 1.1, 1.2, 1.3])
    answers = messages([1.05, 1.25, 1.3], image_timestamp_s=[1.0000003, 1.2, 1.25])
    assert unanswered_frames(frames, answers) == 2
    assert unanswered_frames(frames, answers.head(0)) is None  # no stream, not "4 dropped"
    assert unanswered_frames(messages([]), answers) is None  # no camera frames to count
    assert unanswered_frames(frames, answers.assign(image_timestamp_s=NAN)) == 4


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
    # The detections refer to images 20 ms before their own stamps, which no frame has: all 10 unanswered.
    assert kpis["detections_dropped_frames"] == 10
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


def test_a_run_shorter_than_the_rate_window_has_no_tracks_per_minute() -> None:
    frames = messages([0.0, 0.05])  # 50 ms of recording, 2 frames
    tracking = frames.assign(image_timestamp_s=frames["header_timestamp_s"], num_tracked=[2, 2])
    tables = ExtractionTables(
        frames=frames, detections=tracking.head(0).rename(columns={"num_tracked": "num_detections"}),
        tracking=tracking, detection_objects=pd.DataFrame({"score": []}),
        tracked_objects=tracked([("bag_0", 1, 1, 0.9), ("bag_0", 1, 2, 0.8)]),
        bags=pd.DataFrame({"name": ["bag_0"], "status": ["ok"], "error": [None]}),
    )
    kpis = analyze(tables).kpis.to_dict()
    assert kpis["run_duration_s"] == pytest.approx(0.05) and kpis["total_tracks"] == 2
    assert kpis["tracks_per_minute"] is None  # not 2,400 per minute
    assert kpis["tracking_median_fps"] is None  # as the rate: no full window recorded


# -- empty input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", [pd.DataFrame(), messages([])], ids=["no columns", "headers only"])
def test_every_function_accepts_an_empty_table(table: pd.DataFrame) -> None:
    assert fps_table(table).empty
    assert latency_ms(table).empty
    assert message_table(table, "tracking").empty
    assert track_lifecycles(table).empty
    assert list(track_lifecycles(table).columns) == list(TRACK_COLUMNS)
    assert math.isnan(run_duration_s(table, table))
    kpis = stream_kpis(fps_table(table), frame_gap_estimate(fps_table(table)))
    assert (kpis.messages, kpis.dropped_frames) == (0, None)
    assert unanswered_frames(table, table) is None
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
