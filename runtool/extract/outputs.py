"""The extraction outputs of a run: three CSV tables, two Parquet object tables and ``metadata.yaml``.

:func:`extract_bags` drives :class:`~runtool.extract.reader.BagReader` over a run's bags and writes:

- ``frames.csv``, ``detections.csv``, ``tracking.csv``: one row per message (the legacy files and columns);
- ``detection_objects.parquet``, ``tracked_objects.parquet``: one row per detection / tracked element,
  replacing the legacy indented ``*_full.json`` files;
- ``metadata.yaml``: the run, the topics used and one entry per bag with its status and counts.

Every file is always written, with its header, even when it has no rows, so "extracted" never depends on
what a run happened to record. Each bag's rows go to per-bag Arrow part files first and are copied into
the final files only when the bag was read to its end: a bag that fails part-way contributes no rows
(its ``rows_dropped`` says how many were read), unlike the legacy extractor which kept them. Final files
are written under a temporary name and renamed, ``metadata.yaml`` last, so a folder with
``metadata.yaml`` holds a complete extraction.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import yaml

from runtool.config import DEFAULT_MAX_CHUNK_BYTES
from runtool.errors import RuntoolError
from runtool.extract.reader import BATCH_MESSAGES, TABLE_SCHEMAS, TOPIC_KINDS, BagInfo, BagReader, BagReadError
from runtool.files import write_atomic

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "OUTPUT_FILES",
    "TABLE_FILES",
    "BagOutcome",
    "ExtractionProgress",
    "ExtractionStage",
    "OutputError",
    "RunMetadata",
    "extract_bags",
]

TABLE_FILES: dict[str, str] = {
    "frames": "frames.csv",
    "detections": "detections.csv",
    "tracking": "tracking.csv",
    "detection_objects": "detection_objects.parquet",
    "tracked_objects": "tracked_objects.parquet",
}
METADATA_FILE = "metadata.yaml"
OUTPUT_FILES: tuple[str, ...] = (*TABLE_FILES.values(), METADATA_FILE)
FORMAT_VERSION = 1
"""Bumped when a column or a metadata key changes meaning, so readers can tell outputs apart."""

_PARTS_FOLDER = ".parts"
_NULLABLE_INTS = ("class_id", "detection_seq")
_PARQUET_ROW_GROUP = 262_144
# The per-message counts a bag entry carries, and the table each is counted in.
_COUNTED = {
    "frames": "frames",
    "detections": "detections",
    "tracks": "tracking",
    "detection_objects": "detection_objects",
    "tracked_objects": "tracked_objects",
}


class OutputError(RuntoolError):
    """The extraction output could not be written, or an existing one could not be read back."""


class ExtractionStage(StrEnum):
    """Where an extraction stands; each progress event names one."""

    BAG_STARTED = "bag_started"
    READING = "reading"
    BAG_DONE = "bag_done"
    BAG_FAILED = "bag_failed"
    WRITING = "writing"
    DONE = "done"
    ERROR = "error"


@dataclass(frozen=True)
class ExtractionProgress:
    """One progress event; also what ``python -m runtool.extract`` prints, one JSON object a line.

    ``messages`` counts the messages read from the current bag so far, ``messages_total`` what its index
    announces on the three topics; ``bags_done`` counts finished bags (ok or failed).
    """

    bag: str | None
    bags_done: int
    bags_total: int
    messages: int
    stage: ExtractionStage
    messages_total: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stage": self.stage.value}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExtractionProgress:
        """Parse one progress line (as printed by the command line) back into an event."""
        try:
            return cls(
                bag=data["bag"],
                bags_done=int(data["bags_done"]),
                bags_total=int(data["bags_total"]),
                messages=int(data["messages"]),
                stage=ExtractionStage(data["stage"]),
                messages_total=int(data.get("messages_total", 0)),
                error=data.get("error"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise OutputError(f"Not an extraction progress event: {dict(data)!r}.") from exc


@dataclass(frozen=True)
class BagOutcome:
    """One bag's entry in ``metadata.yaml``: whether it was extracted, why not, and what it held."""

    name: str
    status: str
    error: str | None
    duration_s: float | None
    message_count: int | None
    topics: tuple[str, ...]
    frames: int = 0
    detections: int = 0
    tracks: int = 0
    detection_objects: int = 0
    tracked_objects: int = 0
    missing_topics: tuple[str, ...] = ()
    rows_dropped: Mapping[str, int] | None = None
    """For a failed bag: rows read before the failure, left out of the outputs (per table)."""
    format: str | None = None
    size_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["topics"] = list(self.topics)
        data["missing_topics"] = list(self.missing_topics)
        data["rows_dropped"] = dict(self.rows_dropped) if self.rows_dropped is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BagOutcome:
        dropped = data.get("rows_dropped")
        return cls(
            name=str(data["name"]),
            status=str(data["status"]),
            error=data.get("error"),
            duration_s=data.get("duration_s"),
            message_count=data.get("message_count"),
            topics=tuple(data.get("topics") or ()),
            frames=int(data.get("frames", 0)),
            detections=int(data.get("detections", 0)),
            tracks=int(data.get("tracks", 0)),
            detection_objects=int(data.get("detection_objects", 0)),
            tracked_objects=int(data.get("tracked_objects", 0)),
            missing_topics=tuple(data.get("missing_topics") or ()),
            rows_dropped={str(k): int(v) for k, v in dropped.items()} if dropped is not None else None,
            format=data.get("format"),
            size_bytes=data.get("size_bytes"),
        )


