"""Reading one bag's camera, detection and tracking messages in a single streaming pass.

The legacy extractor read every bag three times (once per topic), built a dict per message and held the
whole run in memory. Here one pass over the three configured topics, in read order, appends plain values
to per-column lists; every :data:`BATCH_MESSAGES` messages they become Arrow record batches, so memory is
bounded by the batch size, not by the bag or the run. Timestamps are kept as integer seconds and
nanoseconds until the batch is built and converted there, vectorised, to ``secs + nsecs / 1e9``.

Message definitions come from the bag itself (:class:`rosbags.highlevel.AnyReader`), so ROS1 ``.bag``
files, ROS2 bag folders and ``.mcap`` files are read without registering any custom type. Field access
follows the robot's ROS1 messages (legacy-dashboard.md §3.2): ``results`` may be empty (class id and
score are then null/NaN instead of failing on ``results[0]``), and ROS2 headers, which have no ``seq``,
get the message's index on its topic within the bag.

Building rosbags' nested message objects (every hypothesis with its pose and 36-value covariance) costs
more than reading the bytes, so connections whose md5sum proves the robot's known ROS1 layout are
decoded straight from the raw bytes instead (see ``_ROBOT_DEFINITIONS``); everything else goes through
``AnyReader.deserialize``.

A ROS1 chunk is decompressed into memory whole, so its size is untrusted input: every chunk's declared
uncompressed size is checked against a limit (``max_chunk_bytes``) before anything is decompressed, and no
chunk is decompressed past the size it declares (see :func:`_limit_chunks`).
"""

from __future__ import annotations

import bz2
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from lz4.frame import LZ4FrameDecompressor

from runtool.config import DEFAULT_MAX_CHUNK_BYTES
from runtool.errors import RuntoolError

if TYPE_CHECKING:
    # rosbags loads when a bag is opened: the per-run page imports the extraction services for their types
    # and stages, and would otherwise carry the bag readers in every page kernel.
    from rosbags.highlevel import AnyReader

__all__ = [
    "BAG_SUFFIXES",
    "BATCH_MESSAGES",
    "TABLE_SCHEMAS",
    "TICK_BYTES",
    "TICK_MESSAGES",
    "TOPIC_KINDS",
    "BagInfo",
    "BagReadError",
    "BagReader",
    "ReadTick",
    "bag_name",
    "find_bags",
]

TOPIC_KINDS: tuple[str, ...] = ("image", "detections", "tracks")
"""The configured topics, by purpose (keys of ``RuntoolConfig.topics``)."""

BAG_SUFFIXES: tuple[str, ...] = (".bag", ".mcap")
"""Bag files read from a run folder; a sub-folder holding ``metadata.yaml`` is a ROS2 bag too."""

BATCH_MESSAGES = 16_384
"""Messages per record batch: large enough for cheap Arrow conversion, small enough to bound memory."""

TICK_MESSAGES = 1_000
TICK_BYTES = 32 * 1024 * 1024
"""A progress tick (and a chance to cancel) every this many messages or bytes, whichever comes first."""

_NS = 1_000_000_000

