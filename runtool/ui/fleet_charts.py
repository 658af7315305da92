"""The fleet KPI page's charts (bqplot): one KPI per run over time, and two runs' distributions overlaid.

As in :mod:`runtool.ui.charts`, marks are built once and updated in place; times go to bqplot as naive
``datetime64`` values holding UTC.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from runtool.ui.charts import (
    AXIS_TITLE_OFFSET,
    _day_or_minute_format,
    _figure,
    _padded_span,
    _time_axis,
    _value_axis,
    point_index,
)
from runtool.ui.theme import LINK_COLOUR, TARGET_COLOUR
from runtool.ui.ticks import set_ticks, ticks_within

__all__ = [
    "DISTRIBUTION_COLOURS",
    "OTHERS_COLOUR",
    "SERIES_COLOURS",
    "DistributionChart",
    "KpiSeries",
    "KpiTrendChart",
    "regression_spots",
    "split_series",
    "whole_number_ticks",
]

SERIES_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
"""One colour per laser box shown on its own (red is kept for regressions, grey for "others")."""
OTHERS_COLOUR = "#9e9e9e"
DISTRIBUTION_COLOURS = ("#1f77b4", "#ff7f0e")
"""Run A, run B."""
_EMPTY_TIMES = np.array([], dtype="datetime64[ms]")


@dataclass(frozen=True)
class KpiSeries:
    """The points of one legend entry: run keys (``cid/…/timestamp``), start times (UTC), values, hover texts."""

    label: str
    keys: tuple[str, ...]
    times: np.ndarray
    values: np.ndarray
    hover: tuple[str, ...]
    colour: str
    title: str = ""
    """The legend entry's hover text (the full names behind a shortened label)."""


def split_series(run_counts: Mapping[str, int], limit: int) -> tuple[list[str], list[str]]:
    """The laser boxes drawn in a colour of their own and those drawn together as "others".

    At most ``limit`` have their own series: those with the most runs (ties in key order), so the legend
    never grows past ``limit`` + 1 entries however many laser boxes the selection holds.
    """
    ordered = sorted(run_counts, key=lambda key: (-int(run_counts[key]), key))
    return ordered[:limit], ordered[limit:]


def regression_spots(times: np.ndarray, values: np.ndarray, time_span: float, value_span: float,
                     time_share: float = 0.015, value_share: float = 0.045) -> list[list[int]]:
    """The regressed runs grouped by where their squares land: indexes of the runs within ``time_share`` of the time
    axis's span and ``value_share`` of the value axis's of the first run of their group (a square is about that big
    at 1440 px), in the order of ``times``. Runs of several laser boxes regressed on one day at about one value drew
    their squares over each other: one square for three runs."""
    order = np.argsort(times, kind="stable")
    as_numbers = times.astype("datetime64[ms]").astype("int64").astype("float64")
    spots: list[list[int]] = []
    for index in order:
        for spot in spots:
            first = spot[0]
            if (abs(as_numbers[index] - as_numbers[first]) <= time_share * time_span
                    and abs(float(values[index]) - float(values[first])) <= value_share * value_span):
                spot.append(int(index))
                break
        else:
            spots.append([int(index)])
    return spots