@dataclass(frozen=True)
class RunMetadata:
    """``metadata.yaml``: the legacy keys (``timestamp``, ``extraction_time``, ``bags``) and more."""

    timestamp: str
    extraction_time: str
    extractor: str
    backend: str
    topics: Mapping[str, str]
    bags: tuple[BagOutcome, ...] = field(default_factory=tuple)
    format_version: int = FORMAT_VERSION

    @property
    def bags_ok(self) -> tuple[BagOutcome, ...]:
        return tuple(bag for bag in self.bags if bag.ok)

    @property
    def bags_failed(self) -> tuple[BagOutcome, ...]:
        return tuple(bag for bag in self.bags if not bag.ok)

    def total(self, count: str) -> int:
        """The sum of one per-bag count (``frames``, ``detections``, ``tracks``, ``…_objects``)."""
        return sum(int(getattr(bag, count)) for bag in self.bags)

    def to_dict(self) -> dict[str, Any]:
        return {
            "timestamp": self.timestamp,
            "extraction_time": self.extraction_time,
            "extractor": self.extractor,
            "backend": self.backend,
            "format_version": self.format_version,
            "topics": dict(self.topics),
            "totals": {count: self.total(count) for count in _COUNTED},
            "rows_of_failed_bags": "dropped",
            "bags": [bag.to_dict() for bag in self.bags],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunMetadata:
        return cls(
            timestamp=str(data["timestamp"]),
            extraction_time=str(data["extraction_time"]),
            extractor=str(data.get("extractor", "")),
            backend=str(data.get("backend", "")),
            topics={str(k): str(v) for k, v in (data.get("topics") or {}).items()},
            bags=tuple(BagOutcome.from_dict(bag) for bag in data.get("bags") or ()),
            format_version=int(data.get("format_version", FORMAT_VERSION)),
        )

    def write(self, folder: Path) -> Path:
        """Write ``metadata.yaml`` into ``folder`` atomically (temporary name, then rename)."""
        path = folder / METADATA_FILE
        write_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))
        return path

    @classmethod
    def read(cls, folder: Path) -> RunMetadata:
        path = folder / METADATA_FILE
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise OutputError(f"Cannot read {path}: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise OutputError(f"{path} is not an extraction metadata file: {exc!r}") from exc


@cache
def _parquet_schema(table: str) -> pa.Schema:
    """The table's schema with pandas metadata, so ``pd.read_parquet`` gives nullable ``Int64`` id columns.

    Without it pandas turns an int64 column holding nulls (``class_id`` of an element without results,
    ``detection_seq`` of a ROS2 header) into float64.
    """
    import pandas as pd

    schema = TABLE_SCHEMAS[table]
    dtypes = {
        name: "Int64" if name in _NULLABLE_INTS else "str" if kind == pa.string() else kind.to_pandas_dtype()
        for name, kind in zip(schema.names, schema.types, strict=True)
    }
    empty = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in dtypes.items()})
    return schema.with_metadata(pa.Schema.from_pandas(empty, preserve_index=False).metadata)


