"""Tests for the synthetic ROS1 bag writer (read back with rosbags' AnyReader, no type registration)."""

from __future__ import annotations

import io
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from rosbags.highlevel import AnyReader

from runtool.demo import bags
from runtool.demo.bags import (
    CAMERA_TOPIC,
    DETECTION_TOPIC,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    TRACK_TOPIC,
    BagProfile,
    BagSummary,
    tiny_jpeg,
    write_bag,
    yolo_label_lines,
)

START_NS = 1_717_000_000_123_456_789
FIRST_SEQ = 1000
TRACK_ID_START = 500
NS = 1_000_000_000


@dataclass
class Recorded:
    """Everything read back from one bag."""

    start_time: int
    end_time: int
    msgtypes: dict[str, str]
    counts: dict[str, int]
    # per topic, in bag order: (receive time, message)
    messages: dict[str, list[tuple[int, Any]]] = field(default_factory=lambda: defaultdict(list))


def stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * NS + int(stamp.nanosec)


def img_stamp_ns(msg: Any) -> int:
    return int(msg.img_stamp_secs) * NS + int(msg.img_stamp_nsecs)


def box_keys(elements: list[Any]) -> list[tuple[float, float, float, float]]:
    """Sorted (cx, cy, w, h) of TrackedDetection elements."""
    boxes = [e.detection_msg.bbox for e in elements]
    return sorted((b.center.x, b.center.y, b.size_x, b.size_y) for b in boxes)


def read_bag(path: Path) -> Recorded:
    with AnyReader([path]) as reader:
        rec = Recorded(
            start_time=reader.start_time,
            end_time=reader.end_time,
            msgtypes={c.topic: c.msgtype for c in reader.connections},
            counts={c.topic: c.msgcount for c in reader.connections},
        )
        for conn, ts, raw in reader.messages():
            rec.messages[conn.topic].append((ts, reader.deserialize(raw, conn.msgtype)))
    return rec


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[BagSummary, Recorded]:
    path = tmp_path_factory.mktemp("bags") / "run_0.bag"
    summary = write_bag(
        path,
        START_NS,
        12.0,
        np.random.default_rng(7),
        first_seq=FIRST_SEQ,
        track_id_start=TRACK_ID_START,
    )
    return summary, read_bag(path)


def test_topics_types_and_counts(written: tuple[BagSummary, Recorded]) -> None:
    summary, rec = written
    assert rec.msgtypes == {
        CAMERA_TOPIC: "sensor_msgs/msg/CompressedImage",
        DETECTION_TOPIC: "weed_detection_msgs/msg/DetectionArray",
        TRACK_TOPIC: "multi_object_tracking_msgs/msg/TrackArray",
    }
    assert rec.counts[CAMERA_TOPIC] == len(rec.messages[CAMERA_TOPIC]) == summary.frames
    assert rec.counts[DETECTION_TOPIC] == len(rec.messages[DETECTION_TOPIC]) == summary.detections
    assert rec.counts[TRACK_TOPIC] == len(rec.messages[TRACK_TOPIC]) == summary.tracks
    assert summary.detections == summary.frames == summary.tracks
    n_boxes = sum(len(m.detections) for _, m in rec.messages[DETECTION_TOPIC])
    n_tracked = sum(len(m.tracked_detections) for _, m in rec.messages[TRACK_TOPIC])
    assert n_boxes == n_tracked == summary.objects
    # about mean_objects (4) weeds in view per frame, minus the occasional misses
    assert 2.5 < summary.objects / summary.frames < 5.5


def test_bag_time_range_matches_summary(written: tuple[BagSummary, Recorded]) -> None:
    summary, rec = written
    assert (rec.start_time, rec.end_time) == (summary.start_ns, summary.end_ns)
    assert START_NS <= summary.start_ns < START_NS + NS // 10
    assert START_NS + 11 * NS < summary.end_ns < START_NS + 13 * NS