class KpiTrendChart:
    """A KPI per run on a UTC time axis: one scatter per legend entry, regressed runs ringed in red.

    ``on_click(key)`` is called with the run key of a clicked point (any series, or a regression ring). Regressed
    runs whose squares would land on one another share one square with their count beside it (its hover names them
    all; a click opens the first). With many runs the points are smaller and see-through, so piles show as darker.
    """

    HEIGHT = "360px"
    MANY_POINTS = 200
    """From this many points on, they are drawn smaller and see-through."""

    def __init__(self, series_limit: int) -> None:
        self.x = bq.DateScale()
        self.y = bq.LinearScale()
        # Hover texts are HTML widgets filled on hover (one per mark): a run's label and its regression reasons
        # read better as sentences than as a field table, and they may be long.
        self.series_marks = [
            bq.Scatter(x=_EMPTY_TIMES, y=[], scales={"x": self.x, "y": self.y}, default_size=40,
                       stroke="#ffffff", stroke_width=0.5, display_names=False, names=[],
                       tooltip=_tip(), display_legend=False, labels=[""])
            for _ in range(series_limit + 1)
        ]
        self.regressed = bq.Scatter(
            x=_EMPTY_TIMES, y=[], scales={"x": self.x, "y": self.y}, marker="square", default_size=150,
            fill=False, colors=[TARGET_COLOUR], stroke_width=2.0, display_names=False, names=[],
            tooltip=_tip(), display_legend=False, labels=["regressed (hover for why)"],
        )
        self.regressed_counts = bq.Label(x=_EMPTY_TIMES, y=[], text=[], scales={"x": self.x, "y": self.y},
                                         colors=[TARGET_COLOUR], x_offset=9, y_offset=-7, font_weight="bold",
                                         default_size=12)
        # The run a link names, ringed (see runtool.ui.linked_run); under the points, so they take the clicks.
        self.linked_ring = bq.Scatter(x=_EMPTY_TIMES, y=[], scales={"x": self.x, "y": self.y}, marker="circle",
                                      fill=False, colors=[LINK_COLOUR], default_size=300, stroke_width=2.5)
        self.time_axis = _time_axis(self.x, "run start (UTC)")
        self.time_axis.num_ticks = 8
        self.value_axis = _value_axis(self.y, "")
        # The last series mark holds the grey "others" when there are any: drawn first, under the laser boxes of a
        # colour of their own (drawn over them, at "All" its thousands of points hid the coloured ones).
        self.figure = _figure("", [self.linked_ring, self.series_marks[-1], *self.series_marks[:-1], self.regressed,
                                   self.regressed_counts],
                              [self.time_axis, self.value_axis], height=self.HEIGHT)
        # The right margin leaves room for half of the last date label, which d3 centres on its tick.
        self.figure.fig_margin = {"top": 36, "bottom": 50, "left": 70, "right": 60}
        # Beside the legend on a wide window; on a narrow one (760 px) the legend goes under the chart, which keeps
        # the whole width (beside it, its plot was ~350 px and the regression squares of different days touched).
        self.figure.layout.flex = "1 1 560px"
        self.figure.layout.min_width = "0"
        # The legend is HTML beside the plot, not bqplot's box inside it: that box hid the points under it and
        # could not show a shortened name's full coordinate on hover.
        self.legend = widgets.HTML(layout=widgets.Layout(width="250px", max_height="300px", overflow="auto",
                                                         flex="0 0 auto", margin="36px 0 0 0"))
        self.legend.add_class("rt-kpi-legend")
        self.widget = widgets.HBox([self.figure, self.legend],
                                   layout=widgets.Layout(width="100%", align_items="flex-start", flex_flow="row wrap"))
        self.widget.add_class("rt-kpi-trend")
        self.shown: list[KpiSeries] = []
        self.regressed_keys: tuple[str, ...] = ()
        self._keys: dict[int, tuple[str, ...]] = {}
        self._listeners: list[Callable[[str], None]] = []
        for mark in [*self.series_marks, self.regressed]:
            mark.on_element_click(self._clicked)
            mark.on_hover(self._hovered)

    def on_click(self, callback: Callable[[str], None]) -> None:
        self._listeners.append(callback)

    def _clicked(self, mark: bq.Scatter, event: dict[str, object]) -> None:
        keys = self._keys.get(id(mark), ())
        index = point_index(event)
        if index is not None and 0 <= index < len(keys):
            for callback in self._listeners:
                callback(keys[index])

    def _hovered(self, mark: bq.Scatter, event: dict[str, object]) -> None:
        names = list(mark.names) if mark.names is not None else []
        index = point_index(event)
        if index is not None and 0 <= index < len(names) and isinstance(mark.tooltip, widgets.HTML):
            mark.tooltip.value = f'<div class="rt-chart-tip">{html.escape(str(names[index]))}</div>'

    def show(self, title: str, axis_label: str, series: Sequence[KpiSeries], regressed: KpiSeries,
             whole_numbers: bool = False, linked: KpiSeries | None = None) -> None:
        """Draw ``series`` (at most ``series_limit + 1``; the last of ``series_limit + 1`` under the others), the
        regression rings of ``regressed`` and a blue ring around ``linked`` (the run a link names).

        ``whole_numbers``: the KPI is a count, so the value axis has whole-number ticks only (d3 would put a
        count of 0 or 1 failed bags on ticks 0, 0.1, … 0.9).
        """
        self.shown = list(series)
        self.regressed_keys = regressed.keys
        all_times = np.concatenate([s.times for s in series]) if series else _EMPTY_TIMES
        self.time_axis.tick_format = _day_or_minute_format(all_times)
        span = _padded_span(all_times)
        with self.x.hold_sync():
            self.x.min, self.x.max = (span[0], span[-1]) if len(span) else (None, None)
        self.figure.title = title
        self.value_axis.label = axis_label
        values = np.concatenate([np.asarray(s.values, dtype="float64") for s in series]) if series else np.array([])
        flat = _flat_value(values)
        with self.y.hold_sync():
            if flat is None:
                self.y.min = self.y.max = None
                set_ticks(self.value_axis, whole_number_ticks(values) if whole_numbers else _decimal_ticks(values))
            else:
                # A span of its own around the value, and one tick at it: d3 drew a flat series' points mid-plot
                # between two ticks labelled with the same rounded number (5 at the top, 5 at the bottom).
                pad = max(abs(flat) * 0.1, 1.0)
                self.y.min, self.y.max = flat - pad, flat + pad
                self.value_axis.tick_values = np.array([flat])
                # d3's default for a lone tick is exponential ("3e+1" for 28): the value as a table writes it.
                self.value_axis.tick_format = ",.4~g"
        self._keys = {}
        many = sum(len(one.times) for one in series) >= self.MANY_POINTS
        for index, mark in enumerate(self.series_marks):
            with mark.hold_sync():
                mark.default_size, mark.opacities = (24, [0.7]) if many else (40, [1.0])
                if index < len(series):
                    one = series[index]
                    mark.x, mark.y, mark.names = one.times, one.values, list(one.hover)
                    mark.colors, mark.labels = [one.colour], [one.label]
                    self._keys[id(mark)] = one.keys
                else:
                    mark.x, mark.y, mark.names = _EMPTY_TIMES, np.array([]), []
                    mark.labels = [""]
        time_span = float(span[-1].astype("int64") - span[0].astype("int64")) if len(span) else 1.0
        value_span = float(np.ptp(values[np.isfinite(values)])) if np.isfinite(values).any() else 1.0
        spots = regression_spots(regressed.times, np.asarray(regressed.values, dtype="float64"),
                                 time_span or 1.0, value_span or 1.0)
        firsts = [spot[0] for spot in spots]
        hover = [regressed.hover[spot[0]] if len(spot) == 1 else
                 f"{len(spot)} runs regressed here:\n" + "\n".join(regressed.hover[i] for i in spot) for spot in spots]
        with self.regressed.hold_sync():
            self.regressed.x, self.regressed.y = regressed.times[firsts], np.asarray(regressed.values)[firsts]
            self.regressed.names = hover
        self._keys[id(self.regressed)] = tuple(regressed.keys[i] for i in firsts)
        shared = [spot for spot in spots if len(spot) > 1]
        with self.regressed_counts.hold_sync():
            self.regressed_counts.x = (regressed.times[[spot[0] for spot in shared]] if shared else _EMPTY_TIMES)
            self.regressed_counts.y = np.asarray(regressed.values)[[spot[0] for spot in shared]] if shared else []
            self.regressed_counts.text = [str(len(spot)) for spot in shared]
        with self.linked_ring.hold_sync():
            self.linked_ring.x = _EMPTY_TIMES if linked is None else linked.times
            self.linked_ring.y = np.array([]) if linked is None else linked.values
        self.legend.value = legend_html(series, len(regressed.keys))