# The robot's ROS1 messages (legacy-dashboard.md §3.2, as recorded by the demo writer). A connection whose
# md5sum equals the one of these definitions has exactly this wire layout, and is decoded straight from
# its bytes with the structs below: about ten times faster than building every nested message object,
# which is what the legacy extractor's time went into. Any other definition (another vision_msgs version,
# ROS2's CDR encoding) is deserialised by rosbags from the bag's own definitions; both paths give the same
# rows (tests/extract/test_reader.py checks it).
_ROBOT_DEFINITIONS: dict[str, str] = {
    "vision_msgs/msg/BoundingBox2D": "geometry_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": "int64 id\nfloat64 score\ngeometry_msgs/PoseWithCovariance pose\n",
    "vision_msgs/msg/Detection2D": "std_msgs/Header header\nObjectHypothesisWithPose[] results\nBoundingBox2D bbox\n",
    "weed_detection_msgs/msg/TrackedDetection": "int32 tracking_id\nvision_msgs/Detection2D detection_msg\n",
    "weed_detection_msgs/msg/DetectionArray": (
        "std_msgs/Header header\nuint32 img_stamp_secs\nuint32 img_stamp_nsecs\nTrackedDetection[] detections\n"
    ),
    "multi_object_tracking_msgs/msg/TrackArray": (
        "std_msgs/Header header\nuint32 img_stamp_secs\nuint32 img_stamp_nsecs\n"
        "weed_detection_msgs/TrackedDetection[] tracked_detections\n"
    ),
}
_FAST_TYPES = {
    "image": "sensor_msgs/msg/CompressedImage",
    "detections": "weed_detection_msgs/msg/DetectionArray",
    "tracks": "multi_object_tracking_msgs/msg/TrackArray",
}
_U32 = struct.Struct("<I")
_HEADER = struct.Struct("<IIII")  # std_msgs/Header: seq, stamp sec, stamp nsec, frame_id length
_IMAGE_STAMP = struct.Struct("<III")  # img_stamp_secs, img_stamp_nsecs, element count
_ELEMENT_HEAD = struct.Struct("<iIIII")  # tracking_id, then the Detection2D header
_RESULT = struct.Struct("<qd")  # ObjectHypothesisWithPose id, score (then the pose)
_RESULT_SIZE = 8 + 8 + 8 * (3 + 4 + 36)  # id, score, PoseWithCovariance
_BOX = struct.Struct("<5d")  # BoundingBox2D: center x, y, theta, size_x, size_y


@cache
def _fast_digests() -> dict[str, str]:
    """md5sum of each topic's message type, as the robot records it (computed once from the definitions)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    types: dict[str, Any] = {}
    for name, text in _ROBOT_DEFINITIONS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return {kind: store.generate_msgdef(typename)[1] for kind, typename in _FAST_TYPES.items()}


TABLE_SCHEMAS: dict[str, pa.Schema] = {
    "frames": pa.schema(
        [
            ("bag_file", pa.string()),
            ("seq", pa.int64()),
            ("bag_timestamp_s", pa.float64()),
            ("header_timestamp_s", pa.float64()),
            ("has_data", pa.bool_()),
        ]
    ),
    "detections": pa.schema(
        [
            ("bag_file", pa.string()),
            ("seq", pa.int64()),
            ("bag_timestamp_s", pa.float64()),
            ("header_timestamp_s", pa.float64()),
            ("image_timestamp_s", pa.float64()),
            ("num_detections", pa.int64()),
        ]
    ),
    "tracking": pa.schema(
        [
            ("bag_file", pa.string()),
            ("seq", pa.int64()),
            ("bag_timestamp_s", pa.float64()),
            ("header_timestamp_s", pa.float64()),
            ("image_timestamp_s", pa.float64()),
            ("num_tracked", pa.int64()),
        ]
    ),
    "detection_objects": pa.schema(
        [
            ("bag_file", pa.string()),
            ("seq", pa.int64()),
            ("image_timestamp_s", pa.float64()),
            ("tracking_id", pa.int64()),
            ("class_id", pa.int64()),
            ("score", pa.float64()),
            ("bbox_cx", pa.float64()),
            ("bbox_cy", pa.float64()),
            ("bbox_theta", pa.float64()),
            ("bbox_w", pa.float64()),
            ("bbox_h", pa.float64()),
        ]
    ),
    "tracked_objects": pa.schema(
        [
            ("bag_file", pa.string()),
            ("seq", pa.int64()),
            ("image_timestamp_s", pa.float64()),
            ("tracking_id", pa.int64()),
            ("detection_seq", pa.int64()),
            ("class_id", pa.int64()),
            ("score", pa.float64()),
            ("bbox_cx", pa.float64()),
            ("bbox_cy", pa.float64()),
            ("bbox_theta", pa.float64()),
            ("bbox_w", pa.float64()),
            ("bbox_h", pa.float64()),
        ]
    ),
}
"""The extraction tables, in output order; every batch a reader yields has exactly these columns."""

_MESSAGE_TABLES = {"image": "frames", "detections": "detections", "tracks": "tracking"}
_OBJECT_TABLES = {"detections": "detection_objects", "tracks": "tracked_objects"}


class BagReadError(RuntoolError):
    """A bag could not be opened or read to its end; the message is a sentence naming the cause."""


def bag_name(path: Path) -> str:
    """The bag's name in the outputs: the file stem (``rosbag_…_0``) or the ROS2 bag folder's name."""
    return path.name if path.is_dir() else path.stem


def find_bags(folder: Path) -> list[Path]:
    """The bags of a run folder, sorted by name (chronological for ``rosbag_<time>_<i>`` names).

    ROS1 ``*.bag`` files (any name, the same rule the local state uses to call a run downloaded),
    ``*.mcap`` files and ROS2 bag folders (a folder with ``metadata.yaml``). Hidden entries and the
    ``.tmp`` files of unfinished downloads are not bags. A missing folder has no bags.
    """
    if not folder.is_dir():
        return []
    found = [
        entry
        for entry in folder.iterdir()
        if not entry.name.startswith(".")
        and (
            (entry.is_file() and entry.suffix in BAG_SUFFIXES)
            or (entry.is_dir() and (entry / "metadata.yaml").is_file())
        )
    ]
    return sorted(found, key=lambda path: path.name)


@dataclass(frozen=True)
class BagInfo:
    """What a bag's index says about it, known as soon as it is open."""

    name: str
    path: Path
    format: str
    size_bytes: int
    duration_s: float
    message_count: int
    topics: tuple[str, ...]
    missing_topics: tuple[str, ...]
    selected_messages: int
    """Messages on the configured topics: the reader's progress total."""
    fast_topics: tuple[str, ...] = ()
    """Configured topics whose messages have the robot's known ROS1 layout and skip rosbags' deserialiser."""