def test_receive_time_is_stamp_plus_small_delay(written: tuple[BagSummary, Recorded]) -> None:
    _, rec = written
    for topic in (CAMERA_TOPIC, DETECTION_TOPIC, TRACK_TOPIC):
        delays = [ts - stamp_ns(m.header.stamp) for ts, m in rec.messages[topic]]
        assert min(delays) > 0
        assert max(delays) < 10_000_000, topic  # < 10 ms
        times = [ts for ts, _ in rec.messages[topic]]
        assert times == sorted(times)


def test_header_seqs_consecutive(written: tuple[BagSummary, Recorded]) -> None:
    summary, rec = written
    for topic in (CAMERA_TOPIC, DETECTION_TOPIC, TRACK_TOPIC):
        seqs = [m.header.seq for _, m in rec.messages[topic]]
        assert seqs == list(range(FIRST_SEQ, FIRST_SEQ + len(seqs))), topic
        assert summary.next_seq == FIRST_SEQ + len(seqs)


def test_frame_stamps_match_summary_and_rate(written: tuple[BagSummary, Recorded]) -> None:
    summary, rec = written
    stamps = [stamp_ns(m.header.stamp) for _, m in rec.messages[CAMERA_TOPIC]]
    assert tuple(stamps) == summary.frame_stamps_ns
    diffs = np.diff(np.array(stamps)) / 1e9
    assert diffs.min() > 0
    assert np.median(diffs) == pytest.approx(1 / 30, abs=0.0015)
    # 12 s at 30 fps minus ~2 % drops
    assert 340 <= len(stamps) <= 360
    assert len(stamps) / 12.0 == pytest.approx(30.0, rel=0.05)


def test_drops_leave_gaps(tmp_path: Path) -> None:
    summary = write_bag(
        tmp_path / "d.bag", START_NS, 10.0, np.random.default_rng(3), BagProfile(drop_rate=0.2, jitter_s=0.0)
    )
    diffs = np.diff(np.array(summary.frame_stamps_ns)) / 1e9
    gaps = int(np.sum(diffs > 1.5 / 30))
    assert 0.1 * summary.frames < gaps < 0.3 * summary.frames
    assert summary.frames == pytest.approx(300 * 0.8, rel=0.1)
    # without jitter every interval is a whole number of frame periods
    assert np.allclose(diffs * 30, np.round(diffs * 30), atol=1e-6)


def test_detection_latency(written: tuple[BagSummary, Recorded]) -> None:
    summary, rec = written
    frame_set = set(summary.frame_stamps_ns)
    latencies_ms = []
    for _, m in rec.messages[DETECTION_TOPIC]:
        img = img_stamp_ns(m)
        assert img in frame_set
        latencies_ms.append((stamp_ns(m.header.stamp) - img) / 1e6)
    lat = np.array(latencies_ms)
    assert sorted(img_stamp_ns(m) for _, m in rec.messages[DETECTION_TOPIC]) == list(summary.frame_stamps_ns)
    normal = lat[lat < 150]
    assert normal.min() >= 20.0
    assert normal.max() <= 80.1
    assert 40 < normal.mean() < 60  # spread over the range, not stuck at one end
    outliers = lat[lat >= 150]
    assert len(outliers) <= 0.05 * len(lat)
    assert np.all((outliers >= 200) & (outliers <= 600.1))


def test_outlier_share_follows_profile(tmp_path: Path) -> None:
    profile = BagProfile(outlier_rate=0.2)
    summary = write_bag(tmp_path / "o.bag", START_NS, 10.0, np.random.default_rng(11), profile)
    rec = read_bag(summary.path)
    dets = [m for _, m in rec.messages[DETECTION_TOPIC]]
    lat = np.array([(stamp_ns(m.header.stamp) - img_stamp_ns(m)) / 1e6 for m in dets])
    share = float(np.mean(lat >= 200))
    assert 0.12 < share < 0.28
    assert np.all((lat >= 20) & (lat <= 600.1))
    assert not np.any((lat > 80.1) & (lat < 200))


