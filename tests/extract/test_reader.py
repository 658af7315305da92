"""BagReader: one pass over the three topics, values as the writer put them, damaged bags as BagReadError."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from rosbags.highlevel import AnyReader

from runtool.config import DEFAULT_TOPICS
from runtool.demo.bags import CAMERA_TOPIC, DETECTION_TOPIC, TRACK_TOPIC
from runtool.extract.reader import TABLE_SCHEMAS, BagReader, BagReadError, ReadTick, find_bags
from tests.extract.bagfiles import (
    DemoRun,
    Element,
    copy_run,
    garble_middle,
    seconds,
    truncate_half,
    write_ros1_bag,
    write_ros2_bag,
)


def read_all(
    path: Path, batch_messages: int = 16_384, topics: dict[str, str] | None = None, fast: bool = True
) -> dict[str, pa.Table]:
    tables: dict[str, list[pa.RecordBatch]] = {table: [] for table in TABLE_SCHEMAS}
    with BagReader(path, topics or DEFAULT_TOPICS, batch_messages, fast=fast) as reader:
        for tick in reader.ticks():
            for table, batch in (tick.batches or {}).items():
                tables[table].append(batch)
    return {table: pa.Table.from_batches(batches, TABLE_SCHEMAS[table]) for table, batches in tables.items()}


def test_one_bag_matches_what_the_writer_wrote(demo_run: DemoRun) -> None:
    summary = demo_run.summaries[0]
    first_seq, track_start = demo_run.first_seqs[0], demo_run.track_id_starts[0]
    tables = {name: table.to_pandas() for name, table in read_all(summary.path).items()}
    frames, detections, tracking = tables["frames"], tables["detections"], tables["tracking"]

    assert (len(frames), len(detections), len(tracking)) == (summary.frames, summary.detections, summary.tracks)
    assert set(frames["bag_file"]) == {summary.path.stem}
    assert frames["seq"].tolist() == list(range(first_seq, first_seq + summary.frames))
    assert frames["header_timestamp_s"].tolist() == [seconds(s) for s in summary.frame_stamps_ns]
    assert frames["has_data"].all()
    assert sorted(detections["image_timestamp_s"]) == [seconds(s) for s in summary.frame_stamps_ns]
    assert sorted(detections["seq"]) == list(range(first_seq, first_seq + summary.detections))
    assert sorted(tracking["seq"]) == sorted(detections["seq"])
    # bag time: the first message is received at start_ns, the last at end_ns - 1
    bag_times = np.concatenate([t["bag_timestamp_s"].to_numpy() for t in (frames, detections, tracking)])
    assert bag_times.min() == seconds(summary.start_ns)
    assert bag_times.max() == seconds(summary.end_ns - 1)
    latency_ms = (detections["header_timestamp_s"] - detections["image_timestamp_s"]) * 1000
    assert latency_ms.between(20 - 0.01, 600 + 0.01).all()  # normal 20-80 ms, outliers 200-600 ms
    assert (tracking["header_timestamp_s"] > tracking["image_timestamp_s"]).all()

    objects, tracked = tables["detection_objects"], tables["tracked_objects"]
    assert len(objects) == len(tracked) == summary.objects == detections["num_detections"].sum()
    assert tracking["num_tracked"].sum() == summary.objects
    assert (objects["tracking_id"] == -1).all()
    assert tracked["tracking_id"].between(track_start, summary.next_track_id - 1).all()
    assert set(tracked["detection_seq"]) <= set(detections["seq"])
    assert (tracked["detection_seq"] == tracked["seq"]).all()  # the writer gives a track the detection's seq
    assert objects["class_id"].between(0, 2).all() and objects["score"].between(0.31, 0.99).all()
    # every object's image stamp is its message's image stamp
    per_message = detections.set_index("seq")["image_timestamp_s"]
    assert (objects["image_timestamp_s"].to_numpy() == per_message.loc[objects["seq"]].to_numpy()).all()


def test_object_values_equal_the_messages(demo_run: DemoRun) -> None:
    """Element order and every box value, against an independent read of the same messages."""
    path = demo_run.summaries[1].path
    expected = []
    with AnyReader([path]) as reader:
        connections = [c for c in reader.connections if c.topic == TRACK_TOPIC]
        for connection, _, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            for element in msg.tracked_detections:
                d = element.detection_msg
                expected.append((msg.header.seq, element.tracking_id, d.header.seq, d.results[0].id,
                                 d.results[0].score, d.bbox.center.x, d.bbox.center.y, d.bbox.center.theta,
                                 d.bbox.size_x, d.bbox.size_y))
    tracked = read_all(path)["tracked_objects"].to_pandas()
    columns = ["seq", "tracking_id", "detection_seq", "class_id", "score", "bbox_cx", "bbox_cy", "bbox_theta",
               "bbox_w", "bbox_h"]
    assert [tuple(row) for row in tracked[columns].itertuples(index=False)] == expected


def assert_same_tables(left: dict[str, pa.Table], right: dict[str, pa.Table]) -> None:
    """Equal schemas and values, NaN equal to NaN (Arrow's ``equals`` says NaN != NaN)."""
    for table in TABLE_SCHEMAS:
        assert left[table].schema.equals(right[table].schema), table
        pd.testing.assert_frame_equal(left[table].to_pandas(), right[table].to_pandas(), check_exact=True)


def fast_topics(path: Path, fast: bool = True) -> set[str]:
    """The topics the reader decodes from the raw bytes (the rest go through rosbags' deserialisation)."""
    with BagReader(path, DEFAULT_TOPICS, fast=fast) as reader:
        return set(reader.info.fast_topics)


def test_the_fast_path_decodes_the_robot_messages_exactly_like_rosbags(demo_run: DemoRun, tmp_path: Path) -> None:
    path = demo_run.summaries[0].path
    assert fast_topics(path) == {CAMERA_TOPIC, DETECTION_TOPIC, TRACK_TOPIC}
    assert fast_topics(path, fast=False) == set()
    assert_same_tables(read_all(path), read_all(path, fast=False))
    odd = tmp_path / "rosbag_odd_0.bag"  # empty and multiple results, no elements, several elements
    write_ros1_bag(odd, 4, {0: [Element(7, ()), Element(-1, ((2, 0.75), (1, 0.5)))], 1: [],
                            3: [Element(1, ((0, 0.25),), (1.5, 2.5, 0.1, 3.0, 4.0))] * 3})
    assert fast_topics(odd) == {CAMERA_TOPIC, DETECTION_TOPIC}
    assert_same_tables(read_all(odd), read_all(odd, fast=False))


def test_another_message_definition_is_read_through_rosbags(tmp_path: Path) -> None:
    """A revised detection message (other md5sum) must not be decoded with the fixed layout."""
    path = tmp_path / "rosbag_v2_0.bag"
    write_ros1_bag(path, 3, {0: [Element(4, ((1, 0.5),), (10.0, 20.0, 0.0, 5.0, 6.0))]}, revised_detections=True)
    assert fast_topics(path) == {CAMERA_TOPIC}
    objects = read_all(path)["detection_objects"].to_pylist()
    assert objects == [{"bag_file": "rosbag_v2_0", "seq": 0, "image_timestamp_s": objects[0]["image_timestamp_s"],
                        "tracking_id": 4, "class_id": 1, "score": 0.5, "bbox_cx": 10.0, "bbox_cy": 20.0,
                        "bbox_theta": 0.0, "bbox_w": 5.0, "bbox_h": 6.0}]


def test_small_batches_give_the_same_rows(demo_run: DemoRun) -> None:
    path = demo_run.summaries[0].path
    assert_same_tables(read_all(path, batch_messages=37), read_all(path))


def test_ticks_report_progress_and_end_with_the_last_batch(demo_run: DemoRun) -> None:
    ticks: list[ReadTick] = []
    with BagReader(demo_run.summaries[0].path, DEFAULT_TOPICS, batch_messages=400) as reader:
        total = reader.info.selected_messages
        ticks = list(reader.ticks())
        counts = reader.counts
    messages = [tick.messages for tick in ticks]
    assert messages == sorted(messages) and messages[-1] == total == reader.info.message_count
    assert ticks[-1].batches is not None
    assert sum(1 for tick in ticks if tick.batches) == math.ceil(total / 400)
    assert counts["frames"] == demo_run.summaries[0].frames


def test_info_describes_the_bag(demo_run: DemoRun) -> None:
    summary = demo_run.summaries[2]
    with BagReader(summary.path, DEFAULT_TOPICS) as reader:
        info = reader.info
    assert info.name == summary.path.stem and info.format == "ros1"
    assert info.message_count == summary.frames + summary.detections + summary.tracks
    assert info.duration_s == pytest.approx((summary.end_ns - summary.start_ns) / 1e9)
    assert info.topics == tuple(sorted((CAMERA_TOPIC, DETECTION_TOPIC, TRACK_TOPIC)))
    assert info.missing_topics == ()
    assert info.size_bytes == summary.path.stat().st_size


def test_empty_results_give_a_null_class_and_nan_score(tmp_path: Path) -> None:
    path = tmp_path / "rosbag_x_0.bag"
    write_ros1_bag(path, 3, {1: [Element(7, ()), Element(-1, ((2, 0.75), (1, 0.5)))], 2: []})
    tables = read_all(path)
    objects = tables["detection_objects"].to_pandas()
    assert objects["tracking_id"].tolist() == [7, -1]
    assert objects["class_id"].isna().tolist() == [True, False]
    assert objects["class_id"].iloc[1] == 2  # the first hypothesis, as the legacy extractor read it
    assert math.isnan(objects["score"].iloc[0]) and objects["score"].iloc[1] == 0.75
    assert tables["detections"].column("num_detections").to_pylist() == [2, 0]


def test_a_missing_topic_gives_empty_tables_with_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "rosbag_x_0.bag"
    write_ros1_bag(path, 4, {0: [Element(-1, ((0, 0.9),))]})
    with BagReader(path, DEFAULT_TOPICS) as reader:
        assert reader.info.missing_topics == (TRACK_TOPIC,)
    tables = read_all(path)
    assert tables["frames"].num_rows == 4 and tables["detections"].num_rows == 1
    for table in ("tracking", "tracked_objects"):
        assert tables[table].num_rows == 0
        assert tables[table].schema.equals(TABLE_SCHEMAS[table])


def test_configured_topics_are_the_ones_read(tmp_path: Path) -> None:
    path = tmp_path / "rosbag_x_0.bag"
    write_ros1_bag(path, 5, {0: [Element(-1, ((0, 0.9),))]}, image_topic="/cam/compressed",
                   detection_topic="/det")
    assert read_all(path)["frames"].num_rows == 0  # the default topic names are not in this bag
    tables = read_all(path, topics={"image": "/cam/compressed", "detections": "/det", "tracks": "/none"})
    assert (tables["frames"].num_rows, tables["detections"].num_rows) == (5, 1)


def test_ros2_bag_folder_and_mcap_file(tmp_path: Path) -> None:
    folder = tmp_path / "rosbag2_2025_08_25-08_59_57"
    stamps = write_ros2_bag(folder, 6)
    mcap = next(folder.glob("*.mcap"))
    for path in (folder, mcap):
        with BagReader(path, DEFAULT_TOPICS) as reader:
            assert reader.info.format == "ros2"
        frames = read_all(path)["frames"].to_pandas()
        assert frames["header_timestamp_s"].tolist() == [seconds(s) for s in stamps]
        assert frames["bag_timestamp_s"].tolist() == [seconds(s + 2_000_000) for s in stamps]
        assert frames["seq"].tolist() == list(range(6))  # ROS2 headers have no seq: the index on the topic
        assert frames["has_data"].all()


@pytest.mark.parametrize(
    ("damage", "stage"),
    [
        (truncate_half, "opened"),
        (garble_middle, "Reading stopped after"),
        (lambda path: path.write_text("not a bag\n" * 100), "opened"),
        (lambda path: path.write_bytes(b""), "opened"),
    ],
    ids=["truncated", "garbage-in-the-middle", "not-a-bag", "empty"],
)
def test_damaged_bags_raise_bag_read_error(
    demo_run: DemoRun, tmp_path: Path, damage: Callable[[Path], object], stage: str
) -> None:
    path = copy_run(demo_run, tmp_path).summaries[0].path
    damage(path)
    reader = BagReader(path, DEFAULT_TOPICS)
    with pytest.raises(BagReadError, match=stage) as caught, reader:
        for _ in reader.ticks():
            pass
    assert str(caught.value).endswith(".")
    assert caught.value.__cause__ is not None


def test_garbage_in_the_middle_fails_after_reading_some_rows(demo_run: DemoRun, tmp_path: Path) -> None:
    path = copy_run(demo_run, tmp_path).summaries[0].path
    garble_middle(path)
    reader = BagReader(path, DEFAULT_TOPICS)
    with pytest.raises(BagReadError), reader:
        for _ in reader.ticks():
            pass
    assert 0 < reader.messages_read < reader.info.selected_messages
    assert reader.rows_read["frames"] > 0


def test_find_bags(tmp_path: Path) -> None:
    for name in ("rosbag_b_1.bag", "rosbag_a_0.bag", "other.bag", "x.mcap", ".rosbag_c.bag.part-1", "notes.txt",
                 "rosbag_d.bag.tmp"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "ros2_run").mkdir()
    (tmp_path / "ros2_run" / "metadata.yaml").write_text("{}")
    (tmp_path / "plain_folder").mkdir()
    assert [p.name for p in find_bags(tmp_path)] == ["other.bag", "ros2_run", "rosbag_a_0.bag", "rosbag_b_1.bag",
                                                     "x.mcap"]
    assert find_bags(tmp_path / "missing") == []
