"""Perception metrics of one run: FPS, latency, counts, confidences, track lifecycles and run KPIs.

Latency, counts, confidences and track lifecycles follow the legacy per-run analysis
(legacy-dashboard.md §4.3-4.5), computed column-wise on the extraction tables instead of per message, so a
one-hour run takes well under a second. Negative latencies are kept, so no series hides a clock problem.

Rates do not follow the legacy (§4.2), whose figures contradict what they are called (see "Metric
semantics" in the README):

- a stream's *rate* is a throughput: the distinct header stamps in the window of :data:`RATE_WINDOW_S`
  seconds of header time ending at a message, divided by the window. The legacy mean of ``1/Δt`` turned
  a detector's latency jitter into rates far above the frame rate. The per-message ``instant_fps``
  (``1/Δt``) is kept only as an interval-jitter diagnostic;
- rate KPIs (median, 5th percentile, share of time below the target) are time-weighted statistics of
  that same per-message rate, so the chart's line and the KPI cards show one series;
- a detection or tracking stream's *dropped frames* are the camera frames that no message of the stream
  refers to by its image stamp; only the frames stream keeps a gap estimate (on its own stamps);
- consecutive bags whose stamps are more than one window apart are separate recording *segments*: the
  unrecorded time between them is neither a rate dip nor dropped frames, and windows restart there.
  Bags that follow on (a split recording) form one segment, so a bag boundary is invisible to the rate.

Two further departures, both listed as legacy weaknesses (§10 item 15):

- track ids are namespaced per bag: a track is a ``(bag_file, tracking_id)`` pair, because the tracker's
  id counter restarts with the node, and merging equal ids of different bags fused unrelated tracks;
- confidence statistics skip missing scores (an object whose detection had no result carries NaN; the
  legacy extractor assumed a result always existed, so it never met one).

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
    "RATE_WINDOW_S",
    "STAMP_TOLERANCE_S",
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
    "bag_starts_s",
    "fps_table",
    "frame_gap_estimate",
    "histogram",
    "latency_kpis",
    "latency_ms",
    "message_table",
    "run_duration_s",
    "run_kpis",
    "run_start_s",
    "stream_kpis",
    "track_lifecycles",
    "track_summary",
    "unanswered_frames",
]

RATE_WINDOW_S = 1.0
"""Seconds of header time in the sliding window of a stream's rate."""
STAMP_TOLERANCE_S = 1e-6
"""Stamps closer than this are one instant: a float64 of a 2025 epoch time resolves about 0.24 µs, so the
same ``(sec, nsec)`` read twice may differ by that much, while real messages are milliseconds apart."""
FPS_TARGET = 25.0
"""The FPS the perception stack must sustain; the legacy plots draw it as a red dashed line."""

Stream = Literal["frames", "detections", "tracking"]
STREAMS: tuple[Stream, ...] = ("frames", "detections", "tracking")


