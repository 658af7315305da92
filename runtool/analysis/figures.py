"""Static matplotlib figures of one run's perception analysis, for the papermill report.

They follow the legacy Plotly tabs (legacy-dashboard.md §4.6): the FPS grid, the detection and track
statistics, latency, and track lifecycles, with the corrected metric semantics (README "Metric
semantics"): the rate line is the windowed rate the KPI tables summarise, the legacy instant FPS appears
only as interval jitter, and over-time panels have seconds since the run start on their x axis, with the
bag boundaries dotted. They are static on purpose: a report must read offline, and an
embedded PNG needs no JavaScript, where an interactive figure needs its library from a CDN.

Figures are built on :class:`matplotlib.figure.Figure` with an Agg canvas, never through ``pyplot``: no
global figure registry, so building figures in a worker thread or a kernel neither leaks them nor makes
Jupyter display them twice. Long series are reduced to the envelope of short buckets before plotting, so a
one-hour run draws as fast as a short one and a one-message dip stays visible.

A stream without data shows "no data" in each of its panels instead of an empty frame.
"""

from __future__ import annotations

import io
from typing import Protocol

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from runtool.analysis.perception import FPS_TARGET, RATE_WINDOW_S, Histogram, Stream, bag_starts_s, stream_kpis

__all__ = [
    "FIGURE_DPI",
    "FPS_CLIP",
    "MAX_LINE_POINTS",
    "MAX_SCATTER_POINTS",
    "STREAM_COLOURS",
    "FigureData",
    "detection_stats_figure",
    "envelope",
    "figure_png",
    "fps_figure",
    "latency_figure",
    "track_lifecycle_figure",
]

FIGURE_DPI = 100
"""Pixels per inch of the PNGs: a 15-inch-wide figure is 1,500 px, sharp on a laptop, ~150 KB."""
FPS_CLIP = 60.0
"""Rates are clipped here and the over-time axes end here, as in the legacy plots."""
MAX_LINE_POINTS = 4000
"""A line series longer than this is drawn as the envelope of ``MAX_LINE_POINTS / 2`` buckets."""
MAX_SCATTER_POINTS = 5000
"""More tracks than this are sampled (evenly, in order of first appearance) for the scatter."""
_MAX_BINS = 200
"""Fixed-width histograms widen their bins beyond this many, so a clock glitch cannot ask for 10⁵ bins."""

STREAM_COLOURS: dict[Stream, str] = {"frames": "#1f77b4", "detections": "#2ca02c", "tracking": "#ff7f0e"}
"""Frames blue, detections green, tracking orange: the legacy colours."""
_STREAM_LABELS: dict[Stream, str] = {"frames": "Frame", "detections": "Detection", "tracking": "Tracking"}
_OBJECT_STREAMS: tuple[Stream, Stream] = ("detections", "tracking")
_TARGET_COLOUR = "#d62728"
_BOUNDARY_COLOUR = "#999999"
_TIME_LABEL = "Seconds since the run start"
_NO_DATA_COLOUR = "#888888"


class FigureData(Protocol):
    """What the figures read; both :class:`~runtool.services.analytics.RunAnalysis` and
    :class:`~runtool.analysis.perception.PerceptionAnalysis` provide it."""

    @property
    def frames(self) -> pd.DataFrame: ...

    @property
    def detections(self) -> pd.DataFrame: ...

    @property
    def tracking(self) -> pd.DataFrame: ...

    @property
    def detection_confidence(self) -> Histogram: ...

    @property
    def track_confidence(self) -> Histogram: ...

    @property
    def tracks(self) -> pd.DataFrame: ...