@dataclass(frozen=True)
class ReadTick:
    """Emitted while reading: how far the pass got, and the rows completed since the previous batch."""

    messages: int
    bytes_read: int
    batches: dict[str, pa.RecordBatch] | None = None
    """One batch per table of :data:`TABLE_SCHEMAS` (possibly empty), or None between batches."""


@dataclass
class _Columns:
    """Plain Python lists, one per raw value read; turned into record batches by :meth:`build`."""

    # per message, for each of the three topics
    seq: dict[str, list[int]] = field(default_factory=lambda: {kind: [] for kind in TOPIC_KINDS})
    bag_ns: dict[str, list[int]] = field(default_factory=lambda: {kind: [] for kind in TOPIC_KINDS})
    sec: dict[str, list[int]] = field(default_factory=lambda: {kind: [] for kind in TOPIC_KINDS})
    nsec: dict[str, list[int]] = field(default_factory=lambda: {kind: [] for kind in TOPIC_KINDS})
    # images: payload length; detections and tracks: image stamp and element count
    data_len: list[int] = field(default_factory=list)
    img_sec: dict[str, list[int]] = field(default_factory=lambda: {"detections": [], "tracks": []})
    img_nsec: dict[str, list[int]] = field(default_factory=lambda: {"detections": [], "tracks": []})
    count: dict[str, list[int]] = field(default_factory=lambda: {"detections": [], "tracks": []})
    # per element, for detections and tracks
    tracking_id: dict[str, list[int]] = field(default_factory=lambda: {"detections": [], "tracks": []})
    class_id: dict[str, list[int | None]] = field(default_factory=lambda: {"detections": [], "tracks": []})
    score: dict[str, list[float]] = field(default_factory=lambda: {"detections": [], "tracks": []})
    cx: dict[str, list[float]] = field(default_factory=lambda: {"detections": [], "tracks": []})
    cy: dict[str, list[float]] = field(default_factory=lambda: {"detections": [], "tracks": []})
    theta: dict[str, list[float]] = field(default_factory=lambda: {"detections": [], "tracks": []})
    width: dict[str, list[float]] = field(default_factory=lambda: {"detections": [], "tracks": []})
    height: dict[str, list[float]] = field(default_factory=lambda: {"detections": [], "tracks": []})
    detection_seq: list[int | None] = field(default_factory=list)

    def appenders(self) -> tuple[Any, ...]:
        """The lists' bound ``append`` methods (and per-topic lists), looked up once per batch, not per value."""
        return (
            [self.seq[kind] for kind in TOPIC_KINDS],
            [self.bag_ns[kind] for kind in TOPIC_KINDS],
            [self.sec[kind] for kind in TOPIC_KINDS],
            [self.nsec[kind] for kind in TOPIC_KINDS],
            self.data_len.append,
            self.detection_seq.append,
            [
                (
                    self.img_sec[kind].append,
                    self.img_nsec[kind].append,
                    self.count[kind].append,
                    self.tracking_id[kind].append,
                    self.class_id[kind].append,
                    self.score[kind].append,
                    self.cx[kind].append,
                    self.cy[kind].append,
                    self.theta[kind].append,
                    self.width[kind].append,
                    self.height[kind].append,
                )
                for kind in ("detections", "tracks")
            ],
        )

    def rows(self) -> dict[str, int]:
        """Rows collected per table (what a failure at this point drops)."""
        return {
            "frames": len(self.seq["image"]),
            "detections": len(self.seq["detections"]),
            "tracking": len(self.seq["tracks"]),
            "detection_objects": len(self.tracking_id["detections"]),
            "tracked_objects": len(self.tracking_id["tracks"]),
        }

    def build(self, bag: str) -> dict[str, pa.RecordBatch]:
        """The rows collected so far as one record batch per table."""
        batches: dict[str, pa.RecordBatch] = {}
        for kind, table in _MESSAGE_TABLES.items():
            seq = np.asarray(self.seq[kind], dtype=np.int64)
            bag_ns = np.asarray(self.bag_ns[kind], dtype=np.int64)
            columns: list[Any] = [
                pa.repeat(bag, len(seq)),
                seq,
                bag_ns // _NS + (bag_ns % _NS) / 1e9,
                _seconds(self.sec[kind], self.nsec[kind]),
            ]
            if kind == "image":
                columns.append(np.asarray(self.data_len, dtype=np.int64) > 0)
            else:
                image_s = _seconds(self.img_sec[kind], self.img_nsec[kind])
                counts = np.asarray(self.count[kind], dtype=np.int64)
                columns += [image_s, counts]
                batches[_OBJECT_TABLES[kind]] = self._objects(kind, bag, seq, image_s, counts)
            batches[table] = pa.RecordBatch.from_arrays(columns, schema=TABLE_SCHEMAS[table])
        return {table: batches[table] for table in TABLE_SCHEMAS}

    def _objects(
        self, kind: str, bag: str, seq: np.ndarray, image_s: np.ndarray, counts: np.ndarray
    ) -> pa.RecordBatch:
        """Element rows; the parent message's seq and image stamp are repeated by element count."""
        total = int(counts.sum())
        columns: list[Any] = [
            pa.repeat(bag, total),
            np.repeat(seq, counts),
            np.repeat(image_s, counts),
            np.asarray(self.tracking_id[kind], dtype=np.int64),
        ]
        if kind == "tracks":
            columns.append(pa.array(self.detection_seq, pa.int64()))
        columns += [
            pa.array(self.class_id[kind], pa.int64()),
            np.asarray(self.score[kind], dtype=np.float64),
            np.asarray(self.cx[kind], dtype=np.float64),
            np.asarray(self.cy[kind], dtype=np.float64),
            np.asarray(self.theta[kind], dtype=np.float64),
            np.asarray(self.width[kind], dtype=np.float64),
            np.asarray(self.height[kind], dtype=np.float64),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=TABLE_SCHEMAS[_OBJECT_TABLES[kind]])


