"""The coverage charts' model: where the threshold's label goes, which runs a line joins, the bar charts' titles.

Positions are worked out in pixels as in :mod:`tests.ui.test_analysis_charts_labels`: the panels have a fixed
height, and a date axis spans the threshold line (the first and last run, padded).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import bqplot as bq
import numpy as np
import pytest

from runtool.models import (
    AggregatedTemporalData,
    CoveragePoint,
    CoverageSettings,
    DayCoverage,
    Filters,
    LaserBoxStats,
    RunCoordinate,
    TemporalData,
)
from runtool.ui.charts import PLOT_HEIGHT_PX, CoverageTimeline, DailyCoverageChart, LaserBoxBars
from tests.ui.test_analysis_charts_labels import CHAR_PX, LABEL_FONT_PX, Box

PLOT_WIDTH_PX = 900.0
"""A timeline's plot area on a 1024 px wide page."""
POINT_RADIUS_PX = 4.5
"""A coverage point: 48 px² (about 7 px across) and its 1 px edge."""
LB = "acme/north/field_7/TW_1/LB_0001"


def run(start: datetime, coverage: float | None, bags: int = 10) -> CoveragePoint:
    coordinate = RunCoordinate.parse(f"{LB}/{start:%Y_%m_%dT%H:%M:%SZ}")
    labels = 0 if coverage is None else round(coverage * bags * 17 / 100)
    return CoveragePoint(coordinate=coordinate, start_time=start, raw_bags=bags, ml_frames=labels, ml_labels=labels,
                         coverage_pct=coverage, under_labelled=coverage is not None and coverage < 80)


def timeline(points: list[CoveragePoint], threshold: float = 80.0) -> CoverageTimeline:
    chart = CoverageTimeline()
    chart.show(TemporalData(Filters(), CoverageSettings(under_labelled_pct=threshold), points))
    return chart


def ms(values: object) -> np.ndarray:
    return np.asarray(values, dtype="datetime64[ms]").astype("int64").astype("float64")


class DatePlot:
    """Pixels of a panel whose x axis is a date scale over ``domain`` and whose y axis is ``y``."""

    def __init__(self, domain: np.ndarray, y: bq.LinearScale) -> None:
        self.first, self.last = ms(domain)
        self.y = y

    def px(self, moment: float) -> float:
        return PLOT_WIDTH_PX * (moment - self.first) / (self.last - self.first)

    def py(self, value: float) -> float:
        return PLOT_HEIGHT_PX * (float(self.y.max) - value) / (float(self.y.max) - float(self.y.min))

    def label_boxes(self, label: bq.Label) -> list[Box]:
        boxes = []
        for moment, value, text in zip(ms(label.x), np.atleast_1d(label.y), label.text, strict=True):
            anchor, middle = self.px(moment) + label.x_offset, self.py(float(value)) + label.y_offset
            width = len(text) * CHAR_PX
            left = anchor - {"start": 0.0, "middle": width / 2, "end": width}[label.align]
            boxes.append(Box(left, left + width, middle - LABEL_FONT_PX / 2, middle + LABEL_FONT_PX / 2))
        return boxes

    def point_boxes(self, scatter: bq.Scatter) -> list[Box]:
        return [Box(self.px(x) - POINT_RADIUS_PX, self.px(x) + POINT_RADIUS_PX,
                    self.py(y) - POINT_RADIUS_PX, self.py(y) + POINT_RADIUS_PX)
                for x, y in zip(ms(scatter.x), np.asarray(scatter.y, dtype="float64"), strict=True)]


def assert_label_clear(plot: DatePlot, label: bq.Label, points: list[Box], text: str) -> None:
    boxes = plot.label_boxes(label)
    assert boxes, "the chart writes its threshold"
    for box in boxes:
        assert box.inside(PLOT_WIDTH_PX, PLOT_HEIGHT_PX), f"the threshold label is cut: {box}"
        covered = [p for p in points if box.meets(p)]
        assert covered == [], f"the threshold label covers points: {box} meets {covered}"
    assert list(label.text) == [text]


# -- the threshold label ---------------------------------------------------------------------------


@pytest.mark.parametrize("coverages", [
    [30.0, 0.0, 100.0, 55.0, 81.0],  # the review: an 81 % run last, under the label at the line's right end
    [81.0, 82.5, 80.5, 83.0, 81.0],  # every run just above the threshold
    [100.0, 100.0, 100.0, 100.0, 100.0],  # every run at the top
])
def test_the_threshold_label_covers_no_run(coverages: list[float]) -> None:
    start = datetime(2025, 9, 1, 6, tzinfo=UTC)
    chart = timeline([run(start + timedelta(days=2 * i, hours=i), pct) for i, pct in enumerate(coverages)])
    plot = DatePlot(chart.threshold.line.x, chart.coverage.scales["y"])
    assert_label_clear(plot, chart.threshold.label, plot.point_boxes(chart.coverage),
                       "dashed: under-labelled below 80 %")
    # The line itself stays at the threshold, across the whole axis.
    np.testing.assert_allclose(chart.threshold.line.y, [80.0, 80.0])