def figure_png(figure: Figure, dpi: int = FIGURE_DPI) -> bytes:
    """The figure as PNG bytes (what the report embeds as a base64 ``data:`` image)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def envelope(
    values: np.ndarray, max_points: int = MAX_LINE_POINTS, x: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` to plot ``values`` against ``x`` (default: their index) with at most about ``max_points`` points.

    ``x`` must be in increasing order. Short series come back unchanged. Longer ones are cut into
    ``max_points // 2`` equal buckets of consecutive values, each drawn as its minimum then its maximum
    (NaN-aware; an all-NaN bucket stays NaN, a gap in the line), at the bucket's first and middle ``x``,
    so the band the series covers, spikes and dips included, looks the same as with every point.
    """
    y = np.asarray(values, dtype="float64")
    positions = np.arange(len(y), dtype="float64") if x is None else np.asarray(x, dtype="float64")
    if len(y) <= max_points:
        return positions, y
    buckets = max(1, max_points // 2)
    edges = np.linspace(0, len(y), buckets + 1).astype("int64")
    starts, ends = edges[:-1], edges[1:]
    low = np.fmin.reduceat(y, starts)
    high = np.fmax.reduceat(y, starts)
    at = np.column_stack([starts, (starts + ends - 1) // 2]).ravel()
    return positions[at], np.column_stack([low, high]).ravel()


def fps_figure(data: FigureData, target: float = FPS_TARGET) -> Figure:
    """The 3×3 rate grid: columns frames, detections, tracking; rows rate over time, its distribution, jitter.

    Over time: the windowed rate (messages in the last :data:`~runtool.analysis.perception.RATE_WINDOW_S`
    of header time, per second; the series the KPIs summarise) over seconds since the run start, clipped
    at :data:`FPS_CLIP`, the target as a red dashed line and the bag boundaries dotted. Distribution:
    1-FPS bins of the rate with a red dashed line at the KPIs' (time-weighted) median. Jitter: the time
    between consecutive messages of a bag in milliseconds (the legacy instant FPS as what it measures).
    """
    figure, axes = _figure(3, 3, (15, 10.5), "Rates")
    starts = _bag_starts(data)
    for column, stream in enumerate(_STREAM_LABELS):
        series = _stream(data, stream)
        label, colour = _STREAM_LABELS[stream], STREAM_COLOURS[stream]
        over_time, distribution, jitter = axes[0][column], axes[1][column], axes[2][column]
        titles = (f"{label} Rate Over Time", f"{label} Rate Distribution", f"{label} Interval Jitter")
        if series.empty:
            for ax, title in zip((over_time, distribution, jitter), titles, strict=True):
                _no_data(ax, title)
            continue
        time_s, rate = _over_time(series, "rate_fps")
        rate = np.clip(rate, None, FPS_CLIP)
        over_time.set_title(titles[0])
        _boundaries(over_time, starts)
        over_time.plot(*envelope(rate, x=time_s), color=colour, linewidth=1.5)
        over_time.axhline(target, color=_TARGET_COLOUR, linestyle="--", linewidth=1)
        over_time.text(0.99, target, f"target {target:g} FPS", transform=over_time.get_yaxis_transform(),
                       ha="right", va="bottom", color=_TARGET_COLOUR, fontsize=8)
        over_time.set_ylim(0, FPS_CLIP)
        over_time.set_xlim(left=0)
        over_time.set_xlabel(_TIME_LABEL)
        over_time.set_ylabel(f"FPS (last {RATE_WINDOW_S:g} s)")
        finite = rate[np.isfinite(rate)]
        if finite.size:
            distribution.set_title(titles[1])
            distribution.hist(finite, bins=np.arange(-0.5, FPS_CLIP + 1.5, 1.0).tolist(), color=colour)
            median = stream_kpis(series, None, target).median_fps
            if np.isfinite(median):
                _mean_line(distribution, median, f"median {median:.1f}")
            distribution.set_xlabel("FPS")
            distribution.set_ylabel("Messages")
        else:
            _no_data(distribution, titles[1], f"shorter than {RATE_WINDOW_S:g} s")
        intervals = 1000.0 * _column(series, "interval_s")
        intervals = intervals[np.isfinite(intervals) & (intervals > 0)]
        if intervals.size:
            jitter.set_title(titles[2])
            jitter.hist(intervals, bins=_fixed_width_bins(float(intervals.max()), 1.0), color=colour)
            _mean_line(jitter, float(intervals.mean()), f"μ={intervals.mean():.1f} ms")
            jitter.set_xlabel("Milliseconds between messages")
            jitter.set_ylabel("Messages")
        else:
            _no_data(jitter, titles[2])
    return figure


def detection_stats_figure(data: FigureData) -> Figure:
    """The 2×3 statistics grid: detections (green) then tracks (orange).

    Columns: count per message over seconds since the run start, the count distribution (one bin per count), and
    the confidence histogram of the analysis (20 bins over [0, 1] for detections, 24 over [0, 1.2] for
    tracks) drawn as bars at the bin centres.
    """
    figure, axes = _figure(2, 3, (15, 9), "Detection and Track Statistics")
    rows: tuple[tuple[Stream, str, str, str, str, Histogram], ...] = (
        ("detections", "Detection Count per Frame", "Detection Count Distribution", "Detections per Frame",
         "Detection Confidence Distribution", data.detection_confidence),
        ("tracking", "Tracks per Frame", "Track Count Distribution", "Tracks per Frame",
         "Track Confidence Distribution", data.track_confidence),
    )
    for row, (stream, count_title, dist_title, dist_label, conf_title, confidence) in enumerate(rows):
        colour = STREAM_COLOURS[stream]
        time_s, counts = _over_time(_stream(data, stream), "count")
        finite = counts[np.isfinite(counts)]
        over_time, distribution, conf = axes[row]
        if finite.size:
            over_time.set_title(count_title)
            small = len(counts) <= 300
            _boundaries(over_time, _bag_starts(data))
            over_time.plot(*envelope(counts, x=time_s), color=colour, linewidth=1, marker="o" if small else None,
                           markersize=3)
            over_time.set_xlabel(_TIME_LABEL)
            over_time.set_ylabel("Count")
            distribution.set_title(dist_title)
            distribution.hist(finite, bins=np.arange(-0.5, finite.max() + 1.5, 1.0).tolist(), color=colour)
            distribution.set_xlabel(dist_label)
            distribution.set_ylabel("Frequency")
        else:
            _no_data(over_time, count_title)
            _no_data(distribution, dist_title)
        if confidence.total:
            conf.set_title(conf_title)
            widths = np.diff(confidence.edges)
            conf.bar(confidence.centres, confidence.counts, width=widths * 0.9, color=colour)
            conf.set_xlim(float(confidence.edges[0]), float(confidence.edges[-1]))
            conf.set_xlabel("Confidence")
            conf.set_ylabel("Count")
        else:
            _no_data(conf, conf_title)
    return figure


def latency_figure(data: FigureData) -> Figure:
    """The 2×2 latency grid: detections then tracking; latency over seconds since the run start with a dashed
    mean line labelled ``Mean: x.x ms``, and its distribution in 10 ms bins from 0 (negative values not shown)."""
    figure, axes = _figure(2, 2, (15, 8), "Latency Analysis")
    for row, stream in enumerate(_OBJECT_STREAMS):
        label, colour = _STREAM_LABELS[stream], STREAM_COLOURS[stream]
        time_s, latency = _over_time(_stream(data, stream), "latency_ms")
        finite = latency[np.isfinite(latency)]
        over_time, distribution = axes[row]
        if not finite.size:
            _no_data(over_time, f"{label} Latency Over Time")
            _no_data(distribution, f"{label} Latency Distribution")
            continue
        over_time.set_title(f"{label} Latency Over Time")
        _boundaries(over_time, _bag_starts(data))
        over_time.plot(*envelope(latency, x=time_s), color=colour, linewidth=1)
        _mean_line(over_time, float(finite.mean()), f"Mean: {finite.mean():.1f} ms", horizontal=True)
        over_time.set_xlabel(_TIME_LABEL)
        over_time.set_ylabel("Latency (ms)")
        if finite.max() <= 0:
            _no_data(distribution, f"{label} Latency Distribution", "no latency ≥ 0 ms")
            continue
        distribution.set_title(f"{label} Latency Distribution")
        distribution.hist(finite, bins=_fixed_width_bins(float(finite.max()), 10.0), color=colour)
        distribution.set_xlabel("Latency (ms)")
        distribution.set_ylabel("Messages")
    return figure


def track_lifecycle_figure(data: FigureData) -> Figure:
    """The 2×2 track lifecycle grid: span and active-frame distributions (5-frame bins), the density
    distribution (0.05 bins, quality markers at 0.5 and 0.9) and average confidence against span,
    coloured by density on a red-yellow-green scale."""
    figure, axes = _figure(2, 2, (15, 10), "Track Lifecycles")
    (span_ax, active_ax), (density_ax, scatter_ax) = axes
    tracks = data.tracks
    if tracks.empty:
        for ax, title in ((span_ax, "Track Span Distribution"), (active_ax, "Active Frames Distribution"),
                          (density_ax, "Density Distribution"), (scatter_ax, "Confidence vs Track Span")):
            _no_data(ax, title)
        return figure
    span = _column(tracks, "track_span")
    active = _column(tracks, "active_frames")
    density = _column(tracks, "density")
    for ax, values, title, xlabel, colour in (
        (span_ax, span, "Track Span Distribution", "Track Span (frames)", "purple"),
        (active_ax, active, "Active Frames Distribution", "Active Frames", "#d2691e"),
    ):
        ax.set_title(title)
        ax.hist(values, bins=_fixed_width_bins(max(float(np.nanmax(values)), 1.0), 5.0), color=colour)
        _mean_line(ax, float(np.nanmean(values)), f"μ={np.nanmean(values):.1f}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Tracks")
    density_ax.set_title("Density Distribution")
    density_ax.hist(density, bins=np.linspace(0.0, 1.0, 21).tolist(), color="steelblue")
    density_ax.set_xlim(0, 1)
    _mean_line(density_ax, float(np.nanmean(density)), f"μ={np.nanmean(density):.2f}")
    for level, colour in ((0.9, "green"), (0.5, "orange")):
        density_ax.axvline(level, color=colour, linestyle=":", linewidth=1.5)
        density_ax.text(level, 0.02, f" {level:g}", transform=density_ax.get_xaxis_transform(), color=colour,
                        fontsize=8)
    density_ax.set_xlabel("Density (active frames / span)")
    density_ax.set_ylabel("Tracks")

    shown = tracks
    title = "Confidence vs Track Span"
    if len(tracks) > MAX_SCATTER_POINTS:
        shown = tracks.iloc[np.linspace(0, len(tracks) - 1, MAX_SCATTER_POINTS).astype("int64")]
        title += f" ({MAX_SCATTER_POINTS:,} of {len(tracks):,} tracks)"
    scatter_ax.set_title(title)
    points = scatter_ax.scatter(_column(shown, "avg_confidence"), _column(shown, "track_span"),
                                c=_column(shown, "density"), cmap="RdYlGn", vmin=0.0, vmax=1.0, s=20)
    figure.colorbar(points, ax=scatter_ax, label="Density")
    scatter_ax.set_xlabel("Average confidence")
    scatter_ax.set_ylabel("Track Span (frames)")
    return figure


def _figure(rows: int, columns: int, size: tuple[float, float], title: str) -> tuple[Figure, list[list[Axes]]]:
    """A grid with fixed margins: a layout engine would triple the time to draw the PNG (measured)."""
    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False, gridspec_kw={
        "left": 0.06, "right": 0.98, "bottom": 0.07, "top": 0.91, "wspace": 0.25, "hspace": 0.5,
    })
    figure.suptitle(title, fontsize=14)
    return figure, [list(row) for row in axes]


def _stream(data: FigureData, stream: Stream) -> pd.DataFrame:
    return {"frames": data.frames, "detections": data.detections, "tracking": data.tracking}[stream]


def _over_time(table: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``time_s`` and the column ``name``, in time order (out-of-order messages drawn where they belong)."""
    time_s = _column(table, "time_s")
    order = np.argsort(time_s, kind="stable")
    return time_s[order], _column(table, name)[order]


def _bag_starts(data: FigureData) -> np.ndarray:
    return bag_starts_s(data.frames, data.detections, data.tracking).to_numpy(dtype="float64")


def _boundaries(ax: Axes, starts: np.ndarray) -> None:
    """Dotted grey lines where bags start (the first bag's start is the run's: not marked)."""
    for start in starts[starts > 0]:
        ax.axvline(float(start), color=_BOUNDARY_COLOUR, linestyle=":", linewidth=1)


def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column as float64; empty when the table has no rows (an absent stream may lack columns)."""
    if table.empty or name not in table:
        return np.empty(0, dtype="float64")
    return table[name].to_numpy(dtype="float64", na_value=np.nan)


def _no_data(ax: Axes, title: str, text: str = "no data") -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=13, color=_NO_DATA_COLOUR)
    ax.set_xticks([])
    ax.set_yticks([])


def _mean_line(ax: Axes, value: float, label: str, horizontal: bool = False) -> None:
    """A red dashed line at ``value`` with its label at the top (vertical) or right end (horizontal)."""
    if horizontal:
        ax.axhline(value, color=_TARGET_COLOUR, linestyle="--", linewidth=1)
        ax.text(0.99, value, label, transform=ax.get_yaxis_transform(), ha="right", va="bottom",
                color=_TARGET_COLOUR, fontsize=9)
    else:
        ax.axvline(value, color=_TARGET_COLOUR, linestyle="--", linewidth=1)
        low, high = ax.get_xlim()
        near_right = high > low and (value - low) / (high - low) > 0.8  # keep the label inside the axes
        ax.text(value, 0.97, f"{label} " if near_right else f" {label}", transform=ax.get_xaxis_transform(),
                ha="right" if near_right else "left", va="top", color=_TARGET_COLOUR, fontsize=9)


def _fixed_width_bins(upper: float, width: float) -> list[float]:
    """Edges from 0 past ``upper`` in steps of ``width`` (the legacy bins), widened to at most ``_MAX_BINS``."""
    step = max(width, width * float(np.ceil(upper / width / _MAX_BINS)))
    return np.arange(0.0, upper + step, step).tolist()