def _seconds(sec: list[int], nsec: list[int]) -> np.ndarray:
    """``secs + nsecs / 1e9`` as float64, the legacy formula, for whole columns at once."""
    return np.asarray(sec, dtype=np.int64) + np.asarray(nsec, dtype=np.int64) / 1e9


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class BagReader:
    """One bag, opened for a single streaming pass over the configured topics.

    >>> with BagReader(path, config.topics) as reader:
    ...     for tick in reader.ticks():
    ...         if tick.batches:
    ...             write(tick.batches)

    Counts of the rows yielded so far are in :attr:`counts`. Any failure while opening or reading
    becomes a :class:`BagReadError`, so a caller can record the bag as failed and go on with the next;
    exceptions raised by the caller between ticks are not touched.
    """

    def __init__(
        self,
        path: Path,
        topics: Mapping[str, str],
        batch_messages: int = BATCH_MESSAGES,
        fast: bool = True,
        *,
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    ) -> None:
        """``fast=False`` deserialises every message with rosbags (the reference the fast path is tested against).

        A ROS1 chunk declaring more than ``max_chunk_bytes`` uncompressed makes opening fail (see
        :func:`_limit_chunks`).
        """
        self.path = path
        self.fast = fast
        self.max_chunk_bytes = max_chunk_bytes
        self.name = bag_name(path)
        self.topics = {kind: topics[kind] for kind in TOPIC_KINDS}
        self.batch_messages = batch_messages
        self.counts: dict[str, int] = dict.fromkeys(TABLE_SCHEMAS, 0)
        self.messages_read = 0
        self._columns = _Columns()
        self._reader: AnyReader | None = None
        self._info: BagInfo | None = None
        self._routes: dict[int, tuple[int, bool]] = {}

    @property
    def rows_read(self) -> dict[str, int]:
        """Rows per table read so far: those yielded in batches plus those not batched yet."""
        pending = self._columns.rows()
        return {table: self.counts[table] + pending[table] for table in TABLE_SCHEMAS}

    @property
    def info(self) -> BagInfo:
        if self._info is None:
            raise BagReadError(f"{self.name} is not open.")
        return self._info

    def __enter__(self) -> BagReader:
        from rosbags.highlevel import AnyReader

        _prefetch(self.path)
        try:
            reader = AnyReader([self.path])
            reader.open()
        except Exception as exc:
            # Corrupt, truncated and foreign files fail here in many ways (index errors, bad magic,
            # decompression, struct errors); all of them mean "this bag cannot be read".
            raise BagReadError(f"The bag could not be opened: {self._reason(exc)}.") from exc
        try:
            _limit_chunks(reader, self.path.name, self.max_chunk_bytes)
            self._routes = self._route(reader)
            self._info = self._describe_bag(reader)
        except BagReadError:
            reader.close()
            raise
        except Exception as exc:
            reader.close()
            raise BagReadError(f"The bag's index could not be read: {self._reason(exc)}.") from exc
        self._reader = reader
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()

    def _describe_bag(self, reader: AnyReader) -> BagInfo:
        topics = reader.topics
        count = reader.message_count
        selected = sum(topics[topic].msgcount for topic in self.topics.values() if topic in topics)
        return BagInfo(
            name=self.name,
            path=self.path,
            format="ros2" if reader.is2 else "ros1",
            size_bytes=_size(self.path),
            duration_s=(reader.end_time - reader.start_time) / 1e9 if count else 0.0,
            message_count=count,
            topics=tuple(sorted(topics)),
            missing_topics=tuple(topic for topic in self.topics.values() if topic not in topics),
            selected_messages=selected,
            fast_topics=tuple(sorted({c.topic for c in reader.connections if self._routes.get(c.id, (0, False))[1]})),
        )

    def ticks(self) -> Iterator[ReadTick]:
        """Read the bag once; yield progress ticks, with record batches every ``batch_messages`` messages.

        The last tick always carries the final batches (possibly empty tables), so a caller that writes
        every tick's batches has written every row when the iterator ends.

        Raises:
            BagReadError: the bag is corrupt or a message does not have the expected fields; the rows
                yielded before stay valid but the caller should drop them (the bag is incomplete).
        """
        reader = self._reader
        if reader is None:
            raise BagReadError(f"{self.name} is not open.")
        self.messages_read = 0
        try:
            yield from self._pass(reader)
        except BagReadError as exc:
            raise BagReadError(f"Reading stopped after {self.messages_read:,} messages: {exc}") from exc
        except Exception as exc:
            # Broken chunks, short reads, failed deserialisation and missing message fields all end the
            # pass the same way: the bag is recorded as failed with this sentence and its rows dropped.
            raise BagReadError(f"Reading stopped after {self.messages_read:,} messages: {self._reason(exc)}.") from exc

    def _reason(self, exc: BaseException) -> str:
        """``exc`` described with the bag's name where it gave the bag's path: the reason is kept in
        ``metadata.yaml`` and shown on pages, read-only ones too, which show no paths on the server."""
        return _describe(exc).replace(str(self.path), self.path.name)

    def _route(self, reader: AnyReader) -> dict[int, tuple[int, bool]]:
        """Connection id → (topic index, decoded by the fast path) for the configured topics."""
        by_topic = {topic: index for index, topic in enumerate(self.topics.values())}
        digests = _fast_digests() if self.fast and not reader.is2 else {}
        return {
            connection.id: (by_topic[connection.topic],
                            digests.get(TOPIC_KINDS[by_topic[connection.topic]]) == connection.digest)
            for connection in reader.connections
            if connection.topic in by_topic
        }

    def _pass(self, reader: AnyReader) -> Iterator[ReadTick]:
        routes = self._routes
        selected = [connection for connection in reader.connections if connection.id in routes]
        header_fields = reader.typestore.fielddefs.get("std_msgs/msg/Header", ([], []))[1]
        has_seq = any(name == "seq" for name, _ in header_fields)

        columns = self._columns = _Columns()
        deserialize = reader.deserialize
        counters = [0, 0, 0]
        seq_lists, bag_ns_lists, sec_lists, nsec_lists, data_len, detection_seq, per_kind = columns.appenders()
        nan = float("nan")
        header_at, u32_at, image_at = _HEADER.unpack_from, _U32.unpack_from, _IMAGE_STAMP.unpack_from
        element_at, result_at, box_at = _ELEMENT_HEAD.unpack_from, _RESULT.unpack_from, _BOX.unpack_from
        in_batch = messages = bytes_read = 0
        next_tick_messages, next_tick_bytes = TICK_MESSAGES, TICK_BYTES

        for connection, bag_ns, raw in reader.messages(connections=selected) if selected else ():
            kind, fast = routes[connection.id]
            if fast:
                seq, sec, nsec, skip = header_at(raw, 0)
                pos = 16 + skip
            else:
                msg: Any = deserialize(raw, connection.msgtype)
                header = msg.header
                stamp = header.stamp
                sec, nsec = stamp.sec, stamp.nanosec
                if has_seq:
                    seq = header.seq
                else:
                    seq = counters[kind]
                    counters[kind] = seq + 1
            seq_lists[kind].append(seq)
            bag_ns_lists[kind].append(bag_ns)
            sec_lists[kind].append(sec)
            nsec_lists[kind].append(nsec)
            if kind == 0:
                if fast:
                    pos += 4 + u32_at(raw, pos)[0]  # format string
                    size = u32_at(raw, pos)[0]
                    if pos + 4 + size != len(raw):
                        raise ValueError(f"image message of {len(raw)} bytes announces {size} bytes of data")
                    data_len(size)
                else:
                    data_len(len(msg.data))
            else:
                (img_sec, img_nsec, count, tracking_id, class_id, score, cx, cy, theta, width, height) = per_kind[
                    kind - 1
                ]
                if fast:
                    secs, nsecs, elements = image_at(raw, pos)
                    pos += 12
                    img_sec(secs)
                    img_nsec(nsecs)
                    count(elements)
                    for _ in range(elements):
                        track, detection_header_seq, _, _, skip = element_at(raw, pos)
                        pos += 20 + skip
                        results = u32_at(raw, pos)[0]
                        pos += 4
                        if results:
                            best_id, best_score = result_at(raw, pos)
                            class_id(best_id)
                            score(best_score)
                        else:
                            class_id(None)
                            score(nan)
                        pos += results * _RESULT_SIZE
                        x, y, angle, w, h = box_at(raw, pos)
                        pos += _BOX.size
                        tracking_id(track)
                        if kind == 2:
                            detection_seq(detection_header_seq)
                        cx(x)
                        cy(y)
                        theta(angle)
                        width(w)
                        height(h)
                    if pos != len(raw):
                        raise ValueError(f"message of {len(raw)} bytes ends after {pos} bytes")
                else:
                    img_sec(msg.img_stamp_secs)
                    img_nsec(msg.img_stamp_nsecs)
                    items = msg.detections if kind == 1 else msg.tracked_detections
                    count(len(items))
                    for item in items:
                        detection = item.detection_msg
                        tracking_id(item.tracking_id)
                        if kind == 2:
                            detection_seq(detection.header.seq if has_seq else None)
                        hypotheses = detection.results
                        if hypotheses:
                            best = hypotheses[0]
                            class_id(best.id)
                            score(best.score)
                        else:
                            class_id(None)
                            score(nan)
                        bbox = detection.bbox
                        center = bbox.center
                        cx(center.x)
                        cy(center.y)
                        theta(center.theta)
                        width(bbox.size_x)
                        height(bbox.size_y)

            messages += 1
            in_batch += 1
            bytes_read += len(raw)
            self.messages_read = messages
            if in_batch >= self.batch_messages:
                batches = self._flush()
                columns = self._columns
                seq_lists, bag_ns_lists, sec_lists, nsec_lists, data_len, detection_seq, per_kind = (
                    columns.appenders()
                )
                in_batch = 0
                next_tick_messages, next_tick_bytes = messages + TICK_MESSAGES, bytes_read + TICK_BYTES
                yield ReadTick(messages, bytes_read, batches)
            elif messages >= next_tick_messages or bytes_read >= next_tick_bytes:
                yield ReadTick(messages, bytes_read)
                next_tick_messages, next_tick_bytes = messages + TICK_MESSAGES, bytes_read + TICK_BYTES
        yield ReadTick(messages, bytes_read, self._flush())

    def _flush(self) -> dict[str, pa.RecordBatch]:
        """The collected rows as record batches; collection restarts with empty columns."""
        batches = self._columns.build(self.name)
        self._columns = _Columns()
        for table, batch in batches.items():
            self.counts[table] += batch.num_rows
        return batches