def test_tracks_follow_detections(written: tuple[BagSummary, Recorded]) -> None:
    _, rec = written
    dets_by_seq = {m.header.seq: m for _, m in rec.messages[DETECTION_TOPIC]}
    for _, t in rec.messages[TRACK_TOPIC]:
        if not t.tracked_detections:
            continue
        linked = {td.detection_msg.header.seq for td in t.tracked_detections}
        assert len(linked) == 1
        det = dets_by_seq[linked.pop()]
        assert img_stamp_ns(det) == img_stamp_ns(t)
        delay_ms = (stamp_ns(t.header.stamp) - stamp_ns(det.header.stamp)) / 1e6
        assert 0 < delay_ms < 15
        assert len(det.detections) == len(t.tracked_detections)
        assert box_keys(det.detections) == box_keys(t.tracked_detections)


def test_tracking_ids(written: tuple[BagSummary, Recorded]) -> None:
    summary, rec = written
    raw_ids = {d.tracking_id for _, m in rec.messages[DETECTION_TOPIC] for d in m.detections}
    assert raw_ids == {-1}

    frames_by_id: dict[int, list[int]] = defaultdict(list)
    frame_index = {s: i for i, s in enumerate(summary.frame_stamps_ns)}
    first_seen: list[int] = []
    for _, t in sorted(rec.messages[TRACK_TOPIC], key=lambda x: img_stamp_ns(x[1])):
        ids = [td.tracking_id for td in t.tracked_detections]
        assert len(ids) == len(set(ids))  # one box per object per frame
        for tid in ids:
            if tid not in frames_by_id:
                first_seen.append(tid)
            frames_by_id[tid].append(frame_index[img_stamp_ns(t)])

    assert min(frames_by_id) >= TRACK_ID_START
    assert max(frames_by_id) < summary.next_track_id
    # ids are handed out in order of appearance (ties within a frame aside)
    assert sum(a > b for a, b in itertools.pairwise(first_seen)) <= 2
    # weeds stay in view for tens of frames, and leave again
    lifetimes = [max(f) - min(f) + 1 for f in frames_by_id.values()]
    assert 15 < float(np.median(lifetimes)) < 100
    assert max(lifetimes) <= 100
    # they are occasionally missed for a few frames, never for long
    gaps = [b - a for f in frames_by_id.values() for a, b in itertools.pairwise(f)]
    assert max(gaps) <= 8
    assert any(g > 1 for g in gaps)


def test_detection_contents(written: tuple[BagSummary, Recorded]) -> None:
    _, rec = written
    scores, classes = [], set()
    for _, m in rec.messages[DETECTION_TOPIC]:
        for d in m.detections:
            dm = d.detection_msg
            assert dm.header.seq == m.header.seq
            assert len(dm.results) == 1
            scores.append(dm.results[0].score)
            classes.add(dm.results[0].id)
            b = dm.bbox
            assert 0 < b.size_x < IMAGE_WIDTH and 0 < b.size_y < IMAGE_HEIGHT
            assert -10 < b.center.x < IMAGE_WIDTH + 10
            assert -10 < b.center.y < IMAGE_HEIGHT + 10
            assert b.center.theta == 0.0
    assert min(scores) > 0.3 and max(scores) < 1.0
    assert np.std(scores) > 0.05
    assert classes == {0, 1, 2}


