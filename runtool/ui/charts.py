"""The coverage charts (bqplot), built once and updated in place when the selection changes.

Updating marks instead of rebuilding figures keeps kernel and browser from piling up widget models
with every change of selection. Times go to bqplot as naive ``datetime64`` values holding UTC, and bqplot's date
scale is a UTC scale, so every axis reads in UTC whatever the viewer's time zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import bqplot as bq
import ipywidgets as widgets
import numpy as np
from bqplot.traits import array_dimension_bounds, array_serialization
from traittypes import Array

from runtool.models import AggregatedTemporalData, LaserBoxStats, TemporalData
from runtool.ui.theme import (
    COVERAGE_NONE,
    EMPTY_CELL_COLOUR,
    LABELS_COLOUR,
    ML_FRAMES_COLOUR,
    RAW_BAGS_COLOUR,
    TARGET_COLOUR,
    coverage_stops,
)

__all__ = ["CoverageTimeline", "DailyCoverageChart", "FleetCalendar", "LaserBoxBars"]

_MARGIN = {"top": 36, "bottom": 36, "left": 64, "right": 40}
_PANEL_HEIGHT = "210px"


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
    return bq.Axis(scale=scale, label=label, grid_lines="none", num_ticks=10, tick_format=tick_format)


def _value_axis(scale: bq.Scale, label: str, tick_format: str | None = None) -> bq.Axis:
    return bq.Axis(scale=scale, side="left", label=label, tick_format=tick_format)


def _count_ticks(axis: bq.Axis, values: np.ndarray) -> None:
    """Whole-number ticks on a count axis.

    On a small range d3 puts ticks at halves, which a whole-number format prints twice (0, 1, 1, 2);
    larger ranges already get whole-number ticks, so they stay automatic.
    """
    largest = float(np.nanmax(values)) if len(values) else 0.0
    axis.tick_values = np.arange(0, int(largest) + 1) if largest < 6 else None


def _day_or_minute_format(times: np.ndarray) -> str:
    """Dates on a long time axis; dates and times when the runs fall within a few days."""
    if len(times) and times.max() - times.min() < np.timedelta64(3, "D"):
        return "%Y-%m-%d %H:%M"
    return "%Y-%m-%d"


def _percent_scale() -> bq.LinearScale:
    """0–105 % exactly: no automatic padding, so 100 % sits just below the top edge."""
    return bq.LinearScale(min=0, max=105, allow_padding=False)


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
    """The under-labelled threshold: a dashed red line with its value written on it."""

    def __init__(self, x: bq.Scale, y: bq.Scale, empty_x: np.ndarray) -> None:
        self.line = bq.Lines(x=empty_x, y=[], scales={"x": x, "y": y}, colors=[TARGET_COLOUR], line_style="dashed")
        self.label = bq.Label(
            x=empty_x, y=[], text=[], scales={"x": x, "y": y}, colors=[TARGET_COLOUR],
            default_size=12, font_unit="px", align="end", x_offset=-4, y_offset=-9,
        )
        self.marks: list[bq.Mark] = [self.line, self.label]

    def show(self, span: np.ndarray, threshold_pct: float) -> None:
        """Draw the line across ``span`` (two x values; empty hides it)."""
        with self.line.hold_sync():
            self.line.x, self.line.y = span, np.full(len(span), float(threshold_pct))
        with self.label.hold_sync():
            self.label.x, self.label.y = span[-1:], np.full(len(span[-1:]), float(threshold_pct))
            self.label.text = [f"under-labelled below {threshold_pct:g} %"] * len(span[-1:])


def _nan_if_none(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype="float64")


class CoverageTimeline:
    """Three stacked panels on one shared time axis: raw bags, labels and frames, coverage % per run.

    Coverage points are coloured on the coverage scale; the under-labelled threshold is a dashed line.
    ML-only runs (labels without bags) have no coverage and are marked with grey crosses at 0 %.
    """

    def __init__(self) -> None:
        self.x = bq.DateScale()
        bags_y = bq.LinearScale(min=0)
        self.bags = bq.Lines(
            x=np.array([], dtype="datetime64[ms]"), y=[], scales={"x": self.x, "y": bags_y},
            colors=[RAW_BAGS_COLOUR], marker="circle", marker_size=20, labels=["raw bags"],
        )
        ml_y = bq.LinearScale(min=0)
        self.samples = bq.Lines(
            x=np.array([], dtype="datetime64[ms]"), y=[[], []], scales={"x": self.x, "y": ml_y},
            colors=[LABELS_COLOUR, ML_FRAMES_COLOUR], marker="circle", marker_size=20, labels=["labels", "frames"],
        )
        pct_y = _percent_scale()
        self.colour_scale = _coverage_scale(80.0)
        self.coverage = bq.Scatter(
            x=np.array([], dtype="datetime64[ms]"), y=[], color=[],
            scales={"x": self.x, "y": pct_y, "color": self.colour_scale},
            default_size=48, stroke="#555", labels=["coverage"],
            tooltip=bq.Tooltip(fields=["x", "y"], formats=["%Y-%m-%d %H:%M", ".1f"], labels=["start", "coverage %"]),
        )
        self.ml_only = bq.Scatter(
            x=np.array([], dtype="datetime64[ms]"), y=[], scales={"x": self.x, "y": pct_y},
            marker="cross", colors=[COVERAGE_NONE], default_size=48, labels=["ML only"],
        )
        self.threshold = _Threshold(self.x, pct_y, np.array([], dtype="datetime64[ms]"))
        self.time_axes = [_time_axis(self.x, "run start (UTC)") for _ in range(3)]
        self.bags_axis, self.samples_axis = _value_axis(bags_y, "bags", "d"), _value_axis(ml_y, "samples", "d")
        self.figures = [
            _figure("Raw bags per run", [self.bags], [self.time_axes[0], self.bags_axis]),
            _figure("Labels (orange) and frames (light orange) per run", [self.samples],
                    [self.time_axes[1], self.samples_axis]),
            _figure("Coverage per run (grey ×: ML only, no raw bags)",
                    [*self.threshold.marks, self.coverage, self.ml_only],
                    [self.time_axes[2], _value_axis(pct_y, "coverage %")]),
        ]
        self.widget = widgets.VBox(self.figures).add_class("rt-timeline")

    def show(self, data: TemporalData) -> None:
        points = data.points
        threshold = data.settings.under_labelled_pct
        times = _utc_array([p.start_time for p in points])
        covered = [p for p in points if p.coverage_pct is not None]
        ml_only = [p for p in points if p.ml_only]
        span = _padded_span(times)
        for axis in self.time_axes:
            axis.tick_format = _day_or_minute_format(times)
        with self.bags.hold_sync():
            self.bags.x, self.bags.y = times, np.array([p.raw_bags for p in points], dtype="float64")
        with self.samples.hold_sync():
            self.samples.x = times
            self.samples.y = np.array(
                [[p.ml_labels for p in points], [p.ml_frames for p in points]], dtype="float64"
            ).reshape(2, len(points))
        _count_ticks(self.bags_axis, self.bags.y)
        _count_ticks(self.samples_axis, self.samples.y)
        with self.coverage.hold_sync():
            self.coverage.x = _utc_array([p.start_time for p in covered])
            self.coverage.y = _nan_if_none([p.coverage_pct for p in covered])
            self.coverage.color = _nan_if_none([p.coverage_pct for p in covered])
        with self.ml_only.hold_sync():
            self.ml_only.x = _utc_array([p.start_time for p in ml_only])
            self.ml_only.y = np.zeros(len(ml_only))
        _set_threshold(self.colour_scale, threshold)
        self.threshold.show(span, threshold)


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
        pct_y = _percent_scale()
        self.colour_scale = _coverage_scale(80.0)
        self.coverage = bq.Scatter(
            x=np.array([], dtype="datetime64[ms]"), y=[], color=[],
            scales={"x": self.x, "y": pct_y, "color": self.colour_scale},
            default_size=48, stroke="#555",
            tooltip=bq.Tooltip(fields=["x", "y"], formats=["%Y-%m-%d", ".1f"], labels=["day", "coverage %"]),
        )
        self.threshold = _Threshold(self.x, pct_y, np.array([], dtype="datetime64[ms]"))
        self.bags_axis, self.samples_axis = _value_axis(bags_y, "bags", "d"), _value_axis(ml_y, "samples", "d")
        self.figures = [
            _figure("Raw bags per day", [self.bags], [_time_axis(self.x, "day (UTC)", "%Y-%m-%d"), self.bags_axis]),
            _figure("Labels (orange) and frames (light orange) per day", [self.frames, self.labels],
                    [_time_axis(self.x, "day (UTC)", "%Y-%m-%d"), self.samples_axis]),
            _figure("Coverage per day", [*self.threshold.marks, self.coverage],
                    [_time_axis(self.x, "day (UTC)", "%Y-%m-%d"), _value_axis(pct_y, "coverage %")]),
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
        with self.coverage.hold_sync():
            self.coverage.x = _utc_array([d.day for d in covered])
            self.coverage.y = _nan_if_none([d.coverage_pct for d in covered])
            self.coverage.color = _nan_if_none([d.coverage_pct for d in covered])
        _set_threshold(self.colour_scale, threshold)
        self.threshold.show(_padded_span(times), threshold)


class LaserBoxBars:
    """Per laser box: bags, labels and coverage % as three bar charts side by side."""

    def __init__(self) -> None:
        self.x = bq.OrdinalScale()
        bags_y, labels_y, pct_y = bq.LinearScale(min=0), bq.LinearScale(min=0), _percent_scale()
        self.colour_scale = _coverage_scale(80.0)
        self.bags = bq.Bars(x=[], y=[], scales={"x": self.x, "y": bags_y}, colors=[RAW_BAGS_COLOUR],
                            label_display=True, label_display_format=",d")
        self.labels = bq.Bars(x=[], y=[], scales={"x": self.x, "y": labels_y}, colors=[LABELS_COLOUR],
                              label_display=True, label_display_format=",d")
        self.coverage = bq.Bars(x=[], y=[], color=[], scales={"x": self.x, "y": pct_y, "color": self.colour_scale},
                                label_display=True, label_display_format=".1f")
        # The threshold spans the whole width on its own 0..1 scale (an ordinal scale has no edges).
        self.threshold = _Threshold(bq.LinearScale(min=0, max=1), pct_y, np.array([], dtype="float64"))

        self.bags_axis, self.labels_axis = _value_axis(bags_y, "bags", "d"), _value_axis(labels_y, "labels", "d")

        def figure(title: str, marks: list[bq.Mark], y_axis: bq.Axis) -> bq.Figure:
            x_axis = bq.Axis(scale=self.x, label="laser box", tick_rotate=-30)
            fig = _figure(title, marks, [x_axis, y_axis], height="280px")
            fig.fig_margin = {**_MARGIN, "bottom": 70}
            fig.layout.width = "33%"
            return fig

        self.figures = [
            figure("Raw bags per laser box", [self.bags], self.bags_axis),
            figure("Labels per laser box", [self.labels], self.labels_axis),
            figure("Coverage per laser box", [*self.threshold.marks, self.coverage], _value_axis(pct_y, "coverage %")),
        ]
        self.widget = widgets.HBox(self.figures, layout=widgets.Layout(width="100%")).add_class("rt-lb-bars")

    def show(self, stats: Sequence[LaserBoxStats], names: Sequence[str], threshold_pct: float) -> None:
        """``names`` are the bar labels, one per entry of ``stats``."""
        x = np.array(list(names), dtype="U")
        with self.bags.hold_sync():
            self.bags.x, self.bags.y = x, np.array([s.total_bags for s in stats], dtype="float64")
        with self.labels.hold_sync():
            self.labels.x, self.labels.y = x, np.array([s.total_labels for s in stats], dtype="float64")
        _count_ticks(self.bags_axis, self.bags.y)
        _count_ticks(self.labels_axis, self.labels.y)
        _set_threshold(self.colour_scale, threshold_pct)
        # A laser box without bags has no coverage: its slot stays empty rather than showing a 0 % bar.
        covered = [(name, s.coverage_pct) for name, s in zip(names, stats, strict=True) if s.coverage_pct is not None]
        pct = np.array([value for _, value in covered], dtype="float64")
        with self.coverage.hold_sync():
            self.coverage.x = np.array([name for name, _ in covered], dtype="U")
            self.coverage.y, self.coverage.color = pct, pct
        self.threshold.show(np.array([0.0, 1.0]), threshold_pct)


def _grid_to_json(grid: np.ndarray | None, widget: object) -> list[list[float | None]] | None:
    """A 2-D grid as nested lists with ``null`` for NaN: bqplot paints ``null`` cells in ``null_color``
    but sends NaN from binary arrays through the colour scale (as black)."""
    if grid is None:
        return None
    return [[None if np.isnan(value) else float(value) for value in row] for row in grid]


class _GridHeatMap(bq.GridHeatMap):
    """bqplot's GridHeatMap with its arrays sent as they are.

    bqplot squeezes ``row``, ``column`` and ``color``, so a single laser box (one row) or a single day
    turns the colour grid 1-D (or 0-D), which bqplot's own JavaScript cannot draw; and it sends NaN
    where an empty cell needs ``null``. The data here is always a full 2-D grid with NaN for empty.
    """

    row = Array(None, allow_none=True).tag(
        sync=True, scaled=True, rtype="Number", atype="bqplot.Axis", **array_serialization
    ).valid(array_dimension_bounds(1, 1))
    column = Array(None, allow_none=True).tag(
        sync=True, scaled=True, rtype="Number", atype="bqplot.Axis", **array_serialization
    ).valid(array_dimension_bounds(1, 1))
    color = Array(None, allow_none=True).tag(
        sync=True, scaled=True, rtype="Color", atype="bqplot.ColorAxis",
        to_json=_grid_to_json, from_json=array_serialization["from_json"],
    ).valid(array_dimension_bounds(2, 2))


class FleetCalendar:
    """Laser boxes × calendar days, coloured by coverage; blank where a laser box recorded nothing.

    Columns are every calendar day from the first to the last on a real (UTC) time axis, so a week
    without recordings shows as a blank band across the fleet.
    """

    ROW_PX = 18
    MAX_HEIGHT = "520px"
    CHAR_PX = 7
    """Roughly the width of one character of an axis label, to leave room for the row labels."""

    def __init__(self) -> None:
        self.rows = bq.OrdinalScale(reverse=True)
        self.columns = bq.DateScale()
        self.colour_scale = _coverage_scale(80.0)
        self.heatmap = _GridHeatMap(
            row=np.array(["–"]), column=np.array(["2000-01-01", "2000-01-02"], dtype="datetime64[ms]"),
            color=np.full((1, 1), np.nan),
            scales={"row": self.rows, "column": self.columns, "color": self.colour_scale},
            null_color=EMPTY_CELL_COLOUR, stroke="#ffffff",
            tooltip=bq.Tooltip(fields=["row", "column", "color"], formats=["", "%Y-%m-%d", ".1f"],
                               labels=["laser box", "day", "coverage %"]),
        )
        self.figure = bq.Figure(
            title="Coverage per laser box and day",
            marks=[self.heatmap],
            axes=[_time_axis(self.columns, "day (UTC)", "%Y-%m-%d"), _value_axis(self.rows, "")],
            fig_margin={"top": 36, "bottom": 50, "left": 120, "right": 40},
            title_style={"font-size": "14px"},
            layout=widgets.Layout(width="100%", height="200px"),
        )
        self.widget = widgets.Box(
            [self.figure], layout=widgets.Layout(max_height=self.MAX_HEIGHT, overflow="auto", width="100%")
        ).add_class("rt-heatmap")

    def show(self, data: AggregatedTemporalData, names: dict[str, str]) -> None:
        """``names`` maps each ``lb_key`` to its row label."""
        days = [d.day for d in data.days]
        keys = sorted({cell.lb_key for cell in data.cells})
        if not days or not keys:
            return
        day_index = {day: i for i, day in enumerate(days)}
        key_index = {key: i for i, key in enumerate(keys)}
        colour = np.full((len(keys), len(days)), np.nan)
        for cell in data.cells:
            if cell.coverage_pct is not None:
                colour[key_index[cell.lb_key], day_index[cell.day]] = cell.coverage_pct
        labels = [names.get(key, key) for key in keys]
        # n + 1 day boundaries: each cell spans exactly its calendar day.
        edges = _utc_array([*days, days[-1] + timedelta(days=1)])
        _set_threshold(self.colour_scale, data.settings.under_labelled_pct)
        with self.heatmap.hold_sync():
            # bqplot checks row and column against the colour grid's shape, so the grid goes first.
            self.heatmap.color = colour
            self.heatmap.row = np.array(labels, dtype="U")
            self.heatmap.column = edges
        self.figure.fig_margin = {
            "top": 36, "bottom": 50, "left": 24 + self.CHAR_PX * max(len(label) for label in labels), "right": 40
        }
        self.figure.layout.height = f"{max(170, 90 + self.ROW_PX * len(keys))}px"
