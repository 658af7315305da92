"""CloudInventoryService against a real fake-gcs-server."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runtool.config import RuntoolConfig
from runtool.demo.emulator import Emulator
from runtool.errors import ReadOnlyError
from runtool.models import Filters
from runtool.services import CloudInventoryService, InventoryError, RefreshCancelled, ServiceContainer
from runtool.services import inventory as inventory_module
from runtool.storage import make_client
from tests.conftest import SeededFleet, make_config

RUN = "client_a/region_1/field_1/TW_1/LB_0001/2025_08_25T08:59:38Z"
RUN2 = "client_a/region_1/field_1/TW_1/LB_0002/2025-08-25T08:59:51Z"


def upload(config: RuntoolConfig, raw_keys: list[str], ml_keys: list[str]) -> None:
    client = make_client(emulator_host=config.emulator_host)
    for bucket, keys in ((config.raw_bucket, raw_keys), (config.ml_bucket, ml_keys)):
        for key in keys:
            client.bucket(bucket).blob(key).upload_from_string(b"x" * (len(key) % 7))


def inventory(config: RuntoolConfig, read_only: bool = False) -> CloudInventoryService:
    return CloudInventoryService(config, lambda: make_client(emulator_host=config.emulator_host), read_only)


def small_fleet(config: RuntoolConfig) -> None:
    raw = [f"{RUN}/rosbag/_2025-08-25-09-00-0{i}_{i}.bag" for i in range(3)]
    raw += [f"{RUN2}/rosbag/_2025-08-25-09-00-1{i}_{i}.bag" for i in range(2)]
    raw += ["stray.txt", "client_a/region_1/field_1/TW_1/LB_0001/not-a-time/rosbag/_x_0.bag"]
    ml = [f"raw/{RUN}/rosbag/_2025-08-25-09-00-00_0/frames/1756112584.{i:09d}.jpg" for i in range(4)]
    ml += [f"raw/{RUN}/rosbag/_2025-08-25-09-00-00_0/labels/1756112584.{i:09d}.txt" for i in range(3)]
    ml += [f"raw/{RUN}/rosbag/_2025-08-25-09-00-00_0/frames/meta.json"]
    upload(config, raw, ml)


def test_full_refresh_counts_runs_and_keeps_anomalies_apart(fresh_config: RuntoolConfig) -> None:
    small_fleet(fresh_config)
    service = inventory(fresh_config)
    info = service.refresh()
    assert (info.objects, info.runs, info.anomalies) == (5 + 7, 2, 3)
    runs = service.snapshot.runs().set_index("lbid")
    assert runs.loc["LB_0001", ["raw_bags", "ml_frames", "ml_labels", "ml_bags"]].tolist() == [3, 4, 3, 1]
    assert runs.loc["LB_0002", ["raw_bags", "ml_frames", "ml_labels"]].tolist() == [2, 0, 0]
    reasons = dict(zip(service.snapshot.anomalies["key"], service.snapshot.anomalies["reason"], strict=True))
    assert "wrong depth" in reasons["stray.txt"]
    assert "bad timestamp" in reasons["client_a/region_1/field_1/TW_1/LB_0001/not-a-time/rosbag/_x_0.bag"]
    assert "not an image" in reasons[f"raw/{RUN}/rosbag/_2025-08-25-09-00-00_0/frames/meta.json"]


def test_cache_survives_a_new_process_and_records_buckets(fresh_config: RuntoolConfig) -> None:
    small_fleet(fresh_config)
    inventory(fresh_config).refresh()
    again = inventory(fresh_config)
    assert again.has_data
    assert len(again.snapshot.runs()) == 2
    other_buckets = fresh_config.with_overrides(raw_bucket="some-other-raw")
    stale = inventory(other_buckets)
    assert not stale.has_data
    assert stale.warning is not None and "some-other-raw" in stale.warning


def test_prefix_refresh_updates_only_that_run(fresh_config: RuntoolConfig) -> None:
    small_fleet(fresh_config)
    service = inventory(fresh_config)
    service.refresh()
    upload(fresh_config, [f"{RUN}/rosbag/_2025-08-25-09-00-09_9.bag", f"{RUN2}/rosbag/_2025-08-25-09-00-19_9.bag"], [])
    service.refresh(Filters.from_mapping(dict(zip(["cid", "regionid", "fieldid", "twid", "lbid", "timestamp"],
                                                  RUN.split("/"), strict=True))))
    runs = service.snapshot.runs().set_index("lbid")
    assert runs.loc["LB_0001", "raw_bags"] == 4  # refreshed
    assert runs.loc["LB_0002", "raw_bags"] == 2  # outside the prefix: unchanged until a full refresh
    assert service.cache_info().anomalies == 3
    service.refresh()
    assert service.snapshot.runs().set_index("lbid").loc["LB_0002", "raw_bags"] == 3


def test_missing_bucket_is_named_and_cache_is_kept(fresh_config: RuntoolConfig) -> None:
    small_fleet(fresh_config)
    service = inventory(fresh_config)
    service.refresh()
    before = service.cache_path.read_bytes()
    make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.ml_bucket).delete(force=True)
    with pytest.raises(InventoryError, match=f"{fresh_config.ml_bucket}.*not found.*previous inventory is kept"):
        service.refresh()
    assert service.cache_path.read_bytes() == before
    assert service.cache_info().runs == 2


def test_emulator_stopped_during_refresh_keeps_previous_cache(tmp_path: Path) -> None:
    with Emulator() as private:
        config = make_config(tmp_path, private.url)
        client = make_client(emulator_host=private.url)
        client.create_bucket(config.raw_bucket)
        client.create_bucket(config.ml_bucket)
        small_fleet(config)
        service = inventory(config)
        service.refresh()
        cache = config.cache_dir / "inventory.parquet"
        before = cache.read_bytes()

        def stop_emulator(progress: object) -> None:
            private.stop()

        with pytest.raises(InventoryError, match="could not be reached.*previous inventory is kept"):
            service.refresh(progress=stop_emulator)
        assert cache.read_bytes() == before
        assert inventory(config).cache_info().runs == 2


def test_cancel_leaves_cache_untouched(fresh_config: RuntoolConfig) -> None:
    small_fleet(fresh_config)
    service = inventory(fresh_config)
    service.refresh()
    before = service.cache_path.read_bytes()
    cancel = threading.Event()
    with pytest.raises(RefreshCancelled):
        service.refresh(progress=lambda _: cancel.set(), cancel=cancel)
    assert service.cache_path.read_bytes() == before


def test_corrupt_cache_is_rebuilt_with_a_warning(fresh_config: RuntoolConfig) -> None:
    small_fleet(fresh_config)
    inventory(fresh_config).refresh()
    (fresh_config.cache_dir / "inventory.parquet").write_bytes(b"PAR1 this is not parquet")
    service = inventory(fresh_config)
    assert not service.has_data
    assert service.warning is not None and "unreadable" in service.warning
    assert service.refresh().runs == 2
    assert inventory(fresh_config).has_data


def test_read_only_refuses_refresh(fresh_config: RuntoolConfig) -> None:
    with pytest.raises(ReadOnlyError):
        inventory(fresh_config, read_only=True).refresh()


def test_empty_buckets_give_empty_views(fresh_config: RuntoolConfig) -> None:
    services = ServiceContainer(fresh_config)
    services.inventory.refresh()
    stats = services.data_state.coverage_statistics(Filters())
    assert (stats.total_runs, stats.total_bags, stats.overall_coverage_pct) == (0, 0, None)
    assert services.data_state.filter_options(Filters())["cid"] == []


def test_demo_fleet_counts_match_an_independent_listing(demo_fleet: SeededFleet) -> None:
    """Every run's bag, frame and label counts equal what a plain list_blobs of the buckets says."""
    config = demo_fleet.config
    services = ServiceContainer(config.with_overrides(cache_dir=demo_fleet.root / "cache-independent"))
    services.inventory.refresh()
    bags: Counter[str] = Counter()
    frames: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    for blob in demo_fleet.client.list_blobs(config.raw_bucket):
        parts = blob.name.split("/")
        if len(parts) == 8 and parts[6] == "rosbag" and parts[7].startswith("_") and parts[7].endswith(".bag"):
            bags["/".join(parts[:6])] += 1
    for blob in demo_fleet.client.list_blobs(config.ml_bucket):
        parts = blob.name.split("/")
        if len(parts) == 11 and parts[0] == "raw" and parts[7] == "rosbag":
            if parts[9] == "frames" and parts[10].endswith(".jpg"):
                frames["/".join(parts[1:7])] += 1
            elif parts[9] == "labels" and parts[10].endswith(".txt"):
                labels["/".join(parts[1:7])] += 1
    runs = services.data_state.run_records(Filters())
    valid = {r["cid"] + "/" + "/".join(str(r[k]) for k in ("regionid", "fieldid", "twid", "lbid", "timestamp"))
             for r in runs}
    # Keys with a bad timestamp folder are anomalies, so they are in neither count.
    expected_bags = {k: v for k, v in bags.items() if k in valid}
    assert sum(expected_bags.values()) > 0
    for record in runs:
        key = "/".join(str(record[k]) for k in ("cid", "regionid", "fieldid", "twid", "lbid", "timestamp"))
        assert record["raw_bags"] == bags.get(key, 0), key
        assert record["ml_frames"] == frames.get(key, 0), key
        assert record["ml_labels"] == labels.get(key, 0), key
    anomaly_keys = set(services.data_state.anomalies()["key"])
    for run_key in set(bags) - valid:
        assert any(key.startswith(run_key + "/") for key in anomaly_keys), run_key
    assert services.inventory.cache_info().anomalies >= 3


