"""A raw download whose objects move between the preview and the execution: each fault its own message,
nothing renamed to a final path and no temporary file left (a real fake-gcs-server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtool.config import RuntoolConfig
from runtool.models import RunCoordinate
from runtool.services import ServiceContainer
from runtool.services.transfers import TransferResult
from runtool.storage import local_raw_dir, make_client, raw_bag_key

RUN = RunCoordinate.parse("acme/north/field_7/TW_1/LB_0002/2025_08_02T08:00:00Z")
BAGS = {f"_2025-08-02-08-00-{20 + i}_{i}.bag": bytes([i]) * 50_000 for i in range(2)}


@pytest.fixture
def services(fresh_config: RuntoolConfig) -> ServiceContainer:
    bucket = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.raw_bucket)
    for name, data in BAGS.items():
        bucket.blob(raw_bag_key(RUN, name)).upload_from_string(data)
    return ServiceContainer(fresh_config)


def landed(config: RuntoolConfig) -> list[str]:
    folder = local_raw_dir(config.raw_root, RUN)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def failures(result: TransferResult) -> dict[str, str]:
    return {Path(o.file.key).name: str(o.error) for o in result.outcomes if o.status == "failed"}


def test_replaced_object_is_changed_and_not_renamed(services: ServiceContainer, fresh_config: RuntoolConfig) -> None:
    first, second = BAGS
    plan = services.transfers.plan_raw_download(RUN)
    blob = services.transfers.client.bucket(fresh_config.raw_bucket).blob(raw_bag_key(RUN, first))
    blob.upload_from_string(b"replaced between listing and download")
    result = services.transfers.execute(plan)
    assert failures(result) == {
        first: f"{raw_bag_key(RUN, first)} changed in the cloud since the preview; run `runtool inventory refresh`, "
        "then plan again."
    }
    assert landed(fresh_config) == ["rosbag" + second]  # the changed one never got a name, nor a leftover part


def test_deleted_object_is_missing(services: ServiceContainer, fresh_config: RuntoolConfig) -> None:
    first, second = BAGS
    plan = services.transfers.plan_raw_download(RUN)
    services.transfers.client.bucket(fresh_config.raw_bucket).blob(raw_bag_key(RUN, first)).delete()
    result = services.transfers.execute(plan)
    assert failures(result) == {first: f"{raw_bag_key(RUN, first)} no longer exists in the cloud (deleted since "
                                       "the preview)."}
    assert landed(fresh_config) == ["rosbag" + second]


def test_deleted_bucket_is_named(services: ServiceContainer, fresh_config: RuntoolConfig) -> None:
    plan = services.transfers.plan_raw_download(RUN)
    bucket = services.transfers.client.bucket(fresh_config.raw_bucket)
    for blob in list(bucket.list_blobs()):
        blob.delete()
    bucket.delete()
    result = services.transfers.execute(plan)
    expected = f"The bucket `{fresh_config.raw_bucket}` was not found (downloading from)"
    assert set(failures(result).values()) == {expected} and len(failures(result)) == len(BAGS)
    assert landed(fresh_config) == []