def _limit_chunks(reader: AnyReader, bag: str, limit: int) -> None:
    """Refuse a ROS1 bag holding a chunk over ``limit`` bytes; make every other chunk decompress within its size.

    Safe because of how rosbags reads a ROS1 bag: ``open`` reads the index and the chunk headers only, never
    a chunk's data, and ``messages`` later decompresses a chunk through the ``decompressor`` of its entry in
    ``Reader.chunks``, which holds one entry per indexed chunk (a chunk the index does not name is never
    read). Checking every entry right after ``open`` and replacing its decompressor therefore covers every
    chunk rosbags can decompress, before the first one is. ROS2 bags and MCAP files are read by other
    readers and are not concerned.

    Raises:
        BagReadError: a chunk declares (or stores) more than ``limit`` bytes; the sentence names the bag,
            the chunk, its size and the setting.
    """
    from rosbags.rosbag1 import Reader as Reader1
    from rosbags.rosbag1.reader import Header, RecordType

    for sub in reader.readers:
        if not isinstance(sub, Reader1) or sub.bio is None:
            continue
        limited = {}
        for position, chunk in sub.chunks.items():
            # rosbags keeps where a chunk's data is but not the size its header declares: read the header again
            sub.bio.seek(position)
            header = Header.read(sub.bio, RecordType.CHUNK)
            declared = header.get_uint32("size")
            where = f"{bag}: the chunk at byte {position:,}"
            setting = (f"max_chunk_bytes = {limit:,} ([limits] max_chunk_bytes, RUNTOOL_MAX_CHUNK_BYTES); "
                       "nothing was decompressed")
            if declared > limit:
                raise BagReadError(f"{where} declares {declared:,} bytes uncompressed, more than {setting}.")
            if chunk.datasize > limit:
                raise BagReadError(f"{where} stores {chunk.datasize:,} bytes, more than {setting}.")
            decompress = partial(_decompress_within, compression=header.get_string("compression"),
                                 declared=declared, where=where)
            limited[position] = chunk._replace(decompressor=decompress)
        sub.chunks = limited


