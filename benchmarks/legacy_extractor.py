"""A faithful re-implementation of the legacy extractor (legacy-dashboard.md §3.3-3.4), on rosbags.

The legacy script ran in a ROS Noetic container with the ``rosbag`` Python API; here the same algorithm
reads through :class:`rosbags.highlevel.AnyReader`, so the benchmark compares algorithms, not libraries:

- bags are ``<bags_dir>/rosbag_*.bag``, sorted; none is an error (exit code 1 in the container);
- per bag: its metadata first (stem, end - start, message count of all topics, topic names), then three
  passes, one per topic (frames, detections, tracks), each deserialising every message of the topic;
- one dict per message (and per detection element), kept in memory for the whole run;
- before reading an element it checks that ``tracking_id``, ``detection_msg``, ``detection_msg.results``
  and ``detection_msg.bbox`` exist, and reads ``results[0]`` without checking that it exists;
- an error in a bag is printed as a warning and the bag abandoned part-way; rows already collected stay;
- at the end pandas writes the three CSVs and ``json.dump(indent=2)`` the two full JSON files, each only
  when its list is not empty, then ``metadata.yaml`` (local ISO time).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rosbags.highlevel import AnyReader

__all__ = ["LegacyExtractionError", "extract"]


class LegacyExtractionError(Exception):
    """No bags (the legacy script exited with code 1)."""


def _check(element: Any) -> None:
    """The legacy structure checks; ``results`` may be empty and is then indexed anyway."""
    for name in ("tracking_id", "detection_msg"):
        if not hasattr(element, name):
            raise ValueError(f"Detection missing {name}")
    for name in ("results", "bbox"):
        if not hasattr(element.detection_msg, name):
            raise ValueError(f"detection_msg missing {name}")


def _stamp(stamp: Any) -> float:
    return float(stamp.sec + stamp.nanosec / 1e9)


def _messages(reader: AnyReader, topic: str) -> Any:
    connections = [c for c in reader.connections if c.topic == topic]
    if not connections:
        return iter(())
    return reader.messages(connections=connections)


def extract(bags_dir: Path, out_dir: Path, timestamp: str, topics: Mapping[str, str]) -> dict[str, int]:
    """Run the legacy algorithm; returns the row counts it wrote."""
    bag_files = sorted(bags_dir.glob("rosbag_*.bag"))
    if not bag_files:
        raise LegacyExtractionError(f"No rosbag files found in {bags_dir}")
    frames_data: list[dict[str, Any]] = []
    detections_data: list[dict[str, Any]] = []
    tracking_data: list[dict[str, Any]] = []
    detections_full: list[dict[str, Any]] = []
    tracking_full: list[dict[str, Any]] = []
    metadata: dict[str, Any] = {"timestamp": timestamp, "extraction_time": datetime.now().isoformat(), "bags": []}

    for bag_path in bag_files:
        bag_name = bag_path.stem
        print(f"Processing {bag_path.name}")
        try:
            with AnyReader([bag_path]) as reader:
                metadata["bags"].append({
                    "name": bag_name,
                    "duration": (reader.end_time - reader.start_time) / 1e9,
                    "message_count": reader.message_count,
                    "topics": list(reader.topics.keys()),
                })

                for connection, t, raw in _messages(reader, topics["image"]):
                    msg: Any = reader.deserialize(raw, connection.msgtype)
                    frames_data.append({
                        "bag_file": bag_name,
                        "seq": msg.header.seq,
                        "bag_timestamp_s": t / 1e9,
                        "header_timestamp_s": _stamp(msg.header.stamp),
                        "has_data": len(msg.data) > 0,
                    })

                for connection, t, raw in _messages(reader, topics["detections"]):
                    msg = reader.deserialize(raw, connection.msgtype)
                    row = {
                        "bag_file": bag_name,
                        "seq": msg.header.seq,
                        "bag_timestamp_s": t / 1e9,
                        "header_timestamp_s": _stamp(msg.header.stamp),
                        "image_timestamp_s": msg.img_stamp_secs + msg.img_stamp_nsecs / 1e9,
                        "num_detections": len(msg.detections),
                    }
                    objects = []
                    for det in msg.detections:
                        _check(det)
                        objects.append({
                            "tracking_id": det.tracking_id,
                            "class_id": det.detection_msg.results[0].id,
                            "score": det.detection_msg.results[0].score,
                            "bbox_cx": det.detection_msg.bbox.center.x,
                            "bbox_cy": det.detection_msg.bbox.center.y,
                            "bbox_theta": det.detection_msg.bbox.center.theta,
                            "bbox_w": det.detection_msg.bbox.size_x,
                            "bbox_h": det.detection_msg.bbox.size_y,
                        })
                    detections_data.append(row)
                    detections_full.append({**row, "detections": objects})

                for connection, t, raw in _messages(reader, topics["tracks"]):
                    msg = reader.deserialize(raw, connection.msgtype)
                    row = {
                        "bag_file": bag_name,
                        "seq": msg.header.seq,
                        "bag_timestamp_s": t / 1e9,
                        "header_timestamp_s": _stamp(msg.header.stamp),
                        "image_timestamp_s": msg.img_stamp_secs + msg.img_stamp_nsecs / 1e9,
                        "num_tracked": len(msg.tracked_detections),
                    }
                    tracked = []
                    for det in msg.tracked_detections:
                        _check(det)
                        tracked.append({
                            "tracking_id": det.tracking_id,
                            "detection_seq": det.detection_msg.header.seq,
                            "class_id": det.detection_msg.results[0].id,
                            "score": det.detection_msg.results[0].score,
                            "bbox_cx": det.detection_msg.bbox.center.x,
                            "bbox_cy": det.detection_msg.bbox.center.y,
                            "bbox_theta": det.detection_msg.bbox.center.theta,
                            "bbox_w": det.detection_msg.bbox.size_x,
                            "bbox_h": det.detection_msg.bbox.size_y,
                        })
                    tracking_data.append(row)
                    tracking_full.append({**row, "tracked_objects": tracked})
        except Exception as exc:  # the legacy behaviour being reproduced: warn, keep the partial rows
            print(f"Warning: error processing {bag_path.name}: {exc}", file=sys.stderr)

    out_dir.mkdir(parents=True, exist_ok=True)
    if frames_data:
        pd.DataFrame(frames_data).to_csv(out_dir / "frames.csv", index=False)
    if detections_data:
        pd.DataFrame(detections_data).to_csv(out_dir / "detections.csv", index=False)
    if tracking_data:
        pd.DataFrame(tracking_data).to_csv(out_dir / "tracking.csv", index=False)
    if detections_full:
        with (out_dir / "detections_full.json").open("w") as handle:
            json.dump(detections_full, handle, indent=2)
    if tracking_full:
        with (out_dir / "tracking_full.json").open("w") as handle:
            json.dump(tracking_full, handle, indent=2)
    with (out_dir / "metadata.yaml").open("w") as handle:
        yaml.dump(metadata, handle, default_flow_style=False)
    return {
        "frames": len(frames_data),
        "detections": len(detections_data),
        "tracks": len(tracking_data),
        "detection_objects": sum(len(row["detections"]) for row in detections_full),
        "tracked_objects": sum(len(row["tracked_objects"]) for row in tracking_full),
    }