class _PartFiles:
    """One bag's rows, one Arrow IPC file per table, until the bag is known to be complete."""

    def __init__(self, folder: Path, index: int) -> None:
        self.paths = {table: folder / f"{index:06d}.{table}.arrow" for table in TABLE_SCHEMAS}
        self._writers = {table: pa.ipc.new_file(str(path), TABLE_SCHEMAS[table]) for table, path in self.paths.items()}

    def write(self, batches: Mapping[str, pa.RecordBatch]) -> None:
        for table, batch in batches.items():
            if batch.num_rows:
                self._writers[table].write_batch(batch)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()

    def discard(self) -> None:
        self.close()
        for path in self.paths.values():
            path.unlink(missing_ok=True)


def extract_bags(
    bags: Sequence[Path],
    out_dir: Path,
    timestamp: str,
    topics: Mapping[str, str],
    *,
    backend: str = "local",
    progress: Callable[[ExtractionProgress], None] | None = None,
    batch_messages: int = BATCH_MESSAGES,
    fast: bool = True,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
) -> RunMetadata:
    """Extract ``bags`` (in the given order) into the empty or new folder ``out_dir``.

    A bag that cannot be read is recorded as failed in ``metadata.yaml`` and the others are extracted.
    ``progress`` is called at every bag boundary and every few thousand messages or tens of megabytes;
    an exception it raises (a cancel, say) stops the extraction there and propagates, leaving
    ``out_dir`` without ``metadata.yaml`` (the caller removes it). ``batch_messages`` bounds the rows
    held in memory (see :data:`~runtool.extract.reader.BATCH_MESSAGES`); ``fast=False`` deserialises
    every message with rosbags (see :class:`~runtool.extract.reader.BagReader`). A bag with a ROS1 chunk
    declaring more than ``max_chunk_bytes`` uncompressed is recorded as failed without being decompressed.

    Raises:
        OutputError: ``out_dir`` is not empty, a topic is not configured, or writing failed.
    """
    missing = [kind for kind in TOPIC_KINDS if not topics.get(kind)]
    if missing:
        raise OutputError(f"No topic configured for {', '.join(missing)}.")
    topics = {kind: topics[kind] for kind in TOPIC_KINDS}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if any(out_dir.iterdir()):
            raise OutputError(f"The output folder {out_dir} is not empty.")
        parts_dir = out_dir / _PARTS_FOLDER
        parts_dir.mkdir()
    except OSError as exc:
        raise OutputError(f"Cannot prepare the output folder {out_dir}: {exc}") from exc

    report = progress or (lambda event: None)
    outcomes: list[BagOutcome] = []
    parts: list[_PartFiles] = []
    try:
        for index, path in enumerate(bags):
            reader = BagReader(path, topics, batch_messages, fast, max_chunk_bytes=max_chunk_bytes)
            outcome, part, messages = _extract_one(reader, index, len(bags), parts_dir, report)
            outcomes.append(outcome)
            if part is not None:
                parts.append(part)
            stage = ExtractionStage.BAG_DONE if outcome.ok else ExtractionStage.BAG_FAILED
            report(ExtractionProgress(outcome.name, index + 1, len(bags), messages, stage, messages, outcome.error))

        report(ExtractionProgress(None, len(bags), len(bags), 0, ExtractionStage.WRITING))
        for table, name in TABLE_FILES.items():
            _write_table(table, [part.paths[table] for part in parts], out_dir / name)
        shutil.rmtree(parts_dir)
        from runtool import __version__  # here, not at the top: the runtool package imports the services

        metadata = RunMetadata(
            timestamp=timestamp,
            extraction_time=datetime.now(UTC).isoformat(timespec="seconds"),
            extractor=f"runtool {__version__}",
            backend=backend,
            topics=topics,
            bags=tuple(outcomes),
        )
        metadata.write(out_dir)
    except OSError as exc:
        raise OutputError(f"Writing the extraction output in {out_dir} failed: {exc}") from exc
    report(ExtractionProgress(None, len(bags), len(bags), 0, ExtractionStage.DONE))
    return metadata