def _decompress_within(data: bytes, *, compression: str, declared: int, where: str) -> bytes:
    """A chunk's data decompressed as rosbags does it, but never to more than the ``declared`` bytes.

    The declared size passed :func:`_limit_chunks`, so a chunk whose data holds more (a bomb that understates
    its size) costs at most that much memory before it is refused.
    """
    if compression == "bz2":
        result = _bz2_within(data, declared)
    elif compression == "lz4":
        result = _lz4_within(data, declared)
    else:  # "none": rosbags refuses any other compression when it opens the bag
        result = data if len(data) <= declared else None
    if result is None:
        raise BagReadError(f"{where} decompresses to more than the {declared:,} bytes it declares; "
                           "it was not decompressed further.")
    return result


def _bz2_within(data: bytes, limit: int) -> bytes | None:
    """``bz2.decompress(data)`` (every concatenated stream, as rosbags reads them), or None past ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    while data:
        decompressor = bz2.BZ2Decompressor()
        try:
            part = decompressor.decompress(data, limit + 1 - size)
        except OSError:
            if parts:
                break  # trailing bytes that start no stream: bz2.decompress ignores them, and so does this
            raise
        size += len(part)
        if size > limit:
            return None
        parts.append(part)
        if not decompressor.eof:
            raise ValueError("the chunk's bzip2 data ends before its end-of-stream marker")
        data = decompressor.unused_data
    return b"".join(parts)


def _lz4_within(data: bytes, limit: int) -> bytes | None:
    """``lz4.frame.decompress(data)`` (the first frame, as rosbags reads it), or None past ``limit`` bytes."""
    decompressor = LZ4FrameDecompressor()
    result: bytes = decompressor.decompress(data, max_length=limit + 1)
    if len(result) > limit:
        return None
    if not decompressor.eof:
        raise ValueError("the chunk's LZ4 frame ends before its end mark")
    return result


def _prefetch(path: Path) -> None:
    """Ask the kernel to read the bag ahead in the background.

    The pass reads chunk by chunk and decodes in between; without this, a bag that is not in the page cache
    costs disk time plus decoding time, with it mostly the larger of the two. Only a hint: platforms without
    ``posix_fadvise`` and files that cannot be opened here (the reader reports those) are left alone.
    """
    if not hasattr(os, "posix_fadvise"):
        return
    for file in (item for item in path.rglob("*") if item.is_file()) if path.is_dir() else (path,):
        try:
            descriptor = os.open(file, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(descriptor)


def _size(path: Path) -> int:
    """Bytes on disk: the file, or every file of a ROS2 bag folder."""
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size
