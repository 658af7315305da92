"""Bag fixtures for the extraction tests: demo runs from the demo writer, hand-made bags, damaged copies."""

from __future__ import annotations

import bz2
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from lz4.frame import LZ4FrameCompressor
from rosbags.rosbag1 import Reader as Reader1
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2 import Writer as Writer2
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from runtool.demo.bags import CAMERA_TOPIC, DETECTION_TOPIC, BagSummary, write_bag
from runtool.models import RunCoordinate

COORD = RunCoordinate("client_001", "region_01", "field_001", "TW_001", "LB_0001", "2025_08_25T08:59:38Z")
START_NS = 1_756_112_397_000_000_000  # 2025-08-25T08:59:57Z
NS = 1_000_000_000

# The robot's message shapes, written out independently of the demo writer (legacy-dashboard.md §3.2).
_DEFINITIONS = {
    "vision_msgs/msg/BoundingBox2D": "geometry_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": "int64 id\nfloat64 score\ngeometry_msgs/PoseWithCovariance pose\n",
    "vision_msgs/msg/Detection2D": "std_msgs/Header header\nObjectHypothesisWithPose[] results\nBoundingBox2D bbox\n",
    "weed_detection_msgs/msg/TrackedDetection": "int32 tracking_id\nvision_msgs/Detection2D detection_msg\n",
    "weed_detection_msgs/msg/DetectionArray": (
        "std_msgs/Header header\nuint32 img_stamp_secs\nuint32 img_stamp_nsecs\nTrackedDetection[] detections\n"
    ),
    # a later revision of the detection message with one more field: same topic, another layout
    "weed_detection_msgs/msg/DetectionArrayV2": (
        "std_msgs/Header header\nuint32 img_stamp_secs\nuint32 img_stamp_nsecs\nstring model\n"
        "TrackedDetection[] detections\n"
    ),
}
IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
DETECTION_TYPE = "weed_detection_msgs/msg/DetectionArray"
DETECTION_TYPE_V2 = "weed_detection_msgs/msg/DetectionArrayV2"


