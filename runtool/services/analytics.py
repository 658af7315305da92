"""Per-run analytics: load a run's extraction outputs, compute the perception metrics, cache the result.

The cache lives in ``<processed>/<coord>/analysis/``: ``kpis.json`` (its presence marks the run as
analysed, see :data:`~runtool.services.local_state.ANALYSIS_MARKER`) holds the KPIs, the histograms, the
failed bags and the fingerprint of the extraction outputs it was computed from; Parquet files hold the
per-message series and the track table. Nothing is pickled (legacy weakness §10 item 16): the cache is
plain data, safe to read from any disk and across library versions.

The fingerprint covers the names, sizes and ``mtime_ns`` of every extraction output plus the SHA-256 of
``metadata.yaml`` (which the extractor stamps with its run time). Hashing every output was measured at
about 0.9 GB/s here, i.e. more than a second per page load for a 1 GB extraction, while a re-extraction
always rewrites the files (new mtimes and metadata), so the stat-based fingerprint catches it for free.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from runtool.analysis.perception import (
    BAG_COLUMNS,
    DETECTION_OBJECT_COLUMNS,
    STREAMS,
    TRACKED_OBJECT_COLUMNS,
    ExtractionTables,
    Histogram,
    Stream,
    analyze,
)
from runtool.config import RuntoolConfig
from runtool.errors import ReadOnlyError, RuntoolError
from runtool.files import exclusive_lock
from runtool.models import RunCoordinate
from runtool.services.local_state import ANALYSIS_MARKER, LocalStateService
from runtool.storage import processed_dir, run_lock_path

__all__ = [
    "ANALYSIS_DIR",
    "CACHE_VERSION",
    "EXTRACTION_OUTPUTS",
    "AnalyticsError",
    "AnalyticsService",
    "FailedBag",
    "RunAnalysis",
    "checked_kpis",
    "extraction_fingerprint",
    "flatten_legacy_messages",
]

log = logging.getLogger(__name__)

ANALYSIS_DIR, KPIS_FILE = ANALYSIS_MARKER.split("/")
CACHE_VERSION = 3
"""Bump when a formula or the cache layout changes, so older caches are recomputed.

2: rates are windowed throughputs and dropped detection/tracking frames are unanswered camera frames
(README "Metric semantics"); the series gained ``time_s``, ``rate_fps`` and ``rate_weight_s``."""
FINGERPRINT_BASIS = "names, sizes and mtime_ns of the extraction outputs; sha256 of metadata.yaml"

METADATA_FILE = "metadata.yaml"
_CSV_FILES: dict[Stream, str] = {"frames": "frames.csv", "detections": "detections.csv", "tracking": "tracking.csv"}
_OBJECT_FILES = {"detections": "detection_objects.parquet", "tracking": "tracked_objects.parquet"}
_LEGACY_FILES = {"detections": ("detections_full.json", "detections"),
                 "tracking": ("tracking_full.json", "tracked_objects")}
EXTRACTION_OUTPUTS: tuple[str, ...] = (
    *_CSV_FILES.values(), METADATA_FILE, *_OBJECT_FILES.values(), *(name for name, _ in _LEGACY_FILES.values()),
)
"""Every file the extractor (current or legacy) may write; all of them feed the fingerprint."""

# Only the columns the metrics read are loaded: less parsing, and the rest of the contract may grow.
_CSV_COLUMNS: dict[Stream, dict[str, str]] = {
    "frames": {"bag_file": "str", "bag_timestamp_s": "float64", "header_timestamp_s": "float64"},
    "detections": {"bag_file": "str", "bag_timestamp_s": "float64", "header_timestamp_s": "float64",
                   "image_timestamp_s": "float64", "num_detections": "int64"},
    "tracking": {"bag_file": "str", "bag_timestamp_s": "float64", "header_timestamp_s": "float64",
                 "image_timestamp_s": "float64", "num_tracked": "int64"},
}
_OBJECT_COLUMNS = {"detections": ["score"], "tracking": ["bag_file", "seq", "tracking_id", "score"]}
_SERIES_FILES: dict[Stream, str] = {stream: f"{stream}_series.parquet" for stream in STREAMS}
_TRACKS_FILE = "tracks.parquet"
_HISTOGRAMS = ("detection_confidence", "track_confidence", "track_density")


class AnalyticsError(RuntoolError):
    """A run cannot be analysed: it is not extracted, or its extraction outputs are unreadable."""


@dataclass(frozen=True)
class FailedBag:
    """A bag the extractor reported as failed in ``metadata.yaml``."""

    name: str
    error: str | None


@dataclass(frozen=True, eq=False)
class RunAnalysis:
    """One run's analysis, as the per-run page and the report use it.

    ``frames``, ``detections`` and ``tracking`` are the per-message series (index = message index, in
    file order): ``bag_file, header_timestamp_s, time_s, interval_s, instant_fps, rate_fps, rate_weight_s``
    and, for detections and tracking, ``latency_ms`` and ``count`` (see
    :func:`~runtool.analysis.perception.message_table`). ``tracks`` has one row per ``(bag_file, track_id)`` track.
    ``kpis`` is flat and JSON-ready (NaN as ``None``). When ``has_tracking`` is false the tracking series,
    histogram and tracks are empty and the page shows "no data" for them.
    """

    coordinate: RunCoordinate
    fingerprint: str
    analysed_at: datetime
    from_cache: bool
    frames: pd.DataFrame
    detections: pd.DataFrame
    tracking: pd.DataFrame
    detection_confidence: Histogram
    track_confidence: Histogram
    track_density: Histogram
    tracks: pd.DataFrame
    kpis: dict[str, float | int | None]
    failed_bags: tuple[FailedBag, ...]
    has_detections: bool
    has_tracking: bool

    def stream(self, stream: Stream) -> pd.DataFrame:
        """The per-message series of one of :data:`~runtool.analysis.perception.STREAMS`."""
        return {"frames": self.frames, "detections": self.detections, "tracking": self.tracking}[stream]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready summary (what ``runtool analyze --json`` prints): no per-message series."""
        return {
            "coordinate": str(self.coordinate),
            "analysed_at": self.analysed_at.isoformat(),
            "fingerprint": self.fingerprint,
            "from_cache": self.from_cache,
            "has_detections": self.has_detections,
            "has_tracking": self.has_tracking,
            "kpis": dict(self.kpis),
            "failed_bags": [{"name": bag.name, "error": bag.error} for bag in self.failed_bags],
        }


