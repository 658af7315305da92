"""Perception metrics of one run: FPS, latency, counts, confidences, track lifecycles and run KPIs.

The formulas are the legacy per-run analysis (legacy-dashboard.md §4.2-4.5), computed column-wise on the
extraction tables instead of per message, so a one-hour run takes well under a second. Two deliberate
departures, both listed as legacy weaknesses (§10 item 15):

- track ids are namespaced per bag: a track is a ``(bag_file, tracking_id)`` pair, because the tracker's
  id counter restarts with the node, and merging equal ids of different bags fused unrelated tracks;
- confidence statistics skip missing scores (an object whose detection had no result carries NaN; the
  legacy extractor assumed a result always existed, so it never met one).

Kept on purpose: the rolling FPS window is *not* reset at bag boundaries (only the boundary interval
itself is dropped), and negative latencies are kept, so no series hides a clock problem.

Every function accepts empty tables (with or without their columns) and then returns NaN, empty
tables or zero counts instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "BAG_COLUMNS",
    "DETECTION_CONFIDENCE_BINS",
    "DETECTION_OBJECT_COLUMNS",
    "FPS_TARGET",
    "MESSAGE_COLUMNS",
    "ROLLING_MIN_VALUES",
    "ROLLING_WINDOW",
    "STREAMS",
    "TRACKED_OBJECT_COLUMNS",
    "TRACK_COLUMNS",
    "TRACK_CONFIDENCE_BINS",
    "TRACK_DENSITY_BINS",
    "ExtractionTables",
    "Histogram",
    "HistogramSpec",
    "LatencyKpis",
    "PerceptionAnalysis",
    "RunKpis",
    "Stream",
    "StreamKpis",
    "TrackSummary",
    "analyze",
    "fps_table",
    "histogram",
    "latency_kpis",
    "latency_ms",
    "message_table",
    "run_duration_s",
    "run_kpis",
    "stream_kpis",
    "track_lifecycles",
    "track_summary",
]

ROLLING_WINDOW = 25
"""Rows in the trailing rolling-FPS window (the legacy's hard-coded constant)."""
ROLLING_MIN_VALUES = 5
"""Non-NaN instant values the window needs before it yields a rolling FPS."""
FPS_TARGET = 25.0
"""The FPS the perception stack must sustain; the legacy plots draw it as a red dashed line."""

Stream = Literal["frames", "detections", "tracking"]
STREAMS: tuple[Stream, ...] = ("frames", "detections", "tracking")
"""The three message streams, named after their extraction CSV files."""

MESSAGE_COLUMNS: dict[str, tuple[str, ...]] = {
    "frames": ("bag_file", "seq", "bag_timestamp_s", "header_timestamp_s", "has_data"),
    "detections": ("bag_file", "seq", "bag_timestamp_s", "header_timestamp_s", "image_timestamp_s", "num_detections"),
    "tracking": ("bag_file", "seq", "bag_timestamp_s", "header_timestamp_s", "image_timestamp_s", "num_tracked"),
}
"""The columns of each stream's CSV (the extraction output contract)."""
_COUNT_COLUMN = {"detections": "num_detections", "tracking": "num_tracked"}

_BBOX = ("bbox_cx", "bbox_cy", "bbox_theta", "bbox_w", "bbox_h")
DETECTION_OBJECT_COLUMNS: tuple[str, ...] = (
    "bag_file", "seq", "image_timestamp_s", "tracking_id", "class_id", "score", *_BBOX,
)
TRACKED_OBJECT_COLUMNS: tuple[str, ...] = (
    "bag_file", "seq", "image_timestamp_s", "tracking_id", "detection_seq", "class_id", "score", *_BBOX,
)
BAG_COLUMNS: tuple[str, ...] = ("name", "status", "error")
"""The columns of :attr:`ExtractionTables.bags` the analysis reads (from ``metadata.yaml``)."""
TRACK_COLUMNS: tuple[str, ...] = (
    "bag_file", "track_id", "active_frames", "track_span", "density",
    "avg_confidence", "max_confidence", "min_confidence", "first_seq", "last_seq",
)


@dataclass(frozen=True)
class HistogramSpec:
    """Fixed bins: ``bins`` equal bins over ``[lower, upper]``; values outside are dropped (legacy rule)."""

    bins: int
    lower: float
    upper: float


DETECTION_CONFIDENCE_BINS = HistogramSpec(20, 0.0, 1.0)
TRACK_CONFIDENCE_BINS = HistogramSpec(24, 0.0, 1.2)
"""Bin width 0.05 like the detection histogram; the range goes above 1 on purpose (legacy)."""
TRACK_DENSITY_BINS = HistogramSpec(20, 0.0, 1.0)


@dataclass(frozen=True, eq=False)
class Histogram:
    """Bin edges (``bins + 1``, increasing) and the count per bin; the last bin includes its right edge."""

    edges: np.ndarray
    counts: np.ndarray

    @property
    def centres(self) -> np.ndarray:
        """Where the legacy bar charts put their bars."""
        return (self.edges[:-1] + self.edges[1:]) / 2

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def to_dict(self) -> dict[str, list[float] | list[int]]:
        return {"edges": [float(e) for e in self.edges], "counts": [int(c) for c in self.counts]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Histogram:
        return cls(np.asarray(data["edges"], dtype="float64"), np.asarray(data["counts"], dtype="int64"))


@dataclass(frozen=True)
class ExtractionTables:
    """One run's extraction outputs as tables (columns per the extraction output contract).

    ``bags`` has one row per bag from ``metadata.yaml`` with at least :data:`BAG_COLUMNS`.
    """

    frames: pd.DataFrame = field(default_factory=lambda: _empty(MESSAGE_COLUMNS["frames"]))
    detections: pd.DataFrame = field(default_factory=lambda: _empty(MESSAGE_COLUMNS["detections"]))
    tracking: pd.DataFrame = field(default_factory=lambda: _empty(MESSAGE_COLUMNS["tracking"]))
    detection_objects: pd.DataFrame = field(default_factory=lambda: _empty(DETECTION_OBJECT_COLUMNS))
    tracked_objects: pd.DataFrame = field(default_factory=lambda: _empty(TRACKED_OBJECT_COLUMNS))
    bags: pd.DataFrame = field(default_factory=lambda: _empty(BAG_COLUMNS))

    def messages(self, stream: Stream) -> pd.DataFrame:
        """The message table of one of :data:`STREAMS`."""
        return {"frames": self.frames, "detections": self.detections, "tracking": self.tracking}[stream]


@dataclass(frozen=True)
class StreamKpis:
    """Rate KPIs of one message stream.

    ``share_below_target`` is time-weighted: the time spent in intervals whose instant FPS is below the
    target over the time of all valid intervals. ``dropped_frames`` estimates the messages missing from
    long intervals at the stream's nominal (median) rate.
    """

    messages: int
    median_fps: float
    p5_fps: float
    share_below_target: float
    dropped_frames: int | None


@dataclass(frozen=True)
class LatencyKpis:
    """Header-minus-image latency of one stream, in milliseconds (negative values included)."""

    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass(frozen=True)
class TrackSummary:
    """Run-level track statistics (legacy §4.5) and the mean density."""

    total_tracks: int
    avg_track_lifetime: float
    mean_density: float
    density: Histogram


@dataclass(frozen=True)
class RunKpis:
    """The run's headline numbers; :meth:`to_dict` flattens them into JSON-ready keys."""

    streams: dict[Stream, StreamKpis]
    detection_latency: LatencyKpis
    tracking_latency: LatencyKpis
    mean_detections_per_frame: float
    mean_tracks_per_frame: float
    avg_detection_confidence: float
    avg_track_confidence: float
    total_tracks: int
    avg_track_lifetime: float
    mean_track_density: float
    tracks_per_minute: float
    run_duration_s: float
    failed_bags: int
    fps_target: float

    def to_dict(self) -> dict[str, float | int | None]:
        """Flat ``{name: number}`` with NaN as ``None``, e.g. ``frames_median_fps``, ``detection_latency_p95_ms``."""
        out: dict[str, Any] = {}
        for stream, kpis in self.streams.items():
            out.update({f"{stream}_{name}": value for name, value in vars(kpis).items()})
        for prefix, latency in (("detection_latency", self.detection_latency),
                                ("tracking_latency", self.tracking_latency)):
            out.update({f"{prefix}_{name}": value for name, value in vars(latency).items()})
        out.update({name: value for name, value in vars(self).items()
                    if name not in ("streams", "detection_latency", "tracking_latency")})
        return {name: _json_number(value) for name, value in out.items()}


@dataclass(frozen=True)
class PerceptionAnalysis:
    """Everything the per-run page and the report plot.

    ``frames``, ``detections`` and ``tracking`` hold one row per message in file order (index = message
    index): ``bag_file, header_timestamp_s, interval_s, instant_fps, rolling_fps``, plus ``latency_ms``
    and ``count`` for detections and tracking. ``tracks`` has one row per track (:data:`TRACK_COLUMNS`).
    """

    frames: pd.DataFrame
    detections: pd.DataFrame
    tracking: pd.DataFrame
    detection_confidence: Histogram
    track_confidence: Histogram
    tracks: pd.DataFrame
    track_summary: TrackSummary
    kpis: RunKpis


def _empty(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="float64") for name in columns})


