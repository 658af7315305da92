"""ML and raw uploads against a real fake-gcs-server: preconditions, checksums, refreshed state."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtool.cli import main
from runtool.config import RuntoolConfig
from runtool.errors import ReadOnlyError
from runtool.models import RunCoordinate, SyncStatus
from runtool.services import ServiceContainer, TransferError
from runtool.services.transfers import ALREADY_UPLOADED
from runtool.storage import local_ml_dir, local_raw_dir, make_client, ml_file_key, raw_bag_key
from tests.conftest import write_toml

RUN = RunCoordinate.parse("acme/north/field_7/TW_1/LB_0003/2025_08_02T09:00:00Z")
BAG = "rosbag_2025-08-02-09-00-25_0"


def export_samples(config: RuntoolConfig) -> Path:
    """A local labelling export: 4 frames, 3 labels and the per-bag JSON real exports carry."""
    bag_dir = local_ml_dir(config.ml_root, RUN) / BAG
    (bag_dir / "frames").mkdir(parents=True)
    (bag_dir / "labels").mkdir()
    for n in range(4):
        (bag_dir / "frames" / f"1754125225.{n:09d}.jpg").write_bytes(b"\xff\xd8frame" + bytes([n]))
    for n in range(3):
        (bag_dir / "labels" / f"1754125225.{n:09d}.txt").write_text("0 0.5 0.5 0.1 0.1\n" * n)
    (bag_dir / "export.json").write_text("{}")
    return bag_dir


def local_bags(config: RuntoolConfig, count: int = 2) -> list[Path]:
    folder = local_raw_dir(config.raw_root, RUN)
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        path = folder / f"rosbag_2025-08-02-09-00-2{5 + i}_{i}.bag"
        path.write_bytes(bytes([i]) * 50_000)
        paths.append(path)
    return paths


@pytest.fixture
def services(fresh_config: RuntoolConfig) -> ServiceContainer:
    export_samples(fresh_config)
    local_bags(fresh_config)
    container = ServiceContainer(fresh_config)
    container.inventory.refresh()
    return container


def local_bags_of(config: RuntoolConfig) -> list[Path]:
    return sorted(local_raw_dir(config.raw_root, RUN).glob("rosbag_*.bag"))


def cloud_keys(config: RuntoolConfig, bucket: str) -> dict[str, int]:
    client = make_client(emulator_host=config.emulator_host)
    return {b.name: int(b.size or 0) for b in client.list_blobs(bucket)}


def test_ml_upload_sends_frames_and_labels_and_refreshes_the_run(services: ServiceContainer) -> None:
    record = services.data_state.run_records(RUN.to_filters())[0]
    assert record["ml_sync"] == SyncStatus.LOCAL_ONLY
    plan = services.transfers.plan_ml_upload(RUN)
    assert len(plan.to_transfer) == 7 and plan.describe().startswith("Upload 7 files")
    result = services.transfers.execute(plan)
    assert result.ok, result.summary()
    keys = cloud_keys(services.config, services.config.ml_bucket)
    assert ml_file_key(RUN, "_2025-08-02-09-00-25_0", "labels", "1754125225.000000002.txt") in keys
    assert not any(key.endswith("export.json") for key in keys)  # only frames and labels go up
    after = services.data_state.run_records(RUN.to_filters())[0]  # no manual refresh
    assert (after["ml_labels"], after["ml_frames"], after["ml_sync"]) == (3, 4, SyncStatus.SYNCED)
    assert services.transfers.plan_ml_upload(RUN).to_transfer == ()


def test_an_object_created_after_the_preview_is_not_overwritten(services: ServiceContainer) -> None:
    plan = services.transfers.plan_ml_upload(RUN, kinds=["labels"])
    key = ml_file_key(RUN, "_2025-08-02-09-00-25_0", "labels", "1754125225.000000001.txt")
    bucket = make_client(emulator_host=services.config.emulator_host).bucket(services.config.ml_bucket)
    bucket.blob(key).upload_from_string(b"1 0.2 0.2 0.1 0.1\n")  # a colleague uploaded meanwhile
    result = services.transfers.execute(plan)
    failed = [o for o in result.outcomes if o.status == "failed"]
    assert [o.file.key for o in failed] == [key]
    assert "not overwritten" in str(failed[0].error)
    assert bucket.blob(key).download_as_bytes() == b"1 0.2 0.2 0.1 0.1\n"
    assert result.count("transferred") == 2 and not result.ok


def test_an_object_another_job_uploaded_with_the_same_bytes_is_skipped(services: ServiceContainer) -> None:
    plan = services.transfers.plan_ml_upload(RUN, kinds=["labels"])
    label = plan.to_transfer[1]
    bucket = make_client(emulator_host=services.config.emulator_host).bucket(services.config.ml_bucket)
    bucket.blob(label.key).upload_from_filename(str(label.path))  # another job uploaded the same file meanwhile
    result = services.transfers.execute(plan)
    outcome = next(o for o in result.outcomes if o.file == label)
    assert (outcome.status, outcome.reason) == ("skipped", ALREADY_UPLOADED)
    assert result.ok and result.count("transferred") == 2 and result.count("skipped") == 1


def test_overwrite_uses_the_previewed_generation(services: ServiceContainer) -> None:
    services.transfers.execute(services.transfers.plan_ml_upload(RUN, kinds=["labels"]))
    label = local_ml_dir(services.config.ml_root, RUN) / BAG / "labels" / "1754125225.000000002.txt"
    label.write_text("2 0.5 0.5 0.1 0.1\n" * 2)  # edited locally, same size
    verify = services.transfers.plan_ml_upload(RUN, kinds=["labels"], conflict="verify")
    assert [f.path for f in verify.to_transfer] == [label]
    key = verify.to_transfer[0].key
    bucket = make_client(emulator_host=services.config.emulator_host).bucket(services.config.ml_bucket)
    bucket.blob(key).upload_from_string(b"changed in the cloud meanwhile\n")
    result = services.transfers.execute(verify)
    assert result.count("failed") == 1 and "not overwritten" in str(result.outcomes[-1].error)
    assert bucket.blob(key).download_as_bytes() == b"changed in the cloud meanwhile\n"
    fresh = services.transfers.plan_ml_upload(RUN, kinds=["labels"], conflict="overwrite")
    assert services.transfers.execute(fresh).ok
    assert bucket.blob(key).download_as_bytes() == label.read_bytes()


def test_a_file_changed_after_the_preview_is_not_uploaded(services: ServiceContainer) -> None:
    plan = services.transfers.plan_raw_upload(RUN)
    local_raw_dir(services.config.raw_root, RUN).joinpath("rosbag_2025-08-02-09-00-25_0.bag").write_bytes(b"x" * 50_000)
    result = services.transfers.execute(plan)
    failed = [o for o in result.outcomes if o.status == "failed"]
    assert len(failed) == 1 and "changed on disk since the preview" in str(failed[0].error)
    assert raw_bag_key(RUN, "_2025-08-02-09-00-25_0.bag") not in cloud_keys(services.config, services.config.raw_bucket)


def test_raw_upload_of_a_local_only_run(services: ServiceContainer) -> None:
    assert services.data_state.run_records(RUN.to_filters())[0]["raw_sync"] == SyncStatus.LOCAL_ONLY
    plan = services.transfers.plan_raw_upload(RUN)
    assert plan.describe() == "Upload 2 bags, 97.7 KiB"
    assert services.transfers.execute(plan).ok
    keys = cloud_keys(services.config, services.config.raw_bucket)
    assert keys[raw_bag_key(RUN, "_2025-08-02-09-00-26_1.bag")] == 50_000
    assert services.data_state.run_records(RUN.to_filters())[0]["raw_sync"] == SyncStatus.SYNCED
    with pytest.raises(TransferError, match="no local bag named"):
        services.transfers.plan_raw_upload(RUN, bags=["_2025-08-02-09-00-99_9.bag"])


def test_raw_upload_selects_bags_as_download_does(services: ServiceContainer, fresh_config: RuntoolConfig,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`raw upload --bags` takes what `download --bags` takes: an index, the local or cloud name, with or without
    .bag (an index was refused as "cloud bag name '1' does not start with '_'")."""
    names = [p.name for p in local_bags_of(fresh_config)]
    for bags in (["1"], [names[1]], [names[1][: -len(".bag")]], [names[1][len("rosbag") :]]):
        assert [f.path.name for f in services.transfers.plan_raw_upload(RUN, bags=bags).files] == [names[1]]
    assert [f.path.name for f in services.transfers.plan_raw_upload(RUN, bags=["1", "0", "1"]).files] == [
        names[1], names[0]]
    with pytest.raises(TransferError, match="has 2 local bags; there is no bag index 2"):
        services.transfers.plan_raw_upload(RUN, bags=["2"])
    with pytest.raises(TransferError, match="no local bag named 'nope'"):
        services.transfers.plan_raw_upload(RUN, bags=["nope"])
    toml = str(write_toml(fresh_config, tmp_path / "runtool.toml"))
    assert main(["--config", toml, "raw", "upload", RUN.to_path_str(), "--bags", "1", "--yes"]) == 0
    assert "1 files" in capsys.readouterr().out
    assert set(cloud_keys(fresh_config, fresh_config.raw_bucket)) == {raw_bag_key(RUN, names[1][len("rosbag") :])}