def test_prefix_refresh_of_an_empty_prefix_and_of_empty_buckets(fresh_config: RuntoolConfig) -> None:
    service = inventory(fresh_config)
    service.refresh()  # empty buckets
    service.refresh(Filters(cid="client_a"))  # nothing there either
    assert service.cache_info().runs == 0
    small_fleet(fresh_config)
    service.refresh()
    service.refresh(Filters(cid="client_a", regionid="region_9"))  # a prefix holding no objects
    assert service.cache_info().runs == 2 and service.cache_info().anomalies == 3


# A process that loads the inventory cache, says so, waits for the go file, then refreshes one client's prefix: two
# of them have both read the same cache before either writes, the order that lost a scope's update.
_PARTIAL_REFRESH = """
import sys, time
from pathlib import Path
from runtool.models import Filters
from runtool.services import ServiceContainer

services = ServiceContainer.from_environment(Path(sys.argv[1]))
assert services.inventory.has_data
Path(sys.argv[4]).touch()
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
info = services.inventory.refresh(Filters(cid=sys.argv[3]))
print(info.objects)
"""


def _bags(config: RuntoolConfig) -> set[tuple[str, str]]:
    """(client, bag file name) of every raw bag in the cache on disk."""
    entries = inventory(config).snapshot.entries
    bags = entries[entries["kind"] == "bag"]
    return set(zip(bags["cid"].astype(str), bags["name"].astype(str), strict=True))