def _values(table: pd.DataFrame, column: str) -> np.ndarray:
    """A numeric column as float64 (nullable NA → NaN); empty when the table is, even without the column."""
    if table.empty:
        return np.empty(0, dtype="float64")
    return table[column].to_numpy(dtype="float64", na_value=np.nan)


def _json_number(value: Any) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | np.integer):
        return int(value)
    number = float(value)
    return None if np.isnan(number) else number


def _percentiles(values: np.ndarray, *q: float) -> list[float]:
    """The q-th percentiles (linear interpolation) of the non-NaN values, in one partition; NaN when none."""
    finite = values[~np.isnan(values)]
    if not finite.size:
        return [float("nan")] * len(q)
    return [float(v) for v in np.percentile(finite, q)]


def _mean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


@dataclass(frozen=True)
class _BagRuns:
    """The contiguous runs of equal ``bag_file`` in a table, in file order.

    Rows come bag by bag, so comparing neighbours finds every boundary in one pass, and only the few
    run starts need hashing to name their bags: far cheaper than factorising every row's string.
    """

    starts: np.ndarray
    codes: np.ndarray
    names: pd.Index
    rows: int

    def row_codes(self) -> np.ndarray:
        """Each row's bag as an index into ``names``."""
        return np.repeat(self.codes, np.diff(np.append(self.starts, self.rows)))


