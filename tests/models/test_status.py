"""Tests for the status vocabularies, the per-side status models and RunState's pipeline step."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest

from runtool.models import (
    EXTRACTION_FILES,
    CloudMLStatus,
    CloudRawStatus,
    DataStatus,
    ExtractionStatus,
    LocalMLStatus,
    LocalRawStatus,
    NextAction,
    RunCoordinate,
    RunState,
    SyncStatus,
    to_jsonable,
)

COORD = RunCoordinate("client_001", "region_a", "field_x", "TW_001", "LB_0001", "2025_08_25T08:59:38Z")
ALL_FILES = ("frames.csv", "detections.csv", "tracking.csv", "metadata.yaml")


def state(
    *,
    local_bags: dict[str, int] | None = None,
    present: tuple[str, ...] = (),
    analyzed: bool = False,
    cloud_bags: dict[str, int] | None = None,
    differing: tuple[str, ...] = (),
    missing: tuple[str, ...] = (),
) -> RunState:
    return RunState(
        coordinate=COORD,
        cloud_raw=CloudRawStatus(bag_sizes=cloud_bags or {}),
        cloud_ml=CloudMLStatus(),
        local_raw=LocalRawStatus(path="/data/raw/run", bag_sizes=local_bags or {}),
        local_ml=LocalMLStatus(),
        extraction=ExtractionStatus(path="/data/processed/run", present=present, analyzed=analyzed),
        raw_sync=SyncStatus.CLOUD_ONLY,
        ml_sync=SyncStatus.MISSING,
        differing_bags=differing,
        missing_bags=missing,
    )


LOCAL = {"rosbag_2025-08-25-08-59-57_0.bag": 100}
CLOUD = {"_2025-08-25-08-59-57_0.bag": 120}


@pytest.mark.parametrize(
    ("kwargs", "status", "action", "ready"),
    [
        ({}, DataStatus.NOT_DOWNLOADED, NextAction.DOWNLOAD, False),
        ({"cloud_bags": {"_2025-08-25-08-59-57_0.bag": 100}}, DataStatus.NOT_DOWNLOADED, NextAction.DOWNLOAD, False),
        ({"local_bags": LOCAL}, DataStatus.DOWNLOADED, NextAction.EXTRACT, False),
        ({"local_bags": LOCAL, "present": ALL_FILES}, DataStatus.EXTRACTED, NextAction.ANALYZE, True),
        ({"local_bags": LOCAL, "present": ALL_FILES, "analyzed": True}, DataStatus.ANALYZED, NextAction.COMPLETE,
         True),
        # A partial extraction reads as "downloaded" (legacy rule: all four files or nothing).
        ({"local_bags": LOCAL, "present": ALL_FILES[:3]}, DataStatus.DOWNLOADED, NextAction.EXTRACT, False),
        # An analysis without a complete extraction does not count.
        ({"local_bags": LOCAL, "present": ALL_FILES[1:], "analyzed": True}, DataStatus.DOWNLOADED,
         NextAction.EXTRACT, False),
        # Extraction outputs stay useful after the bags were deleted locally.
        ({"present": ALL_FILES}, DataStatus.EXTRACTED, NextAction.ANALYZE, True),
        ({"present": ALL_FILES, "analyzed": True}, DataStatus.ANALYZED, NextAction.COMPLETE, True),
        # A local bag of another size than its object is downloaded again, whatever comes after.
        ({"local_bags": LOCAL, "cloud_bags": CLOUD, "differing": tuple(CLOUD)}, DataStatus.DOWNLOADED,
         NextAction.DOWNLOAD, False),
        ({"local_bags": LOCAL, "cloud_bags": CLOUD, "differing": tuple(CLOUD), "present": ALL_FILES,
          "analyzed": True}, DataStatus.ANALYZED, NextAction.DOWNLOAD, True),
        # Bags the cloud has and a partial local copy lacks are downloaded before extracting or analysing.
        ({"local_bags": LOCAL, "cloud_bags": {**CLOUD, "_2025-08-25-09-00-57_1.bag": 90},
          "missing": ("_2025-08-25-09-00-57_1.bag",)}, DataStatus.DOWNLOADED, NextAction.DOWNLOAD, False),
        ({"local_bags": LOCAL, "cloud_bags": {**CLOUD, "_2025-08-25-09-00-57_1.bag": 90},
          "missing": ("_2025-08-25-09-00-57_1.bag",), "present": ALL_FILES, "analyzed": True},
         DataStatus.ANALYZED, NextAction.DOWNLOAD, True),
        # ... unless the bucket no longer has it: there is nothing to download.
        ({"local_bags": LOCAL, "differing": tuple(CLOUD)}, DataStatus.DOWNLOADED, NextAction.EXTRACT, False),
    ],
)
def test_pipeline_status_and_next_action(
    kwargs: dict[str, object], status: DataStatus, action: NextAction, ready: bool
) -> None:
    run = state(**kwargs)  # type: ignore[arg-type]
    assert run.pipeline_status is status
    assert run.next_action is action
    assert run.ready_for_analysis is ready


def test_extraction_files_are_the_legacy_four() -> None:
    assert set(EXTRACTION_FILES) == set(ALL_FILES)


def test_extraction_status_lists_missing_files_in_order() -> None:
    extraction = ExtractionStatus(present=("metadata.yaml", "frames.csv", "extra.json"))
    assert not extraction.extracted
    assert extraction.missing == ("detections.csv", "tracking.csv")
    assert ExtractionStatus(present=ALL_FILES).missing == ()


def test_cloud_raw_totals() -> None:
    raw = CloudRawStatus(bag_sizes={"_b_1.bag": 80_000_000, "_b_0.bag": 524_968_804})
    assert raw.exists
    assert raw.bag_count == 2
    assert raw.total_size == 604_968_804  # 524,968,804 + 80,000,000
    assert list(raw.to_dict()["bag_sizes"]) == ["_b_0.bag", "_b_1.bag"]  # type: ignore[call-overload]
    assert not CloudRawStatus().exists
    assert CloudRawStatus().total_size == 0


def test_ml_counts_sum_over_bag_dirs() -> None:
    cloud = CloudMLStatus(frames={"_a_0": 5, "_a_1": 7}, labels={"_a_0": 4, "_a_1": 6}, total_bytes=10)
    assert cloud.frame_count == 12  # 5 + 7
    assert cloud.label_count == 10  # 4 + 6
    local = LocalMLStatus(frames={"rosbag_a_0": 3}, labels={})
    assert local.exists  # frames alone are data on disk
    assert local.frame_count == 3
    assert local.label_count == 0
    assert not LocalMLStatus().exists
    assert not CloudMLStatus().exists


def test_run_state_to_dict_is_json_and_complete() -> None:
    run = RunState(
        coordinate=COORD,
        cloud_raw=CloudRawStatus(bag_sizes={"_2025-08-25-08-59-57_0.bag": 524_968_804}),
        cloud_ml=CloudMLStatus(frames={"_2025-08-25-08-59-57_0": 17}, labels={"_2025-08-25-08-59-57_0": 16},
                               total_bytes=4_000_000),
        local_raw=LocalRawStatus(path="/data/raw/x", bag_sizes={"rosbag_2025-08-25-08-59-57_0.bag": 524_968_804}),
        local_ml=LocalMLStatus(path="/data/ML/raw/x", other_files=1),
        extraction=ExtractionStatus(path="/data/processed/x", present=ALL_FILES[:2]),
        raw_sync=SyncStatus.SYNCED,
        ml_sync=SyncStatus.CLOUD_ONLY,
        issues=("Not downloaded locally",),
    )
    data = run.to_dict()
    decoded = json.loads(json.dumps(data))
    assert set(decoded) == {"coordinate", "cloud_raw", "cloud_ml", "local_raw", "local_ml", "extraction",
                            "raw_sync", "ml_sync", "issues", "differing_bags", "missing_bags", "pipeline_status",
                            "next_action", "ready_for_analysis"}
    assert decoded["coordinate"] == {"cid": "client_001", "regionid": "region_a", "fieldid": "field_x",
                                     "twid": "TW_001", "lbid": "LB_0001", "timestamp": "2025_08_25T08:59:38Z"}
    assert decoded["raw_sync"] == "synced"
    assert decoded["ml_sync"] == "cloud_only"
    assert decoded["pipeline_status"] == "downloaded"
    assert decoded["next_action"] == "extract"
    assert decoded["ready_for_analysis"] is False
    assert decoded["issues"] == ["Not downloaded locally"]
    assert decoded["differing_bags"] == []
    assert decoded["cloud_ml"]["frame_count"] == 17
    assert decoded["cloud_ml"]["label_count"] == 16
    assert decoded["local_ml"]["exists"] is False
    assert decoded["extraction"]["missing"] == ["tracking.csv", "metadata.yaml"]
    assert decoded["local_raw"]["total_size"] == 524_968_804


def test_to_jsonable_of_a_run_state_matches_to_dict() -> None:
    run = state(local_bags=LOCAL)
    assert to_jsonable(run) == json.loads(json.dumps(run.to_dict()))


def test_to_jsonable_plain_values() -> None:
    value = {
        "when": datetime(2025, 8, 25, 8, 59, 38, tzinfo=UTC),
        "day": date(2025, 8, 25),
        "path": Path("/data/raw"),
        "status": SyncStatus.MISMATCH,
        "nan": float("nan"),
        "np_nan": np.float64("nan"),
        "np_int": np.int64(3),
        "items": (1, 2),
        7: "int key",
    }
    converted = to_jsonable(value)
    assert converted == {
        "when": "2025-08-25T08:59:38+00:00",
        "day": "2025-08-25",
        "path": "/data/raw",
        "status": "mismatch",
        "nan": None,
        "np_nan": None,
        "np_int": 3,
        "items": [1, 2],
        "7": "int key",
    }
    assert type(converted["np_int"]) is int
    json.dumps(converted, allow_nan=False)


def test_to_jsonable_keeps_finite_floats() -> None:
    assert to_jsonable(12.5) == 12.5
    assert to_jsonable(np.float64(0.25)) == 0.25


@pytest.mark.parametrize(
    ("status", "value", "label"),
    [
        (SyncStatus.SYNCED, "synced", "synced"),
        (SyncStatus.CLOUD_ONLY, "cloud_only", "not downloaded"),
        (SyncStatus.LOCAL_ONLY, "local_only", "local only"),
        (SyncStatus.MISMATCH, "mismatch", "mismatch"),
        (SyncStatus.MISSING, "missing", "missing"),
    ],
)
def test_sync_status_values_and_labels(status: SyncStatus, value: str, label: str) -> None:
    assert status.value == value
    assert status.label.lower() == label


def test_every_sync_status_has_a_label() -> None:
    for status in SyncStatus:
        assert status.label


def test_data_status_values_are_strings() -> None:
    assert DataStatus.NOT_DOWNLOADED == "not_downloaded"
    assert NextAction.COMPLETE == "complete"
