"""What is on the local disk: raw bags, ML samples, extraction outputs and the export tracking file.

The roots are walked once (level by level with ``os.scandir``, never a recursive glob per query) into an
in-memory index; an operation on a run refreshes just that run.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from runtool.config import RuntoolConfig
from runtool.errors import RuntoolError
from runtool.models import (
    EXTRACTION_FILES,
    LEVELS,
    CoordinateError,
    ExtractionStatus,
    Filters,
    LocalMLStatus,
    LocalRawStatus,
    RunCoordinate,
)
from runtool.storage import local_ml_dir, local_raw_dir, processed_dir
from runtool.storage.layout import FRAME_SUFFIXES, LABEL_SUFFIX, ML_ROOT_FOLDER

__all__ = [
    "ANALYSIS_MARKER",
    "EXPORT_TRACKING_FILE",
    "ExportInfo",
    "ExportTrackingError",
    "LocalRun",
    "LocalStateService",
    "read_export_tracking",
]

EXPORT_TRACKING_FILE = ".export_tracking.json"
ANALYSIS_MARKER = "analysis/kpis.json"
"""Written by the analytics step; its presence marks a run as analysed."""
_EXPORT_META_KEYS = frozenset({"metadata", "last_updated", "version"})


class ExportTrackingError(RuntoolError):
    """The export tracking file is missing, malformed, or does not know an export id."""


@dataclass(frozen=True)
class ExportInfo:
    """One labelling export listed in ``ML/raw/.export_tracking.json``."""

    export_id: str
    created: str | None
    samples: int | None
    coordinates: tuple[str, ...]
    info: dict[str, Any] = field(default_factory=dict)


def read_export_tracking(ml_root: Path) -> dict[str, ExportInfo]:
    """Parse the export tracking file in either of its two shapes.

    Shape 1: ``{"exports": {id: info}, "metadata": ...}``. Shape 2: ids as top-level keys, with
    ``metadata``, ``last_updated`` and ``version`` reserved.
    """
    path = ml_root / ML_ROOT_FOLDER / EXPORT_TRACKING_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ExportTrackingError(f"No export tracking file at {path}") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportTrackingError(f"The export tracking file {path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ExportTrackingError(f"The export tracking file {path} must hold a JSON object")
    raw = document["exports"] if isinstance(document.get("exports"), dict) else {
        key: value for key, value in document.items() if key not in _EXPORT_META_KEYS
    }
    exports: dict[str, ExportInfo] = {}
    for export_id, info in sorted(raw.items()):
        if not isinstance(info, dict):
            raise ExportTrackingError(f"{path}: export {export_id!r} must be an object, not {type(info).__name__}")
        coordinates = info.get("coordinates", [])
        if not isinstance(coordinates, list) or not all(isinstance(c, str) for c in coordinates):
            raise ExportTrackingError(f"{path}: export {export_id!r} has a bad 'coordinates' list")
        samples = info.get("samples")
        exports[export_id] = ExportInfo(
            export_id=export_id,
            created=str(info["created"]) if "created" in info else None,
            samples=int(samples) if isinstance(samples, int | float) else None,
            coordinates=tuple(coordinates),
            info=info,
        )
    return exports


@dataclass(frozen=True)
class LocalRun:
    """Everything on disk for one run."""

    coordinate: RunCoordinate
    raw: LocalRawStatus
    ml: LocalMLStatus
    extraction: ExtractionStatus


def _subdirs(path: Path) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            yield from sorted((e for e in entries if e.is_dir()), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return


def _files(path: Path) -> dict[str, int]:
    """Name → size of the visible files in ``path``.

    Hidden files are left out: they are a transfer's temporary files and the transfer locks, which come
    and go while a scan runs (a file that vanishes between the listing and its stat is left out too).
    """
    sizes: dict[str, int] = {}
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_file():
                        sizes[entry.name] = entry.stat().st_size
                except FileNotFoundError:
                    continue
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return sizes


def _walk_runs(root: Path) -> Iterator[tuple[tuple[str, ...], Path]]:
    """Every six-level folder path under ``root`` (candidate runs), without descending further."""

    def walk(path: Path, parts: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Path]]:
        for entry in _subdirs(path):
            here = (*parts, entry.name)
            if len(here) == 6:
                yield here, Path(entry.path)
            else:
                yield from walk(Path(entry.path), here)

    if root.is_dir():
        yield from walk(root, ())


class LocalStateService:
    """An index of the local raw, ML and processed roots, built once and refreshed per run."""

    def __init__(self, config: RuntoolConfig) -> None:
        self.config = config
        self._runs: dict[RunCoordinate, LocalRun] | None = None
        self._table: pd.DataFrame | None = None
        self.anomalies: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self.version = 0

    def scan(self) -> None:
        """(Re)build the whole index."""
        runs: dict[RunCoordinate, LocalRun] = {}
        anomalies: list[tuple[str, str]] = []
        candidates: set[RunCoordinate] = set()
        roots = (
            self.config.raw_root,
            self.config.ml_root / ML_ROOT_FOLDER,
            self.config.processed_root,
        )
        for root in roots:
            for parts, path in _walk_runs(root):
                try:
                    candidates.add(RunCoordinate(*parts))
                except CoordinateError as exc:
                    anomalies.append((str(path), str(exc)))
        for coord in candidates:
            run = self._read_run(coord)
            if run.raw.exists or run.ml.exists or run.extraction.present:
                runs[coord] = run
        with self._lock:
            self._runs, self._table, self.anomalies = runs, None, anomalies
            self.version += 1

    def rescan(self) -> bool:
        """Scan again; whether anything changed since the last scan (a download, an extraction, a deletion)."""
        with self._lock:
            before = self._runs
        self.scan()
        return self._runs != before

    def refresh_run(self, coord: RunCoordinate) -> LocalRun:
        """Re-read one run after an operation changed it."""
        run = self._read_run(coord)
        with self._lock:
            runs = self._index()
            if run.raw.exists or run.ml.exists or run.extraction.present:
                runs[coord] = run
            else:
                runs.pop(coord, None)
            self._table = None
            self.version += 1
        return run

    def _index(self) -> dict[RunCoordinate, LocalRun]:
        if self._runs is None:
            self.scan()
        assert self._runs is not None
        return self._runs

    def run(self, coord: RunCoordinate) -> LocalRun:
        """The run's local state (empty statuses when nothing is on disk)."""
        with self._lock:
            found = self._index().get(coord)
        return found or LocalRun(
            coord,
            LocalRawStatus(path=str(local_raw_dir(self.config.raw_root, coord))),
            LocalMLStatus(path=str(local_ml_dir(self.config.ml_root, coord))),
            ExtractionStatus(path=str(processed_dir(self.config.processed_root, coord))),
        )

    def table(self) -> pd.DataFrame:
        """One row per local run: coordinate parts, bag and sample counts and bytes, extraction flags."""
        with self._lock:
            if self._table is None:
                rows = [
                    {
                        **run.coordinate.to_dict(),
                        "local_bags": run.raw.bag_count,
                        "local_raw_bytes": run.raw.total_size,
                        "local_frames": run.ml.frame_count,
                        "local_labels": run.ml.label_count,
                        "local_ml_bytes": run.ml.total_bytes,
                        "extracted": run.extraction.extracted,
                        "analyzed": run.extraction.analyzed,
                    }
                    for run in self._index().values()
                ]
                columns = [*LEVELS, "timestamp", "local_bags", "local_raw_bytes", "local_frames",
                           "local_labels", "local_ml_bytes", "extracted", "analyzed"]
                self._table = pd.DataFrame(rows, columns=columns)
            return self._table

    def runs(self, filters: Filters | None = None) -> list[LocalRun]:
        with self._lock:
            found = list(self._index().values())
        return [run for run in found if filters is None or filters.matches(run.coordinate)]

    def export_tracking(self) -> dict[str, ExportInfo]:
        return read_export_tracking(self.config.ml_root)

    def _read_run(self, coord: RunCoordinate) -> LocalRun:
        raw_dir = local_raw_dir(self.config.raw_root, coord)
        bags = {name: size for name, size in _files(raw_dir).items() if name.endswith(".bag")}
        ml_dir = local_ml_dir(self.config.ml_root, coord)
        frames: dict[str, int] = {}
        labels: dict[str, int] = {}
        total = other = 0
        for bag_dir in _subdirs(ml_dir):
            for kind in _subdirs(Path(bag_dir.path)):
                for name, size in _files(Path(kind.path)).items():
                    name = name.lower()
                    if kind.name == "frames" and name.endswith(FRAME_SUFFIXES):
                        frames[bag_dir.name] = frames.get(bag_dir.name, 0) + 1
                        total += size
                    elif kind.name == "labels" and name.endswith(LABEL_SUFFIX):
                        labels[bag_dir.name] = labels.get(bag_dir.name, 0) + 1
                        total += size
                    else:
                        other += 1
            other += len(_files(Path(bag_dir.path)))
        out_dir = processed_dir(self.config.processed_root, coord)
        present = tuple(sorted(name for name in _files(out_dir) if name in EXTRACTION_FILES))
        return LocalRun(
            coord,
            LocalRawStatus(path=str(raw_dir), bag_sizes=bags),
            LocalMLStatus(path=str(ml_dir), frames=frames, labels=labels, total_bytes=total, other_files=other),
            ExtractionStatus(path=str(out_dir), present=present, analyzed=(out_dir / ANALYSIS_MARKER).is_file()),
        )