@dataclass(frozen=True)
class DemoRun:
    """Bags written by the demo writer, with what the writer says it put in."""

    folder: Path
    summaries: tuple[BagSummary, ...]
    first_seqs: tuple[int, ...]
    track_id_starts: tuple[int, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(summary.path.stem for summary in self.summaries)


def bag_file_name(start_ns: int, index: int) -> str:
    return f"rosbag_{datetime.fromtimestamp(start_ns / NS, UTC):%Y-%m-%d-%H-%M-%S}_{index}.bag"


def write_demo_run(folder: Path, bags: int = 3, duration_s: float = 10.0, seed: int = 7) -> DemoRun:
    """Consecutive bags of one recording: seq and track ids continue from bag to bag, as on the robot."""
    rng = np.random.default_rng(seed)
    summaries, seqs, track_ids = [], [], []
    seq, track_id = 1000, 500
    for index in range(bags):
        start = START_NS + int(index * (duration_s + 1.0) * NS)
        seqs.append(seq)
        track_ids.append(track_id)
        summary = write_bag(folder / bag_file_name(start, index), start, duration_s, rng, first_seq=seq,
                            track_id_start=track_id)
        summaries.append(summary)
        seq, track_id = summary.next_seq, summary.next_track_id
    return DemoRun(folder, tuple(summaries), tuple(seqs), tuple(track_ids))


def copy_run(run: DemoRun, folder: Path) -> DemoRun:
    """The same bags in another folder (tests damage or add bags without touching the shared ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    summaries = []
    for summary in run.summaries:
        target = folder / summary.path.name
        shutil.copyfile(summary.path, target)
        summaries.append(BagSummary(**{**summary.__dict__, "path": target}))
    return DemoRun(folder, tuple(summaries), run.first_seqs, run.track_id_starts)


def truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def garble_middle(path: Path, length: int = 20_000, seed: int = 3) -> None:
    """Overwrite ``length`` bytes in the middle of the file with random bytes (the size stays the same)."""
    garbage = np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8).tobytes()
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        handle.write(garbage)


def _ros1_store() -> Any:
    store = get_typestore(Stores.ROS1_NOETIC)
    types: dict[str, Any] = {}
    for name, text in _DEFINITIONS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


@dataclass(frozen=True)
class Element:
    """One detection element to write: ``results`` is a list of (class id, score), possibly empty."""

    tracking_id: int
    results: tuple[tuple[int, float], ...]
    box: tuple[float, float, float, float, float] = (100.0, 200.0, 0.0, 30.0, 40.0)


def write_ros1_bag(
    path: Path,
    frames: int,
    detections: dict[int, list[Element]] | None = None,
    image_topic: str = CAMERA_TOPIC,
    detection_topic: str = DETECTION_TOPIC,
    start_ns: int = START_NS,
    revised_detections: bool = False,
) -> list[int]:
    """A ROS1 bag with ``frames`` images and, for the frame indexes in ``detections``, a detection message.

    There is no tracking topic at all. ``revised_detections`` writes the detection messages with the
    ``DetectionArrayV2`` definition (one more field, so another wire layout and md5sum). Returns the frame
    stamps (ns); frames are 100 ms apart and each detection message is stamped 30 ms after its frame.
    """
    store = _ros1_store()
    types = store.types
    Time, Header = types["builtin_interfaces/msg/Time"], types["std_msgs/msg/Header"]
    zero_pose = types["geometry_msgs/msg/PoseWithCovariance"](
        pose=types["geometry_msgs/msg/Pose"](
            position=types["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
            orientation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        ),
        covariance=np.zeros(36, dtype=np.float64),
    )
    detections = detections or {}
    stamps = [start_ns + i * 100_000_000 for i in range(frames)]
    writer = Writer1(path)
    with writer:
        image_conn = writer.add_connection(image_topic, IMAGE_TYPE, typestore=store)
        det_type = DETECTION_TYPE_V2 if revised_detections else DETECTION_TYPE
        det_conn = writer.add_connection(detection_topic, det_type, typestore=store) if detections else None
        det_seq = 0
        for i, stamp in enumerate(stamps):
            sec, nsec = divmod(stamp, NS)
            header = Header(seq=i, stamp=Time(sec=sec, nanosec=nsec), frame_id="cam")
            image = types[IMAGE_TYPE](header=header, format="jpeg", data=np.frombuffer(b"\xff\xd8jpeg", np.uint8))
            writer.write(image_conn, stamp + 1_000_000, store.serialize_ros1(image, IMAGE_TYPE))
            if i in detections and det_conn is not None:
                d_sec, d_nsec = divmod(stamp + 30_000_000, NS)
                d_header = Header(seq=det_seq, stamp=Time(sec=d_sec, nanosec=d_nsec), frame_id="cam")
                elements = [
                    types["weed_detection_msgs/msg/TrackedDetection"](
                        tracking_id=element.tracking_id,
                        detection_msg=types["vision_msgs/msg/Detection2D"](
                            header=d_header,
                            results=[
                                types["vision_msgs/msg/ObjectHypothesisWithPose"](id=c, score=s, pose=zero_pose)
                                for c, s in element.results
                            ],
                            bbox=types["vision_msgs/msg/BoundingBox2D"](
                                center=types["geometry_msgs/msg/Pose2D"](
                                    x=element.box[0], y=element.box[1], theta=element.box[2]
                                ),
                                size_x=element.box[3],
                                size_y=element.box[4],
                            ),
                        ),
                    )
                    for element in detections[i]
                ]
                extra = {"model": "yolo-v9"} if revised_detections else {}
                message = types[det_type](header=d_header, img_stamp_secs=sec, img_stamp_nsecs=nsec,
                                          detections=elements, **extra)
                writer.write(det_conn, stamp + 31_000_000, store.serialize_ros1(message, det_type))
                det_seq += 1
    return stamps


def write_ros2_bag(folder: Path, frames: int, start_ns: int = START_NS) -> list[int]:
    """A ROS2 bag folder (MCAP storage) with only camera frames; returns their stamps (ns)."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    stamps = [start_ns + i * 50_000_000 for i in range(frames)]
    writer = Writer2(folder, version=9, storage_plugin=StoragePlugin.MCAP)
    with writer:
        conn = writer.add_connection(CAMERA_TOPIC, IMAGE_TYPE, typestore=store)
        for stamp in stamps:
            sec, nsec = divmod(stamp, NS)
            header = types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec),
                                                  frame_id="cam")
            image = types[IMAGE_TYPE](header=header, format="jpeg", data=np.frombuffer(b"\xff\xd8jpeg", np.uint8))
            writer.write(conn, stamp + 2_000_000, store.serialize_cdr(image, IMAGE_TYPE))
    return stamps