def _bag_runs(table: pd.DataFrame) -> _BagRuns:
    if table.empty:
        return _BagRuns(np.empty(0, dtype="int64"), np.empty(0, dtype="int64"), pd.Index([], dtype="str"), 0)
    bags = table["bag_file"]
    changed = (bags != bags.shift()).to_numpy(dtype=bool, na_value=True, copy=True)
    changed[0] = True
    starts = np.flatnonzero(changed)
    codes, names = pd.factorize(bags.iloc[starts])
    return _BagRuns(starts, codes, pd.Index(names), len(table))


def fps_table(messages: pd.DataFrame) -> pd.DataFrame:
    """Interval, instant and rolling FPS per message, in file order (legacy §4.2).

    ``interval_s`` is the header-stamp difference to the previous row, NaN on every row whose
    ``bag_file`` differs from the previous row's (the first row included). ``instant_fps`` is
    ``1 / interval_s`` where the interval is positive, else NaN (duplicates, out-of-order stamps).
    ``rolling_fps`` is the mean of the non-NaN instant values among the trailing 25 rows, NaN while
    fewer than 5 exist; like the legacy, the window runs across bag boundaries.
    """
    return _fps_table(messages, _bag_runs(messages))


def _fps_table(messages: pd.DataFrame, runs: _BagRuns) -> pd.DataFrame:
    intervals = np.diff(_values(messages, "header_timestamp_s"), prepend=np.nan)
    intervals[runs.starts] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        instant = np.where(intervals > 0, 1.0 / intervals, np.nan)
    rolling = pd.Series(instant).rolling(ROLLING_WINDOW, min_periods=ROLLING_MIN_VALUES).mean().to_numpy()
    return pd.DataFrame({"interval_s": intervals, "instant_fps": instant, "rolling_fps": rolling})


