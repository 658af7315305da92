"""extract_bags: the output contract (files, columns, types, order), failed bags, metadata and progress."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from runtool.config import DEFAULT_TOPICS
from runtool.demo.bags import TRACK_TOPIC
from runtool.extract.outputs import (
    OUTPUT_FILES,
    ExtractionProgress,
    ExtractionStage,
    OutputError,
    RunMetadata,
    extract_bags,
)
from tests.extract.bagfiles import COORD, DemoRun, Element, copy_run, garble_middle, seconds, write_ros1_bag

COLUMNS = {
    "frames.csv": ["bag_file", "seq", "bag_timestamp_s", "header_timestamp_s", "has_data"],
    "detections.csv": ["bag_file", "seq", "bag_timestamp_s", "header_timestamp_s", "image_timestamp_s",
                       "num_detections"],
    "tracking.csv": ["bag_file", "seq", "bag_timestamp_s", "header_timestamp_s", "image_timestamp_s", "num_tracked"],
    "detection_objects.parquet": ["bag_file", "seq", "image_timestamp_s", "tracking_id", "class_id", "score",
                                  "bbox_cx", "bbox_cy", "bbox_theta", "bbox_w", "bbox_h"],
    "tracked_objects.parquet": ["bag_file", "seq", "image_timestamp_s", "tracking_id", "detection_seq", "class_id",
                                "score", "bbox_cx", "bbox_cy", "bbox_theta", "bbox_w", "bbox_h"],
}


def load(out: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(out / name) if name.endswith(".parquet") else pd.read_csv(out / name)


def test_a_run_matches_what_the_writer_wrote(demo_run: DemoRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    bags = [summary.path for summary in demo_run.summaries]
    metadata = extract_bags(bags, out, COORD.timestamp, DEFAULT_TOPICS)

    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)  # no part files or temporaries left
    tables = {name: load(out, name) for name in COLUMNS}
    for name, columns in COLUMNS.items():
        assert list(tables[name].columns) == columns, name
    frames, detections, tracking = tables["frames.csv"], tables["detections.csv"], tables["tracking.csv"]
    objects, tracked = tables["detection_objects.parquet"], tables["tracked_objects.parquet"]

    # rows follow bag order, and every bag has exactly what the writer put in
    for table in tables.values():
        first_rows = table.drop_duplicates("bag_file")["bag_file"].tolist()
        assert first_rows == list(demo_run.names)
        assert table["bag_file"].is_monotonic_increasing
    for summary in demo_run.summaries:
        name = summary.path.stem
        assert (frames["bag_file"] == name).sum() == summary.frames
        assert (detections["bag_file"] == name).sum() == summary.detections
        assert (tracking["bag_file"] == name).sum() == summary.tracks
        assert (objects["bag_file"] == name).sum() == summary.objects
        assert (tracked["bag_file"] == name).sum() == summary.objects
        mine = tracked[tracked["bag_file"] == name]
        assert (mine["tracking_id"] >= demo_run.track_id_starts[demo_run.names.index(name)]).all()
        assert set(mine["detection_seq"]) <= set(detections.loc[detections["bag_file"] == name, "seq"])

    # seq runs on across bags, as on the robot; stamps are the writer's
    assert frames["seq"].tolist() == list(range(demo_run.first_seqs[0], demo_run.first_seqs[0] + len(frames)))
    stamps = [seconds(s) for summary in demo_run.summaries for s in summary.frame_stamps_ns]
    assert frames["header_timestamp_s"].tolist() == stamps
    assert sorted(detections["image_timestamp_s"]) == sorted(stamps)
    assert frames["has_data"].dtype == bool
    assert objects["class_id"].dtype == "Int64" and tracked["detection_seq"].dtype == "Int64"
    for column in ("seq", "num_detections"):
        assert detections[column].dtype == "int64"
    assert detections["header_timestamp_s"].dtype == "float64"

    # metadata, in memory and on disk
    assert metadata == RunMetadata.read(out)
    document = yaml.safe_load((out / "metadata.yaml").read_text())
    assert document["timestamp"] == COORD.timestamp and document["backend"] == "local"
    assert document["extractor"].startswith("runtool ")
    assert document["topics"] == dict(DEFAULT_TOPICS)
    assert document["extraction_time"].endswith("+00:00")
    assert [bag["name"] for bag in document["bags"]] == list(demo_run.names)
    for bag, summary in zip(document["bags"], demo_run.summaries, strict=True):
        assert bag["status"] == "ok" and bag["error"] is None and bag["rows_dropped"] is None
        assert bag["message_count"] == summary.frames * 3
        assert (bag["frames"], bag["detections"], bag["tracks"]) == (summary.frames, summary.detections,
                                                                     summary.tracks)
        assert bag["detection_objects"] == bag["tracked_objects"] == summary.objects
        assert bag["duration_s"] == pytest.approx((summary.end_ns - summary.start_ns) / 1e9)
        assert len(bag["topics"]) == 3
    assert document["totals"]["frames"] == len(frames)


def test_parquet_row_groups_follow_the_bags(demo_run: DemoRun, tmp_path: Path) -> None:
    extract_bags([s.path for s in demo_run.summaries], tmp_path / "out", COORD.timestamp, DEFAULT_TOPICS)
    parquet = pq.ParquetFile(tmp_path / "out" / "tracked_objects.parquet")
    assert parquet.metadata.num_row_groups == len(demo_run.summaries)


def test_a_failed_bag_is_recorded_and_its_rows_dropped(demo_run: DemoRun, tmp_path: Path) -> None:
    run = copy_run(demo_run, tmp_path / "bags")
    bad = run.summaries[1]
    garble_middle(bad.path)
    out = tmp_path / "out"
    # small batches, so some of the bad bag's rows were already spilled before it failed
    metadata = extract_bags([s.path for s in run.summaries], out, COORD.timestamp, DEFAULT_TOPICS, batch_messages=50)

    assert [bag.status for bag in metadata.bags] == ["ok", "failed", "ok"]
    failed = metadata.bags[1]
    assert failed.error is not None and failed.error.startswith("Reading stopped after")
    assert failed.rows_dropped is not None and failed.rows_dropped["frames"] >= 50
    assert failed.frames == failed.detections == failed.tracks == 0
    assert failed.message_count == bad.frames * 3  # what the index says, although the data is broken
    for name in COLUMNS:
        assert bad.path.stem not in set(load(out, name)["bag_file"]), name
    assert len(load(out, "frames.csv")) == run.summaries[0].frames + run.summaries[2].frames
    document = yaml.safe_load((out / "metadata.yaml").read_text())
    assert document["bags"][1]["status"] == "failed"
    assert document["bags"][1]["rows_dropped"]["frames"] == failed.rows_dropped["frames"]
    assert document["rows_of_failed_bags"] == "dropped"


def test_every_file_is_written_with_its_header_even_without_rows(tmp_path: Path) -> None:
    junk = tmp_path / "rosbag_junk_0.bag"
    junk.write_text("not a bag")
    out = tmp_path / "out"
    metadata = extract_bags([junk], out, COORD.timestamp, DEFAULT_TOPICS)
    assert metadata.bags[0].status == "failed" and metadata.bags[0].rows_dropped is None
    assert "could not be opened" in (metadata.bags[0].error or "")
    for name, columns in COLUMNS.items():
        table = load(out, name)
        assert list(table.columns) == columns and table.empty, name
    assert (out / "frames.csv").read_text() == '"bag_file","seq","bag_timestamp_s","header_timestamp_s","has_data"\n'
    assert pq.read_schema(out / "detection_objects.parquet").names == COLUMNS["detection_objects.parquet"]


def test_a_run_without_tracking_gets_empty_tracking_files(tmp_path: Path) -> None:
    path = tmp_path / "rosbag_2025-08-25-08-59-57_0.bag"
    write_ros1_bag(path, 4, {0: [Element(-1, ((0, 0.9),))], 2: [Element(-1, ())]})
    out = tmp_path / "out"
    metadata = extract_bags([path], out, COORD.timestamp, DEFAULT_TOPICS)
    assert metadata.bags[0].ok and metadata.bags[0].missing_topics == (TRACK_TOPIC,)
    tracking = load(out, "tracking.csv")
    assert list(tracking.columns) == COLUMNS["tracking.csv"] and tracking.empty
    assert load(out, "tracked_objects.parquet").empty
    objects = load(out, "detection_objects.parquet")
    assert objects["class_id"].isna().tolist() == [False, True]
    assert len(load(out, "frames.csv")) == 4


def test_progress_events_cover_every_bag(demo_run: DemoRun, tmp_path: Path) -> None:
    run = copy_run(demo_run, tmp_path / "bags")
    (tmp_path / "bags" / "rosbag_zz_9.bag").write_text("junk")
    bags = [s.path for s in run.summaries] + [tmp_path / "bags" / "rosbag_zz_9.bag"]
    events: list[ExtractionProgress] = []
    extract_bags(bags, tmp_path / "out", COORD.timestamp, DEFAULT_TOPICS, progress=events.append)

    stages = [event.stage for event in events]
    assert stages.count(ExtractionStage.BAG_STARTED) == 3
    assert stages.count(ExtractionStage.BAG_DONE) == 3 and stages.count(ExtractionStage.BAG_FAILED) == 1
    assert stages[-2:] == [ExtractionStage.WRITING, ExtractionStage.DONE]
    assert all(event.bags_total == 4 for event in events)
    done = [event for event in events if event.stage == ExtractionStage.BAG_DONE]
    assert [event.bags_done for event in done] == [1, 2, 3]
    assert [event.messages for event in done] == [s.frames * 3 for s in run.summaries]
    failed = next(event for event in events if event.stage == ExtractionStage.BAG_FAILED)
    assert failed.bag == "rosbag_zz_9" and failed.error
    reading = [event for event in events if event.stage == ExtractionStage.READING]
    assert all(0 < event.messages <= event.messages_total for event in reading)
    for event in events:
        assert ExtractionProgress.from_dict(event.to_dict()) == event


def test_a_raising_progress_callback_stops_the_extraction(demo_run: DemoRun, tmp_path: Path) -> None:
    def stop(event: ExtractionProgress) -> None:
        if event.stage == ExtractionStage.READING:
            raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        extract_bags([demo_run.summaries[0].path], out, COORD.timestamp, DEFAULT_TOPICS, progress=stop)
    assert not (out / "metadata.yaml").exists()


def test_the_output_folder_must_be_empty(demo_run: DemoRun, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "frames.csv").write_text("old")
    with pytest.raises(OutputError, match="not empty"):
        extract_bags([demo_run.summaries[0].path], tmp_path / "out", COORD.timestamp, DEFAULT_TOPICS)
    assert (tmp_path / "out" / "frames.csv").read_text() == "old"


def test_every_topic_must_be_configured(demo_run: DemoRun, tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="tracks"):
        extract_bags([demo_run.summaries[0].path], tmp_path / "out", COORD.timestamp,
                     {"image": "/a", "detections": "/b"})


def test_progress_lines_that_are_not_events_are_rejected() -> None:
    with pytest.raises(OutputError, match="Not an extraction progress event"):
        ExtractionProgress.from_dict({"stage": "reading"})
