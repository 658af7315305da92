"""Tests for bucket/local layouts, cloud↔local name translation and key classification."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtool.models import CoordinateError, Filters, RunCoordinate
from runtool.storage.layout import (
    Anomaly,
    MLFileEntry,
    RawBagEntry,
    cloud_to_local_name,
    local_ml_dir,
    local_raw_dir,
    local_to_cloud_name,
    ml_file_key,
    ml_prefix,
    parse_ml_key,
    parse_raw_key,
    processed_dir,
    raw_bag_key,
    raw_prefix,
)

TS = "2025_08_25T08:59:38Z"
COORD = RunCoordinate("client_001", "region_a", "field_x", "TW_001", "LB_0001", TS)
RUN = f"client_001/region_a/field_x/TW_001/LB_0001/{TS}"
BAG = "_2025-08-25-08-59-57_0.bag"
BAG_DIR = "_2025-08-25-08-59-57_0"
FRAME = "1756112584.180734928.jpg"
LABEL = "1756112584.180734928.txt"


def anomaly(result: RawBagEntry | MLFileEntry | Anomaly) -> Anomaly:
    assert isinstance(result, Anomaly), f"expected an anomaly, got {result!r}"
    return result


# --- key builders --------------------------------------------------------------------------------------------------


def test_raw_bag_key_has_the_rosbag_level() -> None:
    assert raw_bag_key(COORD, BAG) == f"{RUN}/rosbag/{BAG}"


def test_ml_file_key_has_the_raw_prefix_and_the_rosbag_level() -> None:
    assert ml_file_key(COORD, BAG_DIR, "frames", FRAME) == f"raw/{RUN}/rosbag/{BAG_DIR}/frames/{FRAME}"
    assert ml_file_key(COORD, BAG_DIR, "labels", LABEL) == f"raw/{RUN}/rosbag/{BAG_DIR}/labels/{LABEL}"


def test_prefixes_cover_the_leading_set_levels() -> None:
    assert raw_prefix(Filters()) == ""
    assert ml_prefix(Filters()) == "raw/"
    assert raw_prefix(Filters(cid="client_001", regionid="region_a")) == "client_001/region_a/"
    assert ml_prefix(Filters(cid="client_001", regionid="region_a")) == "raw/client_001/region_a/"
    # fieldid is "All", so the lbid cannot narrow a prefix
    assert raw_prefix(Filters(cid="client_001", lbid="LB_0001")) == "client_001/"
    assert raw_prefix(COORD.to_filters()) == f"{RUN}/"


def test_a_raw_key_starts_with_the_prefix_of_its_run() -> None:
    assert raw_bag_key(COORD, BAG).startswith(raw_prefix(COORD.to_filters()))
    assert ml_file_key(COORD, BAG_DIR, "labels", LABEL).startswith(ml_prefix(COORD.to_filters()))


# --- parse_raw_key -------------------------------------------------------------------------------------------------


def test_parse_raw_key_accepts_a_bag() -> None:
    assert parse_raw_key(f"{RUN}/rosbag/{BAG}") == RawBagEntry(COORD, BAG)


def test_parse_raw_key_accepts_a_dash_timestamp() -> None:
    result = parse_raw_key(f"client_001/region_a/field_x/TW_001/LB_0001/2025-08-25T08:59:38Z/rosbag/{BAG}")
    assert isinstance(result, RawBagEntry)
    assert result.coordinate.timestamp == "2025-08-25T08:59:38Z"
    assert result.coordinate.start_time == COORD.start_time


@pytest.mark.parametrize(
    ("key", "segments"),
    [
        (f"{RUN}/{BAG}", 7),  # no rosbag/ level (the local layout)
        (f"{RUN}/rosbag/extra/{BAG}", 9),
        (f"prefix/{RUN}/rosbag/{BAG}", 9),
        (BAG, 1),
        ("", 1),
    ],
)
def test_parse_raw_key_reports_the_wrong_depth(key: str, segments: int) -> None:
    reason = anomaly(parse_raw_key(key)).reason
    assert "depth" in reason
    assert f"{segments} segments" in reason


@pytest.mark.parametrize("key", [f"{RUN}/rosbag/", f"{RUN}/", "client_001/"])
def test_parse_raw_key_reports_folder_placeholders(key: str) -> None:
    result = anomaly(parse_raw_key(key))
    assert result.key == key
    assert "placeholder" in result.reason


def test_parse_raw_key_reports_a_wrong_rosbag_folder() -> None:
    reason = anomaly(parse_raw_key(f"{RUN}/bags/{BAG}")).reason
    assert "'bags'" in reason
    assert "rosbag" in reason


@pytest.mark.parametrize("name", ["_2025-08-25-08-59-57_0.bag.tmp", "metadata.yaml", "_2025-08-25-08-59-57_0.BAG"])
def test_parse_raw_key_reports_files_that_are_not_bags(name: str) -> None:
    reason = anomaly(parse_raw_key(f"{RUN}/rosbag/{name}")).reason
    assert repr(name) in reason
    assert ".bag" in reason


@pytest.mark.parametrize("name", ["rosbag_2025-08-25-08-59-57_0.bag", "2025-08-25-08-59-57_0.bag", "_.bag", ".bag"])
def test_parse_raw_key_reports_bad_bag_names(name: str) -> None:
    reason = anomaly(parse_raw_key(f"{RUN}/rosbag/{name}")).reason
    assert repr(name) in reason
    assert "bag name" in reason


@pytest.mark.parametrize("timestamp", ["2025_02_30T08:59:38Z", "2025_08_25", "latest", "2025_08_25T08:59:38"])
def test_parse_raw_key_reports_bad_timestamps(timestamp: str) -> None:
    reason = anomaly(parse_raw_key(f"client_001/region_a/field_x/TW_001/LB_0001/{timestamp}/rosbag/{BAG}")).reason
    assert "timestamp" in reason
    assert timestamp in reason


@pytest.mark.parametrize(
    ("key", "level"),
    [
        (f"client_001/../field_x/TW_001/LB_0001/{TS}/rosbag/{BAG}", "regionid"),
        (f"client_001/region_a/./TW_001/LB_0001/{TS}/rosbag/{BAG}", "fieldid"),
        (f"/region_a/field_x/TW_001/LB_0001/{TS}/rosbag/{BAG}", "cid"),
        (f"client_001/region_a/field_x/TW_001/ LB/{TS}/rosbag/{BAG}", "lbid"),
        (f"client_001/region_a/field_x/TW\\001/LB_0001/{TS}/rosbag/{BAG}", "twid"),
    ],
)
def test_parse_raw_key_reports_bad_levels_by_name(key: str, level: str) -> None:
    assert level in anomaly(parse_raw_key(key)).reason


def test_parse_raw_key_rejects_a_timestamp_with_a_line_break() -> None:
    # The object name ends the timestamp segment with "\n"; the coordinate it would yield does not survive
    # RunCoordinate.parse(coord.to_path_str()) and makes a local folder name with a line break.
    assert isinstance(parse_raw_key(f"{RUN}\n/rosbag/{BAG}"), Anomaly)


# --- parse_ml_key --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), [("frames", FRAME), ("labels", LABEL), ("frames", "1.2.png"),
                                            ("frames", "1.2.jpeg"), ("frames", "1.2.JPG")])
def test_parse_ml_key_accepts_samples(kind: str, name: str) -> None:
    key = f"raw/{RUN}/rosbag/{BAG_DIR}/{kind}/{name}"
    assert parse_ml_key(key) == MLFileEntry(COORD, BAG_DIR, kind, name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "segments"),
    [
        (f"raw/{RUN}/rosbag/{BAG_DIR}/{FRAME}", 10),
        (f"raw/{RUN}/rosbag/{BAG_DIR}/frames/sub/{FRAME}", 12),
        (f"raw/{RUN}/rosbag/{BAG_DIR}.json", 9),
        (f"{RUN}/rosbag/{BAG_DIR}/frames/{FRAME}", 10),
    ],
)
def test_parse_ml_key_reports_the_wrong_depth(key: str, segments: int) -> None:
    reason = anomaly(parse_ml_key(key)).reason
    assert "depth" in reason
    assert f"{segments} segments" in reason


def test_parse_ml_key_reports_folder_placeholders() -> None:
    assert "placeholder" in anomaly(parse_ml_key(f"raw/{RUN}/rosbag/{BAG_DIR}/frames/")).reason


@pytest.mark.parametrize("top", ["annot", "trainings", "Raw"])
def test_parse_ml_key_reports_keys_not_under_raw(top: str) -> None:
    reason = anomaly(parse_ml_key(f"{top}/{RUN}/rosbag/{BAG_DIR}/frames/{FRAME}")).reason
    assert repr(top) in reason
    assert "'raw'" in reason


def test_parse_ml_key_reports_a_wrong_rosbag_folder() -> None:
    reason = anomaly(parse_ml_key(f"raw/{RUN}/bags/{BAG_DIR}/frames/{FRAME}")).reason
    assert "'bags'" in reason
    assert "rosbag" in reason


@pytest.mark.parametrize("kind", ["images", "Frames", "label", ""])
def test_parse_ml_key_reports_a_wrong_kind_folder(kind: str) -> None:
    reason = anomaly(parse_ml_key(f"raw/{RUN}/rosbag/{BAG_DIR}/{kind}/{FRAME}")).reason
    assert repr(kind) in reason
    assert "frames" in reason
    assert "labels" in reason


@pytest.mark.parametrize("name", [LABEL, "1.2.json", "1.2.jpg.tmp", "1"])
def test_parse_ml_key_reports_frames_that_are_not_images(name: str) -> None:
    reason = anomaly(parse_ml_key(f"raw/{RUN}/rosbag/{BAG_DIR}/frames/{name}")).reason
    assert repr(name) in reason
    assert "image" in reason


@pytest.mark.parametrize("name", [FRAME, "1.2.json", "1.2.txt.bak", "1"])
def test_parse_ml_key_reports_labels_that_are_not_txt(name: str) -> None:
    reason = anomaly(parse_ml_key(f"raw/{RUN}/rosbag/{BAG_DIR}/labels/{name}")).reason
    assert repr(name) in reason
    assert ".txt" in reason


@pytest.mark.parametrize("bag_dir", ["rosbag_2025-08-25-08-59-57_0", "2025-08-25-08-59-57_0", "_", "_.", "_.."])
def test_parse_ml_key_reports_bag_dirs_without_a_leading_underscore(bag_dir: str) -> None:
    reason = anomaly(parse_ml_key(f"raw/{RUN}/rosbag/{bag_dir}/labels/{LABEL}")).reason
    assert repr(bag_dir) in reason


def test_parse_ml_key_reports_bad_coordinates() -> None:
    reason = anomaly(parse_ml_key(f"raw/client_001/region_a/field_x/TW_001/LB_0001/2025_02_30T00:00:00Z"
                                  f"/rosbag/{BAG_DIR}/labels/{LABEL}")).reason
    assert "timestamp" in reason
    assert "regionid" in anomaly(parse_ml_key(f"raw/client_001/../field_x/TW_001/LB_0001/{TS}"
                                              f"/rosbag/{BAG_DIR}/labels/{LABEL}")).reason


def test_parse_ml_key_rejects_a_timestamp_with_a_line_break() -> None:
    assert isinstance(parse_ml_key(f"raw/{RUN}\n/rosbag/{BAG_DIR}/labels/{LABEL}"), Anomaly)


def test_anomalies_keep_the_key() -> None:
    key = f"raw/{RUN}/rosbag/{BAG_DIR}/other/{FRAME}"
    assert anomaly(parse_ml_key(key)).key == key


# --- cloud ↔ local names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cloud", "local"),
    [
        ("_2025-08-12-08-54-21_0.bag", "rosbag_2025-08-12-08-54-21_0.bag"),
        ("_2025-08-12-08-54-21_0", "rosbag_2025-08-12-08-54-21_0"),
        ("_2025-08-12-08-54-21_17.bag", "rosbag_2025-08-12-08-54-21_17.bag"),
    ],
)
def test_name_translation_both_ways(cloud: str, local: str) -> None:
    assert cloud_to_local_name(cloud) == local
    assert local_to_cloud_name(local) == cloud


def test_local_to_cloud_replaces_only_the_first_rosbag() -> None:
    assert local_to_cloud_name("rosbag_rosbag_x.bag") == "_rosbag_x.bag"


@pytest.mark.parametrize("name", ["rosbag_2025-08-12-08-54-21_0.bag", "2025-08-12-08-54-21_0.bag", ""])
def test_cloud_to_local_rejects_names_without_a_leading_underscore(name: str) -> None:
    with pytest.raises(CoordinateError):
        cloud_to_local_name(name)


@pytest.mark.parametrize("name", ["_2025-08-12-08-54-21_0.bag", "rosbag2025-08-12-08-54-21_0.bag", "ROSBAG_x.bag", ""])
def test_local_to_cloud_rejects_names_without_the_rosbag_prefix(name: str) -> None:
    with pytest.raises(CoordinateError):
        local_to_cloud_name(name)


# --- local folders -------------------------------------------------------------------------------------------------


def test_local_raw_dir_has_no_rosbag_level(tmp_path: Path) -> None:
    run_dir = local_raw_dir(tmp_path, COORD)
    assert run_dir == tmp_path / "client_001" / "region_a" / "field_x" / "TW_001" / "LB_0001" / TS
    bag_path = run_dir / cloud_to_local_name(BAG)
    assert bag_path.relative_to(tmp_path).parts == (*COORD.to_path_tuple(), "rosbag_2025-08-25-08-59-57_0.bag")
    assert "rosbag" not in bag_path.relative_to(tmp_path).parts


def test_local_ml_dir_has_the_raw_folder_and_no_rosbag_level(tmp_path: Path) -> None:
    run_dir = local_ml_dir(tmp_path, COORD)
    assert run_dir == tmp_path / "raw" / "client_001" / "region_a" / "field_x" / "TW_001" / "LB_0001" / TS
    label = run_dir / cloud_to_local_name(BAG_DIR) / "labels" / LABEL
    assert label.relative_to(tmp_path).parts == (
        "raw", *COORD.to_path_tuple(), "rosbag_2025-08-25-08-59-57_0", "labels", LABEL,
    )
    assert "rosbag" not in label.relative_to(tmp_path).parts


def test_processed_dir_is_the_coordinate_under_the_root(tmp_path: Path) -> None:
    assert processed_dir(tmp_path, COORD) == tmp_path.joinpath(*RUN.split("/"))
