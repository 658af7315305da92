"""Tests for the demo fleet: the plan's realism and determinism, and a real seed into fake-gcs-server.

The integration tests judge the seeded fleet from an independent listing of the buckets (plain
``client.list_blobs`` and key regexes) and a walk of the local roots, never from the plan's own code.
"""

from __future__ import annotations

import functools
import json
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud import storage
from rosbags.highlevel import AnyReader

from runtool.config import RuntoolConfig
from runtool.demo.emulator import Emulator
from runtool.demo.fleet import (
    PRESET_NAMES,
    FleetError,
    FleetPlan,
    LocalML,
    LocalRaw,
    MLCase,
    PlannedRun,
    SeedReport,
    is_seeded,
    plan_fleet,
    seed_fleet,
)
from runtool.models import RunCoordinate, SyncStatus
from runtool.storage import make_client

TOPICS = {
    "/sensors/triton_camera_feed/compressed",
    "/weed_detection/bboxes",
    "/multi_object_tracking/track_bboxes",
}
COORD = r"(client_\d{3}/region_[a-z]+/field_\d{3}/TW_\d{3}/LB_\d{4}/\d{4}[_-]\d{2}[_-]\d{2}T\d{2}:\d{2}:\d{2}Z)"
BAG_STEM = r"(_(\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})_(\d+))"
RAW_KEY = re.compile(rf"^{COORD}/rosbag/{BAG_STEM}\.bag$")
ML_KEY = re.compile(rf"^raw/{COORD}/rosbag/{BAG_STEM}/(?:frames/(\d+\.\d{{9}})\.jpg|labels/(\d+\.\d{{9}})\.txt)$")
NS = 1_000_000_000


@functools.cache
def cached_plan(preset: str, seed: int = 7) -> FleetPlan:
    return plan_fleet(preset, seed)


def start(run: PlannedRun) -> datetime:
    return run.coordinate.start_time


# -- the plan ------------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_plan_and_another_seed_another() -> None:
    assert plan_fleet("small", 7) == plan_fleet("small", 7)
    assert plan_fleet("medium", 3) == cached_plan("medium", 3)
    assert plan_fleet("small", 8) != plan_fleet("small", 7)


def test_an_unknown_preset_is_refused() -> None:
    assert PRESET_NAMES == ("small", "medium", "large")
    with pytest.raises(FleetError, match="unknown fleet preset 'huge'"):
        plan_fleet("huge")


def test_preset_sizes() -> None:
    small, medium, large = (cached_plan(name) for name in PRESET_NAMES)
    assert 40 <= len(small.runs) <= 60
    assert 300 <= len(medium.runs) <= 500
    assert len(large.runs) >= 5_000
    assert all(bag.real for run in small.runs if run.in_raw_bucket for bag in run.bags)
    for plan in (medium, large):
        real_runs = [run for run in plan.runs if any(bag.real for bag in run.bags)]
        assert 0 < len(real_runs) <= 30
        assert all(all(bag.real for bag in run.bags) for run in real_runs)


@pytest.mark.parametrize("preset", ["small", "large"])
def test_sessions_spread_over_months_on_weekdays_with_idle_days(preset: str) -> None:
    runs = cached_plan(preset).runs
    days = {start(run).date() for run in runs}
    assert max(days) - min(days) >= timedelta(days=92)
    weekend = sum(start(run).weekday() >= 5 for run in runs) / len(runs)
    assert weekend <= 0.1
    assert not any(start(run).weekday() == 6 for run in runs)
    weekdays = [min(days) + timedelta(days=i) for i in range((max(days) - min(days)).days)]
    idle = [day for day in weekdays if day.weekday() < 5 and day not in days]
    assert len(idle) >= 5
    assert {run.coordinate.cid for run in runs} == {"client_001", "client_002"}
    assert len({run.coordinate.regionid for run in runs}) >= 3
    assert len({run.coordinate.fieldid for run in runs}) >= 4