def whole_number_ticks(values: np.ndarray) -> np.ndarray | None:
    """Whole-number ticks within the range of ``values`` (the axis is scaled to the data, not from 0): every
    number on a range under 6, else round steps (1, 2 or 5 × 10^k), at most six; None (d3's) without values."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return None
    low, high = math.floor(float(finite.min())), math.ceil(float(finite.max()))
    if high - low < 6:
        return np.arange(low, high + 1)
    magnitude = 10.0 ** math.floor(math.log10((high - low) / 5))
    step = next(m * magnitude for m in (1, 2, 5, 10) if (high - low) / (m * magnitude) <= 5)
    return np.arange(math.ceil(low / step) * step, math.floor(high / step) * step + step / 2, step)


def _decimal_ticks(values: np.ndarray) -> np.ndarray | None:
    """Round ticks within the range of ``values`` (the axis is scaled to the data), about as many as d3 draws on this
    chart; None (d3's) without values."""
    finite = values[np.isfinite(values)]
    return ticks_within(float(finite.min()), float(finite.max()), intervals=6) if len(finite) else None


def _flat_value(values: np.ndarray) -> float | None:
    """The value every point has, when they all have the same one (None: no values, or more than one)."""
    finite = values[np.isfinite(values)]
    if len(finite) and float(np.ptp(finite)) <= 1e-9 * max(1.0, float(np.abs(finite).max())):
        return float(finite[0])
    return None


def legend_html(series: Sequence[KpiSeries], regressed: int) -> str:
    """The legend: one line per series (colour, label, run count; full names on hover), then the red squares."""
    lines = []
    for one in series:
        runs = f"{len(one.keys):,} run{'s' if len(one.keys) != 1 else ''}"
        title = html.escape(one.title or one.label, quote=True)
        lines.append(
            f'<div class="rt-legend-item" title="{title}"><span class="rt-legend-dot" style="background:{one.colour}">'
            f'</span><span class="rt-legend-label">{html.escape(one.label)}</span> '
            f'<span class="rt-legend-count">{runs}</span></div>'
        )
    if regressed:
        lines.append(
            f'<div class="rt-legend-item rt-legend-regressed" title="Hover a red square on the chart for why">'
            f'<span class="rt-legend-ring" style="border-color:{TARGET_COLOUR}"></span>'
            f'<span class="rt-legend-label">regressed</span> <span class="rt-legend-count">{regressed:,} '
            f'run{"s" if regressed != 1 else ""}</span></div>'
        )
    return "".join(lines)


def _tip() -> widgets.HTML:
    return widgets.HTML().add_class("rt-chart-tip-box")


class DistributionChart:
    """Two runs' distributions of one quantity, overlaid as step lines (share of messages per bin)."""

    BINS = 40

    def __init__(self, title: str, axis_label: str) -> None:
        self.x = bq.LinearScale()
        # No padding below 0 (a share under 0 % means nothing); the top is set per pair, with room above it.
        self.y = bq.LinearScale(min=0, max=1, allow_padding=False)
        # No legend inside the plot (it covered the lines): the page says which colour is which run.
        self.lines = bq.Lines(x=[], y=[[], []], scales={"x": self.x, "y": self.y}, colors=list(DISTRIBUTION_COLOURS),
                              interpolation="step-after", labels=["A", "B"], display_legend=False)
        share_axis = _value_axis(self.y, "share of messages", ".0%")
        share_axis.num_ticks = 4
        self.x_axis = bq.Axis(scale=self.x, label=axis_label, grid_lines="none",
                              label_offset=AXIS_TITLE_OFFSET["bottom"])
        self.figure = _figure(title, [self.lines], [self.x_axis, share_axis], height="260px")
        self.widget = self.figure

    def show(self, a: np.ndarray, b: np.ndarray, labels: tuple[str, str]) -> None:
        """The distributions of ``a`` and ``b`` (finite values only) over shared bins."""
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        both = np.concatenate([a, b])
        if len(both) == 0:
            edges = np.array([0.0, 1.0])
        else:
            low, high = np.percentile(both, [0.5, 99.5])
            edges = np.linspace(low, high if high > low else low + 1.0, self.BINS + 1)
        shares = []
        for values in (a, b):
            counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
            shares.append(counts / max(len(values), 1))
        highest = max((float(share.max()) for share in shares if len(share)), default=0.0)
        self.y.max = min(1.0, max(0.05, math.ceil(highest * 1.1 / 0.05) * 0.05))
        set_ticks(self.x_axis, ticks_within(float(edges[0]), float(edges[-2])))
        with self.lines.hold_sync():
            self.lines.x = edges[:-1]
            self.lines.y = np.vstack(shares)
            self.lines.labels = list(labels)