def no_stream_text(stream: Stream) -> str:
    """What a KPI of a stream without messages says, on the page and in the report: unknown, not 0 or 100 %."""
    return f"no {stream.removesuffix('s')} stream"
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
    """Rate KPIs of one message stream, all from its windowed rate (``rate_fps`` of :func:`fps_table`).

    ``median_fps`` and ``p5_fps`` are time-weighted percentiles of the rate, ``share_below_target`` the
    share of time its rate was below the target (each message's rate standing for the time since the
    previous distinct stamp of its segment). ``dropped_frames`` is, for detections and tracking, the
    camera frames no message of the stream refers to (:func:`unanswered_frames`), for frames the gap
    estimate (:func:`frame_gap_estimate`). Every figure but ``messages`` is NaN/None for a stream
    without messages ("no stream", not 0).
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
    index): the columns of :func:`message_table`, ``time_s`` counted from the earliest header stamp of
    the three streams. ``tracks`` has one row per track (:data:`TRACK_COLUMNS`).
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


def fps_table(messages: pd.DataFrame, window_s: float = RATE_WINDOW_S) -> pd.DataFrame:
    """Per message, in file order: the windowed rate and, as a jitter diagnostic, the legacy instant FPS.

    ``rate_fps`` is the number of distinct header stamps of the message's segment in ``(t − window_s, t]``
    divided by ``window_s``, where ``t`` is the message's stamp; NaN until the segment has lasted a whole
    window, and for a message without a stamp. Stamps are counted in time order, so duplicated and
    out-of-order messages neither inflate nor break the rate. ``rate_weight_s`` is the header time the
    rate stands for in the time-weighted KPIs: the gap since the previous distinct stamp of the segment
    (0 for a segment's first stamp and for a repeated one).

    ``interval_s`` and ``instant_fps`` are the legacy diagnostics (§4.2): the header-stamp difference to
    the previous row, NaN wherever ``bag_file`` changes (the first row included), and ``1 / interval_s``
    where the interval is positive. They show interval jitter; they are not a rate.
    """
    return _fps_table(messages, _bag_runs(messages), window_s)


def _fps_table(messages: pd.DataFrame, runs: _BagRuns, window_s: float) -> pd.DataFrame:
    stamps = _values(messages, "header_timestamp_s")
    intervals = np.diff(stamps, prepend=np.nan)
    intervals[runs.starts] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        instant = np.where(intervals > 0, 1.0 / intervals, np.nan)
    rate, weight = _windowed_rate(stamps, runs, window_s)
    return pd.DataFrame({"interval_s": intervals, "instant_fps": instant, "rate_fps": rate, "rate_weight_s": weight})


def _windowed_rate(stamps: np.ndarray, runs: _BagRuns, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """``rate_fps`` and ``rate_weight_s`` of :func:`fps_table`, for every row."""
    rows = len(stamps)
    rate = np.full(rows, np.nan)
    weight = np.zeros(rows)
    known = np.flatnonzero(~np.isnan(stamps))
    if not known.size:
        return rate, weight
    # Segments: a bag run starts a new one when it begins more than a window after the previous run ends.
    with np.errstate(invalid="ignore"):
        first = np.fmin.reduceat(stamps, runs.starts)
        last = np.fmax.reduceat(stamps, runs.starts)
        starts_segment = np.concatenate([[True], first[1:] - last[:-1] > window_s])
    segment = np.repeat(np.cumsum(starts_segment), np.diff(np.append(runs.starts, rows)))
    order = known[np.lexsort((stamps[known], segment[known]))]
    ordered, ordered_segment = stamps[order], segment[order]
    distinct = np.ones(len(order), dtype=bool)
    distinct[1:] = (np.diff(ordered_segment) != 0) | (np.diff(ordered) > STAMP_TOLERANCE_S)
    times, owner = ordered[distinct], ordered_segment[distinct]
    opens = np.flatnonzero(np.diff(owner, prepend=-1) != 0)
    which = np.repeat(np.arange(len(opens)), np.diff(np.append(opens, len(times))))
    since_open = times - times[opens][which]
    # One increasing axis for all segments, each shifted two windows past the previous one's end, so a
    # single searchsorted finds every window start and no window reaches into another segment.
    spans = since_open[np.append(opens[1:], len(times)) - 1]
    axis = np.concatenate([[0.0], np.cumsum(spans + 2 * window_s)[:-1]])[which] + since_open
    # A stamp a whole window back (within the tolerance) lies on the open end of the window: not counted.
    inside = np.arange(1, len(times) + 1) - np.searchsorted(axis, axis - window_s + STAMP_TOLERANCE_S)
    distinct_rate = np.where(since_open >= window_s - STAMP_TOLERANCE_S, inside / window_s, np.nan)
    gaps = np.diff(times, prepend=np.nan)
    gaps[opens] = 0.0
    group = np.cumsum(distinct) - 1
    rate[order] = distinct_rate[group]
    weight[order] = np.where(distinct, gaps[group], 0.0)
    return rate, weight


def latency_ms(messages: pd.DataFrame) -> pd.Series:
    """``1000 · (header − image)`` per message, in milliseconds; negative values are kept (legacy §4.3)."""
    latency = 1000.0 * (_values(messages, "header_timestamp_s") - _values(messages, "image_timestamp_s"))
    return pd.Series(latency, name="latency_ms")


def message_table(
    messages: pd.DataFrame, stream: Stream, start_s: float | None = None, window_s: float = RATE_WINDOW_S
) -> pd.DataFrame:
    """One stream's per-message series, in file order.

    Columns: ``bag_file, header_timestamp_s``, ``time_s`` (seconds since ``start_s``, by default the
    stream's earliest stamp; the run's start in :func:`analyze`), the columns of :func:`fps_table`, and
    for detections and tracking ``latency_ms`` and ``count``.
    """
    runs = _bag_runs(messages)
    stamps = _values(messages, "header_timestamp_s")
    if start_s is None:
        start_s = run_start_s(messages)
    table = pd.DataFrame({
        "bag_file": pd.Categorical.from_codes(runs.row_codes(), categories=runs.names),
        "header_timestamp_s": stamps,
        "time_s": stamps - start_s,
    })
    table = pd.concat([table, _fps_table(messages, runs, window_s)], axis=1)
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


def stream_kpis(series: pd.DataFrame, dropped_frames: int | None, target: float = FPS_TARGET) -> StreamKpis:
    """The rate KPIs of one stream's series (:func:`fps_table` columns) and its dropped-frame count.

    Percentiles are time-weighted: the ``q``-th is the lowest rate whose cumulative ``rate_weight_s`` reaches
    ``q`` % of the weight of all messages with a rate. Exactly at the target is not below it.
    """
    rate = _values(series, "rate_fps")
    weight = _values(series, "rate_weight_s")
    counted = ~np.isnan(rate) & (weight > 0)
    rate, weight = rate[counted], weight[counted]
    total = float(weight.sum())
    p5, median = _weighted_percentiles(rate, weight, 5, 50)
    return StreamKpis(
        messages=len(series),
        median_fps=median,
        p5_fps=p5,
        share_below_target=float(weight[rate < target].sum()) / total if total > 0 else float("nan"),
        dropped_frames=dropped_frames,
    )


def _weighted_percentiles(values: np.ndarray, weights: np.ndarray, *q: float) -> list[float]:
    if not values.size:
        return [float("nan")] * len(q)
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    # The relative slack keeps a share that is exactly q % in exact arithmetic from missing by one rounding.
    reach = np.asarray(q) / 100 * cumulative[-1] * (1 - 1e-12)
    return [float(v) for v in values[order][np.searchsorted(cumulative, reach)]]


def frame_gap_estimate(series: pd.DataFrame) -> int | None:
    """Frames missing from the gaps of the camera's own stamps (the legacy estimate, on ordered stamps).

    The nominal interval is the median gap between consecutive distinct stamps of a segment
    (``rate_weight_s`` > 0); a gap stands for ``round(gap / nominal) − 1`` missing frames (half rounds up,
    floored at 0). None without any such gap (fewer than two distinct stamps).
    """
    gaps = _values(series, "rate_weight_s")
    gaps = gaps[gaps > 0]
    if not gaps.size:
        return None
    nominal = float(np.median(gaps))
    return int(np.clip(np.floor(gaps / nominal + 0.5) - 1, 0, None).sum())


def unanswered_frames(frames: pd.DataFrame, messages: pd.DataFrame) -> int | None:
    """Camera frames that no message of a detection or tracking stream refers to.

    A frame is its distinct header stamp in ``frames``; it is answered when some message's
    ``image_timestamp_s`` equals it within :data:`STAMP_TOLERANCE_S`, wherever that message was recorded
    (an answer may land in the next bag). None when there are no frames or no messages: a stream that is
    absent has no dropped frames to count, rather than all of them.
    """
    if not len(messages):
        return None
    camera = _distinct(_values(frames, "header_timestamp_s"))
    if not camera.size:
        return None
    answered = _distinct(_values(messages, "image_timestamp_s"))
    fenced = np.concatenate([[-np.inf], answered, [np.inf]])
    after = np.searchsorted(answered, camera) + 1
    nearest = np.minimum(camera - fenced[after - 1], fenced[after] - camera)
    return int((nearest > STAMP_TOLERANCE_S).sum())


def _distinct(stamps: np.ndarray) -> np.ndarray:
    """The sorted stamps without NaN, stamps within :data:`STAMP_TOLERANCE_S` of the previous one left out."""
    ordered = np.sort(stamps[~np.isnan(stamps)])
    keep = np.ones(len(ordered), dtype=bool)
    keep[1:] = np.diff(ordered) > STAMP_TOLERANCE_S
    return ordered[keep]


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


def run_start_s(*message_tables: pd.DataFrame) -> float:
    """The earliest header stamp of the tables (the zero of ``time_s``); NaN when there is none."""
    stamps = np.concatenate([_values(table, "header_timestamp_s") for table in message_tables] or [np.empty(0)])
    return float(np.nanmin(stamps)) if (~np.isnan(stamps)).any() else float("nan")


def bag_starts_s(*series: pd.DataFrame) -> pd.Series:
    """Each bag's first ``time_s`` over the given per-message series, earliest first (index: bag name)."""
    parts = [table[["bag_file", "time_s"]].astype({"bag_file": "str"}) for table in series if len(table)]
    if not parts:
        return pd.Series(dtype="float64", name="time_s")
    return pd.concat(parts, ignore_index=True).groupby("bag_file")["time_s"].min().dropna().sort_values()


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
    dropped: dict[Stream, int | None] = {
        "frames": frame_gap_estimate(series["frames"]),
        "detections": unanswered_frames(tables.frames, tables.detections),
        "tracking": unanswered_frames(tables.frames, tables.tracking),
    }
    return RunKpis(
        streams={stream: stream_kpis(series[stream], dropped[stream], target) for stream in STREAMS},
        detection_latency=latency_kpis(_values(series["detections"], "latency_ms")),
        tracking_latency=latency_kpis(_values(series["tracking"], "latency_ms")),
        mean_detections_per_frame=_mean(_values(tables.detections, "num_detections")),
        mean_tracks_per_frame=_mean(_values(tables.tracking, "num_tracked")),
        avg_detection_confidence=_mean(_values(tables.detection_objects, "score")),
        avg_track_confidence=_mean(_values(tables.tracked_objects, "score")),
        total_tracks=summary.total_tracks,
        avg_track_lifetime=summary.avg_track_lifetime,
        mean_track_density=summary.mean_density,
        # A run shorter than the rate window has no rate, and no tracks per minute either (4 tracks in 50 ms
        # read 4,831 per minute and stretched every chart it was on).
        tracks_per_minute=summary.total_tracks / minutes if duration >= RATE_WINDOW_S else float("nan"),
        run_duration_s=duration,
        failed_bags=int((statuses == "failed").sum()),
        fps_target=target,
    )


def analyze(
    tables: ExtractionTables, target: float = FPS_TARGET, window_s: float = RATE_WINDOW_S
) -> PerceptionAnalysis:
    """The whole per-run analysis of one run's extraction tables."""
    start = run_start_s(tables.frames, tables.detections, tables.tracking)
    series = {stream: message_table(tables.messages(stream), stream, start, window_s) for stream in STREAMS}
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