@pytest.mark.parametrize("preset", ["small", "large"])
def test_laser_boxes_of_a_tw_start_within_a_minute(preset: str) -> None:
    by_tw: dict[str, list[PlannedRun]] = defaultdict(list)
    for run in cached_plan(preset).runs:
        by_tw[run.coordinate.twid].append(run)
    for twid, runs in by_tw.items():
        lbs = {run.coordinate.lbid for run in runs}
        assert 3 <= len(lbs) <= 4, twid
        runs.sort(key=start)
        sessions: list[list[PlannedRun]] = [[runs[0]]]
        for run in runs[1:]:
            if start(run) - start(sessions[-1][0]) > timedelta(minutes=10):
                sessions.append([])
            sessions[-1].append(run)
        for session in sessions:
            assert start(session[-1]) - start(session[0]) <= timedelta(seconds=60)
            assert len({run.coordinate.lbid for run in session}) == len(session)
            assert len({run.coordinate.fieldid for run in session}) == 1
        assert sum(len(session) >= 3 for session in sessions) >= len(sessions) * 0.9


@pytest.mark.parametrize("preset", ["small", "large"])
def test_bags_follow_the_run_timestamp_back_to_back(preset: str) -> None:
    plan = cached_plan(preset)
    counts = [len(run.bags) for run in plan.runs]
    assert min(counts) >= 2
    assert max(counts) <= 40
    for run in plan.runs:
        first = run.bags[0].start_ns - int(start(run).timestamp()) * NS
        assert 20 * NS <= first <= 30 * NS
        for i, bag in enumerate(run.bags):
            moment = datetime.fromtimestamp(bag.start_ns // NS, UTC)
            assert bag.name == f"_{moment:%Y-%m-%d-%H-%M-%S}_{i}.bag"
        for before, after in zip(run.bags, run.bags[1:], strict=False):
            assert after.start_ns >= before.start_ns + int(before.duration_s * NS)
    if preset == "large":
        assert 10 <= sum(counts) / len(counts) <= 30


@pytest.mark.parametrize("preset", ["small", "large"])
def test_both_timestamp_spellings_occur_and_dashes_are_few(preset: str) -> None:
    runs = cached_plan(preset).runs
    dashed = [run for run in runs if re.match(r"^\d{4}-\d{2}-\d{2}T", run.coordinate.timestamp)]
    assert dashed
    assert len(dashed) <= 0.1 * len(runs)
    assert all(re.match(r"^\d{4}_\d{2}_\d{2}T", run.coordinate.timestamp) for run in runs if run not in dashed)


@pytest.mark.parametrize("preset", ["small", "large"])
def test_every_ml_case_occurs_with_its_shape(preset: str) -> None:
    runs = cached_plan(preset).runs
    by_case: dict[MLCase, list[PlannedRun]] = defaultdict(list)
    for run in runs:
        by_case[run.ml.case].append(run)
        names = {bag.stem for bag in run.bags}
        for bag in run.ml.bags:
            assert bag.bag in names
            assert 0 <= bag.empty_labels <= bag.labels <= bag.samples
    assert set(by_case) == set(MLCase)
    assert all(not run.ml.bags for run in by_case[MLCase.NONE])
    for run in by_case[MLCase.FULL]:
        assert len(run.ml.bags) == len(run.bags)
        assert all(17 <= bag.labels == bag.samples <= 20 for bag in run.ml.bags)
    assert all(2 <= bag.labels <= 10 for run in by_case[MLCase.UNDER] for bag in run.ml.bags)
    assert all(any(b.labels < b.samples for b in run.ml.bags) for run in by_case[MLCase.UNLABELLED_FRAMES])
    assert all(any(b.empty_labels for b in run.ml.bags) for run in by_case[MLCase.EMPTY_LABELS])
    assert all(not run.in_raw_bucket and run.ml.in_ml_bucket for run in by_case[MLCase.ML_ONLY])
    for run in by_case[MLCase.NOT_UPLOADED]:
        assert not run.ml.in_ml_bucket
        assert run.local.ml is LocalML.LOCAL_ONLY


def expected_sync(run: PlannedRun) -> tuple[SyncStatus, SyncStatus]:
    """Raw and ML sync status by the legacy rules (exists on each side; equal or not)."""
    raw_local = run.local.raw is not LocalRaw.NONE
    if run.in_raw_bucket and raw_local:
        raw = SyncStatus.SYNCED if run.local.raw is LocalRaw.COMPLETE else SyncStatus.MISMATCH
    else:
        raw = {(True, False): SyncStatus.CLOUD_ONLY, (False, True): SyncStatus.LOCAL_ONLY}.get(
            (run.in_raw_bucket, raw_local), SyncStatus.MISSING
        )
    ml_local = run.local.ml is not LocalML.NONE
    cloud = run.ml.in_ml_bucket
    if cloud and ml_local:
        ml = SyncStatus.SYNCED if run.local.ml is LocalML.COMPLETE else SyncStatus.MISMATCH
    else:
        ml = {(True, False): SyncStatus.CLOUD_ONLY, (False, True): SyncStatus.LOCAL_ONLY}.get(
            (cloud, ml_local), SyncStatus.MISSING
        )
    return raw, ml


@pytest.mark.parametrize("preset", ["small", "large"])
def test_every_local_case_and_sync_status_occurs(preset: str) -> None:
    runs = cached_plan(preset).runs
    assert {run.local.raw for run in runs} == set(LocalRaw)
    assert {run.local.ml for run in runs} == set(LocalML)
    for run in runs:
        if run.local.raw is not LocalRaw.NONE:
            assert all(bag.real for bag in run.bags)
        if run.local.raw is LocalRaw.LOCAL_ONLY:
            assert not run.in_raw_bucket
    assert {expected_sync(run)[0] for run in runs} == set(SyncStatus)
    assert {expected_sync(run)[1] for run in runs} == set(SyncStatus)


def test_malformed_keys_are_planned_for_both_buckets() -> None:
    anomalies = cached_plan("small").anomalies
    raw = [a.key for a in anomalies if a.bucket == "raw"]
    ml = [a.key for a in anomalies if a.bucket == "ml"]
    assert "client_001/region_north/stray.txt" in raw
    assert any("/not-a-time/" in key for key in raw) and any("/not-a-time/" in key for key in ml)
    assert any(key.endswith("/rosbag/notes.md") for key in raw)
    assert any(re.search(r"/frames/[^/]+\.json$", key) for key in ml)
    assert not any(RAW_KEY.match(key) for key in raw)
    assert not any(ML_KEY.match(key) for key in ml)


# -- seeding into a real emulator ----------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    plan: FleetPlan
    report: SeedReport
    config: RuntoolConfig
    client: storage.Client
    raw: dict[str, storage.Blob]
    ml: dict[str, storage.Blob]
    progress: list[tuple[str, int, int]]
    seeded_before: bool
    work_dir: Path


def list_bucket(client: storage.Client, name: str) -> dict[str, storage.Blob]:
    return {blob.name: blob for blob in client.list_blobs(name)}


@pytest.fixture(scope="module")
def emulator_client() -> Iterator[tuple[Emulator, storage.Client]]:
    with pytest.MonkeyPatch.context() as patch, Emulator() as emulator:
        patch.delenv("STORAGE_EMULATOR_HOST", raising=False)  # make_client sets it; restored afterwards
        yield emulator, make_client(emulator_host=emulator.url)


@pytest.fixture(scope="module")
def seeded(emulator_client: tuple[Emulator, storage.Client], tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    emulator, client = emulator_client
    root = tmp_path_factory.mktemp("fleet")
    work_dir = tmp_path_factory.mktemp("fleet-work")
    config = RuntoolConfig(
        raw_bucket="fleet-test-raw", ml_bucket="fleet-test-ml", emulator_host=emulator.url, data_dir=root,
        raw_root=root / "raw", processed_root=root / "processed", ml_root=root / "ML", cache_dir=root / "cache",
    )
    plan = cached_plan("small")
    before = is_seeded(client, config)
    calls: list[tuple[str, int, int]] = []
    started = time.perf_counter()
    report = seed_fleet(config, plan, client, progress=lambda *call: calls.append(call), work_dir=work_dir)
    print(f"\nseeding the small fleet took {time.perf_counter() - started:.1f} s: {report}")
    raw, ml = list_bucket(client, config.raw_bucket), list_bucket(client, config.ml_bucket)
    return Seeded(plan, report, config, client, raw, ml, calls, before, work_dir)


def test_report_matches_the_listing(seeded: Seeded) -> None:
    report = seeded.report
    assert report.runs == len(seeded.plan.runs)
    assert report.raw_objects == len(seeded.raw)
    assert report.ml_objects == len(seeded.ml)
    assert report.bytes_uploaded == sum(blob.size or 0 for blob in [*seeded.raw.values(), *seeded.ml.values()])
    malformed = [k for k in seeded.raw if not RAW_KEY.match(k)] + [k for k in seeded.ml if not ML_KEY.match(k)]
    assert report.anomaly_objects == len(malformed) >= 8
    assert 5 * 2**20 <= report.bytes_uploaded <= 60 * 2**20
    assert report.seconds > 0
    assert list(seeded.work_dir.iterdir()) == []  # the temporary bag folder is gone


def test_is_seeded_only_after_seeding(seeded: Seeded, emulator_client: tuple[Emulator, storage.Client]) -> None:
    assert not seeded.seeded_before
    assert is_seeded(seeded.client, seeded.config)
    _, client = emulator_client
    empty = seeded.config.with_overrides(raw_bucket="fleet-empty-raw", ml_bucket="fleet-empty-ml")
    client.create_bucket(empty.raw_bucket)
    client.create_bucket(empty.ml_bucket)
    assert not is_seeded(client, empty)


def test_progress_is_reported_per_stage_up_to_the_total(seeded: Seeded) -> None:
    by_stage: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for stage, done, total in seeded.progress:
        by_stage[stage].append((done, total))
    assert set(by_stage) == {"raw", "ml", "local"}
    for calls in by_stage.values():
        assert [done for done, _ in calls] == list(range(1, len(calls) + 1))
        assert calls[-1][0] == calls[-1][1]
    assert by_stage["raw"][-1][1] == len(seeded.raw)
    assert by_stage["ml"][-1][1] == len(seeded.ml)


def raw_runs(raw: dict[str, storage.Blob]) -> dict[str, dict[str, int]]:
    """Cloud bags per coordinate string, in local names, with sizes."""
    runs: dict[str, dict[str, int]] = defaultdict(dict)
    for key, blob in raw.items():
        match = RAW_KEY.match(key)
        if match:
            runs[match.group(1)]["rosbag" + match.group(2) + ".bag"] = blob.size or 0
    return runs


def test_raw_keys_follow_the_layout(seeded: Seeded) -> None:
    malformed = sorted(key for key in seeded.raw if not RAW_KEY.match(key))
    assert "client_001/region_north/stray.txt" in malformed
    assert any("/not-a-time/rosbag/" in key for key in malformed)
    assert any(key.endswith("/rosbag/notes.md") for key in malformed)
    assert any(key.count("/") == 6 and key.endswith(".bag") for key in malformed)  # no rosbag/ level
    bags: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for key in seeded.raw:
        match = RAW_KEY.match(key)
        if match:
            bags[match.group(1)].append((int(match.group(4)), match.group(3)))
    assert len(bags) >= 40
    assert any("-" in coord.rsplit("/", 1)[1].split("T")[0] for coord in bags)
    for coord, items in bags.items():
        items.sort()
        assert [i for i, _ in items] == list(range(len(items)))
        assert 2 <= len(items) <= 40
        run_start = RunCoordinate.parse(coord).start_time
        first_bag = datetime.strptime(items[0][1], "%Y-%m-%d-%H-%M-%S").replace(tzinfo=UTC)
        assert timedelta(seconds=20) <= first_bag - run_start <= timedelta(seconds=30)
    assert all((blob.size or 0) > 0 for key, blob in seeded.raw.items() if RAW_KEY.match(key))


def camera_stamps(path: Path) -> set[str]:
    """The file-name stamps (``sec.nsec``) of a bag's camera frames; checks the three topics exist."""
    with AnyReader([path]) as reader:
        assert set(reader.topics) >= TOPICS
        assert all(reader.topics[topic].msgcount > 0 for topic in TOPICS)
        connections = [c for c in reader.connections if c.topic == "/sensors/triton_camera_feed/compressed"]
        stamps = set()
        for connection, _, data in reader.messages(connections=connections):
            message: Any = reader.deserialize(data, connection.msgtype)
            stamp = message.header.stamp
            stamps.add(f"{stamp.sec}.{stamp.nanosec:09d}")
        return stamps


def test_real_bags_open_and_ml_frames_use_their_stamps(seeded: Seeded, tmp_path: Path) -> None:
    frames: dict[str, set[str]] = defaultdict(set)
    for key in seeded.ml:
        match = ML_KEY.match(key)
        if match and match.group(5):
            frames[f"{match.group(1)}/rosbag/{match.group(2)}.bag"].add(match.group(5))
    labelled = sorted(key for key in frames if key in seeded.raw)
    assert labelled
    for key in (min(key for key in seeded.raw if RAW_KEY.match(key)), labelled[0], labelled[-1]):
        blob = seeded.raw[key]
        path = tmp_path / key.replace("/", "_").replace(":", "-")
        blob.download_to_filename(str(path))
        stamps = camera_stamps(path)
        assert frames[key] <= stamps


def test_ml_labels_match_frames_and_cover_every_case(seeded: Seeded) -> None:
    dirs: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: {"frames": {}, "labels": {}})
    malformed = []
    for key, blob in seeded.ml.items():
        match = ML_KEY.match(key)
        if not match:
            malformed.append(key)
            continue
        bag_dir = f"{match.group(1)}/{match.group(2)}"
        if match.group(5):
            dirs[bag_dir]["frames"][match.group(5)] = blob.size or 0
        else:
            dirs[bag_dir]["labels"][match.group(6)] = blob.size or 0
    for bag_dir, files in dirs.items():
        assert files["frames"], bag_dir
        assert set(files["labels"]) <= set(files["frames"]), bag_dir
        assert all(size > 0 for size in files["frames"].values())
    assert any(len(files["labels"]) >= 17 for files in dirs.values())  # fully labelled
    assert any(2 <= len(files["labels"]) <= 10 for files in dirs.values())  # under-labelled
    assert any(len(files["labels"]) < len(files["frames"]) for files in dirs.values())  # unlabelled frames
    assert any(0 in files["labels"].values() for files in dirs.values())  # frames with no weeds
    ml_coords = {bag_dir.rsplit("/", 1)[0] for bag_dir in dirs}
    assert ml_coords - set(raw_runs(seeded.raw))  # ML only: samples without raw bags
    assert "raw/README.md" in malformed
    assert any(re.search(r"/frames/[^/]+\.json$", key) for key in malformed)
    assert any("/not-a-time/" in key for key in malformed)
    assert any(key.startswith("annot/") for key in malformed)
    assert any("/previews/" in key for key in malformed)


def walk_local_raw(root: Path) -> dict[str, dict[str, int]]:
    runs: dict[str, dict[str, int]] = defaultdict(dict)
    for path in root.rglob("*"):
        if path.is_file():
            parts = path.relative_to(root).parts
            assert len(parts) == 7, path  # bags sit directly in the timestamp folder
            assert re.match(r"^rosbag_\d{4}(-\d{2}){5}_\d+\.bag$", parts[6]), path
            runs["/".join(parts[:6])][parts[6]] = path.stat().st_size
    return runs


def walk_local_ml(root: Path) -> tuple[dict[str, dict[str, int]], list[Path]]:
    runs: dict[str, dict[str, int]] = defaultdict(dict)
    others = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        parts = path.relative_to(root).parts
        if len(parts) == 10 and parts[8] in ("frames", "labels"):
            runs["/".join(parts[1:7])]["/".join(parts[7:])] = path.stat().st_size
        else:
            others.append(path)
    return runs, others


def status(cloud: dict[str, int] | None, local: dict[str, int] | None, exists: bool = True) -> SyncStatus:
    on_cloud, on_disk = bool(cloud) and exists, bool(local) and exists
    if on_cloud and on_disk:
        return SyncStatus.SYNCED if cloud == local else SyncStatus.MISMATCH
    if on_cloud:
        return SyncStatus.CLOUD_ONLY
    return SyncStatus.LOCAL_ONLY if on_disk else SyncStatus.MISSING


def test_local_copies_give_every_sync_status(seeded: Seeded) -> None:
    config = seeded.config
    local_raw = walk_local_raw(config.raw_root)
    assert not any(path.name == "rosbag" for path in config.raw_root.rglob("*"))
    cloud_raw = raw_runs(seeded.raw)
    cloud_ml: dict[str, dict[str, int]] = defaultdict(dict)
    for key, blob in seeded.ml.items():
        match = ML_KEY.match(key)
        if match:
            cloud_ml[match.group(1)]["rosbag" + key.split("/rosbag/", 1)[1]] = blob.size or 0
    local_ml, others = walk_local_ml(config.ml_root)
    coords = set(cloud_raw) | set(local_raw) | set(cloud_ml) | set(local_ml)

    def labelled(files: dict[str, int] | None) -> bool:
        return any("/labels/" in name for name in files or {})

    raw_status = {c: status(cloud_raw.get(c), local_raw.get(c)) for c in coords}
    ml_status = {
        c: status(cloud_ml.get(c) if labelled(cloud_ml.get(c)) else None,
                  local_ml.get(c) if labelled(local_ml.get(c)) else None)
        for c in coords
    }
    assert set(raw_status.values()) == set(SyncStatus)
    assert set(ml_status.values()) == set(SyncStatus)
    assert len([c for c in coords if c in local_raw or c in local_ml]) == seeded.report.local_runs
    mismatched = [c for c, s in raw_status.items() if s is SyncStatus.MISMATCH]
    assert any(len(local_raw[c]) < len(cloud_raw[c]) for c in mismatched)  # partial download
    assert any(set(local_raw[c]) == set(cloud_raw[c]) for c in mismatched)  # same bags, a size differs

    tracking = config.ml_root / "raw" / ".export_tracking.json"
    assert tracking in others
    exports = json.loads(tracking.read_text(encoding="utf-8"))["exports"]
    exported = {c for info in exports.values() for c in info["coordinates"]}
    assert exported == {c for c, s in ml_status.items() if s is SyncStatus.LOCAL_ONLY}
    assert {p.suffix for p in others} == {".json"}


def test_seeding_again_writes_the_same_objects(seeded: Seeded) -> None:
    def local_files() -> dict[str, int]:
        root = seeded.config.data_dir
        return {os.path.relpath(p, root): p.stat().st_size for p in root.rglob("*") if p.is_file()}

    files = local_files()
    report = seed_fleet(seeded.config, seeded.plan, seeded.client)
    assert (report.raw_objects, report.ml_objects) == (seeded.report.raw_objects, seeded.report.ml_objects)
    for name, first in ((seeded.config.raw_bucket, seeded.raw), (seeded.config.ml_bucket, seeded.ml)):
        again = list_bucket(seeded.client, name)
        assert {k: b.crc32c for k, b in again.items()} == {k: b.crc32c for k, b in first.items()}
    assert local_files() == files