def test_the_daily_chart_writes_its_threshold_clear_of_the_days() -> None:
    days = tuple(DayCoverage(day=datetime(2025, 9, d, tzinfo=UTC).date(), runs=1, raw_bags=4, ml_frames=60,
                             ml_labels=60, coverage_pct=pct, laser_boxes=1)
                 for d, pct in ((1, 20.0), (2, 100.0), (3, 81.0)))
    chart = DailyCoverageChart()
    chart.show(AggregatedTemporalData(Filters(), CoverageSettings(under_labelled_pct=80.0), days, cells=()))
    plot = DatePlot(chart.threshold.line.x, chart.coverage.scales["y"])
    assert_label_clear(plot, chart.threshold.label, plot.point_boxes(chart.coverage),
                       "dashed: under-labelled below 80 %")


@pytest.mark.parametrize("names", [["LB_0001", "LB_0002"], [f"field_{i:03d} · LB_{i:04d}" for i in range(12)]])
def test_the_laser_box_coverage_chart_names_its_threshold_in_its_title_not_over_a_bar(names: list[str]) -> None:
    stats = [LaserBoxStats(lb_key=f"acme/north/field_7/TW_1/{name}", lbid=name, runs=1, total_bags=10,
                           total_frames=140, total_labels=140, coverage_pct=82.0, active_days=1, avg_bags_per_day=10.0,
                           avg_labels_per_day=140.0) for name in names]
    bars = LaserBoxBars()
    bars.show(stats, names, 75.0)
    assert len(bars.threshold.label.text) == 0
    assert bars.figures[2].title == "Coverage (dashed: under-labelled below 75 %)"
    # Short enough for a third of a 1440 px page (a 14 px title, under 8 px a character).
    assert len(bars.figures[2].title) * 8 < 1440 / 3
    line = np.asarray(bars.threshold.line.x if bars.horizontal else bars.threshold.line.y, dtype="float64")
    np.testing.assert_allclose(line, [75.0, 75.0])


# -- which runs a line joins -----------------------------------------------------------------------


def joined(chart: CoverageTimeline) -> list[tuple[str, str]]:
    """Pairs of consecutive run times the bags line joins (no NaN between them), as ``MM-DD HH:MM``."""
    times = np.asarray(chart.bags.x, dtype="datetime64[ms]")
    values = np.asarray(chart.bags.y, dtype="float64")
    pairs = []
    for i in range(len(times) - 1):
        if np.isfinite(values[i]) and np.isfinite(values[i + 1]):
            pairs.append((str(times[i])[5:16].replace("T", " "), str(times[i + 1])[5:16].replace("T", " ")))
    return pairs


def test_runs_a_day_apart_are_not_joined_runs_of_one_day_are() -> None:
    chart = timeline([
        run(datetime(2025, 7, 10, 7, 46, tzinfo=UTC), 67.5),
        run(datetime(2025, 7, 11, 8, 7, tzinfo=UTC), 0.0),  # 24 h later: the review saw these joined
        run(datetime(2025, 7, 17, 5, 43, tzinfo=UTC), 0.0),
        run(datetime(2025, 7, 17, 12, 8, tzinfo=UTC), 37.6),  # the same day: one day's work
        run(datetime(2025, 7, 17, 23, 50, tzinfo=UTC), 50.0),
        run(datetime(2025, 7, 18, 0, 10, tzinfo=UTC), 50.0),  # 20 minutes on, but the next day
    ])
    assert joined(chart) == [("07-17 05:43", "07-17 12:08"), ("07-17 12:08", "07-17 23:50")]
    # The labels and frames lines break at the same places; every run keeps its dot.
    samples = np.asarray(chart.samples.y, dtype="float64")
    np.testing.assert_array_equal(np.isnan(samples[0]), np.isnan(np.asarray(chart.bags.y, dtype="float64")))
    assert len(chart.bag_dots.x) == 6


# -- numbers on the axes -----------------------------------------------------------------------------


def test_count_axes_write_thousands_with_a_separator() -> None:
    """A fleet's bags and labels run to thousands: 12,000 on an axis, not 12000 (d3's ``d`` writes no separator)."""
    start = datetime(2025, 9, 1, 6, tzinfo=UTC)
    line = timeline([run(start, 50.0, bags=1200), run(start + timedelta(days=1), 80.0, bags=2400)])
    days = tuple(DayCoverage(day=datetime(2025, 9, d, tzinfo=UTC).date(), runs=1, raw_bags=1500 * d,
                             ml_frames=9000 * d, ml_labels=6000 * d, coverage_pct=50.0, laser_boxes=1)
                 for d in (1, 2))
    daily = DailyCoverageChart()
    daily.show(AggregatedTemporalData(Filters(), CoverageSettings(), days, cells=()))
    stats = [LaserBoxStats(lb_key=f"acme/north/field_7/TW_1/LB_000{i}", lbid=f"LB_000{i}", runs=40,
                           total_bags=3000 * i, total_frames=60000 * i, total_labels=45000 * i, coverage_pct=80.0,
                           active_days=10, avg_bags_per_day=300.0, avg_labels_per_day=4500.0) for i in (1, 2)]
    bars = LaserBoxBars()
    bars.show(stats, ["LB_0001", "LB_0002"], 80.0)
    for axis in (line.bags_axis, line.samples_axis, daily.bags_axis, daily.samples_axis, bars.bags_axis,
                 bars.labels_axis):
        assert max(axis.tick_values) >= 1000, axis.label
        assert axis.tick_format.startswith(","), (axis.label, axis.tick_format)  # d3: "," groups thousands