def _extract_one(
    reader: BagReader,
    index: int,
    total: int,
    parts_dir: Path,
    report: Callable[[ExtractionProgress], None],
) -> tuple[BagOutcome, _PartFiles | None, int]:
    """Read one bag into part files; a read failure gives a failed outcome and no parts.

    Returns the outcome, the part files (None when the bag failed) and the messages read.
    """
    info: BagInfo | None = None
    part: _PartFiles | None = None
    try:
        with reader:
            info = reader.info
            report(ExtractionProgress(reader.name, index, total, 0, ExtractionStage.BAG_STARTED,
                                      info.selected_messages))
            part = _PartFiles(parts_dir, index)
            for tick in reader.ticks():
                if tick.batches is not None:
                    part.write(tick.batches)
                report(ExtractionProgress(reader.name, index, total, tick.messages, ExtractionStage.READING,
                                          info.selected_messages))
            part.close()
    except BagReadError as exc:
        if part is not None:
            part.discard()
        read = reader.rows_read
        dropped = {count: read[table] for count, table in _COUNTED.items()} if info else None
        failed = BagOutcome(reader.name, "failed", str(exc), None, None, (), rows_dropped=dropped,
                            size_bytes=_size_or_none(reader.path))
        if info is not None:
            failed = replace(failed, duration_s=info.duration_s, message_count=info.message_count,
                             topics=info.topics, missing_topics=info.missing_topics, format=info.format,
                             size_bytes=info.size_bytes)
        return failed, None, reader.messages_read
    except BaseException:
        if part is not None:
            part.discard()
        raise
    assert info is not None  # set as soon as the reader opened; a failed open raised above
    counts = reader.counts
    ok = BagOutcome(
        reader.name, "ok", None, info.duration_s, info.message_count, info.topics,
        frames=counts["frames"], detections=counts["detections"], tracks=counts["tracking"],
        detection_objects=counts["detection_objects"], tracked_objects=counts["tracked_objects"],
        missing_topics=info.missing_topics, format=info.format, size_bytes=info.size_bytes,
    )
    return ok, part, reader.messages_read


def _size_or_none(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


def _write_table(table: str, parts: Sequence[Path], target: Path) -> None:
    """Concatenate the part files of the bags that were read completely, in bag order, into ``target``."""
    tmp = target.with_name(f".{target.name}.tmp")
    schema = TABLE_SCHEMAS[table]
    writer: pq.ParquetWriter | pa_csv.CSVWriter
    if target.suffix == ".parquet":
        writer = pq.ParquetWriter(str(tmp), _parquet_schema(table))
    else:
        writer = pa_csv.CSVWriter(str(tmp), schema, write_options=pa_csv.WriteOptions(quoting_style="needed"))
    with writer:
        for path in parts:
            with pa.memory_map(str(path)) as source:
                rows = pa.ipc.open_file(source).read_all()
                if rows.num_rows and isinstance(writer, pq.ParquetWriter):
                    writer.write_table(rows.replace_schema_metadata(writer.schema.metadata),
                                       row_group_size=_PARQUET_ROW_GROUP)
                elif rows.num_rows:
                    writer.write_table(rows)
    os.replace(tmp, target)
