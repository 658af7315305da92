"""DataStateService and LocalStateService against a real emulator and real local folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtool.config import RuntoolConfig
from runtool.models import CoverageSettings, Filters, NextAction, RunCoordinate, SyncStatus
from runtool.services import ExportTrackingError, ServiceContainer, read_export_tracking
from runtool.storage import (
    cloud_to_local_name,
    local_ml_dir,
    local_raw_dir,
    make_client,
    ml_file_key,
    processed_dir,
    raw_bag_key,
)

BASE = "acme/north/field_7/TW_1"


def coord(lb: str, ts: str) -> RunCoordinate:
    return RunCoordinate.parse(f"{BASE}/{lb}/{ts}")


SYNCED = coord("LB_0001", "2025_08_01T08:00:00Z")
CLOUD_ONLY = coord("LB_0001", "2025_08_04T08:00:00Z")
COUNT_MISMATCH = coord("LB_0002", "2025_08_01T08:00:10Z")
SIZE_MISMATCH = coord("LB_0002", "2025_08_04T08:00:10Z")
LOCAL_ONLY = coord("LB_0003", "2025_08_02T09:00:00Z")
ML_ONLY = coord("LB_0003", "2025_08_04T09:00:00Z")


def bag(i: int) -> str:
    return f"_2025-08-01-08-00-{20 + i:02d}_{i}.bag"


class Fleet:
    """A hand-made fleet whose every number below is known."""

    def __init__(self, config: RuntoolConfig) -> None:
        self.config = config
        client = make_client(emulator_host=config.emulator_host)
        self.raw = client.bucket(config.raw_bucket)
        self.ml = client.bucket(config.ml_bucket)

    def cloud_bags(self, run: RunCoordinate, count: int, size: int = 100) -> None:
        for i in range(count):
            self.raw.blob(raw_bag_key(run, bag(i))).upload_from_string(b"b" * size)

    def cloud_samples(self, run: RunCoordinate, per_bag: list[tuple[int, int]]) -> None:
        """(frames, labels) per bag; labels are for the first frames."""
        for i, (frames, labels) in enumerate(per_bag):
            stem = bag(i)[:-4]
            for n in range(frames):
                self.ml.blob(ml_file_key(run, stem, "frames", f"1754035200.{n:09d}.jpg")).upload_from_string(b"j")
            for n in range(labels):
                self.ml.blob(ml_file_key(run, stem, "labels", f"1754035200.{n:09d}.txt")).upload_from_string(b"")

    def local_bags(self, run: RunCoordinate, count: int, size: int = 100) -> None:
        folder = local_raw_dir(self.config.raw_root, run)
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (folder / cloud_to_local_name(bag(i))).write_bytes(b"b" * size)


@pytest.fixture
def services(fresh_config: RuntoolConfig) -> ServiceContainer:
    fleet = Fleet(fresh_config)
    fleet.cloud_bags(SYNCED, 2)
    fleet.cloud_samples(SYNCED, [(20, 17), (10, 10)])  # 27 labels / (2 bags * 17) = 79.41 %
    fleet.local_bags(SYNCED, 2)
    fleet.cloud_bags(CLOUD_ONLY, 4)
    fleet.cloud_samples(CLOUD_ONLY, [(17, 17)] * 4)  # 68 / 68 = 100 %
    fleet.cloud_bags(COUNT_MISMATCH, 16)
    fleet.local_bags(COUNT_MISMATCH, 1)  # 0 labels: 0 %
    fleet.cloud_bags(SIZE_MISMATCH, 2)
    fleet.local_bags(SIZE_MISMATCH, 2, size=99)
    fleet.cloud_samples(SIZE_MISMATCH, [(30, 30), (30, 30)])  # 60 / 34 -> capped at 100 %
    fleet.local_bags(LOCAL_ONLY, 3)
    fleet.cloud_samples(ML_ONLY, [(5, 5)])
    out = processed_dir(fresh_config.processed_root, SYNCED)
    out.mkdir(parents=True)
    for name in ("frames.csv", "detections.csv", "tracking.csv", "metadata.yaml"):
        (out / name).write_text("x")
    container = ServiceContainer(fresh_config)
    container.inventory.refresh()
    return container


def by_run(services: ServiceContainer, **filters: str) -> dict[RunCoordinate, dict[str, object]]:
    records = services.data_state.run_records(Filters(**filters))
    return {RunCoordinate.from_dict(r): r for r in records}


def test_sync_status_of_every_case(services: ServiceContainer) -> None:
    rows = by_run(services)
    assert rows[SYNCED]["raw_sync"] == SyncStatus.SYNCED
    assert rows[CLOUD_ONLY]["raw_sync"] == SyncStatus.CLOUD_ONLY
    assert rows[COUNT_MISMATCH]["raw_sync"] == SyncStatus.MISMATCH
    assert "Bag count mismatch: 16 in the bucket, 1 on disk" in str(rows[COUNT_MISMATCH]["issues"])
    assert rows[SIZE_MISMATCH]["raw_sync"] == SyncStatus.MISMATCH
    assert "size mismatch" in str(rows[SIZE_MISMATCH]["issues"])
    assert rows[LOCAL_ONLY]["raw_sync"] == SyncStatus.LOCAL_ONLY
    assert rows[ML_ONLY]["raw_sync"] == SyncStatus.MISSING
    assert rows[ML_ONLY]["ml_sync"] == SyncStatus.CLOUD_ONLY
    assert "ML only" in str(rows[ML_ONLY]["issues"])


def test_run_records_coverage_values(services: ServiceContainer) -> None:
    rows = by_run(services)
    assert rows[SYNCED]["coverage_pct"] == pytest.approx(100 * 27 / 34)
    assert rows[SYNCED]["under_labelled"] is True
    assert rows[CLOUD_ONLY]["coverage_pct"] == pytest.approx(100.0)
    assert rows[SIZE_MISMATCH]["coverage_pct"] == pytest.approx(100.0)
    assert rows[COUNT_MISMATCH]["coverage_pct"] == pytest.approx(0.0)
    assert rows[ML_ONLY]["coverage_pct"] is None and rows[ML_ONLY]["ml_only"] is True
    assert rows[LOCAL_ONLY]["local_bags"] == 3 and rows[LOCAL_ONLY]["raw_bags"] == 0
    assert json.dumps(list(rows.values()))


def test_coverage_statistics_by_hand(services: ServiceContainer) -> None:
    stats = services.data_state.coverage_statistics(Filters(cid="acme"))
    # Runs with bags: SYNCED 2, CLOUD_ONLY 4, COUNT_MISMATCH 16, SIZE_MISMATCH 2 -> 24 bags, 408 expected.
    # Their labels: 27 + 68 + 0 + 60 = 155 -> 37.99 %; the ML-only run's 5 labels are not counted.
    assert stats.total_runs == 6 and stats.runs_with_bags == 4
    assert stats.total_bags == 24 and stats.total_labels == 160
    assert stats.overall_coverage_pct == pytest.approx(100 * 155 / 408)
    assert stats.average_coverage_pct == pytest.approx((100 * 27 / 34 + 100 + 0 + 100) / 4)
    assert [p.coordinate for p in stats.under_labelled] == [COUNT_MISMATCH, SYNCED]  # worst first
    assert stats.ml_only_runs == 1
    lenient = services.data_state.coverage_statistics(Filters(cid="acme"), CoverageSettings(13.5, 80))
    # With E = 13.5 the SYNCED run reaches 27 / 27 = 100 %.
    assert [p.coordinate for p in lenient.under_labelled] == [COUNT_MISMATCH]


def test_filter_options_come_from_cloud_and_local(services: ServiceContainer) -> None:
    options = services.data_state.filter_options(Filters(cid="acme", regionid="north"))
    assert options["lbid"] == ["LB_0001", "LB_0002", "LB_0003"]  # LB_0003 is local-only plus ML-only
    assert services.data_state.filter_options(Filters(cid="nobody"))["regionid"] == []


def test_aggregated_view_has_calendar_gaps(services: ServiceContainer) -> None:
    days = services.data_state.aggregated_coverage(Filters(twid="TW_1")).days
    assert [d.day.day for d in days] == [1, 2, 3, 4]
    by_day = {d.day.day: d for d in days}
    assert by_day[3].runs == 0 and by_day[3].coverage_pct is None
    # Aug 1: SYNCED (2 bags, 27 labels) + COUNT_MISMATCH (16 bags) -> 27 / 306.
    assert by_day[1].raw_bags == 18 and by_day[1].coverage_pct == pytest.approx(100 * 27 / 306)
    assert by_day[1].laser_boxes == 2


def test_laser_box_stats(services: ServiceContainer) -> None:
    stats = {s.lbid: s for s in services.data_state.laser_box_stats(Filters(twid="TW_1"))}
    assert stats["LB_0001"].total_bags == 6 and stats["LB_0001"].active_days == 2
    assert stats["LB_0001"].coverage_pct == pytest.approx(100 * 95 / 102)
    assert stats["LB_0003"].coverage_pct is None and stats["LB_0003"].active_days == 0


def test_complete_run_state_compares_bag_by_bag(services: ServiceContainer) -> None:
    state = services.data_state.get_complete_run_state(COUNT_MISMATCH)
    assert state.raw_sync is SyncStatus.MISMATCH
    assert "Bag count mismatch: 16 in the bucket, 1 on disk" in state.issues
    assert any(issue.startswith("Bags not downloaded: 15") for issue in state.issues)
    # 15 of its 16 bags are not here: they are downloaded before any extraction (which would read one bag).
    assert len(state.missing_bags) == 15 and state.next_action is NextAction.DOWNLOAD
    synced = services.data_state.get_complete_run_state(SYNCED)
    assert synced.raw_sync is SyncStatus.SYNCED and synced.extraction.extracted
    assert synced.next_action is NextAction.ANALYZE
    assert services.data_state.get_complete_run_state(CLOUD_ONLY).next_action is NextAction.DOWNLOAD
    assert state.differing_bags == () and synced.differing_bags == () and synced.missing_bags == ()


def test_a_local_bag_of_the_wrong_size_is_named_and_downloaded_again(services: ServiceContainer) -> None:
    state = services.data_state.get_complete_run_state(SIZE_MISMATCH)
    assert state.differing_bags == (bag(0), bag(1))  # cloud names, as the download picks them
    assert f"Bag size differs: {bag(0)}, {bag(1)}" in state.issues
    assert state.next_action is NextAction.DOWNLOAD


def test_local_refresh_of_one_run(services: ServiceContainer) -> None:
    Fleet(services.config).local_bags(CLOUD_ONLY, 4)
    assert by_run(services)[CLOUD_ONLY]["raw_sync"] == SyncStatus.CLOUD_ONLY  # index not yet refreshed
    services.local.refresh_run(CLOUD_ONLY)
    assert by_run(services)[CLOUD_ONLY]["raw_sync"] == SyncStatus.SYNCED


def test_local_ml_counts_and_timestamps(services: ServiceContainer) -> None:
    folder = local_ml_dir(services.config.ml_root, CLOUD_ONLY) / "rosbag_2025-08-01-08-00-20_0"
    (folder / "frames").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "frames" / "1.000000001.jpg").write_bytes(b"j")
    (folder / "labels" / "1.000000001.txt").write_bytes(b"")
    (folder / "export.json").write_text("{}")
    run = services.local.refresh_run(CLOUD_ONLY)
    assert (run.ml.frame_count, run.ml.label_count, run.ml.other_files) == (1, 1, 1)
    # A transfer's temporary files (hidden, removed as it goes) are not samples, bags or other files.
    (folder / "labels" / ".1.000000002.txt.part-1a2b3c4d").write_bytes(b"half")
    raw = local_raw_dir(services.config.raw_root, CLOUD_ONLY)
    raw.mkdir(parents=True, exist_ok=True)
    (raw / ".rosbag_2025-08-01-08-00-20_0.bag.part-1a2b3c4d").write_bytes(b"half")
    run = services.local.refresh_run(CLOUD_ONLY)
    assert (run.ml.frame_count, run.ml.label_count, run.ml.other_files, run.raw.bag_count) == (1, 1, 1, 0)
    assert services.data_state.available_timestamps(Filters(lbid="LB_0001")) == [
        "2025_08_04T08:00:00Z", "2025_08_01T08:00:00Z"]


def test_export_tracking_both_shapes_and_errors(tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    target = folder / ".export_tracking.json"
    with pytest.raises(ExportTrackingError, match="No export tracking file"):
        read_export_tracking(tmp_path)
    info = {"created": "2025-09-01", "samples": 120, "coordinates": ["client_001/region_xxx/field_yyy"]}
    target.write_text(json.dumps({"exports": {"exp_2": info, "exp_1": info}, "metadata": {"v": 1}}))
    assert list(read_export_tracking(tmp_path)) == ["exp_1", "exp_2"]
    target.write_text(json.dumps({"exp_9": info, "metadata": {}, "last_updated": "x", "version": "1"}))
    exports = read_export_tracking(tmp_path)
    assert list(exports) == ["exp_9"] and exports["exp_9"].samples == 120
    assert exports["exp_9"].coordinates == ("client_001/region_xxx/field_yyy",)
    target.write_text("{not json")
    with pytest.raises(ExportTrackingError, match="not valid JSON"):
        read_export_tracking(tmp_path)


def test_issue_texts_join_every_problem_of_a_run_in_order() -> None:
    import pandas as pd

    from runtool.analysis import with_coverage
    from runtool.services.data_state import _issues

    counts = {  # run 0: size mismatch, under-labelled, unlabelled frames; run 1: ML only; run 2: none
        "raw_bags": [2, 0, 1], "local_bags": [2, 0, 1], "raw_bytes": [1000, 0, 5], "local_raw_bytes": [999, 0, 5],
        "ml_frames": [7, 3, 17], "ml_labels": [4, 3, 17], "local_frames": [0, 0, 17], "local_labels": [0, 0, 17],
        "ml_bytes": [70, 30, 9], "local_ml_bytes": [0, 0, 9],
    }
    runs = pd.DataFrame({
        "cid": ["c"] * 3, "regionid": ["r"] * 3, "fieldid": ["f"] * 3, "twid": ["t"] * 3, "lbid": ["l"] * 3,
        "timestamp": ["2025_08_25T08:59:38Z"] * 3,
        "start_time": pd.to_datetime(["2025-08-25T08:59:38Z"] * 3, utc=True), **counts,
    })
    raw_texts, ml_texts = _issues(with_coverage(runs, CoverageSettings()), 80.0)
    assert raw_texts.tolist() == [
        "Bag size mismatch: 1000 B in the bucket, 999 B on disk (1 B less on disk); Under-labelled: 11.8 % < 80 %",
        "ML only: samples without raw bags",
        "",
    ]
    assert ml_texts.tolist() == ["3 frames without labels", "", ""]
