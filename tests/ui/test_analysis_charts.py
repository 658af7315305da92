"""The analysis view's cards and charts on a hand-made run: frames only, no detection or tracking stream."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from runtool.analysis.perception import ExtractionTables, analyze
from runtool.models import RunCoordinate
from runtool.services.analytics import RunAnalysis
from runtool.ui.analysis_charts import AnalysisView, analysis_kpis

RUN = RunCoordinate.parse("acme/north/field_7/TW_1/LB_0001/2025_08_25T08:59:38Z")


def frames_only() -> RunAnalysis:
    """Bag a: 0..2 s at 8 Hz; bag b: 2.125..4 s at 8 Hz (one split recording). No detection or tracking topic."""
    stamps = [100 + k / 8 for k in range(33)]
    return analysis_of(pd.DataFrame({"bag_file": ["a"] * 17 + ["b"] * 16, "bag_timestamp_s": stamps,
                                     "header_timestamp_s": stamps}))


def analysis_of(frames: pd.DataFrame) -> RunAnalysis:
    """The analysis of a run that has only ``frames`` (no detection or tracking stream)."""
    result = analyze(ExtractionTables(frames=frames))
    return RunAnalysis(
        coordinate=RUN, fingerprint="f" * 64, analysed_at=datetime(2025, 8, 26, tzinfo=UTC), from_cache=False,
        frames=result.frames, detections=result.detections, tracking=result.tracking,
        detection_confidence=result.detection_confidence, track_confidence=result.track_confidence,
        track_density=result.track_summary.density, tracks=result.tracks, kpis=result.kpis.to_dict(),
        failed_bags=(), has_detections=False, has_tracking=False,
    )


def test_a_run_without_a_detection_stream_says_so_on_its_cards() -> None:
    cards = {card.label: card for card in analysis_kpis(frames_only().kpis)}
    # 8 distinct stamps in every full 1 s window: 8 FPS, all of the time below 25 FPS; no camera gap.
    assert cards["Frame rate"].value == "8.0 FPS"
    assert cards["Frame rate"].caption == "median over 1 s windows; 5th percentile 8.0 FPS"
    assert cards["Detection rate"].value == "no detection stream"
    assert cards["Tracking rate"].value == "no tracking stream"
    assert cards["Frame time below 25 FPS"].value == "100.0 %"
    assert cards["Frame time below 25 FPS"].caption == "detections no detection stream · tracking no tracking stream"
    assert cards["Dropped frames"].value == "0"
    assert cards["Dropped frames"].caption == (
        "estimated from camera gaps · frames without a detection no detection stream · "
        "without a track no tracking stream")
    assert "0 %" not in cards["Detection rate"].value and "100" not in cards["Dropped frames"].caption


def test_the_rate_chart_is_the_kpi_series_over_time_with_the_bag_boundary() -> None:
    analysis = frames_only()
    view = AnalysisView()
    view.show(analysis)
    chart = view.fps.over_time["frames"]
    # Times 0, 0.125, ..., 4 s; the rate NaN for the first second, then 8.
    np.testing.assert_allclose(chart.lines[0].x, np.arange(33) / 8)
    np.testing.assert_allclose(chart.lines[0].y, [np.nan] * 8 + [8.0] * 25, equal_nan=True)
    # Bag b starts at 2.125 s: one dotted boundary there, across the 0..60 FPS axis.
    np.testing.assert_allclose(np.atleast_2d(chart.boundaries.x), [[2.125, 2.125]])  # bqplot squeezes one line
    np.testing.assert_allclose(np.atleast_2d(chart.boundaries.y), [[0.0, 60.0]])
    assert view.fps.distribution["frames"].mean.label.text == ["median 8.0"]
    # The legacy instant FPS is only jitter: 125 ms between messages, in milliseconds, never a rate.
    assert view.fps.jitter["frames"].mean.label.text == ["μ=125.0"]
    assert view.no_data_parts.count("No detection data in this run") == 3