def latency_ms(messages: pd.DataFrame) -> pd.Series:
    """``1000 · (header − image)`` per message, in milliseconds; negative values are kept (legacy §4.3)."""
    latency = 1000.0 * (_values(messages, "header_timestamp_s") - _values(messages, "image_timestamp_s"))
    return pd.Series(latency, name="latency_ms")


def message_table(messages: pd.DataFrame, stream: Stream) -> pd.DataFrame:
    """One stream's per-message series: bag, header stamp, FPS, and for detections/tracking latency and count."""
    runs = _bag_runs(messages)
    table = pd.DataFrame({
        "bag_file": pd.Categorical.from_codes(runs.row_codes(), categories=runs.names),
        "header_timestamp_s": _values(messages, "header_timestamp_s"),
    })
    table = pd.concat([table, _fps_table(messages, runs)], axis=1)
    if stream in _COUNT_COLUMN:
        table["latency_ms"] = latency_ms(messages).to_numpy()
        table["count"] = _values(messages, _COUNT_COLUMN[stream])
    return table


def histogram(values: pd.Series | np.ndarray, spec: HistogramSpec) -> Histogram:
    """Counts of the values in ``spec``'s fixed bins; NaN and values outside ``[lower, upper]`` are dropped."""
    data = np.asarray(values, dtype="float64")
    counts, edges = np.histogram(data[~np.isnan(data)], bins=spec.bins, range=(spec.lower, spec.upper))
    return Histogram(edges, counts.astype("int64"))


