"""Synthetic ROS1 bags that imitate a laser-weeder robot's recordings.

The bags written here are real ROS1 (v2.0) bag files produced with
:mod:`rosbags`. Every connection carries its full message definition and md5sum,
so :class:`rosbags.highlevel.AnyReader` reads them back without any type
registration on the reader's side.

Three topics are recorded (names and fields match what the legacy extractor reads):

``/sensors/triton_camera_feed/compressed`` (``sensor_msgs/CompressedImage``)
    One tiny but valid JPEG per camera frame, ~30 fps with stamp jitter and
    occasional dropped frames (a gap in the stamps; ``header.seq`` stays consecutive).
``/weed_detection/bboxes`` (``weed_detection_msgs/DetectionArray``)
    One message per frame, stamped ``frame stamp + latency`` (latency drawn from
    :attr:`BagProfile.latency_ms`, rare outliers of 200-600 ms), ``img_stamp_*`` is the
    frame stamp, every element has ``tracking_id == -1``.
``/multi_object_tracking/track_bboxes`` (``multi_object_tracking_msgs/TrackArray``)
    One message per detection message, a few ms after it; elements carry the
    object's tracking id and the matched ``vision_msgs/Detection2D`` whose
    ``header`` is the detection message's header (so ``header.seq`` links back).

Each topic's ``header.seq`` is assigned in publish order, starting at ``first_seq``.
Because the detection latency varies by more than a frame period, detection
messages are not always published in frame order; match detections to frames by
``img_stamp_secs``/``img_stamp_nsecs``, not by seq.

The bag receive time of every message (what ``rosbag info`` and the readers report)
is its header stamp plus a small transport delay; messages are written in receive
time order.
"""

from __future__ import annotations

import functools
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image
from rosbags.rosbag1 import Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

__all__ = [
    "CAMERA_TOPIC",
    "DETECTION_TOPIC",
    "IMAGE_HEIGHT",
    "IMAGE_WIDTH",
    "TRACK_TOPIC",
    "BagProfile",
    "BagSummary",
    "tiny_jpeg",
    "write_bag",
    "yolo_label_lines",
]

CAMERA_TOPIC = "/sensors/triton_camera_feed/compressed"
DETECTION_TOPIC = "/weed_detection/bboxes"
TRACK_TOPIC = "/multi_object_tracking/track_bboxes"

#: Nominal camera resolution used for bounding-box pixel coordinates. (The JPEG payload
#: itself is a tiny thumbnail; only the boxes use this coordinate frame.)
IMAGE_WIDTH = 1920
IMAGE_HEIGHT = 1200

_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
_DETECTION_TYPE = "weed_detection_msgs/msg/DetectionArray"
_TRACK_TYPE = "multi_object_tracking_msgs/msg/TrackArray"

# ROS1 noetic vision_msgs 1.x shapes plus the robot's own message packages.
_MSG_DEFINITIONS: dict[str, str] = {
    "vision_msgs/msg/BoundingBox2D": ("geometry_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n"),
    "vision_msgs/msg/ObjectHypothesisWithPose": ("int64 id\nfloat64 score\ngeometry_msgs/PoseWithCovariance pose\n"),
    "vision_msgs/msg/Detection2D": ("std_msgs/Header header\nObjectHypothesisWithPose[] results\nBoundingBox2D bbox\n"),
    "weed_detection_msgs/msg/TrackedDetection": ("int32 tracking_id\nvision_msgs/Detection2D detection_msg\n"),
    _DETECTION_TYPE: (
        "std_msgs/Header header\nuint32 img_stamp_secs\nuint32 img_stamp_nsecs\nTrackedDetection[] detections\n"
    ),
    _TRACK_TYPE: (
        "std_msgs/Header header\n"
        "uint32 img_stamp_secs\n"
        "uint32 img_stamp_nsecs\n"
        "weed_detection_msgs/TrackedDetection[] tracked_detections\n"
    ),
}

# Topic table: (topic, message type, callerid, frame_id).
_TOPICS: tuple[tuple[str, str, str, str], ...] = (
    (CAMERA_TOPIC, _IMAGE_TYPE, "/triton_camera_driver", "triton_camera"),
    (DETECTION_TOPIC, _DETECTION_TYPE, "/weed_detection", "triton_camera"),
    (TRACK_TOPIC, _TRACK_TYPE, "/multi_object_tracking", "triton_camera"),
)