def test_read_only_refuses_uploads(fresh_config: RuntoolConfig) -> None:
    export_samples(fresh_config)
    services = ServiceContainer(fresh_config, read_only=True)
    with pytest.raises(ReadOnlyError):
        services.transfers.execute(services.transfers.plan_ml_upload(RUN))


def test_cli_uploads(services: ServiceContainer, fresh_config: RuntoolConfig, tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    toml = str(write_toml(fresh_config, tmp_path / "runtool.toml"))
    assert main(["--config", toml, "raw", "upload", RUN.to_path_str(), "--yes"]) == 0
    assert main(["--config", toml, "ml", "upload", RUN.to_path_str(), "--dry-run"]) == 0
    assert "Upload 7 files" in capsys.readouterr().out
    assert main(["--config", toml, "ml", "upload", RUN.to_path_str(), "--yes"]) == 0
    assert "7 files" in capsys.readouterr().out


def test_skip_replaces_a_cloud_object_of_another_size_and_the_plan_says_so(services: ServiceContainer) -> None:
    services.transfers.execute(services.transfers.plan_raw_upload(RUN))
    bags = sorted(local_raw_dir(services.config.raw_root, RUN).glob("rosbag_*.bag"))
    bucket = make_client(emulator_host=services.config.emulator_host).bucket(services.config.raw_bucket)
    cut = bucket.blob(raw_bag_key(RUN, "_2025-08-02-09-00-25_0.bag"))
    cut.upload_from_string(b"cut short")  # an interrupted upload made outside runtool
    kept = bucket.get_blob(raw_bag_key(RUN, "_2025-08-02-09-00-26_1.bag"))
    assert kept is not None
    plan = services.transfers.plan_raw_upload(RUN, conflict="skip")
    [replaced] = plan.replaced
    assert replaced.path == bags[0] and replaced.reason == "replaced: size differs (local 50,000 B, cloud 9 B)"
    assert plan.skipped[0].reason == "already in the cloud with the same size (kept; checksums not compared)"
    assert plan.describe().endswith("(1 replaced, 1 skipped)")
    assert services.transfers.execute(plan).ok
    assert cut.download_as_bytes() == bags[0].read_bytes()
    again = bucket.get_blob(kept.name)
    assert again is not None and again.generation == kept.generation  # same size: left untouched


def test_verify_replaces_a_cloud_object_of_the_same_size_with_other_bytes(services: ServiceContainer) -> None:
    services.transfers.execute(services.transfers.plan_raw_upload(RUN))
    bags = sorted(local_raw_dir(services.config.raw_root, RUN).glob("rosbag_*.bag"))
    bucket = make_client(emulator_host=services.config.emulator_host).bucket(services.config.raw_bucket)
    other = bucket.blob(raw_bag_key(RUN, "_2025-08-02-09-00-26_1.bag"))
    other.upload_from_string(b"y" * 50_000)
    assert services.transfers.plan_raw_upload(RUN, conflict="skip").to_transfer == ()  # skip trusts the size
    plan = services.transfers.plan_raw_upload(RUN, conflict="verify")
    assert [(f.path, f.reason) for f in plan.replaced] == [(bags[1], "replaced: CRC32C differs")]
    assert services.transfers.execute(plan).ok
    assert other.download_as_bytes() == bags[1].read_bytes()