def test_frames_are_jpegs(written: tuple[BagSummary, Recorded]) -> None:
    _, rec = written
    payloads = set()
    for _, m in rec.messages[CAMERA_TOPIC]:
        assert m.format == "jpeg"
        data = bytes(m.data)
        assert data.startswith(b"\xff\xd8") and data.endswith(b"\xff\xd9")
        payloads.add(data)
    assert len(payloads) > 1
    with Image.open(io.BytesIO(next(iter(payloads)))) as img:
        assert img.format == "JPEG"
        assert img.size == (16, 12)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = write_bag(tmp_path / "a.bag", START_NS, 3.0, np.random.default_rng(42))
    b = write_bag(tmp_path / "b.bag", START_NS, 3.0, np.random.default_rng(42))
    c = write_bag(tmp_path / "c.bag", START_NS, 3.0, np.random.default_rng(43))
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.path.read_bytes() != c.path.read_bytes()
    assert a.frame_stamps_ns == b.frame_stamps_ns
    assert (a.objects, a.end_ns) == (b.objects, b.end_ns)


def test_chained_bags_continue_seq_and_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    first = write_bag(tmp_path / "0.bag", START_NS, 2.0, rng, first_seq=10, track_id_start=3)
    second = write_bag(
        tmp_path / "1.bag",
        first.end_ns,
        2.0,
        rng,
        first_seq=first.next_seq,
        track_id_start=first.next_track_id,
    )
    assert first.end_ns <= second.start_ns
    rec = read_bag(second.path)
    assert rec.messages[CAMERA_TOPIC][0][1].header.seq == first.next_seq
    ids = {td.tracking_id for _, t in rec.messages[TRACK_TOPIC] for td in t.tracked_detections}
    assert min(ids) >= first.next_track_id
    assert first.next_track_id > 3


def test_compressed_bag_reads_back(tmp_path: Path) -> None:
    summary = write_bag(tmp_path / "z.bag", START_NS, 2.0, np.random.default_rng(1), compression="lz4")
    plain = write_bag(tmp_path / "p.bag", START_NS, 2.0, np.random.default_rng(1))
    assert summary.path.stat().st_size < plain.path.stat().st_size
    rec = read_bag(summary.path)
    assert len(rec.messages[TRACK_TOPIC]) == summary.tracks
    assert [stamp_ns(m.header.stamp) for _, m in rec.messages[CAMERA_TOPIC]] == list(summary.frame_stamps_ns)


def test_refuses_existing_and_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.bag"
    write_bag(path, START_NS, 1.0, np.random.default_rng(0))
    with pytest.raises(FileExistsError):
        write_bag(path, START_NS, 1.0, np.random.default_rng(0))

    def boom(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(bags.Writer, "write", boom)
    broken = tmp_path / "broken.bag"
    with pytest.raises(RuntimeError, match="disk full"):
        write_bag(broken, START_NS, 1.0, np.random.default_rng(0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bag"]


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_bag(tmp_path / "a.bag", START_NS, 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError):
        BagProfile(fps=0.0)
    with pytest.raises(ValueError):
        BagProfile(latency_ms=(80.0, 20.0))


def test_twenty_second_bag_holds_about_thirty_fps(tmp_path: Path) -> None:
    summary = write_bag(tmp_path / "long.bag", START_NS, 20.0, np.random.default_rng(0))
    assert 550 < summary.frames <= 600


def test_tiny_jpeg_decodes() -> None:
    rng = np.random.default_rng(9)
    data = tiny_jpeg(rng)
    assert data[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.size == (16, 12)
        assert img.mode == "RGB"
    assert tiny_jpeg(np.random.default_rng(9)) == data


@pytest.mark.parametrize("n", [0, 1, 7])
def test_yolo_label_lines(n: int) -> None:
    text = yolo_label_lines(np.random.default_rng(n), n)
    if n == 0:
        assert text == ""
        return
    lines = text.splitlines()
    assert len(lines) == n
    for line in lines:
        parts = line.split()
        assert len(parts) == 5
        assert parts[0] in {"0", "1", "2"}
        cx, cy, w, h = (float(p) for p in parts[1:])
        for p, v in zip(parts[1:], (cx, cy, w, h), strict=True):
            assert 0.0 <= v <= 1.0
            assert len(p.split(".")[1]) == 6
        assert w > 0 and h > 0
        assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6
        assert cy - h / 2 >= -1e-6 and cy + h / 2 <= 1 + 1e-6
