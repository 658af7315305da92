"""Where the analysis charts write their reference labels: clear of the data, inside the plot area.

bqplot draws in the browser, but every chart here has a fixed height and margins, so where a label and a bar
or a line point land in the plot area follows from the marks' values and the scales' ends. The helpers below
work that out in pixels for a plot area as narrow as the page makes one (a third of a 1024 px wide page).
bqplot centres a label's text on its position (``dominant-baseline: central``), in bold: a 12 px label is
taken as 12 px high and 7.4 px a character.
"""

from __future__ import annotations

from dataclasses import dataclass

import bqplot as bq
import numpy as np
import pandas as pd

from runtool.analysis.perception import Histogram
from runtool.services.analytics import RunAnalysis
from runtool.ui.analysis_charts import LABEL_FONT_PX, PLOT_HEIGHT_PX, AnalysisView
from tests.ui.test_analysis_charts import analysis_of

PLOT_WIDTH_PX = 270.0
"""The narrowest plot area of an analysis chart: a third of a 1024 px page, less the margins."""
CHAR_PX = 0.62 * LABEL_FONT_PX


@dataclass(frozen=True)
class Box:
    """A rectangle in the plot area's pixels: x from the left edge, y from the top edge."""

    left: float
    right: float
    top: float
    bottom: float

    def meets(self, other: Box) -> bool:
        return (self.left < other.right and other.left < self.right
                and self.top < other.bottom and other.top < self.bottom)

    def inside(self, width: float, height: float) -> bool:
        return self.left >= 0 and self.right <= width and self.top >= 0 and self.bottom <= height


@dataclass(frozen=True)
class Plot:
    """The pixel geometry of a plot area of ``width`` × ``height`` over the ``x`` and ``y`` scales' ends."""

    x: bq.LinearScale
    y: bq.LinearScale
    width: float
    height: float

    def px(self, value: float) -> float:
        return self.width * (value - float(self.x.min)) / (float(self.x.max) - float(self.x.min))

    def py(self, value: float) -> float:
        return self.height * (float(self.y.max) - value) / (float(self.y.max) - float(self.y.min))

    def label_boxes(self, label: bq.Label) -> list[Box]:
        boxes = []
        for x, y, text in zip(np.atleast_1d(label.x), np.atleast_1d(label.y), label.text, strict=True):
            anchor, middle = self.px(float(x)) + label.x_offset, self.py(float(y)) + label.y_offset
            width = len(text) * CHAR_PX
            left = anchor - {"start": 0.0, "middle": width / 2, "end": width}[label.align]
            boxes.append(Box(left, left + width, middle - LABEL_FONT_PX / 2, middle + LABEL_FONT_PX / 2))
        return boxes

    def bar_boxes(self, bars: bq.Bars) -> list[Box]:
        centres, counts = np.asarray(bars.x, dtype="float64"), np.asarray(bars.y, dtype="float64")
        half = (self.px(float(centres[1])) - self.px(float(centres[0]))) / 2 if len(centres) > 1 else 4.0
        return [Box(self.px(c) - half, self.px(c) + half, self.py(n), self.py(0.0))
                for c, n in zip(centres, counts, strict=True) if n > 0]

    def point_boxes(self, line: bq.Lines, radius: float = 1.5) -> list[Box]:
        """Each point of a line as a dot as wide as the line's stroke."""
        xs, ys = np.asarray(line.x, dtype="float64"), np.asarray(line.y, dtype="float64")
        keep = np.isfinite(xs) & np.isfinite(ys)
        return [Box(self.px(x) - radius, self.px(x) + radius, self.py(y) - radius, self.py(y) + radius)
                for x, y in zip(xs[keep], ys[keep], strict=True)]


def assert_clear_and_whole(plot: Plot, label: bq.Label, data: list[Box]) -> None:
    """Every text of ``label`` lies inside the plot area and meets none of ``data``."""
    boxes = plot.label_boxes(label)
    assert boxes, "the chart writes its label"
    for box in boxes:
        assert box.inside(plot.width, plot.height), f"{label.text} is cut at the plot area's edge: {box}"
        covered = [d for d in data if box.meets(d)]
        assert covered == [], f"{label.text} is written over the data: {box} meets {covered[:3]}"


def steady(rate_hz: float, seconds: float) -> RunAnalysis:
    """Frames only, at ``rate_hz`` for ``seconds``, in one bag."""
    stamps = 100 + np.arange(int(rate_hz * seconds) + 1) / rate_hz
    return analysis_of(pd.DataFrame({"bag_file": "a", "bag_timestamp_s": stamps, "header_timestamp_s": stamps}))


def test_the_target_label_is_not_written_over_a_rate_just_above_the_target() -> None:
    # 28 FPS against the 25 FPS target: the line runs just above the dashed target line, where its label was.
    view = AnalysisView()
    view.show(steady(28.0, 10.0))
    chart = view.fps.over_time["frames"]
    assert chart.reference.label.text == ["target 25 FPS"]
    plot = Plot(chart.x, chart.y, PLOT_WIDTH_PX, PLOT_HEIGHT_PX)
    assert_clear_and_whole(plot, chart.reference.label, plot.point_boxes(chart.lines[0]))
    # The rate axis still reads 0-60 (its ticks), with the band for the label above 60.
    assert list(chart.y_axis.tick_values) == [0, 10, 20, 30, 40, 50, 60]


def test_a_mean_label_is_not_written_over_the_tallest_bar() -> None:
    # The tallest bar (92) right at the mean: 92 × 1.08 rounded up to 100 left its top 14 px below the plot's top.
    view = AnalysisView()
    chart = view.fps.jitter["frames"]
    counts = np.array([3, 10, 40, 80, 92, 70, 30, 9, 2, 1])
    chart.show(Histogram(np.arange(11, dtype="float64"), counts), 4.5)
    assert chart.mean.label.text == ["μ=4.5"]
    plot = Plot(chart.x, chart.y, PLOT_WIDTH_PX, PLOT_HEIGHT_PX)
    assert_clear_and_whole(plot, chart.mean.label, plot.bar_boxes(chart.bars))


def test_a_mean_label_near_the_right_edge_goes_left_of_its_line_and_stays_clear() -> None:
    view = AnalysisView()
    chart = view.fps.jitter["frames"]
    counts = np.array([1, 2, 3, 5, 9, 20, 40, 70, 92, 60])
    chart.show(Histogram(np.arange(11, dtype="float64"), counts), 8.6)
    assert chart.mean.label.align == "end"
    plot = Plot(chart.x, chart.y, PLOT_WIDTH_PX, PLOT_HEIGHT_PX)
    assert_clear_and_whole(plot, chart.mean.label, plot.bar_boxes(chart.bars))


def test_every_reference_label_of_an_analysed_run_is_clear_of_its_data() -> None:
    view = AnalysisView()
    view.show(steady(28.0, 10.0))
    rate = view.fps.over_time["frames"]
    plot = Plot(rate.x, rate.y, PLOT_WIDTH_PX, PLOT_HEIGHT_PX)
    assert_clear_and_whole(plot, rate.reference.label, [b for line in rate.lines for b in plot.point_boxes(line)])
    for histogram in (view.fps.distribution["frames"], view.fps.jitter["frames"]):
        plot = Plot(histogram.x, histogram.y, PLOT_WIDTH_PX, PLOT_HEIGHT_PX)
        assert_clear_and_whole(plot, histogram.mean.label, plot.bar_boxes(histogram.bars))