def seconds(stamp_ns: int) -> float:
    """The extractor's formula for one stamp: ``secs + nsecs / 1e9``."""
    sec, nsec = divmod(stamp_ns, NS)
    return sec + nsec / 1e9


def write_image_bag(
    path: Path,
    payloads: list[bytes],
    compression: str | None = None,
    compressor: Callable[[bytes], bytes] | None = None,
) -> None:
    """A ROS1 bag with one camera frame per payload (100 ms apart), in one chunk unless the payloads are large.

    ``compressor`` replaces the writer's own for ``compression``: the chunk header still declares the size of
    the real chunk, while its data is whatever ``compressor`` returns (a bomb, or the right bytes packed
    another way).
    """
    store = _ros1_store()
    types = store.types
    writer = Writer1(path)
    if compression is not None:
        writer.set_compression(Writer1.CompressionFormat[compression.upper()])
    if compressor is not None:
        writer.compressor = compressor
    with writer:
        connection = writer.add_connection(CAMERA_TOPIC, IMAGE_TYPE, typestore=store)
        for i, payload in enumerate(payloads):
            stamp = START_NS + i * 100_000_000
            sec, nsec = divmod(stamp, NS)
            time = types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec)
            header = types["std_msgs/msg/Header"](seq=i, stamp=time, frame_id="cam")
            image = types[IMAGE_TYPE](header=header, format="jpeg", data=np.frombuffer(payload, np.uint8))
            writer.write(connection, stamp + 1_000_000, store.serialize_ros1(image, IMAGE_TYPE))


def declare_chunk_size(path: Path, size: int) -> None:
    """Overwrite the uncompressed size the bag's first chunk header declares (the file keeps its length)."""
    with Reader1(path) as reader:
        position = reader.chunk_infos[0].pos
    with path.open("r+b") as handle:
        handle.seek(position)
        (length,) = struct.unpack("<I", handle.read(4))
        field_at = handle.read(length).index(b"size=") + len(b"size=")
        handle.seek(position + 4 + field_at)
        handle.write(struct.pack("<I", size))


def write_bomb(path: Path, compression: str, data: bytes, declared: int | None = None) -> Path:
    """A one-frame bag whose chunk holds ``data``; it declares ``declared`` bytes, else the real chunk's size."""
    write_image_bag(path, [b"\xff\xd8jpeg"], compression, compressor=lambda _: data)
    if declared is not None:
        declare_chunk_size(path, declared)
    return path


def zeros_bz2(total: int, stream: int = 64 << 20) -> bytes:
    """bzip2 data decompressing to ``total`` zero bytes: one small stream repeated (bz2.decompress reads them all)."""
    if total % stream:
        raise ValueError(f"total must be a multiple of {stream}")
    return bz2.compress(bytes(stream), 9) * (total // stream)


def zeros_lz4(total: int, piece: int = 16 << 20) -> bytes:
    """One LZ4 frame decompressing to ``total`` zero bytes, built piece by piece (never ``total`` in memory)."""
    if total % piece:
        raise ValueError(f"total must be a multiple of {piece}")
    compressor = LZ4FrameCompressor()
    zeros = bytes(piece)
    parts = [compressor.begin()]
    parts += [compressor.compress(zeros) for _ in range(total // piece)]
    parts.append(compressor.flush())
    return b"".join(parts)
