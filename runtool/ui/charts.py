"""The coverage charts (bqplot), built once and updated in place when the selection changes.

Updating marks instead of rebuilding figures keeps kernel and browser from piling up widget models
with every change of selection. Times go to bqplot as naive ``datetime64`` values holding UTC, and bqplot's date
scale is a UTC scale, so every axis reads in UTC whatever the viewer's time zone.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from runtool.models import (
    AggregatedTemporalData,
    CoveragePoint,
    DayCoverage,
    LaserBoxStats,
    RunCoordinate,
    TemporalData,
)
from runtool.ui.formatting import format_count, format_count_of, format_day, format_pct, format_time
from runtool.ui.opener import PageOpener
from runtool.ui.query import run_url
from runtool.ui.theme import (
    COVERAGE_NONE,
    LABELS_COLOUR,
    LINK_COLOUR,
    ML_FRAMES_COLOUR,
    RAW_BAGS_COLOUR,
    TARGET_COLOUR,
    coverage_stops,
)
from runtool.ui.ticks import set_ticks

__all__ = ["CoverageTimeline", "DailyCoverageChart", "LaserBoxBars", "point_index"]

AXIS_TITLE_OFFSET = {"bottom": "40px", "left": "52px"}
"""How far a bottom axis's title sits below its axis line, and a left axis's left of it: 6 px or more clear of the tick
labels (dates; numbers up to six characters, "99,999"). At bqplot's offsets (2em, 4ex) the titles touched or crossed
them ("run start (UTC)" over the dates, "samples" on "1,500"). The margins leave room for them."""
_MARGIN = {"top": 36, "bottom": 48, "left": 70, "right": 40}
PANEL_HEIGHT_PX = 222
_PANEL_HEIGHT = f"{PANEL_HEIGHT_PX}px"
PLOT_HEIGHT_PX = PANEL_HEIGHT_PX - _MARGIN["top"] - _MARGIN["bottom"]
"""The plot area's height in a timeline or daily panel."""
LABEL_FONT_PX = 12
LABEL_CENTRE_PX = 9
"""How far below the top of the plot area the threshold label's middle is (bqplot centres a label's text on its
position): a 12 px label spans 3–15 px."""


def _naive_utc(moment: datetime | date) -> datetime:
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment
    return datetime(moment.year, moment.month, moment.day)


def _utc_array(moments: Sequence[datetime | date]) -> np.ndarray:
    """Naive datetime64[ms] holding UTC (what bqplot's UTC date scale expects)."""
    return np.array([_naive_utc(m) for m in moments], dtype="datetime64[ms]")


def _coverage_scale(threshold_pct: float) -> bq.ColorScale:
    stops, colours = coverage_stops(threshold_pct)
    return bq.ColorScale(min=stops[0], mid=stops[1], max=stops[2], colors=colours)


def _set_threshold(scale: bq.ColorScale, threshold_pct: float) -> None:
    scale.mid = float(threshold_pct)


def _time_axis(scale: bq.DateScale, label: str, tick_format: str | None = None) -> bq.Axis:
    return bq.Axis(scale=scale, label=label, grid_lines="none", num_ticks=10, tick_format=tick_format,
                   label_offset=AXIS_TITLE_OFFSET["bottom"])


def _value_axis(scale: bq.Scale, label: str, tick_format: str | None = None, side: str = "left") -> bq.Axis:
    return bq.Axis(scale=scale, side=side, label=label, tick_format=tick_format, label_offset=AXIS_TITLE_OFFSET[side])


def _count_ticks(axis: bq.Axis, values: np.ndarray) -> None:
    """Whole-number ticks on a count axis, few enough that their labels never touch.

    On a small range d3 puts ticks at halves, which a whole-number format prints twice (0, 1, 1, 2);
    larger ranges get round steps, at most six ticks (a short panel with d3's default ten stacks its labels),
    written with thousands separators (12,000).
    """
    largest = float(np.nanmax(values)) if len(values) else 0.0
    if largest < 6:
        set_ticks(axis, np.arange(0, int(largest) + 1))
        return
    # A round step (1, 2 or 5 × 10^k) giving at most six ticks from 0, none beyond the data (it would be
    # drawn outside the plot).
    magnitude = 10.0 ** math.floor(math.log10(largest / 5))
    step = next(m * magnitude for m in (1, 2, 5, 10) if largest / (m * magnitude) <= 5)
    set_ticks(axis, np.arange(0, math.floor(largest / step) * step + step / 2, step))