_NS = 1_000_000_000
_MS = 1_000_000
_OUTLIER_LATENCY_MS = (200.0, 600.0)
_TRACK_DELAY_MS = (2.0, 8.0)
_TRANSPORT_DELAY_MS = (0.3, 3.0)
_LIFE_FRAMES = (20, 90)  # frames a weed stays in view
_MISS_PROB = 0.03  # per frame and object: chance a miss streak starts
_MISS_FRAMES = (1, 4)
_N_CLASSES = 3
_JPEG_POOL = 6


@dataclass(frozen=True)
class BagProfile:
    """Knobs of the simulated recording.

    Attributes:
        fps: Camera frame rate.
        drop_rate: Share of camera frames dropped (leaves a gap in the stamps).
        jitter_s: Standard deviation of the camera stamp jitter, seconds.
        latency_ms: Range of the normal detection latency (uniform), milliseconds.
        outlier_rate: Share of detection messages with a big latency (200-600 ms).
        mean_objects: Mean number of weeds in view per frame.
    """

    fps: float = 30.0
    drop_rate: float = 0.02
    jitter_s: float = 0.004
    latency_ms: tuple[float, float] = (20.0, 80.0)
    outlier_rate: float = 0.01
    mean_objects: float = 4.0

    def __post_init__(self) -> None:
        """Validate the knobs."""
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"fps must be positive, got {self.fps}")
        if not 0.0 <= self.drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {self.drop_rate}")
        if self.jitter_s < 0:
            raise ValueError(f"jitter_s must be >= 0, got {self.jitter_s}")
        lo, hi = self.latency_ms
        if not 0.0 <= lo <= hi:
            raise ValueError(f"latency_ms must be an ordered non-negative range, got {self.latency_ms}")
        if not 0.0 <= self.outlier_rate <= 1.0:
            raise ValueError(f"outlier_rate must be in [0, 1], got {self.outlier_rate}")
        if self.mean_objects < 0:
            raise ValueError(f"mean_objects must be >= 0, got {self.mean_objects}")


@dataclass(frozen=True)
class BagSummary:
    """What :func:`write_bag` wrote.

    Attributes:
        path: The bag file.
        start_ns: Receive time of the first message (equals ``AnyReader.start_time``).
        end_ns: Receive time of the last message + 1 ns (equals ``AnyReader.end_time``).
        frames: Camera messages written.
        detections: Detection messages written (one per frame).
        tracks: Tracking messages written (one per detection message).
        objects: Total detections (bounding boxes) over all detection messages.
        next_seq: ``first_seq`` for a following bag of the same recording.
        next_track_id: ``track_id_start`` for a following bag of the same recording.
        frame_stamps_ns: Header stamps of the camera frames, in order.
    """

    path: Path
    start_ns: int
    end_ns: int
    frames: int
    detections: int
    tracks: int
    objects: int
    next_seq: int
    next_track_id: int
    frame_stamps_ns: tuple[int, ...] = field(repr=False)


@dataclass
class _Weed:
    """A weed passing through the camera's view (internal)."""

    track_id: int
    cls: int
    birth: int  # nominal frame index of entry
    life: int  # frames in view
    x0: float
    drift: float
    width: float
    height: float
    score: float
    miss_left: int = 0


@functools.cache
def _typestore() -> Typestore:
    """ROS1 noetic typestore with the robot's custom message types registered."""
    store = get_typestore(Stores.ROS1_NOETIC)
    typs: dict[str, Any] = {}
    for name, text in _MSG_DEFINITIONS.items():
        typs.update(get_types_from_msg(text, name))
    store.register(typs)
    return store


@functools.cache
def _msgdefs() -> dict[str, tuple[str, str]]:
    """(message definition, md5sum) per recorded message type."""
    store = _typestore()
    return {typ: store.generate_msgdef(typ) for _, typ, _, _ in _TOPICS}