def test_concurrent_partial_refreshes_of_different_clients_both_land(fresh_config: RuntoolConfig,
                                                                     tmp_path: Path) -> None:
    from tests.conftest import write_toml

    clients = ("client_a", "client_b")
    upload(fresh_config, [f"{cid}/region_1/field_1/TW_1/LB_0001/2025_08_25T08:59:38Z/rosbag/_2025-08-25-09-00-00_0.bag"
                          for cid in clients], [])
    inventory(fresh_config).refresh()
    toml = write_toml(fresh_config, tmp_path / "runtool.toml")
    for trial in range(4):
        added = {cid: f"_2025-08-25-09-{trial + 10}-00_{trial + 1}.bag" for cid in clients}
        upload(fresh_config, [f"{cid}/region_1/field_1/TW_1/LB_0001/2025_08_25T08:59:38Z/rosbag/{name}"
                              for cid, name in added.items()], [])
        go = tmp_path / f"go-{trial}"
        workers = [
            subprocess.Popen([sys.executable, "-c", _PARTIAL_REFRESH, str(toml), str(go), cid, str(go) + cid],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for cid in clients
        ]
        deadline = time.monotonic() + 120
        while not all(Path(str(go) + cid).exists() for cid in clients):
            assert time.monotonic() < deadline and all(w.poll() is None for w in workers), "a worker did not start"
            time.sleep(0.02)
        go.touch()
        for worker in workers:
            _, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err
        bags = _bags(fresh_config)
        assert set(added.items()) <= bags, f"trial {trial}: a scope's update was lost"
        assert len(bags) == 2 + 2 * (trial + 1)


def _restamp(path: Path, runtool_metadata: bytes | None) -> None:
    """Rewrite the cache's ``runtool`` metadata (None: remove it), keeping the objects."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"runtool"}
    if runtool_metadata is not None:
        metadata[b"runtool"] = runtool_metadata
    pq.write_table(table.replace_schema_metadata(metadata), path)


@pytest.mark.parametrize(
    "stamp",
    [
        {"scanned_at": "yesterday"},
        {"scanned_at": 5},
        {"scanned_at": "2025-08-25T08:59:38"},  # no time zone: its age could not be computed
        {"scanned_at": None},
        {"raw_bucket": ["a", "list"]},
        {"version": 1},
        "a list",
        "not json",
        None,
    ],
)
def test_unreadable_cache_metadata_means_rebuild_with_one_warning(
    fresh_config: RuntoolConfig, stamp: dict[str, object] | str | None
) -> None:
    import json

    import pyarrow.parquet as pq

    small_fleet(fresh_config)
    inventory(fresh_config).refresh()
    path = fresh_config.cache_dir / "inventory.parquet"
    good = json.loads(pq.read_schema(path).metadata[b"runtool"])
    if stamp is None:
        _restamp(path, None)
    elif stamp == "a list":
        _restamp(path, json.dumps([good]).encode())
    elif stamp == "not json":
        _restamp(path, b"{scanned_at: now")
    else:
        assert isinstance(stamp, dict)
        _restamp(path, json.dumps({**good, **stamp}).encode())
    broken = inventory(fresh_config)
    assert not broken.has_data and broken.cache_info().runs == 0
    assert broken.warning is not None and "rebuilt" in broken.warning
    assert broken.refresh(Filters(cid="client_a")).runs == 2  # a partial refresh without a usable cache scans all
    assert broken.warning is None
    rebuilt = inventory(fresh_config)
    assert rebuilt.has_data and rebuilt.warning is None and rebuilt.cache_info().age_seconds is not None


def test_cli_commands_rebuild_a_cache_with_a_bad_scanned_at_once(
    fresh_config: RuntoolConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import pyarrow.parquet as pq

    from runtool.cli import main
    from tests.conftest import write_toml

    small_fleet(fresh_config)
    inventory(fresh_config).refresh()
    path = fresh_config.cache_dir / "inventory.parquet"
    good = json.loads(pq.read_schema(path).metadata[b"runtool"])
    toml = write_toml(fresh_config, tmp_path / "runtool.toml")
    _restamp(path, json.dumps({**good, "scanned_at": "2025-13-45"}).encode())
    assert main(["--config", str(toml), "runs", "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)) == 2 and err.count("warning:") == 1 and "rebuilt" in err
    assert main(["--config", str(toml), "runs", "--json"]) == 0
    assert "warning" not in capsys.readouterr().err
    _restamp(path, json.dumps({**good, "scanned_at": "2025-13-45"}).encode())
    assert main(["--config", str(toml), "inventory", "refresh"]) == 0
    out, err = capsys.readouterr()
    assert "Inventory refreshed" in out and err.count("warning:") == 1


@pytest.mark.parametrize(
    ("column", "value"),
    [("timestamp", "garbage"), ("cid", "../../etc"), ("role", "zzz"), ("kind", "bomb"), ("name", None)],
)
def test_a_cache_with_values_no_scan_writes_is_rebuilt(
    fresh_config: RuntoolConfig, tmp_path: Path, column: str, value: str | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Valid Parquet and metadata, but one row a scan could not have written: rebuild, never a traceback."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from runtool.cli import main
    from tests.conftest import write_toml

    small_fleet(fresh_config)
    inventory(fresh_config).refresh()
    path = fresh_config.cache_dir / "inventory.parquet"
    table = pq.read_table(path)
    objects = table.to_pandas()
    row = objects.index[objects["kind"] == "bag"][0]
    if isinstance(objects[column].dtype, __import__("pandas").CategoricalDtype) and value is not None:
        objects[column] = objects[column].cat.add_categories([value])
    objects.loc[row, column] = value
    pq.write_table(pa.Table.from_pandas(objects, preserve_index=False).replace_schema_metadata(table.schema.metadata),
                   path)
    broken = inventory(fresh_config)
    assert not broken.has_data and broken.warning is not None and "rebuilt" in broken.warning
    toml = write_toml(fresh_config, tmp_path / "runtool.toml")
    assert main(["--config", str(toml), "runs", "--json"]) == 0
    assert "rebuilt" in capsys.readouterr().err
    assert main(["--config", str(toml), "inventory", "refresh"]) == 0
    assert inventory(fresh_config).cache_info().runs == 2


def test_names_too_long_for_a_local_file_are_anomalies(fresh_config: RuntoolConfig) -> None:
    """A cloud name no local file system takes (with room for the download's temporary name) is an anomaly,
    so its run still plans and downloads its other files."""
    fits = "_" + "9" * (255 - len("rosbag") - 15 - len("_.bag")) + ".bag"  # longest bag name that still fits
    bag_dir = "_2025-08-25-09-00-00_0"
    long_keys = {
        "raw": [f"{RUN}/rosbag/_{'a' * 240}.bag", f"{RUN}/rosbag/_{'é' * 120}.bag",  # 240 bytes either way
                f"{'c' * 256}/region_1/field_1/TW_1/LB_0001/2025_08_25T08:59:38Z/rosbag/_x_0.bag"],
        "ml": [f"raw/{RUN}/rosbag/{bag_dir}/frames/{'b' * 241}.jpg",
               f"raw/{RUN}/rosbag/_{'d' * 250}/labels/1.txt"],
    }
    upload(fresh_config, [f"{RUN}/rosbag/_2025-08-25-09-00-00_0.bag", f"{RUN}/rosbag/{fits}", *long_keys["raw"]],
           [f"raw/{RUN}/rosbag/{bag_dir}/frames/1.jpg", *long_keys["ml"]])
    service = inventory(fresh_config)
    info = service.refresh()
    reasons = dict(zip(service.snapshot.anomalies["key"], service.snapshot.anomalies["reason"], strict=True))
    assert set(reasons) == {*long_keys["raw"], *long_keys["ml"]}
    assert all("too long" in reason for reason in reasons.values())
    assert info.runs == 1
    runs = service.snapshot.runs()
    assert runs[["raw_bags", "ml_frames", "ml_labels"]].values.tolist() == [[2, 1, 0]]
    from runtool.models import RunCoordinate
    from runtool.services import ServiceContainer as Services

    services = Services(fresh_config)
    plan = services.transfers.plan_raw_download(RunCoordinate.parse(RUN))
    assert sorted(f.path.name for f in plan.files) == sorted(["rosbag_2025-08-25-09-00-00_0.bag", "rosbag" + fits])
    result = services.transfers.execute(plan)
    assert result.ok and all(f.path.exists() for f in plan.files)


RUN_FILTERS = Filters.from_mapping(dict(zip(["cid", "regionid", "fieldid", "twid", "lbid", "timestamp"],
                                            RUN.split("/"), strict=True)))


def test_one_run_refresh_writes_the_delta_not_the_whole_cache(fresh_config: RuntoolConfig) -> None:
    small_fleet(fresh_config)
    service = inventory(fresh_config)
    service.refresh()
    before = service.cache_path.read_bytes()
    upload(fresh_config, [f"{RUN}/rosbag/_2025-08-25-09-00-09_9.bag", f"{RUN2}/rosbag/_2025-08-25-09-00-19_9.bag"], [])
    service.refresh(RUN_FILTERS)
    assert service.cache_path.read_bytes() == before  # the big file is not rewritten
    assert service.delta_path.exists()
    again = inventory(fresh_config)  # another process reads the cache file and its delta
    runs = again.snapshot.runs().set_index("lbid")
    assert runs.loc["LB_0001", "raw_bags"] == 4 and runs.loc["LB_0002", "raw_bags"] == 2
    assert again.cache_info().anomalies == 3
    assert again.snapshot.runs().equals(service.snapshot.runs())  # the in-memory update matches a full read
    service.refresh()
    assert not service.delta_path.exists()
    assert inventory(fresh_config).snapshot.runs().set_index("lbid").loc["LB_0002", "raw_bags"] == 3


def test_the_cache_stamp_changes_with_every_write_of_the_cache_by_any_process(fresh_config: RuntoolConfig) -> None:
    small_fleet(fresh_config)
    service, other = inventory(fresh_config), inventory(fresh_config)
    assert service.cache_stamp() == (None, None)  # nothing scanned yet
    service.refresh()
    full = service.cache_stamp()
    assert full[0] is not None and full[1] is None and other.cache_stamp() == full
    other.refresh(RUN_FILTERS)  # another process refreshes one run: only its delta is written
    partial = service.cache_stamp()
    assert partial != full and partial[1] is not None
    other.refresh()  # a full refresh replaces the cache file and folds the delta in
    again = service.cache_stamp()
    assert again[1] is None and again[0] not in (None, full[0])


def test_a_refresh_that_fails_while_writing_the_delta_keeps_the_previous_cache(
    fresh_config: RuntoolConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_fleet(fresh_config)
    service = inventory(fresh_config)
    service.refresh()
    service.refresh(RUN_FILTERS)  # a delta exists already
    files = {path: path.read_bytes() for path in (service.cache_path, service.delta_path)}
    upload(fresh_config, [f"{RUN}/rosbag/_2025-08-25-09-00-09_9.bag"], [])
    real_write = inventory_module.pq.write_table

    def write_half_then_fail(table: object, where: object, **kwargs: object) -> None:
        real_write(table, where, **kwargs)
        Path(str(where)).write_bytes(Path(str(where)).read_bytes()[:40])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(inventory_module.pq, "write_table", write_half_then_fail)
    with pytest.raises(InventoryError, match="No space left.*previous inventory is kept"):
        service.refresh(RUN_FILTERS)
    monkeypatch.undo()
    assert {path: path.read_bytes() for path in files} == files
    assert sorted(p.name for p in fresh_config.cache_dir.iterdir() if p.name.startswith(".inventory.")) == [
        ".inventory.lock"]  # no temporary file left
    reread = inventory(fresh_config)
    assert reread.warning is None
    assert reread.snapshot.runs().set_index("lbid").loc["LB_0001", "raw_bags"] == 3


def test_the_temporary_files_of_a_refresh_killed_while_writing_are_removed(fresh_config: RuntoolConfig) -> None:
    """A refresh killed while writing leaves the cache as it was, and its temporary file (the size of a whole
    cache at fleet scale) beside it; the next refresh removes it."""
    small_fleet(fresh_config)
    service = inventory(fresh_config)
    service.refresh()
    for killed in (service.cache_path, service.delta_path):
        stale = killed.with_name(f".{killed.name}.tmp-0badc0de")
        stale.write_bytes(b"PAR1 half a cache")
        service.refresh(RUN_FILTERS)
        assert not stale.exists()
    assert sorted(p.name for p in fresh_config.cache_dir.iterdir() if p.name.startswith(".inventory.")) == [
        ".inventory.lock"]


def test_a_corrupt_delta_means_rebuild_with_a_warning(fresh_config: RuntoolConfig) -> None:
    small_fleet(fresh_config)
    service = inventory(fresh_config)
    service.refresh()
    service.refresh(RUN_FILTERS)
    service.delta_path.write_bytes(b"PAR1 not parquet either")
    broken = inventory(fresh_config)
    assert not broken.has_data
    assert broken.warning is not None and "unreadable" in broken.warning
    assert broken.refresh().runs == 2
    assert not broken.delta_path.exists() and inventory(fresh_config).has_data


def test_a_delta_left_from_before_a_full_rewrite_is_ignored(fresh_config: RuntoolConfig) -> None:
    small_fleet(fresh_config)
    service = inventory(fresh_config)
    service.refresh()
    upload(fresh_config, [f"{RUN}/rosbag/_2025-08-25-09-00-09_9.bag"], [])
    service.refresh(RUN_FILTERS)
    stale = service.delta_path.read_bytes()
    make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.raw_bucket).blob(
        f"{RUN}/rosbag/_2025-08-25-09-00-09_9.bag").delete()
    service.refresh()  # a crash after this rewrite but before the delta's removal would leave the old delta
    service.delta_path.write_bytes(stale)
    reread = inventory(fresh_config)
    assert reread.warning is None
    assert reread.snapshot.runs().set_index("lbid").loc["LB_0001", "raw_bags"] == 3


def test_a_delta_with_too_many_prefixes_is_folded_into_the_cache(
    fresh_config: RuntoolConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_fleet(fresh_config)
    monkeypatch.setattr(inventory_module, "_DELTA_MAX_SCOPES", 1)
    service = inventory(fresh_config)
    service.refresh()
    service.refresh(RUN_FILTERS)
    assert service.delta_path.exists()
    before = service.cache_path.read_bytes()
    upload(fresh_config, [f"{RUN2}/rosbag/_2025-08-25-09-00-19_9.bag"], [])
    service.refresh(Filters.from_mapping(dict(zip(["cid", "regionid", "fieldid", "twid", "lbid", "timestamp"],
                                                  RUN2.split("/"), strict=True))))
    assert not service.delta_path.exists() and service.cache_path.read_bytes() != before
    assert inventory(fresh_config).snapshot.runs().set_index("lbid").loc["LB_0002", "raw_bags"] == 3


def test_a_corrupt_cache_of_100000_runs_is_rebuilt_with_a_warning(fresh_config: RuntoolConfig) -> None:
    runs = 100_000
    coords = [f"client_a/region_1/field_{n % 40}/TW_{n % 7}/LB_{n % 3:04d}/2025_08_{1 + n % 28:02d}T"
              f"{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z" for n in range(runs)]
    parts = [coord.split("/") for coord in coords]
    columns: dict[str, list[object]] = {
        "role": ["raw"] * runs, "bag": [f"_b{n}_0" for n in range(runs)], "kind": ["bag"] * runs,
        "name": [f"_b{n}_0.bag" for n in range(runs)], "size": [n for n in range(runs)], "generation": [1] * runs,
        "crc32c": ["AAAAAA=="] * runs, "reason": [None] * runs,
    }
    for position, column in enumerate(inventory_module.COORD_COLUMNS):
        columns[column] = [part[position] for part in parts]
    big = inventory(fresh_config)
    big._write(inventory_module.InventorySnapshot(inventory_module._objects_frame(columns), datetime.now(UTC)))
    assert inventory(fresh_config).cache_info().runs == len(set(coords))
    data = big.cache_path.read_bytes()
    big.cache_path.write_bytes(data[: len(data) // 2] + bytes(1000) + data[len(data) // 2 + 1000 :])  # a torn write
    broken = inventory(fresh_config)
    assert not broken.has_data
    assert broken.warning is not None and "unreadable" in broken.warning and "rebuilt" in broken.warning
    small_fleet(fresh_config)
    assert broken.refresh().runs == 2  # rebuilt from the buckets
    assert inventory(fresh_config).has_data and inventory(fresh_config).warning is None