def _day_or_minute_format(times: np.ndarray) -> str:
    """Dates on a long time axis; dates and times when the runs fall within a few days."""
    if len(times) and times.max() - times.min() < np.timedelta64(3, "D"):
        return "%Y-%m-%d %H:%M"
    return "%Y-%m-%d"


PERCENT_MIN = -6.0
"""The coverage % axes start below 0 so a point at 0 % is drawn whole (the plot area clips marks at its edges)."""
PERCENT_MAX = 106.0
"""The same above 100 %, for the bars."""
PERCENT_MAX_LABELLED = 122.0
"""The point charts' top: above 100 % they keep a band for the threshold's label, which no point reaches.

A coverage point is a dot about 8 px across; at 122 % a 100 % point's middle is 24 px below the top of a 138 px
plot area, its top 20 px: under the label (3–15 px, :data:`LABEL_CENTRE_PX`).
"""


def _percent_scale(label_band: bool = False) -> bq.LinearScale:
    """A coverage % scale with room below 0 and above 100 % (and a label band above that when asked for)."""
    return bq.LinearScale(min=PERCENT_MIN, max=PERCENT_MAX_LABELLED if label_band else PERCENT_MAX,
                          allow_padding=False)


_PERCENT_TICKS = np.array([0, 20, 40, 60, 80, 100])


def _percent_axis(scale: bq.Scale, side: str = "left") -> bq.Axis:
    """A coverage % axis with ticks at 0–100 only (the scale reaches past both ends)."""
    axis = _value_axis(scale, "coverage %", side=side)
    axis.tick_values = _PERCENT_TICKS
    return axis


def _figure(title: str, marks: list[bq.Mark], axes: list[bq.Axis], height: str = _PANEL_HEIGHT) -> bq.Figure:
    return bq.Figure(
        title=title,
        marks=marks,
        axes=axes,
        fig_margin=dict(_MARGIN),
        padding_y=0.05,
        title_style={"font-size": "14px"},
        layout=widgets.Layout(width="100%", height=height),
    )


class _Threshold:
    """The under-labelled threshold: a dashed red line, with its value written in the band above 100 %.

    The label goes at the right end of the band the point charts keep free above 100 % (:data:`PERCENT_MAX_LABELLED`);
    written on the line, it covered the points just above the threshold (an 81 % point under an 80 % label).
    """

    def __init__(self, x: bq.Scale, y: bq.Scale, empty_x: np.ndarray) -> None:
        self.line = bq.Lines(x=empty_x, y=[], scales={"x": x, "y": y}, colors=[TARGET_COLOUR], line_style="dashed")
        self.label = bq.Label(
            x=empty_x, y=[], text=[], scales={"x": x, "y": y}, colors=[TARGET_COLOUR],
            default_size=LABEL_FONT_PX, font_unit="px", align="end", x_offset=-4, y_offset=LABEL_CENTRE_PX,
        )
        self.marks: list[bq.Mark] = [self.line, self.label]

    def show(self, span: np.ndarray, threshold_pct: float) -> None:
        """Draw the line across ``span`` (two x values; empty hides it), its label in the band at its right end."""
        with self.line.hold_sync():
            self.line.x, self.line.y = span, np.full(len(span), float(threshold_pct))
        with self.label.hold_sync():
            self.label.x, self.label.y = span[-1:], np.full(len(span[-1:]), PERCENT_MAX_LABELLED)
            self.label.text = [f"dashed: under-labelled below {threshold_pct:g} %"] * len(span[-1:])

    def show_line(self, threshold_pct: float, vertical: bool) -> None:
        """Draw the line across a bar chart at ``threshold_pct``, without a label (the chart's title names it).

        The other axis is a 0..1 scale. A label would sit on a bar or on a bar's value: the bars fill the chart.
        """
        across, at = np.array([0.0, 1.0]), np.full(2, float(threshold_pct))
        with self.line.hold_sync():
            self.line.x, self.line.y = (at, across) if vertical else (across, at)
        with self.label.hold_sync():
            self.label.x, self.label.y, self.label.text = np.array([], dtype="float64"), [], []