def tiny_jpeg(rng: np.random.Generator) -> bytes:
    """Encode a 16x12 px soil-and-leaves noise image as JPEG.

    Args:
        rng: Source of randomness (the image content varies with it).

    Returns:
        The JPEG file bytes (starting with ``b'\\xff\\xd8'``).
    """
    base = np.array([96.0, 78.0, 52.0]) + rng.normal(0.0, 6.0, 3)  # soil brown
    pixels = base + rng.normal(0.0, 14.0, (12, 16, 3))
    # a couple of green blobs
    yy, xx = np.mgrid[0:12, 0:16]
    for _ in range(int(rng.integers(1, 4))):
        cy, cx, r = rng.uniform(0, 12), rng.uniform(0, 16), rng.uniform(1.5, 3.5)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        pixels[mask] = np.array([60.0, 150.0, 50.0]) + rng.normal(0.0, 10.0, 3)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def yolo_label_lines(rng: np.random.Generator, n: int) -> str:
    """Make ``n`` YOLO label lines ``class cx cy w h`` (normalised, 6 decimals).

    Boxes lie fully inside the image; classes are in ``0..2``.

    Args:
        rng: Source of randomness.
        n: Number of lines.

    Returns:
        The label file text, one line per box with a trailing newline; ``''`` for ``n == 0``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return ""
    cls = rng.integers(0, _N_CLASSES, n)
    w = rng.uniform(0.02, 0.25, n)
    h = rng.uniform(0.02, 0.25, n)
    cx = w / 2 + rng.random(n) * (1.0 - w)
    cy = h / 2 + rng.random(n) * (1.0 - h)
    rows = zip(cls.tolist(), cx.tolist(), cy.tolist(), w.tolist(), h.tolist(), strict=True)
    return "".join(f"{c} {x:.6f} {y:.6f} {ww:.6f} {hh:.6f}\n" for c, x, y, ww, hh in rows)


def _monotonic(raw: np.ndarray, eps: int) -> np.ndarray:
    """Smallest sequence ``t`` with ``t >= raw`` and ``t[i] >= t[i-1] + eps`` (int64 ns)."""
    if raw.size == 0:
        return raw
    steps = np.arange(raw.size, dtype=np.int64) * eps
    return np.maximum.accumulate(raw - steps) + steps


def _uniform_ns(rng: np.random.Generator, lo_ms: float, hi_ms: float, n: int) -> np.ndarray:
    """``n`` uniform durations in ``[lo_ms, hi_ms]`` as int64 nanoseconds."""
    return np.rint(rng.uniform(lo_ms, hi_ms, n) * _MS).astype(np.int64)


def _spawn(rng: np.random.Generator, track_id: int, birth: int, life: int) -> _Weed:
    """Create a weed entering the view at nominal frame ``birth``."""
    width = float(rng.uniform(40.0, 180.0))
    return _Weed(
        track_id=track_id,
        cls=int(rng.integers(0, _N_CLASSES)),
        birth=birth,
        life=life,
        x0=float(rng.uniform(width, IMAGE_WIDTH - width)),
        drift=float(rng.normal(0.0, 25.0)),
        width=width,
        height=width * float(rng.uniform(0.75, 1.3)),
        score=float(rng.uniform(0.45, 0.95)),
    )


def write_bag(
    path: Path,
    start_ns: int,
    duration_s: float,
    rng: np.random.Generator,
    profile: BagProfile = BagProfile(),
    first_seq: int = 0,
    track_id_start: int = 0,
    *,
    compression: Literal["bz2", "lz4"] | None = None,
) -> BagSummary:
    """Write a synthetic laser-weeder ROS1 bag.

    The camera runs at ``profile.fps`` starting at ``start_ns``; nominal frames at
    ``k / fps < duration_s`` are recorded unless dropped (the first frame is never
    dropped). Detection and tracking messages of the last frames may be received up
    to ~0.6 s after ``start_ns + duration_s``; see :attr:`BagSummary.end_ns`.

    The bag is first written to ``<path>.tmp`` and renamed into place, so a
    half-written bag never appears at ``path``. Output is byte-identical for the
    same ``rng`` state and arguments.

    Args:
        path: Destination ``.bag`` file; must not exist. Parent directories are created.
        start_ns: Nominal stamp of the first camera frame (ns since the epoch).
        duration_s: Nominal recording length in seconds (> 0).
        rng: Source of all randomness.
        profile: Rates, latencies and object density.
        first_seq: ``header.seq`` of each topic's first message.
        track_id_start: First tracking id handed out in this bag.
        compression: Optional chunk compression (``'bz2'`` or ``'lz4'``); none by default.

    Returns:
        A :class:`BagSummary` of what was written.

    Raises:
        FileExistsError: ``path`` exists already.
        ValueError: Bad ``duration_s``, ``start_ns``, ``first_seq`` or ``track_id_start``.
    """
    path = Path(path)
    if not (duration_s > 0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    if start_ns < 0 or first_seq < 0 or track_id_start < 0:
        raise ValueError("start_ns, first_seq and track_id_start must be >= 0")
    if path.exists():
        raise FileExistsError(f"{path} exists already, not overwriting")

    store = _typestore()
    types = store.types
    Time = types["builtin_interfaces/msg/Time"]
    Header = types["std_msgs/msg/Header"]
    CompressedImage = types[_IMAGE_TYPE]
    Pose2D = types["geometry_msgs/msg/Pose2D"]
    BoundingBox2D = types["vision_msgs/msg/BoundingBox2D"]
    Hypothesis = types["vision_msgs/msg/ObjectHypothesisWithPose"]
    Detection2D = types["vision_msgs/msg/Detection2D"]
    TrackedDetection = types["weed_detection_msgs/msg/TrackedDetection"]
    DetectionArray = types[_DETECTION_TYPE]
    TrackArray = types[_TRACK_TYPE]
    # Hypotheses carry no pose; one shared all-zero PoseWithCovariance is serialized for all.
    zero_pose = types["geometry_msgs/msg/PoseWithCovariance"](
        pose=types["geometry_msgs/msg/Pose"](
            position=types["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
            orientation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        ),
        covariance=np.zeros(36, dtype=np.float64),
    )
    serialize = store.serialize_ros1
    frame_id = _TOPICS[0][3]

    # ---- camera timing (nominal frame k at start + k/fps) ---------------------------
    period_s = 1.0 / profile.fps
    n_nominal = max(1, math.ceil(duration_s * profile.fps - 1e-9))
    kept = rng.random(n_nominal) >= profile.drop_rate
    kept[0] = True
    jitter = np.clip(rng.normal(0.0, profile.jitter_s, n_nominal), -0.4 * period_s, 0.4 * period_s)
    nominal_stamps = start_ns + np.rint((np.arange(n_nominal) * period_s + jitter) * _NS).astype(np.int64)
    nominal_stamps[0] = max(int(nominal_stamps[0]), start_ns)
    frame_k = np.flatnonzero(kept)
    frame_stamp = nominal_stamps[frame_k]
    n = int(frame_k.size)

    # ---- detection / tracking timing -------------------------------------------------
    latency = _uniform_ns(rng, profile.latency_ms[0], profile.latency_ms[1], n)
    outlier = rng.random(n) < profile.outlier_rate
    latency[outlier] = _uniform_ns(rng, *_OUTLIER_LATENCY_MS, int(outlier.sum()))
    det_stamp_raw = frame_stamp + latency
    det_order = np.argsort(det_stamp_raw, kind="stable")  # publish order
    det_stamp = np.empty_like(det_stamp_raw)
    det_stamp[det_order] = _monotonic(det_stamp_raw[det_order], 1000)
    det_seq = np.empty(n, dtype=np.int64)
    det_seq[det_order] = first_seq + np.arange(n)
    track_stamp = np.empty_like(det_stamp)
    track_stamp[det_order] = _monotonic(
        det_stamp[det_order] + _uniform_ns(rng, *_TRACK_DELAY_MS, n), 50_000
    )  # the tracker handles detections in arrival order; seq follows det seq

    recv: list[np.ndarray] = []
    for stamps, order in ((frame_stamp, np.arange(n)), (det_stamp, det_order), (track_stamp, det_order)):
        r = np.empty_like(stamps)
        r[order] = _monotonic(stamps[order] + _uniform_ns(rng, *_TRANSPORT_DELAY_MS, n), 10_000)
        recv.append(r)
    img_recv, det_recv, track_recv = recv

    # ---- weeds passing through the view ----------------------------------------------
    mean_life = (_LIFE_FRAMES[0] + _LIFE_FRAMES[1]) / 2.0
    arrival_rate = profile.mean_objects / mean_life
    next_track_id = track_id_start
    alive: list[_Weed] = []
    for _ in range(int(rng.poisson(profile.mean_objects))):  # steady state at bag start
        life = int(rng.integers(_LIFE_FRAMES[0], _LIFE_FRAMES[1] + 1))
        alive.append(_spawn(rng, next_track_id, -int(rng.integers(0, life)), life))
        next_track_id += 1

    jpegs = [tiny_jpeg(rng) for _ in range(_JPEG_POOL)]
    jpeg_arrays = [np.frombuffer(j, dtype=np.uint8) for j in jpegs]
    jpeg_pick = rng.integers(0, _JPEG_POOL, n)

    # (receive time, topic index, seq, serialized bytes)
    records: list[tuple[int, int, int, memoryview]] = []
    objects = 0
    frame_idx = 0
    for k in range(int(frame_k[-1]) + 1):
        for _ in range(int(rng.poisson(arrival_rate))):
            life = int(rng.integers(_LIFE_FRAMES[0], _LIFE_FRAMES[1] + 1))
            alive.append(_spawn(rng, next_track_id, k, life))
            next_track_id += 1
        alive = [w for w in alive if k < w.birth + w.life]
        visible: list[_Weed] = []
        for w in alive:
            if w.miss_left > 0:
                w.miss_left -= 1
            elif rng.random() < _MISS_PROB:
                w.miss_left = int(rng.integers(_MISS_FRAMES[0], _MISS_FRAMES[1] + 1)) - 1
            else:
                visible.append(w)
        if not kept[k]:
            continue
        i = frame_idx
        frame_idx += 1

        f_ns = int(frame_stamp[i])
        f_sec, f_nsec = divmod(f_ns, _NS)
        seq = first_seq + i
        img = CompressedImage(
            header=Header(seq=seq, stamp=Time(sec=f_sec, nanosec=f_nsec), frame_id=frame_id),
            format="jpeg",
            data=jpeg_arrays[int(jpeg_pick[i])],
        )
        records.append((int(img_recv[i]), 0, seq, serialize(img, _IMAGE_TYPE)))

        d_sec, d_nsec = divmod(int(det_stamp[i]), _NS)
        d_seq = int(det_seq[i])
        det_header = Header(seq=d_seq, stamp=Time(sec=d_sec, nanosec=d_nsec), frame_id=frame_id)
        m = len(visible)
        objects += m
        noise = rng.normal(0.0, 1.0, (m, 5))
        prog = [(k - w.birth + 0.5) / w.life for w in visible]
        raw_dets = []
        tracked = []
        for j, w in enumerate(visible):
            p = prog[j]
            nz = noise[j]
            h = w.height * (1.0 + 0.03 * float(nz[3]))
            d2d = Detection2D(
                header=det_header,
                results=[
                    Hypothesis(
                        id=w.cls,
                        score=min(0.99, max(0.31, w.score + 0.04 * float(nz[4]))),
                        pose=zero_pose,
                    )
                ],
                bbox=BoundingBox2D(
                    center=Pose2D(
                        x=w.x0 + w.drift * p + 1.5 * float(nz[0]),
                        y=w.height / 2 + p * (IMAGE_HEIGHT - w.height) + 1.5 * float(nz[1]),
                        theta=0.0,
                    ),
                    size_x=w.width * (1.0 + 0.03 * float(nz[2])),
                    size_y=h,
                ),
            )
            raw_dets.append(TrackedDetection(tracking_id=-1, detection_msg=d2d))
            tracked.append(TrackedDetection(tracking_id=w.track_id, detection_msg=d2d))
        det_msg = DetectionArray(header=det_header, img_stamp_secs=f_sec, img_stamp_nsecs=f_nsec, detections=raw_dets)
        records.append((int(det_recv[i]), 1, d_seq, serialize(det_msg, _DETECTION_TYPE)))

        t_sec, t_nsec = divmod(int(track_stamp[i]), _NS)
        track_msg = TrackArray(
            header=Header(seq=d_seq, stamp=Time(sec=t_sec, nanosec=t_nsec), frame_id=frame_id),
            img_stamp_secs=f_sec,
            img_stamp_nsecs=f_nsec,
            tracked_detections=tracked,
        )
        records.append((int(track_recv[i]), 2, d_seq, serialize(track_msg, _TRACK_TYPE)))

    records.sort(key=lambda r: (r[0], r[1], r[2]))

    # ---- write ------------------------------------------------------------------------
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    msgdefs = _msgdefs()
    try:
        writer = Writer(tmp)
        if compression is not None:
            writer.set_compression(Writer.CompressionFormat[compression.upper()])
        with writer:
            conns = []
            for topic, typ, callerid, _ in _TOPICS:
                msgdef, md5sum = msgdefs[typ]
                conns.append(
                    writer.add_connection(topic, typ, msgdef=msgdef, md5sum=md5sum, callerid=callerid, latching=0)
                )
            write = writer.write
            for stamp, topic_idx, _, data in records:
                write(conns[topic_idx], stamp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

    return BagSummary(
        path=path,
        start_ns=records[0][0],
        end_ns=records[-1][0] + 1,
        frames=n,
        detections=n,
        tracks=n,
        objects=objects,
        next_seq=first_seq + n,
        next_track_id=next_track_id,
        frame_stamps_ns=tuple(int(s) for s in frame_stamp),
    )