class AnalyticsService:
    """Analyses extracted runs and keeps each result next to the extraction it came from."""

    def __init__(
        self, config: RuntoolConfig, local: LocalStateService | None = None, read_only: bool = False
    ) -> None:
        self.config = config
        self.local = local
        self.read_only = read_only
        self._locks: dict[RunCoordinate, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def analyze_run(self, coord: RunCoordinate, force: bool = False) -> RunAnalysis:
        """The run's analysis: from the cache when it matches the current extraction, else computed and cached.

        Raises:
            AnalyticsError: the run is not extracted, or an extraction output is unreadable.
            ReadOnlyError: the analysis would have to be (re)computed, and the service is read-only.
        """
        folder = self._extraction_folder(coord)
        with self._lock(coord):
            fingerprint = extraction_fingerprint(folder)
            if not force:
                cached = self._read_cache(coord, folder, fingerprint)
                if cached is not None:
                    return cached
            if self.read_only:
                raise ReadOnlyError(
                    f"Re-analysing run {coord} would rewrite its analysis, which read-only mode does not allow."
                    if force else f"Run {coord} has no up-to-date analysis, and read-only mode cannot write one."
                )
            # Another process (a second page's kernel, the command line) may be computing it: wait for it, then
            # take its result unless a new one was asked for.
            with exclusive_lock(self.lock_path(coord)):
                fingerprint = extraction_fingerprint(folder)
                cached = None if force else self._read_cache(coord, folder, fingerprint)
                if cached is not None:
                    return cached
                # The fingerprint is taken before the outputs are read: if they change meanwhile, the cache is
                # stamped with the older fingerprint and recomputed on the next load, never wrongly reused.
                tables = self.load_tables(coord)
                analysis = self._compute(coord, tables, fingerprint)
                self._write_cache(folder, analysis)
        if self.local is not None:
            self.local.refresh_run(coord)
        return analysis

    def load_cached(self, coord: RunCoordinate) -> RunAnalysis | None:
        """The cached analysis if it matches the current extraction outputs, else ``None`` (never computes)."""
        folder = processed_dir(self.config.processed_root, coord)
        if not _is_extracted(folder):
            return None
        return self._read_cache(coord, folder, extraction_fingerprint(folder))

    def cache_files_present(self, coord: RunCoordinate) -> bool:
        """Whether every file of the run's analysis cache is there (a stat each; their contents are not read).

        The KPI index vouches for ``kpis.json`` only; a cache missing its series would be recomputed when the run
        is opened, which a read-only server cannot do, so bulk analysis plans such a run again.
        """
        cache = processed_dir(self.config.processed_root, coord) / ANALYSIS_DIR
        names = (KPIS_FILE, _TRACKS_FILE, *_SERIES_FILES.values())
        return all((cache / name).is_file() for name in names)

    def load_tables(self, coord: RunCoordinate) -> ExtractionTables:
        """The run's extraction outputs as tables (the legacy nested JSON is flattened when no Parquet exists).

        Raises:
            AnalyticsError: the run is not extracted, or an output is unreadable or lacks a column.
        """
        folder = self._extraction_folder(coord)
        bags = _read_bags(folder / METADATA_FILE)
        messages = {stream: _read_csv(folder / name, _CSV_COLUMNS[stream]) for stream, name in _CSV_FILES.items()}
        return ExtractionTables(
            frames=messages["frames"],
            detections=messages["detections"],
            tracking=messages["tracking"],
            detection_objects=_read_objects(folder, "detections"),
            tracked_objects=_read_objects(folder, "tracking"),
            bags=bags,
        )

    def _extraction_folder(self, coord: RunCoordinate) -> Path:
        folder = processed_dir(self.config.processed_root, coord)
        if not _is_extracted(folder):
            raise AnalyticsError(f"Run {coord} is not extracted yet; extract it first.")
        return folder

    def lock_path(self, coord: RunCoordinate) -> Path:
        """The file locked while the run's analysis is computed: ``<data_dir>/.runtool/locks/<coord>.analysis.lock``
        (taken only to write one: reading a cached analysis, read-only mode too, writes nothing)."""
        return run_lock_path(self.config.data_dir, coord, "analysis")

    def _lock(self, coord: RunCoordinate) -> threading.Lock:
        """One lock per run, so a page and a bulk job never analyse the same run at once."""
        with self._locks_guard:
            return self._locks.setdefault(coord, threading.Lock())

    def _compute(self, coord: RunCoordinate, tables: ExtractionTables, fingerprint: str) -> RunAnalysis:
        result = analyze(tables)
        failed = tables.bags[tables.bags["status"] == "failed"]
        return RunAnalysis(
            coordinate=coord,
            fingerprint=fingerprint,
            analysed_at=datetime.now(UTC),
            from_cache=False,
            frames=result.frames,
            detections=result.detections,
            tracking=result.tracking,
            detection_confidence=result.detection_confidence,
            track_confidence=result.track_confidence,
            track_density=result.track_summary.density,
            tracks=result.tracks,
            kpis=result.kpis.to_dict(),
            failed_bags=tuple(
                FailedBag(str(name), None if pd.isna(error) else str(error))
                for name, error in zip(failed["name"], failed["error"], strict=True)
            ),
            has_detections=len(tables.detections) > 0,
            has_tracking=len(tables.tracking) > 0,
        )

    def _write_cache(self, folder: Path, analysis: RunAnalysis) -> None:
        """Write the cache into a temporary folder beside the target, then swap it in by renames."""
        document = {
            "version": CACHE_VERSION,
            "coordinate": str(analysis.coordinate),
            "fingerprint": analysis.fingerprint,
            "fingerprint_basis": FINGERPRINT_BASIS,
            "analysed_at": analysis.analysed_at.isoformat(),
            "has_detections": analysis.has_detections,
            "has_tracking": analysis.has_tracking,
            "kpis": analysis.kpis,
            "histograms": {name: getattr(analysis, name).to_dict() for name in _HISTOGRAMS},
            "failed_bags": [{"name": bag.name, "error": bag.error} for bag in analysis.failed_bags],
        }
        target = folder / ANALYSIS_DIR
        try:
            with tempfile.TemporaryDirectory(prefix=".analysis-", dir=folder) as tmp:
                staged = Path(tmp) / ANALYSIS_DIR
                staged.mkdir()
                for stream in STREAMS:
                    _write_parquet(analysis.stream(stream), staged / _SERIES_FILES[stream])
                _write_parquet(analysis.tracks, staged / _TRACKS_FILE)
                # kpis.json last: it is the marker, so the staged folder is complete once it exists.
                (staged / KPIS_FILE).write_text(json.dumps(document, indent=2, allow_nan=False), encoding="utf-8")
                _swap_in(staged, target, Path(tmp) / "previous")
        except (OSError, pa.ArrowException) as exc:
            raise AnalyticsError(f"Could not write the analysis cache of run {analysis.coordinate}: {exc}") from exc

    def _read_cache(self, coord: RunCoordinate, folder: Path, fingerprint: str) -> RunAnalysis | None:
        """The cache if it exists, has this version and fingerprint, and reads back; else None (recompute)."""
        cache = folder / ANALYSIS_DIR
        try:
            document = json.loads((cache / KPIS_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("The analysis cache of run %s is unreadable (%s); it will be recomputed.", coord, exc)
            return None
        if not isinstance(document, dict) or document.get("version") != CACHE_VERSION:
            log.info("The analysis cache of run %s has an old format; it will be recomputed.", coord)
            return None
        if document.get("fingerprint") != fingerprint or document.get("coordinate") != str(coord):
            log.info("Run %s was re-extracted since its analysis; it will be recomputed.", coord)
            return None
        try:
            kpis = checked_kpis(document.get("kpis"))
        except ValueError as exc:
            log.warning("The analysis cache of run %s is unreadable (%s); it will be recomputed.", coord, exc)
            return None
        try:
            series = {stream: pd.read_parquet(cache / _SERIES_FILES[stream]) for stream in STREAMS}
            tracks = pd.read_parquet(cache / _TRACKS_FILE)
            histograms = {name: Histogram.from_dict(document["histograms"][name]) for name in _HISTOGRAMS}
            return RunAnalysis(
                coordinate=coord,
                fingerprint=fingerprint,
                analysed_at=datetime.fromisoformat(document["analysed_at"]),
                from_cache=True,
                frames=series["frames"],
                detections=series["detections"],
                tracking=series["tracking"],
                detection_confidence=histograms["detection_confidence"],
                track_confidence=histograms["track_confidence"],
                track_density=histograms["track_density"],
                tracks=tracks,
                kpis=kpis,
                failed_bags=tuple(FailedBag(b["name"], b["error"]) for b in document["failed_bags"]),
                has_detections=bool(document["has_detections"]),
                has_tracking=bool(document["has_tracking"]),
            )
        except (OSError, KeyError, TypeError, ValueError, pa.ArrowException) as exc:
            log.warning("The analysis cache of run %s is damaged (%s); it will be recomputed.", coord, exc)
            return None


_INT64 = 2**63
"""A count KPI must fit an int64 column (the KPI table, Parquet)."""


def checked_kpis(kpis: object) -> dict[str, float | int | None]:
    """The ``kpis`` object of an analysis cache, if every value is a finite number or null (a bool is not a number),
    within ±1e12, and every count a whole number, 0 or more.

    The analysis writes only such values (``allow_nan=False``); anything else was written by hand or damaged,
    and the cache counts as unreadable, exactly like one that is not JSON.

    Raises:
        ValueError: ``kpis`` is not an object, or one of its values is not a finite number or null (named).
    """
    if not isinstance(kpis, dict):
        raise ValueError(f"its KPIs are {_shown(kpis)}, not an object")
    for name, value in kpis.items():
        if value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            kind = "a number"
        elif isinstance(value, float) and not math.isfinite(value):
            kind = "a finite number"
        elif isinstance(value, int) and not -_INT64 <= value < _INT64:
            kind = "a number in range"
        elif abs(value) > _MAX_MAGNITUDE:
            kind = f"a number within ±{_MAX_MAGNITUDE:.0e}"
        elif str(name).endswith(_COUNTS) and (value < 0 or value != int(value)):
            kind = "a count (a whole number, 0 or more)"
        else:
            continue
        raise ValueError(f"KPI {_shown(name)} is {_shown(value)}, not {kind} or null")
    return dict(kpis)


_MAX_MAGNITUDE = 1e12
"""No KPI the analysis writes (a rate, milliseconds, a share, a count of messages) comes near this."""
_COUNTS = ("_messages", "_dropped_frames", "failed_bags", "total_tracks")
"""The KPIs that count things: never negative, never fractional."""


def _shown(value: object) -> str:
    """A cache value in a message: its JSON spelling, cut short (a hand-edited cache may hold anything)."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else f"{text[:39]}…"


def extraction_fingerprint(folder: Path) -> str:
    """SHA-256 over the name, size and mtime_ns of each extraction output present, and metadata.yaml's bytes."""
    digest = hashlib.sha256(f"runtool-extraction/{FINGERPRINT_BASIS}".encode())
    for name in sorted(EXTRACTION_OUTPUTS):
        path = folder / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        digest.update(f"\0{name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
        if name == METADATA_FILE:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _is_extracted(folder: Path) -> bool:
    """metadata.yaml and at least one message CSV: the legacy extractor skipped empty CSVs, so any may be absent."""
    return (folder / METADATA_FILE).is_file() and any((folder / name).is_file() for name in _CSV_FILES.values())


def _swap_in(staged: Path, target: Path, aside: Path) -> None:
    """Replace ``target`` by ``staged``; the previous folder goes to ``aside`` (inside the temp folder)."""
    had_previous = target.exists()
    if had_previous:
        target.rename(aside)
    try:
        staged.rename(target)
    except OSError:
        if had_previous:
            aside.rename(target)
        raise


def _write_parquet(table: pd.DataFrame, path: Path) -> None:
    """zstd, and dictionary encoding only for the bag names: trying it on float columns triples the write time."""
    table.to_parquet(path, index=False, compression="zstd", use_dictionary=["bag_file"])


def _unreadable(path: Path, exc: BaseException) -> AnalyticsError:
    return AnalyticsError(f"The extraction output {path} is unreadable ({exc}); re-extract the run.")


def _read_csv(path: Path, columns: dict[str, str]) -> pd.DataFrame:
    """One message CSV, only the columns the metrics use; an absent file is an empty table (legacy runs)."""
    if not path.is_file():
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})
    try:
        return pd.read_csv(path, usecols=list(columns), dtype=columns, engine="pyarrow")
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise _unreadable(path, exc) from exc


def _read_objects(folder: Path, stream: str) -> pd.DataFrame:
    """The flat per-object table, or the legacy nested JSON flattened into the same columns, or empty."""
    columns = _OBJECT_COLUMNS[stream]
    parquet = folder / _OBJECT_FILES[stream]
    if parquet.is_file():
        try:
            return pd.read_parquet(parquet, columns=columns)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise _unreadable(parquet, exc) from exc
    name, key = _LEGACY_FILES[stream]
    legacy = folder / name
    if not legacy.is_file():
        return pd.DataFrame({column: pd.Series(dtype="float64") for column in columns})
    try:
        return flatten_legacy_messages(json.loads(legacy.read_text(encoding="utf-8")), key)[columns]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise _unreadable(legacy, exc) from exc


def flatten_legacy_messages(messages: Sequence[dict[str, Any]], key: str) -> pd.DataFrame:
    """Legacy ``*_full.json`` messages → the flat per-object table of the current extraction contract.

    ``key`` is the list each message holds (``detections`` or ``tracked_objects``); every object row
    carries its message's ``bag_file``, ``seq`` and ``image_timestamp_s``. The messages are already Python
    objects (``json.load`` dominates the cost), so they are only walked to chain their object lists; the
    table is then built column-wise (several times faster than ``pd.json_normalize``).
    """
    columns = list(TRACKED_OBJECT_COLUMNS if key == "tracked_objects" else DETECTION_OBJECT_COLUMNS)
    meta = ["bag_file", "seq", "image_timestamp_s"]
    objects = pd.DataFrame(list(chain.from_iterable(m[key] for m in messages)),
                           columns=[c for c in columns if c not in meta])
    per_message = np.fromiter((len(m[key]) for m in messages), dtype="int64", count=len(messages))
    owners = pd.DataFrame(list(messages), columns=meta).take(np.repeat(np.arange(len(messages)), per_message))
    flat = pd.concat([owners.reset_index(drop=True), objects], axis=1)
    dtypes = {column: "float64" for column in columns} | {
        "bag_file": "str", "seq": "int64", "tracking_id": "int64", "detection_seq": "int64", "class_id": "Int64",
    }
    return flat[columns].astype({column: dtypes[column] for column in columns})


def _read_bags(path: Path) -> pd.DataFrame:
    """``metadata.yaml``'s bag list; legacy entries without ``status`` count as ok."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _unreadable(path, exc) from exc
    bags = document.get("bags") or [] if isinstance(document, dict) else None
    if not isinstance(bags, list) or not all(isinstance(bag, dict) for bag in bags):
        raise AnalyticsError(f"The extraction output {path} has no list of bags; re-extract the run.")
    table = pd.DataFrame(bags, columns=list(BAG_COLUMNS))
    table["status"] = table["status"].astype("object").fillna("ok").astype("str")
    return table