def point_index(event: dict[str, object]) -> int | None:
    """The point index of a bqplot mark event (``{"data": {"index": i, ...}}``, or ``index`` at the top)."""
    data = event.get("data")
    index = data.get("index") if isinstance(data, dict) else event.get("index")
    return index if isinstance(index, int) else None


def _nan_if_none(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype="float64")


class CoverageTimeline:
    """Three stacked panels on one shared time axis: raw bags, labels and frames, coverage % per run.

    Coverage points are coloured on the coverage scale; the under-labelled threshold is a dashed line, its label in
    a band above 100 % that no point reaches. Lines join only the runs of one UTC day (:func:`_broken_at_gaps`).
    ML-only runs (labels without bags) have no coverage and are marked with grey crosses at 0 %.
    Clicking a run's point opens its per-run page (through :class:`~runtool.ui.opener.PageOpener`) and leaves a
    link to it under that panel (for a new tab, or a browser that blocks the move); :attr:`clicked_run` is the run.
    """

    HINT = "Click a point to open its run on the per-run page."

    def __init__(self) -> None:
        self.x = bq.DateScale()
        bags_y = bq.LinearScale(min=0)
        # Lines broken at gaps (NaN) and the runs as dots of their own: bqplot draws a line's marker for a
        # NaN point in the plot's corner.
        self.bags = bq.Lines(
            x=np.array([], dtype="datetime64[ms]"), y=[], scales={"x": self.x, "y": bags_y},
            colors=[RAW_BAGS_COLOUR], labels=["raw bags"],
        )
        ml_y = bq.LinearScale(min=0)
        self.samples = bq.Lines(
            x=np.array([], dtype="datetime64[ms]"), y=[[], []], scales={"x": self.x, "y": ml_y},
            colors=[LABELS_COLOUR, ML_FRAMES_COLOUR], labels=["labels", "frames"],
        )

        # One HTML tooltip filled on hover (as the laser box bars do): a served page could not draw bqplot's
        # field tooltips ("Could not create a view", shown as a javascript error box over the chart).
        self.hover = widgets.HTML().add_class("rt-point-hover")

        def dots(y: bq.Scale, colour: str) -> bq.Scatter:
            return bq.Scatter(
                x=np.array([], dtype="datetime64[ms]"), y=[], scales={"x": self.x, "y": y}, colors=[colour],
                default_size=20, tooltip=self.hover,
            )

        self.bag_dots = dots(bags_y, RAW_BAGS_COLOUR)
        self.frame_dots = dots(ml_y, ML_FRAMES_COLOUR)
        self.label_dots = dots(ml_y, LABELS_COLOUR)
        pct_y = _percent_scale(label_band=True)
        self.colour_scale = _coverage_scale(80.0)
        self.coverage = bq.Scatter(
            x=np.array([], dtype="datetime64[ms]"), y=[], color=[],
            scales={"x": self.x, "y": pct_y, "color": self.colour_scale},
            default_size=48, stroke="#555", labels=["coverage"], tooltip=self.hover,
        )
        self.ml_only = bq.Scatter(
            x=np.array([], dtype="datetime64[ms]"), y=[], scales={"x": self.x, "y": pct_y},
            marker="cross", colors=[COVERAGE_NONE], default_size=48, labels=["ML only"], tooltip=self.hover,
        )
        self.threshold = _Threshold(self.x, pct_y, np.array([], dtype="datetime64[ms]"))
        # The run a link names, ringed (see runtool.ui.linked_run); drawn under the points, so they take the clicks.
        self.linked_ring = bq.Scatter(
            x=np.array([], dtype="datetime64[ms]"), y=[], scales={"x": self.x, "y": pct_y}, marker="circle",
            fill=False, colors=[LINK_COLOUR], default_size=260, stroke_width=2.5,
        )
        self.time_axes = [_time_axis(self.x, "run start (UTC)") for _ in range(3)]
        self.bags_axis, self.samples_axis = _value_axis(bags_y, "bags", ",d"), _value_axis(ml_y, "samples", ",d")
        self.figures = [
            _figure("Raw bags per run", [self.bags, self.bag_dots], [self.time_axes[0], self.bags_axis]),
            _figure("Labels (orange) and frames (light orange) per run",
                    [self.samples, self.frame_dots, self.label_dots],
                    [self.time_axes[1], self.samples_axis]),
            _figure("Coverage per run (grey ×: ML only, no raw bags)",
                    [*self.threshold.marks, self.linked_ring, self.coverage, self.ml_only],
                    [self.time_axes[2], _percent_axis(pct_y)]),
        ]
        self.clicked = widgets.HTML(f'<span class="rt-caption">{html.escape(self.HINT)}</span>')
        self.clicked.add_class("rt-clicked-run")
        self.clicked_run: RunCoordinate | None = None
        # Per run mark: the panel it is drawn in, what its value says, and the run of each point (set by show).
        self._what: dict[int, tuple[int, Callable[[CoveragePoint], str]]] = {
            id(self.bag_dots): (0, lambda p: format_count_of(p.raw_bags, "raw bag")),
            id(self.frame_dots): (1, lambda p: format_count_of(p.ml_frames, "frame")),
            id(self.label_dots): (1, lambda p: format_count_of(p.ml_labels, "label")),
            id(self.coverage): (2, lambda p: f"coverage {format_pct(p.coverage_pct)}"),
            id(self.ml_only): (2, lambda p: "ML only: labels without raw bags"),
        }
        self._points: dict[int, list[CoveragePoint]] = {}
        for mark in (self.bag_dots, self.frame_dots, self.label_dots, self.coverage, self.ml_only):
            mark.on_element_click(self._clicked)
            mark.on_hover(self._hovered)
        self.opener = PageOpener()
        # Says what a line is wherever one is drawn: a short line between two dots read as an error bar.
        self.lines_note = widgets.HTML().add_class("rt-caption").add_class("rt-lines-note")
        self.widget = widgets.VBox().add_class("rt-timeline")
        self._lay_out(None)

    def _lay_out(self, panel: int | None) -> None:
        """The note on lines, the panels and the run link: under panel ``panel``, or under them all (None)."""
        after = len(self.figures) if panel is None else panel + 1
        self.widget.children = [self.lines_note, *self.figures[:after], self.clicked, *self.figures[after:],
                                self.opener]

    def _point(self, mark: bq.Scatter, event: dict[str, object]) -> CoveragePoint | None:
        points = self._points.get(id(mark), [])
        index = point_index(event)
        return points[index] if index is not None and 0 <= index < len(points) else None

    def _clicked(self, mark: bq.Scatter, event: dict[str, object]) -> None:
        point = self._point(mark, event)
        if point is not None:
            self.open_link(point.coordinate, self._what[id(mark)][0])
            self.opener.go(run_url(point.coordinate))

    def _hovered(self, mark: bq.Scatter, event: dict[str, object]) -> None:
        point = self._point(mark, event)
        if point is not None:
            name = f"{point.coordinate.lbid} · {format_time(point.start_time)}"
            self.hover.value = (f"<b>{html.escape(name)}</b><br>{html.escape(self._what[id(mark)][1](point))}"
                                '<br><span class="rt-caption">click to open the run</span>')

    def open_link(self, coordinate: RunCoordinate, panel: int = 2) -> None:
        """Show "Open <run> on the per-run page" right under panel ``panel`` (0 bags, 1 samples, 2 coverage)."""
        self.clicked_run = coordinate
        href = html.escape(run_url(coordinate), quote=True)
        name = f"{coordinate.lbid} · {format_time(coordinate.start_time)}"
        self.clicked.value = (
            f'<a class="rt-open-run" href="{href}" target="_self" '
            f'title="{html.escape(coordinate.to_path_str())}">'
            f"Open {html.escape(name)} on the per-run page</a>"
        )
        self._lay_out(panel)

    def show(self, data: TemporalData, linked: RunCoordinate | None = None) -> None:
        """Draw the runs of ``data``; ``linked`` (the run a link names) is ringed in the coverage panel."""
        points = data.points
        threshold = data.settings.under_labelled_pct
        times = _utc_array([p.start_time for p in points])
        covered = [p for p in points if p.coverage_pct is not None]
        ml_only = [p for p in points if p.ml_only]
        span = _padded_span(times)
        for axis in self.time_axes:
            axis.tick_format = _day_or_minute_format(times)
        line_x, (bags, labels, frames) = _broken_at_gaps(
            times, [[p.raw_bags for p in points], [p.ml_labels for p in points], [p.ml_frames for p in points]]
        )
        days = times.astype("datetime64[D]")
        self.lines_note.value = (
            "Each dot is a run; a line joins the runs of one UTC day (a day's work). Runs on different days are "
            "not joined." if len(np.unique(days)) < len(days) else ""
        )
        with self.bags.hold_sync():
            self.bags.x, self.bags.y = line_x, bags
        with self.samples.hold_sync():
            self.samples.x = line_x
            self.samples.y = np.vstack([labels, frames]).reshape(2, len(line_x))
        for mark, values in ((self.bag_dots, [p.raw_bags for p in points]),
                             (self.frame_dots, [p.ml_frames for p in points]),
                             (self.label_dots, [p.ml_labels for p in points])):
            with mark.hold_sync():
                mark.x, mark.y = times, np.array(values, dtype="float64")
        _count_ticks(self.bags_axis, bags)
        _count_ticks(self.samples_axis, np.concatenate([labels, frames]))
        with self.coverage.hold_sync():
            self.coverage.x = _utc_array([p.start_time for p in covered])
            self.coverage.y = _nan_if_none([p.coverage_pct for p in covered])
            self.coverage.color = _nan_if_none([p.coverage_pct for p in covered])
        with self.ml_only.hold_sync():
            self.ml_only.x = _utc_array([p.start_time for p in ml_only])
            self.ml_only.y = np.zeros(len(ml_only))
        everyone = list(points)
        self._points = {id(self.bag_dots): everyone, id(self.frame_dots): everyone, id(self.label_dots): everyone,
                        id(self.coverage): covered, id(self.ml_only): ml_only}
        if self.clicked_run is not None and self.clicked_run not in {p.coordinate for p in points}:
            self.clicked_run = None
            self.clicked.value = f'<span class="rt-caption">{html.escape(self.HINT)}</span>'
            self._lay_out(None)
        _set_threshold(self.colour_scale, threshold)
        self.threshold.show(span, threshold)
        ringed = [p for p in points if p.coordinate == linked]
        with self.linked_ring.hold_sync():
            self.linked_ring.x = _utc_array([p.start_time for p in ringed])
            self.linked_ring.y = np.array([p.coverage_pct or 0.0 for p in ringed], dtype="float64")


