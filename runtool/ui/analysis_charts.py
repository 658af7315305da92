"""The per-run analysis on the page: a KPI summary and four tabs of bqplot figures.

The tabs follow the legacy Plotly figures (legacy-dashboard.md §4.6) with the corrected metric semantics
(README "Metric semantics"): per stream the windowed rate over seconds since the run start, the very
series the rate KPI cards summarise, its distribution with the median the card shows, and the interval
jitter (the legacy instant FPS, as milliseconds between messages, never as a rate); detection and track
statistics, latency, and track lifecycles. Every over-time chart has header time on its x axis, with the
bag boundaries as dotted lines. Colours follow the ui guide: frames blue, detections green, tracking
orange, targets and means as dashed red lines with their value in the label.

Every figure is built once and updated in place when another analysis is shown, so switching runs does
not pile up widget models in kernel and browser. Long series are reduced to at most :data:`MAX_POINTS`
points per line before they are sent: each bucket of messages keeps its lowest and its highest value, so
a one-message rate dip or latency spike still shows, while a one-hour run stays as quick to draw as a
one-minute one.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import bqplot as bq
import ipywidgets as widgets
import numpy as np
import pandas as pd

from runtool.analysis.perception import (
    FPS_TARGET,
    RATE_WINDOW_S,
    STREAMS,
    Histogram,
    Stream,
    bag_starts_s,
    no_stream_text,
)
from runtool.services.analytics import RunAnalysis
from runtool.ui.charts import AXIS_TITLE_OFFSET
from runtool.ui.components import Kpi, KpiCards
from runtool.ui.formatting import format_count, format_decimal, format_pct, format_time
from runtool.ui.theme import DETECTIONS_COLOUR, FRAMES_COLOUR, TARGET_COLOUR, TRACKING_COLOUR
from runtool.ui.ticks import nice_axis, set_ticks, ticks_within

__all__ = [
    "FPS_CLIP",
    "MAX_POINTS",
    "TAB_TITLES",
    "AnalysisView",
    "analysis_kpis",
    "downsample",
    "no_data_text",
    "no_stream_text",
    "tabs_drawn_when_picked",
    "width_histogram",
]

MAX_POINTS = 5_000
"""At most this many points per line or scatter are sent to the browser."""
FPS_CLIP = 60.0
"""Rates are clipped here before plotting, and the rate axes end here (legacy)."""
MAX_WIDTH_BINS = 200
"""Cap on fixed-width histogram bins; wider data gets wider bins (×2, ×5, ×10, …)."""

TAB_TITLES: tuple[str, ...] = ("FPS", "Detections & tracks", "Latency", "Track lifecycles")
STREAM_NAMES: dict[Stream, str] = {"frames": "Frame", "detections": "Detection", "tracking": "Tracking"}
STREAM_COLOURS: dict[Stream, str] = {
    "frames": FRAMES_COLOUR, "detections": DETECTIONS_COLOUR, "tracking": TRACKING_COLOUR,
}
SPAN_COLOUR = "#9467bd"
"""Track span histogram: purple, as the legacy."""
ACTIVE_COLOUR = "#8c564b"
"""Active-frames histogram: brown, as the legacy."""
DENSITY_COLOUR = "#4682b4"
"""Density histogram: steel blue, as the legacy."""
DENSITY_MARKERS: tuple[tuple[float, str, str], ...] = ((0.5, "#ff7f0e", "0.5"), (0.9, "#2ca02c", "0.9"))
"""Quality markers on the density axis: (value, colour, label); orange at 0.5, green at 0.9 (legacy)."""
DENSITY_SCALE: tuple[str, ...] = ("#d73027", "#fee08b", "#1a9850")
"""Red-yellow-green over density [0, 1] for the confidence-vs-span scatter."""

BOUNDARY_COLOUR = "#999999"
"""Bag boundaries on the over-time charts: dotted grey lines."""
TIME_LABEL = "Seconds since the run start"

LABEL_FLIP = 0.6
"""A vertical reference line past this share of its axis has its label on its left (a label is ~60 px wide)."""
_MARGIN = {"top": 36, "bottom": 50, "left": 70, "right": 16}
"""Room for the axis titles at :data:`~runtool.ui.charts.AXIS_TITLE_OFFSET` (clear of the tick labels)."""
HEIGHT_PX = 250
_HEIGHT = f"{HEIGHT_PX}px"
PLOT_HEIGHT_PX = HEIGHT_PX - _MARGIN["top"] - _MARGIN["bottom"]
"""The height of every chart's plot area (the figures have a fixed height)."""
LABEL_FONT_PX = 12
LABEL_CENTRE_PX = 9
"""How far below the top of the plot area a reference label's middle is (bqplot centres a label's text on its
position): a 12 px label spans 3–15 px, inside the label band."""
LABEL_BAND_PX = 18
"""The band at the top of a plot area that holds the reference labels: no data is drawn in it.

A label written beside its value (at the top of a histogram's mean line, on a target line) sat on the bars or
the line it explains; the y axis of a chart with a reference label now ends high enough above the data for
this band to stay empty, and the labels are written in it.
"""