def track_lifecycles(tracked_objects: pd.DataFrame) -> pd.DataFrame:
    """One row per track, a track being a ``(bag_file, tracking_id)`` pair (legacy §4.5, ids per bag).

    The appearances of a track are the rows it has in the tracked-object table, in file order, and their
    ``seq`` is that of the tracking message. ``active_frames`` counts appearances; ``first_seq`` and
    ``last_seq`` are the seq of the first and last appearance; ``track_span = last − first + 1`` and
    ``density = active / span`` (0 when the span is ≤ 0, which happens when the seq counter restarted
    inside the track). Confidences are over the appearance scores, NaN scores skipped. Tracks are listed
    in order of first appearance.
    """
    if tracked_objects.empty:
        return _empty(TRACK_COLUMNS).astype({"bag_file": "str", "track_id": "int64", "active_frames": "int64",
                                             "track_span": "int64", "first_seq": "int64", "last_seq": "int64"})
    runs = _bag_runs(tracked_objects)
    id_codes, ids = pd.factorize(tracked_objects["tracking_id"].to_numpy(dtype="int64"))
    # One integer per (bag, id) pair: grouping on it is several times faster than on the two columns.
    key = runs.row_codes().astype("int64") * len(ids) + id_codes
    tracks = (
        pd.DataFrame({"key": key, "seq": tracked_objects["seq"].to_numpy(dtype="int64"),
                      "score": _values(tracked_objects, "score")})
        .groupby("key", sort=False)
        .agg(
            active_frames=("seq", "size"),
            first_seq=("seq", "first"),
            last_seq=("seq", "last"),
            avg_confidence=("score", "mean"),
            max_confidence=("score", "max"),
            min_confidence=("score", "min"),
        )
        .reset_index()
    )
    keys = tracks.pop("key").to_numpy()
    tracks["bag_file"] = runs.names[keys // len(ids)].astype("str")
    tracks["track_id"] = ids[keys % len(ids)]
    span = tracks["last_seq"] - tracks["first_seq"] + 1
    tracks["track_span"] = span
    tracks["density"] = np.where(span > 0, tracks["active_frames"] / span.where(span > 0, 1), 0.0)
    return tracks[list(TRACK_COLUMNS)]


def track_summary(tracks: pd.DataFrame) -> TrackSummary:
    """Total tracks, mean span (the legacy "average track lifetime"), mean density and the density histogram."""
    density = _values(tracks, "density")
    return TrackSummary(
        total_tracks=len(tracks),
        avg_track_lifetime=_mean(_values(tracks, "track_span")),
        mean_density=_mean(density),
        density=histogram(density, TRACK_DENSITY_BINS),
    )


def stream_kpis(fps: pd.DataFrame, target: float = FPS_TARGET) -> StreamKpis:
    """Median and 5th-percentile instant FPS, time share below ``target`` and the dropped-frame estimate.

    Only intervals with a valid instant FPS count (bag boundaries, zero and negative intervals do not).
    Each interval stands for ``round(interval · median_fps) − 1`` missing messages (rounding half up),
    floored at 0 so that bursts of short intervals cannot cancel out real gaps.
    """
    instant = _values(fps, "instant_fps")
    valid = ~np.isnan(instant)
    intervals = _values(fps, "interval_s")[valid]
    p5, median = _percentiles(instant, 5, 50)
    total = float(intervals.sum())
    below = float(intervals[instant[valid] < target].sum())
    dropped = None
    if not np.isnan(median):
        dropped = int(np.clip(np.floor(intervals * median + 0.5) - 1, 0, None).sum())
    return StreamKpis(
        messages=len(fps),
        median_fps=median,
        p5_fps=p5,
        share_below_target=below / total if total > 0 else float("nan"),
        dropped_frames=dropped,
    )


def latency_kpis(latency: pd.Series | np.ndarray) -> LatencyKpis:
    values = np.asarray(latency, dtype="float64")
    return LatencyKpis(_mean(values), *_percentiles(values, 50, 95, 99))


def run_duration_s(*message_tables: pd.DataFrame) -> float:
    """Recorded time: per bag, the span of bag receive times over all streams, summed over bags.

    Gaps between bags are not recording time, so they are left out; NaN when there are no messages.
    """
    segments = []
    for table in message_tables:
        runs = _bag_runs(table)
        if runs.rows:
            stamps = _values(table, "bag_timestamp_s")
            segments.append(pd.DataFrame({
                "bag": runs.names[runs.codes],
                "first": np.fmin.reduceat(stamps, runs.starts),
                "last": np.fmax.reduceat(stamps, runs.starts),
            }))
    if not segments:
        return float("nan")
    spans = pd.concat(segments, ignore_index=True).groupby("bag").agg(first=("first", "min"), last=("last", "max"))
    return float((spans["last"] - spans["first"]).sum())


def run_kpis(
    tables: ExtractionTables,
    series: dict[Stream, pd.DataFrame],
    summary: TrackSummary,
    target: float = FPS_TARGET,
) -> RunKpis:
    """The run KPIs from the extraction tables, the per-message series and the track summary."""
    duration = run_duration_s(tables.frames, tables.detections, tables.tracking)
    minutes = duration / 60.0
    statuses = tables.bags["status"].astype("str") if len(tables.bags) else pd.Series(dtype="str")
    return RunKpis(
        streams={stream: stream_kpis(series[stream], target) for stream in STREAMS},
        detection_latency=latency_kpis(_values(series["detections"], "latency_ms")),
        tracking_latency=latency_kpis(_values(series["tracking"], "latency_ms")),
        mean_detections_per_frame=_mean(_values(tables.detections, "num_detections")),
        mean_tracks_per_frame=_mean(_values(tables.tracking, "num_tracked")),
        avg_detection_confidence=_mean(_values(tables.detection_objects, "score")),
        avg_track_confidence=_mean(_values(tables.tracked_objects, "score")),
        total_tracks=summary.total_tracks,
        avg_track_lifetime=summary.avg_track_lifetime,
        mean_track_density=summary.mean_density,
        tracks_per_minute=summary.total_tracks / minutes if minutes > 0 else float("nan"),
        run_duration_s=duration,
        failed_bags=int((statuses == "failed").sum()),
        fps_target=target,
    )


def analyze(tables: ExtractionTables, target: float = FPS_TARGET) -> PerceptionAnalysis:
    """The whole per-run analysis of one run's extraction tables."""
    series = {stream: message_table(tables.messages(stream), stream) for stream in STREAMS}
    tracks = track_lifecycles(tables.tracked_objects)
    summary = track_summary(tracks)
    return PerceptionAnalysis(
        frames=series["frames"],
        detections=series["detections"],
        tracking=series["tracking"],
        detection_confidence=histogram(_values(tables.detection_objects, "score"), DETECTION_CONFIDENCE_BINS),
        track_confidence=histogram(_values(tables.tracked_objects, "score"), TRACK_CONFIDENCE_BINS),
        tracks=tracks,
        track_summary=summary,
        kpis=run_kpis(tables, series, summary, target),
    )