def _broken_at_gaps(times: np.ndarray, series: Sequence[Sequence[float]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """``times`` (in start order) and each of ``series`` with a NaN point between runs of different UTC days.

    The gap rule: a line joins consecutive runs only when they start on the same UTC calendar day, the day's
    work of one laser box; runs on different days stand apart, however close in hours (a run at 23:50 and the
    next at 00:10) or far (a day, weeks). A line across days drew recordings that never happened: two runs 24 h
    apart read as a day of recording. bqplot breaks a line at NaN; each run also has its own dot, so a run alone
    on its day still shows.
    """
    values = [np.asarray(s, dtype="float64") for s in series]
    if len(times) < 2:
        return times, values
    days = times.astype("datetime64[D]")
    gaps = np.flatnonzero(days[1:] != days[:-1]) + 1
    midpoints = times[gaps - 1] + (times[gaps] - times[gaps - 1]) // 2
    return np.insert(times, gaps, midpoints), [np.insert(v, gaps, np.nan) for v in values]


def _padded_span(times: np.ndarray) -> np.ndarray:
    """The first and last time widened by 3 % (at least an hour), so edge points are not cut in half."""
    if len(times) == 0:
        return np.array([], dtype="datetime64[ms]")
    first, last = times.min(), times.max()
    pad = max(np.timedelta64(3_600_000, "ms"), (last - first) * 3 // 100)
    return np.array([first - pad, last + pad], dtype="datetime64[ms]")


class DailyCoverageChart:
    """Per-day totals on a real calendar axis: every day has a slot, days without runs are gaps."""

    def __init__(self) -> None:
        self.x = bq.DateScale()
        bags_y = bq.LinearScale(min=0)
        self.bags = bq.Bars(
            x=np.array([], dtype="datetime64[ms]"), y=[], scales={"x": self.x, "y": bags_y},
            colors=[RAW_BAGS_COLOUR], padding=0.15,
        )
        ml_y = bq.LinearScale(min=0)
        # Labels drawn over frames: the orange part of each bar is the labelled share of the frames.
        self.frames = bq.Bars(
            x=np.array([], dtype="datetime64[ms]"), y=[], scales={"x": self.x, "y": ml_y},
            colors=[ML_FRAMES_COLOUR], padding=0.15, labels=["frames"],
        )
        self.labels = bq.Bars(
            x=np.array([], dtype="datetime64[ms]"), y=[], scales={"x": self.x, "y": ml_y},
            colors=[LABELS_COLOUR], padding=0.15, labels=["labels"],
        )
        pct_y = _percent_scale(label_band=True)
        self.colour_scale = _coverage_scale(80.0)
        self.coverage = bq.Scatter(
            x=np.array([], dtype="datetime64[ms]"), y=[], color=[],
            scales={"x": self.x, "y": pct_y, "color": self.colour_scale},
            default_size=48, stroke="#555", tooltip=widgets.HTML().add_class("rt-point-hover"),
        )
        self._covered: list[DayCoverage] = []
        self.coverage.on_hover(self._hovered)
        self.threshold = _Threshold(self.x, pct_y, np.array([], dtype="datetime64[ms]"))
        self.bags_axis, self.samples_axis = _value_axis(bags_y, "bags", ",d"), _value_axis(ml_y, "samples", ",d")
        self.figures = [
            _figure("Raw bags per day", [self.bags], [_time_axis(self.x, "day (UTC)", "%Y-%m-%d"), self.bags_axis]),
            _figure("Labels (orange) and frames (light orange) per day", [self.frames, self.labels],
                    [_time_axis(self.x, "day (UTC)", "%Y-%m-%d"), self.samples_axis]),
            _figure("Coverage per day", [*self.threshold.marks, self.coverage],
                    [_time_axis(self.x, "day (UTC)", "%Y-%m-%d"), _percent_axis(pct_y)]),
        ]
        self.widget = widgets.VBox(self.figures).add_class("rt-daily")

    def show(self, data: AggregatedTemporalData) -> None:
        days = data.days
        threshold = data.settings.under_labelled_pct
        times = _utc_array([d.day for d in days])
        covered = [d for d in days if d.coverage_pct is not None]
        with self.bags.hold_sync():
            self.bags.x, self.bags.y = times, np.array([d.raw_bags for d in days], dtype="float64")
        with self.frames.hold_sync():
            self.frames.x, self.frames.y = times, np.array([d.ml_frames for d in days], dtype="float64")
        with self.labels.hold_sync():
            self.labels.x, self.labels.y = times, np.array([d.ml_labels for d in days], dtype="float64")
        _count_ticks(self.bags_axis, self.bags.y)
        _count_ticks(self.samples_axis, np.concatenate([self.frames.y, self.labels.y]))
        self._covered = covered
        with self.coverage.hold_sync():
            self.coverage.x = _utc_array([d.day for d in covered])
            self.coverage.y = _nan_if_none([d.coverage_pct for d in covered])
            self.coverage.color = _nan_if_none([d.coverage_pct for d in covered])
        _set_threshold(self.colour_scale, threshold)
        self.threshold.show(_padded_span(times), threshold)

    def _hovered(self, mark: bq.Scatter, event: dict[str, object]) -> None:
        index = point_index(event)
        if index is not None and 0 <= index < len(self._covered) and isinstance(mark.tooltip, widgets.HTML):
            day = self._covered[index]
            mark.tooltip.value = (f"<b>{format_day(day.day)}</b><br>{format_count_of(day.runs, 'run')}, "
                                  f"coverage {format_pct(day.coverage_pct)}")


class LaserBoxBars:
    """Per laser box: bags, labels and coverage % as three bar charts side by side.

    A few laser boxes get upright bars with their names beneath; more than fit side by side turn the charts
    on their side (one row per laser box, names at the left of each chart), so every name reads level
    and none overlaps another. Lying down, each chart has its names and at least :attr:`MIN_PLOT_PX` of plot: side
    by side on a wide window, one under another on a narrow one (at 760 px, thirds of the row left the first chart,
    which held the names, a plot ~35 px wide with its values and title cut). Hovering a bar shows the laser box's
    full coordinate and its value.
    """

    PLOT_PX = 330
    """The narrowest plot area of one chart (a third of the page at 1440 px, less the margins)."""
    CHAR_PX = 7
    """Roughly the width of one character of an axis label."""
    ROW_PX = 20
    """Height of one laser box's row when the bars lie horizontally."""
    MIN_PLOT_PX = 250
    """The narrowest plot of a chart lying down (its title, "Coverage (dashed: under-labelled below 80 %)", fits)."""

    def __init__(self) -> None:
        self.x = bq.OrdinalScale()
        self.colour_scale = _coverage_scale(80.0)
        self.horizontal = False
        self.hover = widgets.HTML().add_class("rt-bar-hover")
        self._keys: list[str] = []
        self._names: list[str] = []
        self.figures: list[bq.Figure] = []
        self.widget = widgets.HBox(layout=widgets.Layout(width="100%", flex_flow="row wrap")).add_class("rt-lb-bars")
        self._build(horizontal=False)

    def _build(self, horizontal: bool) -> None:
        """(Re)build the three charts upright or on their side; the marks are updated in place afterwards."""
        self.horizontal = horizontal
        orientation = "horizontal" if horizontal else "vertical"
        self.x = bq.OrdinalScale(reverse=horizontal)  # first laser box on top when lying down
        # Room past the longest bar and past 100 % for the value written beyond a bar's end (see show).
        bags_y, labels_y = bq.LinearScale(min=0), bq.LinearScale(min=0)
        pct_y = bq.LinearScale(min=0, max=118, allow_padding=False)
        self.count_scales = (bags_y, labels_y)

        # A bar's value goes just past its end, on the page's white: inside (bqplot's place), a short bar's value
        # crossed the axis and a dark red bar's hid its dark text.
        value_labels: dict[str, Any] = (
            {"label_font_style": {"text-anchor": "start", "font-size": "11px"},
             "label_display_horizontal_offset": 3} if horizontal else
            {"label_font_style": {"dominant-baseline": "text-after-edge", "font-size": "11px"}})

        def bars(scales: dict[str, bq.Scale], value_format: str, **style: Any) -> bq.Bars:
            mark = bq.Bars(x=[], y=[], scales={"x": self.x, **scales}, orientation=orientation,
                           label_display=True, label_display_format=value_format, tooltip=self.hover,
                           **value_labels, **style)
            mark.on_hover(self._hovered)
            return mark

        self.bags = bars({"y": bags_y}, ",d", colors=[RAW_BAGS_COLOUR])
        self.labels = bars({"y": labels_y}, ",d", colors=[LABELS_COLOUR])
        self.coverage = bars({"y": pct_y, "color": self.colour_scale}, ".1f", color=[])
        unit = bq.LinearScale(min=0, max=1)
        # The threshold spans the whole chart on its own 0..1 scale (an ordinal scale has no edges).
        self.threshold = (_Threshold(pct_y, unit, np.array([], dtype="float64")) if horizontal
                          else _Threshold(unit, pct_y, np.array([], dtype="float64")))
        value_side = "bottom" if horizontal else "left"
        self.bags_axis = _value_axis(bags_y, "bags", ",d", value_side)
        self.labels_axis = _value_axis(labels_y, "labels", ",d", value_side)
        pct_axis = _percent_axis(pct_y, value_side)

        def figure(title: str, marks: list[bq.Mark], value_axis: bq.Axis) -> bq.Figure:
            if horizontal:
                name_axis = bq.Axis(scale=self.x, side="left", grid_lines="none")
                fig = _figure(title, marks, [value_axis, name_axis], height=_PANEL_HEIGHT)
                fig.fig_margin = {**_MARGIN, "left": 64}
                fig.padding_y = 0.0
                fig.layout.flex = "1 1 0px"  # equal widths; the minimum (set in show) wraps them when narrow
                return fig
            name_axis = bq.Axis(scale=self.x, label="laser box", grid_lines="none",
                                label_offset=AXIS_TITLE_OFFSET["bottom"])
            fig = _figure(title, marks, [name_axis, value_axis], height="280px")
            fig.padding_y = 0.05
            fig.layout.width = "33%"
            return fig

        self.figures = [
            figure("Raw bags per laser box", [self.bags], self.bags_axis),
            figure("Labels per laser box", [self.labels], self.labels_axis),
            figure("Coverage per laser box", [*self.threshold.marks, self.coverage], pct_axis),
        ]
        self.widget.children = self.figures

    def fits_upright(self, names: Sequence[str]) -> bool:
        """Whether every name fits level under its own bar in the narrowest chart."""
        widest = max((len(name) for name in names), default=0)
        return len(names) * (widest * self.CHAR_PX + 12) <= self.PLOT_PX

    def show(self, stats: Sequence[LaserBoxStats], names: Sequence[str], threshold_pct: float) -> None:
        """``names`` are the bar labels, one per entry of ``stats`` (short; the hover shows the ``lb_key``)."""
        horizontal = not self.fits_upright(names)
        if horizontal != self.horizontal:
            self._build(horizontal)
        self._keys, self._names = [s.lb_key for s in stats], list(names)
        x = np.array(list(names), dtype="U")
        with self.bags.hold_sync():
            self.bags.x, self.bags.y = x, np.array([s.total_bags for s in stats], dtype="float64")
        with self.labels.hold_sync():
            self.labels.x, self.labels.y = x, np.array([s.total_labels for s in stats], dtype="float64")
        _count_ticks(self.bags_axis, self.bags.y)
        _count_ticks(self.labels_axis, self.labels.y)
        _set_threshold(self.colour_scale, threshold_pct)
        # A laser box without bags has no coverage: its slot stays empty rather than showing a 0 % bar.
        pct = np.array([np.nan if s.coverage_pct is None else s.coverage_pct for s in stats], dtype="float64")
        with self.coverage.hold_sync():
            self.coverage.x = x[~np.isnan(pct)]
            self.coverage.y, self.coverage.color = pct[~np.isnan(pct)], pct[~np.isnan(pct)]
        # Room past the longest bar for its value (padding would also move 0 off the axis).
        for scale, values in zip(self.count_scales, (self.bags.y, self.labels.y), strict=True):
            scale.max = max(1.0, float(np.max(values, initial=0.0))) * 1.15
            scale.allow_padding = False
        if self.horizontal:
            height = f"{max(170, _MARGIN['top'] + _MARGIN['bottom'] + 10 + self.ROW_PX * len(stats))}px"
            left = 16 + self.CHAR_PX * max((len(n) for n in names), default=4)
            for fig in self.figures:
                fig.fig_margin = {**fig.fig_margin, "left": left}
                fig.layout.min_width = f"{left + self.MIN_PLOT_PX + _MARGIN['right']}px"
                fig.layout.height = height
        self.threshold.show_line(threshold_pct, vertical=self.horizontal)
        # Short enough for a third of the page: a title cut at the figure's edge would lose the threshold.
        self.figures[2].title = f"Coverage (dashed: under-labelled below {threshold_pct:g} %)"

    def _hovered(self, mark: bq.Bars, event: dict[str, Any]) -> None:
        """The hovered bar's full coordinate and value, in the tooltip."""
        data = event.get("data", {})
        name = str(data.get("x", ""))
        key = self._keys[self._names.index(name)] if name in self._names else name
        value = data.get("y")
        if mark is self.coverage:
            shown = format_pct(value)
        else:
            shown = f"{format_count(value)} {'bags' if mark is self.bags else 'labels'}"
        self.hover.value = f"<b>{html.escape(name)}</b><br>{html.escape(key)}<br>{html.escape(shown)}"