def no_data_text(stream: Stream) -> str:
    """What a part of a tab says when the run has no messages of ``stream``."""
    return f"No {STREAM_NAMES[stream].lower()} data in this run"


# -- data reduction --------------------------------------------------------------------------------


def downsample(values: np.ndarray | pd.Series, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Message indices and values of at most ``max_points`` points that keep each bucket's extremes.

    The series is cut into equal buckets of consecutive messages; each keeps its lowest and highest
    value, in message order. NaN never wins a bucket; an all-NaN bucket keeps one NaN, so the line
    shows its gap.
    """
    data = np.asarray(values, dtype="float64")
    count = len(data)
    if count <= max_points:
        return np.arange(count), data
    width = -(-count // (max_points // 2))
    buckets = -(-count // width)
    padded = np.full(buckets * width, np.nan)
    padded[:count] = data
    grid = padded.reshape(buckets, width)
    missing = np.isnan(grid)
    low = np.where(missing, np.inf, grid).argmin(axis=1)
    high = np.where(missing, -np.inf, grid).argmax(axis=1)
    starts = np.arange(buckets) * width
    picked = np.unique(np.concatenate([starts + low, starts + high]))
    return picked, data[picked]


def _finite(values: np.ndarray | pd.Series) -> np.ndarray:
    data = np.asarray(values, dtype="float64")
    return data[np.isfinite(data)]


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def with_label_band(low: float, high: float) -> float:
    """The top a y scale from ``low`` needs so that data up to ``high`` stays below the label band."""
    share = LABEL_BAND_PX / PLOT_HEIGHT_PX
    return (high - share * low) / (1.0 - share)


def _fit(scale: bq.LinearScale, axis: bq.Axis, low: float, high: float) -> tuple[float, float]:
    """Give ``scale`` round ends around ``[low, high]`` and ``axis`` its ticks; returns the ends."""
    start, end, ticks = nice_axis(low, high)
    with scale.hold_sync():
        scale.min, scale.max = start, end
    set_ticks(axis, ticks)
    return start, end


def width_histogram(values: np.ndarray | pd.Series, width: float, start: float | None = None) -> Histogram:
    """Bins of ``width`` from ``start`` (default: the minimum rounded down to a multiple) past the maximum.

    When that makes more than MAX_WIDTH_BINS bins, the width grows by steps of 1-2-5 until it fits.
    """
    finite = _finite(values)
    lowest = float(finite.min()) if finite.size else 0.0
    highest = float(finite.max()) if finite.size else 0.0
    steps = (1, 2, 5)
    attempt = 0
    while True:
        size = width * steps[attempt % 3] * 10 ** (attempt // 3)
        first = float(np.floor(lowest / size) * size) if start is None else start
        bins = max(1, int(np.floor((highest - first) / size)) + 1)
        if bins <= MAX_WIDTH_BINS:
            break
        attempt += 1
    edges = first + size * np.arange(bins + 1)
    counts, edges = np.histogram(finite, bins=edges)
    return Histogram(edges, counts.astype("int64"))


# -- building blocks -------------------------------------------------------------------------------


def _figure(title: str, marks: Sequence[bq.Mark], axes: Sequence[bq.Axis], width: str) -> bq.Figure:
    return bq.Figure(
        title=title,
        marks=list(marks),
        axes=list(axes),
        fig_margin=dict(_MARGIN),
        padding_y=0.0,
        title_style={"font-size": "13px"},
        animation_duration=0,
        layout=widgets.Layout(width=width, height=_HEIGHT, min_width="260px"),
    )


def _axes(x: bq.Scale, y: bq.Scale, x_label: str, y_label: str) -> tuple[bq.Axis, bq.Axis]:
    return (
        # At bqplot's title offsets the titles touched or crossed their tick labels ("Seconds since the run start"
        # over "0.5"): the coverage charts' offsets, 6 px or more clear of them.
        bq.Axis(scale=x, label=x_label, grid_lines="none", label_offset=AXIS_TITLE_OFFSET["bottom"]),
        bq.Axis(scale=y, label=y_label, side="left", grid_lines="dashed", label_offset=AXIS_TITLE_OFFSET["left"]),
    )


def _no_data(text: str) -> widgets.HTML:
    return widgets.HTML(f"<div>{html.escape(text)}</div>").add_class("rt-empty-state").add_class("rt-no-data")


def _empty() -> np.ndarray:
    return np.array([], dtype="float64")


class _Reference:
    """A dashed red reference line (target, mean or median) with its value written in the label band.

    The label goes in the band at the top of the plot area (:data:`LABEL_BAND_PX`), which the charts keep free
    of data: a vertical line's label beside the line's top, a horizontal line's at the right end of the band.
    """

    def __init__(self, x: bq.Scale, y: bq.LinearScale, vertical: bool) -> None:
        self.vertical = vertical
        self.y = y
        scales = {"x": x, "y": y}
        self.line = bq.Lines(x=_empty(), y=_empty(), scales=scales, colors=[TARGET_COLOUR], line_style="dashed",
                             stroke_width=1.5)
        self.label = bq.Label(
            x=_empty(), y=_empty(), text=[], scales=scales, colors=[TARGET_COLOUR], default_size=LABEL_FONT_PX,
            font_unit="px", align="start" if vertical else "end", x_offset=4 if vertical else -4,
            y_offset=LABEL_CENTRE_PX,
        )
        self.marks: list[bq.Mark] = [self.line, self.label]

    def show(self, at: float | None, span: tuple[float, float], text: str,
             within: tuple[float, float] | None = None) -> None:
        """Draw the line at ``at`` across ``span`` (of the other axis); None hides it.

        Call it once the y scale has its ends: the label is written at the scale's top. ``within`` is the range
        of a vertical line's own axis: in its right part, the label goes on the line's left, so it stays inside
        the chart instead of running off its edge.
        """
        if at is None:
            line_x = line_y = label_x = label_y = _empty()
            texts: list[str] = []
        else:
            fixed = np.array([at, at])
            across = np.array(span, dtype="float64")
            line_x, line_y = (fixed, across) if self.vertical else (across, fixed)
            top = np.array([float(self.y.max if self.y.max is not None else span[1])])
            label_x = np.array([at]) if self.vertical else np.array([span[1]])
            label_y = top
            texts = [text]
        with self.line.hold_sync():
            self.line.x, self.line.y = line_x, line_y
        left = (self.vertical and at is not None and within is not None
                and at > within[0] + LABEL_FLIP * (within[1] - within[0]))
        with self.label.hold_sync():
            self.label.x, self.label.y, self.label.text = label_x, label_y, texts
            if self.vertical:
                self.label.align, self.label.x_offset = ("end", -4) if left else ("start", 4)


class _HistogramChart:
    """A histogram as bars at the bin centres, with its mean as a dashed red line labelled ``μ=…``."""

    def __init__(
        self,
        title: str,
        colour: str,
        x_label: str,
        width: str,
        mean_digits: int = 1,
        markers: Sequence[tuple[float, str, str]] = (),
    ) -> None:
        self.x = bq.LinearScale(allow_padding=False)
        self.y = bq.LinearScale(min=0, allow_padding=False)
        self.mean_digits = mean_digits
        scales = {"x": self.x, "y": self.y}
        self.bars = bq.Bars(x=_empty(), y=_empty(), scales=scales, colors=[colour], padding=0.08)
        self.markers = [
            (value, bq.Lines(x=_empty(), y=_empty(), scales=scales, colors=[marker_colour], line_style="dotted",
                             stroke_width=2, labels=[text]))
            for value, marker_colour, text in markers
        ]
        self.mean = _Reference(self.x, self.y, vertical=True)
        self.x_axis, self.y_axis = _axes(self.x, self.y, x_label, "Frequency")
        self.figure = _figure(
            title, [self.bars, *(line for _, line in self.markers), *self.mean.marks], [self.x_axis, self.y_axis],
            width,
        )

    def show(self, histogram: Histogram, mean: float | None, label: str | None = None) -> None:
        """Bars of ``histogram``; a dashed line at ``mean`` labelled ``label`` (default ``μ=…``)."""
        counts = histogram.counts.astype("float64")
        first, last = float(histogram.edges[0]), float(histogram.edges[-1])
        with self.x.hold_sync():
            self.x.min, self.x.max = first, last
        set_ticks(self.x_axis, ticks_within(first, last))
        highest = max(float(counts.max()) if counts.size else 0.0, 1.0)
        _, top = _fit(self.y, self.y_axis, 0.0, with_label_band(0.0, highest) if mean is not None else highest * 1.08)
        with self.bars.hold_sync():
            self.bars.x, self.bars.y = histogram.centres, counts
        for value, line in self.markers:
            with line.hold_sync():
                line.x, line.y = np.array([value, value]), np.array([0.0, top])
        if label is None:
            label = "" if mean is None else f"μ={mean:.{self.mean_digits}f}"
        self.mean.show(mean, (0.0, top), label, within=(first, last))


class _SeriesChart:
    """Per-message values over header time: one or more lines, a dashed red reference line, bag boundaries."""

    def __init__(
        self,
        title: str,
        colour: str,
        y_label: str,
        width: str,
        strokes: Sequence[tuple[float, float]] = ((1.0, 1.0),),
        y_range: tuple[float, float] | None = None,
    ) -> None:
        self.x = bq.LinearScale(allow_padding=False)
        # A fixed range ends above its last tick by the label band: clipped rates reach the range's top.
        self.y = bq.LinearScale(min=0 if y_range is None else y_range[0],
                                max=None if y_range is None else with_label_band(*y_range), allow_padding=False)
        self.fixed_range = y_range is not None
        # The top of the values' part of the y axis (the label band lies above it).
        self.data_top: float | None = None if y_range is None else y_range[1]
        scales = {"x": self.x, "y": self.y}
        self.lines = [
            bq.Lines(x=_empty(), y=_empty(), scales=scales, colors=[colour], stroke_width=width_px,
                     opacities=[opacity])
            for width_px, opacity in strokes
        ]
        self.reference = _Reference(self.x, self.y, vertical=False)
        self.boundaries = bq.Lines(x=_empty(), y=_empty(), scales=scales, colors=[BOUNDARY_COLOUR],
                                   line_style="dotted", stroke_width=1)
        self.x_axis, self.y_axis = _axes(self.x, self.y, TIME_LABEL, y_label)
        if y_range is not None:
            set_ticks(self.y_axis, nice_axis(*y_range, intervals=6)[2])
        self.figure = _figure(title, [self.boundaries, *self.lines, *self.reference.marks],
                              [self.x_axis, self.y_axis], width)

    def show(self, time_s: np.ndarray, series: Sequence[np.ndarray], reference: float | None, reference_text: str,
             boundaries: np.ndarray | None = None, markers: bool = False) -> None:
        """One array per line, each a value per ``time_s`` (seconds since the run start, any order);
        ``boundaries`` are the times of the bag starts to mark; ``markers`` draws a dot per point."""
        order = np.argsort(np.asarray(time_s, dtype="float64"), kind="stable")
        times = np.asarray(time_s, dtype="float64")[order]
        finite_times = _finite(times)
        span = (0.0, max(float(finite_times.max()) if finite_times.size else 0.0, 1e-3))
        with self.x.hold_sync():
            self.x.min, self.x.max = span
        set_ticks(self.x_axis, ticks_within(*span))
        if not self.fixed_range:
            finite = [_finite(values) for values in series]
            values = np.concatenate([*finite, np.array([] if reference is None else [reference])])
            # Latency may be negative (a clock problem the plot must show), so the axis follows the data.
            low = min(float(values.min()), 0.0) * 1.05 if values.size else 0.0
            high = max(float(values.max()) if values.size else 1.0, 0.0) * 1.05
            _fit(self.y, self.y_axis, low, high if reference is None else with_label_band(low, high))
            self.data_top = high
        for line, values in zip(self.lines, series, strict=True):
            index, reduced = downsample(np.asarray(values, dtype="float64")[order])
            with line.hold_sync():
                line.x, line.y = times[index], reduced
                line.marker = "circle" if markers else None
                line.marker_size = 12
        self.reference.show(reference, span, reference_text)
        starts = _empty() if boundaries is None else _finite(boundaries)
        starts = starts[starts > 0]
        low, high = float(self.y.min or 0.0), float(self.data_top if self.data_top is not None else 1.0)
        with self.boundaries.hold_sync():
            if starts.size:
                self.boundaries.x = np.repeat(starts[:, None], 2, axis=1)
                self.boundaries.y = np.tile([low, high], (starts.size, 1))
            else:
                self.boundaries.x, self.boundaries.y = _empty(), _empty()


# -- the tabs --------------------------------------------------------------------------------------


class _Slot:
    """A place that shows either its charts or a sentence saying why there is nothing to chart."""

    def __init__(self, charts: Sequence[widgets.Widget], text: str, horizontal: bool) -> None:
        box = widgets.HBox if horizontal else widgets.VBox
        self.charts = box(list(charts), layout=widgets.Layout(width="100%"))
        self.text = text
        self.message = _no_data(text)
        self.widget = widgets.Box([self.charts], layout=widgets.Layout(width="100%"))

    def show(self, has_data: bool) -> None:
        wanted = self.charts if has_data else self.message
        if self.widget.children != (wanted,):
            self.widget.children = (wanted,)

    @property
    def has_data(self) -> bool:
        return self.widget.children == (self.charts,)


def _caption(text: str) -> widgets.HTML:
    return widgets.HTML(text).add_class("rt-caption")


def _stream_has_data(analysis: RunAnalysis, stream: Stream) -> bool:
    if stream == "tracking":
        return analysis.has_tracking
    if stream == "detections":
        return analysis.has_detections
    return len(analysis.frames) > 0


def _bag_starts(analysis: RunAnalysis) -> np.ndarray:
    """When each bag of the run starts, in seconds since the run start (over every stream)."""
    return bag_starts_s(*(analysis.stream(stream) for stream in STREAMS)).to_numpy(dtype="float64")


class FpsTab:
    """Per stream (columns): the windowed rate over time, its distribution, and the interval jitter."""

    def __init__(self) -> None:
        self.over_time: dict[Stream, _SeriesChart] = {}
        self.distribution: dict[Stream, _HistogramChart] = {}
        self.jitter: dict[Stream, _HistogramChart] = {}
        self.slots: dict[Stream, _Slot] = {}
        for stream in STREAMS:
            name, colour = STREAM_NAMES[stream], STREAM_COLOURS[stream]
            self.over_time[stream] = _SeriesChart(
                f"{name} rate over time", colour, "FPS", "100%", strokes=((2.0, 1.0),), y_range=(0.0, FPS_CLIP),
            )
            self.distribution[stream] = _HistogramChart(f"{name} rate distribution", colour, "FPS", "100%")
            self.jitter[stream] = _HistogramChart(
                f"{name} interval jitter", colour, "Milliseconds between messages", "100%")
            charts = [self.over_time[stream].figure, self.distribution[stream].figure, self.jitter[stream].figure]
            self.slots[stream] = _Slot(charts, no_data_text(stream), horizontal=False)
        columns = [
            widgets.Box([self.slots[s].widget], layout=widgets.Layout(width="33.3%")) for s in STREAMS
        ]
        self.widget = widgets.VBox([
            _caption(
                "Columns: frames (blue), detections (green), tracking (orange). Top: the rate, messages per "
                f"second in the last {RATE_WINDOW_S:g} s of header time, over seconds since the run start (dotted: "
                f"bag boundaries), clipped at {FPS_CLIP:g}; the dashed red line is the {FPS_TARGET:g} FPS target. "
                "It is the series the rate cards summarise; it starts once a window is full. Middle: its "
                "distribution, with the median of the card. Bottom: interval jitter, the time between "
                "consecutive messages (what the legacy called instant FPS); it shows timing noise, not a rate."
            ),
            widgets.HBox(columns, layout=widgets.Layout(width="100%")),
        ]).add_class("rt-tab-fps")

    def show(self, analysis: RunAnalysis) -> None:
        target = float(analysis.kpis.get("fps_target") or FPS_TARGET)
        starts = _bag_starts(analysis)
        for stream in STREAMS:
            has_data = _stream_has_data(analysis, stream)
            self.slots[stream].show(has_data)
            if not has_data:
                continue
            series = analysis.stream(stream)
            rate = np.minimum(series["rate_fps"].to_numpy(dtype="float64"), FPS_CLIP)
            self.over_time[stream].show(series["time_s"].to_numpy(dtype="float64"), [rate], target,
                                        f"target {target:g} FPS", boundaries=starts)
            median = _number(analysis.kpis, f"{stream}_median_fps")
            self.distribution[stream].show(width_histogram(rate, 1.0, start=-0.5), median,
                                           "" if median is None else f"median {median:.1f}")
            intervals = series["interval_s"].to_numpy(dtype="float64") * 1000.0
            positive = _finite(intervals)
            positive = positive[positive > 0]
            self.jitter[stream].show(width_histogram(positive, 1.0, start=0.0), _mean(positive))


class DetectionsTab:
    """Per stream (rows): objects per message, their distribution, and the confidence histogram."""

    ROWS: tuple[Stream, ...] = ("detections", "tracking")
    MARKER_LIMIT = 300
    """Series up to this long get a marker per message, like the legacy line+markers."""

    def __init__(self) -> None:
        self.counts: dict[Stream, _SeriesChart] = {}
        self.distribution: dict[Stream, _HistogramChart] = {}
        self.confidence: dict[Stream, _HistogramChart] = {}
        self.slots: dict[Stream, _Slot] = {}
        for stream, noun in zip(self.ROWS, ("Detections", "Tracks"), strict=True):
            colour = STREAM_COLOURS[stream]
            self.counts[stream] = _SeriesChart(f"{noun} per frame", colour, "Count", "33.3%")
            self.distribution[stream] = _HistogramChart(
                f"{noun} per frame: distribution", colour, f"{noun} per frame", "33.3%")
            self.confidence[stream] = _HistogramChart(
                f"{noun[:-1]} confidence distribution", colour, "Confidence", "33.3%", mean_digits=2)
            charts = [self.counts[stream].figure, self.distribution[stream].figure, self.confidence[stream].figure]
            self.slots[stream] = _Slot(charts, no_data_text(stream), horizontal=True)
        self.widget = widgets.VBox([
            _caption(
                "Top: detections (green), bottom: tracked objects (orange). Left: objects per message over seconds "
                "since the run start (dotted: bag boundaries); middle: how "
                "often each count occurs; right: confidence scores (detections in 20 bins over [0, 1], tracks in "
                "24 bins over [0, 1.2])."
            ),
            *(self.slots[s].widget for s in self.ROWS),
        ]).add_class("rt-tab-detections")

    def show(self, analysis: RunAnalysis) -> None:
        histograms = {"detections": analysis.detection_confidence, "tracking": analysis.track_confidence}
        for stream in self.ROWS:
            has_data = _stream_has_data(analysis, stream)
            self.slots[stream].show(has_data)
            if not has_data:
                continue
            series = analysis.stream(stream)
            counts = series["count"].to_numpy(dtype="float64")
            self.counts[stream].show(series["time_s"].to_numpy(dtype="float64"), [counts], None, "",
                                     boundaries=_bag_starts(analysis), markers=len(counts) <= self.MARKER_LIMIT)
            finite = _finite(counts)
            self.distribution[stream].show(width_histogram(counts, 1.0, start=-0.5), _mean(finite))
            confidence = histograms[stream]
            self.confidence[stream].show(confidence, _histogram_mean(confidence))


def _histogram_mean(histogram: Histogram) -> float | None:
    """The mean of binned values, taking each at its bin centre (the raw scores are not kept)."""
    total = histogram.total
    return float((histogram.centres * histogram.counts).sum() / total) if total else None


class LatencyTab:
    """Per stream (rows): latency over seconds since the run start with its mean, and its distribution."""

    ROWS: tuple[Stream, ...] = ("detections", "tracking")

    def __init__(self) -> None:
        self.over_time: dict[Stream, _SeriesChart] = {}
        self.distribution: dict[Stream, _HistogramChart] = {}
        self.slots: dict[Stream, _Slot] = {}
        for stream in self.ROWS:
            name, colour = STREAM_NAMES[stream], STREAM_COLOURS[stream]
            self.over_time[stream] = _SeriesChart(f"{name} latency over time", colour, "Latency (ms)", "50%")
            self.distribution[stream] = _HistogramChart(
                f"{name} latency distribution", colour, "Latency (ms)", "50%")
            charts = [self.over_time[stream].figure, self.distribution[stream].figure]
            self.slots[stream] = _Slot(charts, no_data_text(stream), horizontal=True)
        self.widget = widgets.VBox([
            _caption(
                "Latency is the message's header stamp minus the stamp of the image it was computed from. "
                "Negative values are kept: they point at a clock problem. Bins are 10 ms wide."
            ),
            *(self.slots[s].widget for s in self.ROWS),
        ]).add_class("rt-tab-latency")

    def show(self, analysis: RunAnalysis) -> None:
        for stream in self.ROWS:
            has_data = _stream_has_data(analysis, stream)
            self.slots[stream].show(has_data)
            if not has_data:
                continue
            series = analysis.stream(stream)
            latency = series["latency_ms"].to_numpy(dtype="float64")
            mean = _mean(_finite(latency))
            self.over_time[stream].show(series["time_s"].to_numpy(dtype="float64"), [latency], mean,
                                        "" if mean is None else f"Mean: {mean:.1f} ms",
                                        boundaries=_bag_starts(analysis))
            self.distribution[stream].show(width_histogram(latency, 10.0), mean)


class TrackLifecyclesTab:
    """Track span, active frames and density distributions, and average confidence against span."""

    def __init__(self) -> None:
        self.span = _HistogramChart("Track span distribution", SPAN_COLOUR, "Track span (frames)", "50%")
        self.active = _HistogramChart("Active frames distribution", ACTIVE_COLOUR, "Active frames", "50%")
        self.density = _HistogramChart("Density distribution", DENSITY_COLOUR, "Density (active / span)", "50%",
                                       mean_digits=2, markers=DENSITY_MARKERS)
        self.colour = bq.ColorScale(min=0.0, max=1.0, colors=list(DENSITY_SCALE))
        self.scatter_x, self.scatter_y = bq.LinearScale(allow_padding=False), bq.LinearScale(allow_padding=False)
        self.scatter = bq.Scatter(
            x=_empty(), y=_empty(), color=_empty(),
            scales={"x": self.scatter_x, "y": self.scatter_y, "color": self.colour},
            default_size=64, stroke="#555", stroke_width=0.5,
            tooltip=bq.Tooltip(fields=["x", "y", "color"], formats=[".2f", ".0f", ".2f"],
                               labels=["AvgConf", "Span", "Density"]),
        )
        self.scatter_x_axis, self.scatter_y_axis = _axes(self.scatter_x, self.scatter_y, "Average confidence",
                                                         "Track span (frames)")
        self.scatter_figure = _figure("Confidence vs track span", [self.scatter],
                                      [self.scatter_x_axis, self.scatter_y_axis], "100%")
        # The colour key is HTML, not a bqplot ColorAxis: a ColorAxis drawn while its tab is hidden stays
        # squashed to nothing when the tab is opened.
        key = widgets.HTML(_density_key()).add_class("rt-density-key")
        scatter = widgets.VBox([self.scatter_figure, key], layout=widgets.Layout(width="50%", align_items="center"))
        self.slot = _Slot(
            [
                widgets.HBox([self.span.figure, self.active.figure], layout=widgets.Layout(width="100%")),
                widgets.HBox([self.density.figure, scatter], layout=widgets.Layout(width="100%")),
            ],
            no_data_text("tracking"),
            horizontal=False,
        )
        self.widget = widgets.VBox([
            _caption(
                "One entry per track (a tracking id within one bag). Span: frames from first to last appearance; "
                "active frames: frames it appeared in. Density: ratio of active frames to span (1.0 = perfect, "
                "no gaps); dotted markers at 0.5 and 0.9. Scatter colour: density, red 0 → green 1."
            ),
            self.slot.widget,
        ]).add_class("rt-tab-tracks")

    def show(self, analysis: RunAnalysis) -> None:
        tracks = analysis.tracks
        has_data = analysis.has_tracking and len(tracks) > 0
        self.slot.show(has_data)
        if not has_data:
            return
        span = tracks["track_span"].to_numpy(dtype="float64")
        active = tracks["active_frames"].to_numpy(dtype="float64")
        density = tracks["density"].to_numpy(dtype="float64")
        self.span.show(width_histogram(span, 5.0, start=0.0), _mean(_finite(span)))
        self.active.show(width_histogram(active, 5.0, start=0.0), _mean(_finite(active)))
        self.density.show(analysis.track_density, _mean(_finite(density)))
        confidence = tracks["avg_confidence"].to_numpy(dtype="float64")
        keep = np.flatnonzero(np.isfinite(confidence))
        if len(keep) > MAX_POINTS:
            keep = keep[np.linspace(0, len(keep) - 1, MAX_POINTS).astype("int64")]
        x, y = confidence[keep], span[keep]
        # Explicit ends with room for the markers: the points at the edges stay whole, the ticks round.
        low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
        pad = max(0.02, (high - low) * 0.05)
        with self.scatter_x.hold_sync():
            self.scatter_x.min, self.scatter_x.max = low - pad, high + pad
        set_ticks(self.scatter_x_axis, ticks_within(low - pad, high + pad))
        _fit(self.scatter_y, self.scatter_y_axis, 0.0, max(float(y.max()) if y.size else 1.0, 1.0) * 1.08)
        with self.scatter.hold_sync():
            self.scatter.x, self.scatter.y, self.scatter.color = x, y, density[keep]


def _density_key() -> str:
    """A small colour bar for the scatter: density from 0 (red) over 0.5 (yellow) to 1 (green)."""
    gradient = ", ".join(DENSITY_SCALE)
    return (
        '<div class="rt-caption" style="display:flex;align-items:center;gap:6px">Density '
        '<span>0</span><span style="display:inline-block;width:160px;height:10px;border-radius:2px;'
        f'background:linear-gradient(to right, {gradient})"></span><span>1</span></div>'
    )


# -- KPIs ------------------------------------------------------------------------------------------


def _number(kpis: Mapping[str, float | int | None], name: str) -> float | None:
    value = kpis.get(name)
    return None if value is None else float(value)


def _fps(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} FPS"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} ms"


def _share(value: float | None) -> str:
    return format_pct(None if value is None else value * 100.0)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def analysis_kpis(kpis: Mapping[str, float | int | None]) -> list[Kpi]:
    """The KPI cards of an analysis, from :attr:`RunAnalysis.kpis` (``None`` shows as a dash)."""

    def get(name: str) -> float | None:
        return _number(kpis, name)

    def absent(stream: Stream) -> bool:
        return not get(f"{stream}_messages")

    def per_stream(stream: Stream, text: str) -> str:
        return no_stream_text(stream) if absent(stream) else text

    target = get("fps_target") or FPS_TARGET
    cards = [
        Kpi(f"{STREAM_NAMES[stream]} rate", per_stream(stream, _fps(get(f"{stream}_median_fps"))),
            per_stream(stream, f"median over {RATE_WINDOW_S:g} s windows; 5th percentile "
                               f"{_fps(get(f'{stream}_p5_fps'))}"))
        for stream in STREAMS
    ]
    cards += [
        Kpi(f"Frame time below {target:g} FPS", per_stream("frames", _share(get("frames_share_below_target"))),
            f"detections {per_stream('detections', _share(get('detections_share_below_target')))} · "
            f"tracking {per_stream('tracking', _share(get('tracking_share_below_target')))}"),
        Kpi("Dropped frames", per_stream("frames", format_count(get("frames_dropped_frames"))),
            "estimated from camera gaps · frames without a detection "
            f"{per_stream('detections', format_count(get('detections_dropped_frames')))} · "
            f"without a track {per_stream('tracking', format_count(get('tracking_dropped_frames')))}"),
    ]
    for prefix, name in (("detection_latency", "Detection"), ("tracking_latency", "Tracking")):
        cards.append(Kpi(f"{name} latency p50", _ms(get(f"{prefix}_p50_ms")),
                         f"p95 {_ms(get(f'{prefix}_p95_ms'))} · p99 {_ms(get(f'{prefix}_p99_ms'))}"))
    failed = get("failed_bags")
    cards += [
        Kpi("Detections per frame", format_decimal(get("mean_detections_per_frame")),
            f"mean confidence {format_decimal(get('avg_detection_confidence'), 2)}"),
        Kpi("Tracks per minute", format_decimal(get("tracks_per_minute")),
            f"{format_count(get('total_tracks'))} tracks in {_duration(get('run_duration_s'))} recorded"),
        Kpi("Mean track density", format_decimal(get("mean_track_density"), 2), "1.00 = no gaps in a track"),
        Kpi("Failed bags", format_count(failed), "listed below" if failed else "every bag was read"),
    ]
    return cards


# -- the whole view --------------------------------------------------------------------------------


def tabs_drawn_when_picked(pages: Sequence[widgets.Widget], titles: Sequence[str]) -> widgets.Tab:
    """Tabs whose pages reach the browser when first picked; until then a tab holds an empty box.

    A bqplot figure drawn inside a hidden tab measures its plot area as zero wide, so its marks get negative
    sizes (console errors "<rect> attribute width: A negative value is not valid"); drawn when its tab shows,
    it has its real size. A page once shown stays: bqplot keeps its layout while the tab is hidden again.
    """
    tabs = widgets.Tab(children=[pages[0], *(widgets.Box() for _ in pages[1:])], titles=tuple(titles))

    def picked(change: Mapping[str, object]) -> None:
        index = change["new"]
        if isinstance(index, int) and tabs.children[index] is not pages[index]:
            tabs.children = [pages[index] if i == index else child for i, child in enumerate(tabs.children)]

    tabs.observe(picked, names="selected_index")
    return tabs



class AnalysisView:
    """The KPI summary and the four tabs of one run's analysis (``show`` another analysis to switch)."""

    def __init__(self) -> None:
        self.caption = widgets.HTML().add_class("rt-caption")
        self.kpi_cards = KpiCards()
        self.kpi_cards.widget.add_class("rt-analysis-kpis")
        self.fps, self.detections = FpsTab(), DetectionsTab()
        self.latency, self.tracks = LatencyTab(), TrackLifecyclesTab()
        self.tabs = tabs_drawn_when_picked(
            [self.fps.widget, self.detections.widget, self.latency.widget, self.tracks.widget], TAB_TITLES,
        ).add_class("rt-analysis-tabs")
        self.widget = widgets.VBox([self.caption, self.kpi_cards.widget, self.tabs]).add_class("rt-analysis")
        self.shown: RunAnalysis | None = None

    @property
    def kpis(self) -> dict[str, str]:
        """The KPI cards shown: label → value text."""
        return self.kpi_cards.values

    @property
    def no_data_parts(self) -> list[str]:
        """The "no data" sentences currently shown in the tabs (empty when every part has charts)."""
        slots = [
            *self.fps.slots.values(), *self.detections.slots.values(), *self.latency.slots.values(),
            self.tracks.slot,
        ]
        return [slot.text for slot in slots if not slot.has_data]

    def show(self, analysis: RunAnalysis) -> None:
        source = "from the cache" if analysis.from_cache else "just computed"
        self.caption.value = (
            f"Analysed {html.escape(format_time(analysis.analysed_at))} UTC ({source}) · "
            f"{format_count(len(analysis.frames))} frames, {format_count(len(analysis.detections))} detection and "
            f"{format_count(len(analysis.tracking))} tracking messages"
        )
        self.kpi_cards.show(analysis_kpis(analysis.kpis))
        self.fps.show(analysis)
        self.detections.show(analysis)
        self.latency.show(analysis)
        self.tracks.show(analysis)
        self.shown = analysis
