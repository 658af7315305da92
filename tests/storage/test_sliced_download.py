"""Sliced downloads of one object against a real fake-gcs-server: byte for byte, at slice boundaries, through a
relay that cuts connections, an object replaced meanwhile, and a write that fails (the transfer engine's path)."""

from __future__ import annotations

import base64
import errno
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
from google.api_core import exceptions as gexc

from benchmarks.relay import NetworkRelay, NetworkShape
from runtool.config import RuntoolConfig
from runtool.demo.emulator import Emulator
from runtool.models import RunCoordinate
from runtool.services import ServiceContainer, TransferProgress
from runtool.services.transfers import PART_MARKER
from runtool.storage import local_raw_dir, make_client, raw_bag_key
from runtool.storage.checksums import ChecksumMismatch, crc32c_combine
from runtool.storage.gcs import download_sliced, plan_slices

BUCKET = "sliced-test"
MIB = 1024 * 1024
RUN = RunCoordinate.parse("acme/north/field_7/TW_1/LB_0003/2025_08_03T08:00:00Z")
BAG = "_2025-08-03-08-00-20_0.bag"


def crc_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode("ascii")


@pytest.fixture(scope="module")
def bucket_name(emulator: Emulator) -> str:
    client = make_client(emulator_host=emulator.url)
    if not client.bucket(BUCKET).exists():
        client.create_bucket(BUCKET)
    return BUCKET


def upload(emulator: Emulator, key: str, data: bytes) -> int:
    blob = make_client(emulator_host=emulator.url).bucket(BUCKET).blob(key)
    blob.upload_from_string(data)
    return int(blob.generation or 0)


def sliced_to_file(url: str, key: str, generation: int, data: bytes, path: Path, **options: int) -> None:
    with path.open("wb") as out:
        download_sliced(make_client(emulator_host=url), BUCKET, key, generation, len(data), crc_b64(data),
                        out.fileno(), retry_s=5.0, **options)


@pytest.mark.parametrize("split", [0, 1, 4095, 65536, 1 << 20, 3_000_001])
def test_crc32c_combine_equals_the_crc32c_of_the_concatenation(split: int) -> None:
    data = np.random.default_rng(split).bytes(3_000_001 + 17)
    head, tail = data[:split], data[split:]
    assert crc32c_combine(google_crc32c.value(head), google_crc32c.value(tail), len(tail)) == google_crc32c.value(data)


def test_plan_slices_covers_the_object_once() -> None:
    assert plan_slices(0, MIB) == [(0, 0)]
    assert plan_slices(2 * MIB, MIB) == [(0, MIB), (MIB, MIB)]
    assert plan_slices(2 * MIB + 1, MIB) == [(0, MIB), (MIB, MIB), (2 * MIB, 1)]
    with pytest.raises(ValueError):
        plan_slices(10, 0)


def test_sliced_download_equals_the_object(emulator: Emulator, bucket_name: str, tmp_path: Path) -> None:
    data = np.random.default_rng(1).bytes(5 * MIB + 12345)
    generation = upload(emulator, "whole.bin", data)
    seen: list[int] = []
    path = tmp_path / "whole.bin"
    sliced_to_file(emulator.url, "whole.bin", generation, data, path, slice_bytes=MIB, streams=4)
    assert path.read_bytes() == data
    with path.open("r+b") as out:  # and the progress callback sees every byte once
        download_sliced(make_client(emulator_host=emulator.url), BUCKET, "whole.bin", generation, len(data),
                        crc_b64(data), out.fileno(), on_bytes=seen.append, slice_bytes=MIB, streams=4)
    assert sum(seen) == len(data)


def test_zero_byte_object(emulator: Emulator, bucket_name: str, tmp_path: Path) -> None:
    generation = upload(emulator, "empty.bin", b"")
    path = tmp_path / "empty.bin"
    sliced_to_file(emulator.url, "empty.bin", generation, b"", path, slice_bytes=MIB)
    assert path.read_bytes() == b""


@pytest.mark.parametrize("size", [2 * MIB, 2 * MIB + 1, 2 * MIB - 1])
def test_sizes_at_and_around_a_slice_boundary(emulator: Emulator, bucket_name: str, tmp_path: Path,
                                              size: int) -> None:
    data = np.random.default_rng(size).bytes(size)
    key = f"boundary-{size}.bin"
    generation = upload(emulator, key, data)
    path = tmp_path / key
    sliced_to_file(emulator.url, key, generation, data, path, slice_bytes=MIB, streams=3)
    assert path.read_bytes() == data


def test_a_wrong_checksum_is_refused(emulator: Emulator, bucket_name: str, tmp_path: Path) -> None:
    data = np.random.default_rng(2).bytes(3 * MIB)
    generation = upload(emulator, "refused.bin", data)
    with (tmp_path / "refused.bin").open("wb") as out, pytest.raises(ChecksumMismatch):
        download_sliced(make_client(emulator_host=emulator.url), BUCKET, "refused.bin", generation, len(data),
                        crc_b64(data[:-1] + b"x"), out.fileno(), slice_bytes=MIB)


@pytest.fixture
def cutting_relay(emulator: Emulator) -> Iterator[NetworkRelay]:
    """Cuts the first two connections that pass 300,000 response bytes; no latency or rate cap."""
    shape = NetworkShape(latency_ms=0, stream_bytes_per_s=None, drop_after=300_000, drops=2)
    with NetworkRelay(emulator.port, shape) as relay:
        yield relay


def test_a_connection_cut_mid_slice_is_resumed(emulator: Emulator, bucket_name: str, tmp_path: Path,
                                               cutting_relay: NetworkRelay) -> None:
    data = np.random.default_rng(3).bytes(4 * MIB + 7)
    generation = upload(emulator, "cut.bin", data)
    path = tmp_path / "cut.bin"
    sliced_to_file(cutting_relay.url, "cut.bin", generation, data, path, slice_bytes=MIB, streams=4)
    assert path.read_bytes() == data
    assert cutting_relay.dropped == 2
    assert cutting_relay.requests >= len(plan_slices(len(data), MIB)) + 2  # each cut slice asked again


def test_a_replaced_object_fails_the_pinned_slices(emulator: Emulator, bucket_name: str, tmp_path: Path) -> None:
    data = np.random.default_rng(4).bytes(2 * MIB)
    generation = upload(emulator, "replaced.bin", data)
    upload(emulator, "replaced.bin", data[::-1])
    with (tmp_path / "replaced.bin").open("wb") as out, pytest.raises((gexc.NotFound, gexc.PreconditionFailed)):
        download_sliced(make_client(emulator_host=emulator.url), BUCKET, "replaced.bin", generation, len(data),
                        crc_b64(data), out.fileno(), slice_bytes=MIB)


# -- through the transfer engine: above the threshold a raw download takes the sliced path ---------------------------


@pytest.fixture
def sliced_services(fresh_config: RuntoolConfig) -> tuple[ServiceContainer, bytes]:
    data = np.random.default_rng(6).bytes(3 * MIB + 5)
    bucket = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.raw_bucket)
    bucket.blob(raw_bag_key(RUN, BAG)).upload_from_string(data)
    return ServiceContainer(fresh_config.with_overrides(sliced_download_bytes=MIB)), data


def landed(config: RuntoolConfig) -> list[str]:
    folder = local_raw_dir(config.raw_root, RUN)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_large_raw_bag_lands_verified(sliced_services: tuple[ServiceContainer, bytes]) -> None:
    services, data = sliced_services
    result = services.transfers.execute(services.transfers.plan_raw_download(RUN))
    assert [o.status for o in result.outcomes] == ["transferred"]
    assert result.outcomes[0].file.path.read_bytes() == data
    assert landed(services.config) == [result.outcomes[0].file.path.name]


def test_through_a_relay_that_cuts_connections(
    sliced_services: tuple[ServiceContainer, bytes], cutting_relay: NetworkRelay
) -> None:
    services, data = sliced_services
    plan = services.transfers.plan_raw_download(RUN)
    relayed = ServiceContainer(services.config.with_overrides(emulator_host=cutting_relay.url))
    result = relayed.transfers.execute(plan)
    assert [o.status for o in result.outcomes] == ["transferred"]
    assert result.outcomes[0].file.path.read_bytes() == data
    assert cutting_relay.dropped == 2  # the one slice was cut, resumed, cut again and resumed again


def test_replaced_between_listing_and_download_is_reported_not_renamed(
    sliced_services: tuple[ServiceContainer, bytes],
) -> None:
    services, data = sliced_services
    plan = services.transfers.plan_raw_download(RUN)
    services.transfers.client.bucket(services.config.raw_bucket).blob(raw_bag_key(RUN, BAG)).upload_from_string(
        data[::-1]
    )
    result = services.transfers.execute(plan)
    assert [(o.status, o.error) for o in result.outcomes] == [
        ("failed", f"{raw_bag_key(RUN, BAG)} changed in the cloud since the preview; run `runtool inventory refresh`, "
                   "then plan again.")
    ]
    assert landed(services.config) == []


def test_a_full_disk_mid_download_leaves_nothing(
    sliced_services: tuple[ServiceContainer, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the second write of the download fails with ENOSPC (a full tmpfs needs root here)."""
    services, _ = sliced_services
    plan = services.transfers.plan_raw_download(RUN)
    real_pwrite, calls = os.pwrite, []

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        calls.append(offset)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    result = services.transfers.execute(plan)
    outcome = result.outcomes[0]
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.startswith("Not enough disk space to write")
    assert landed(services.config) == []
    assert not any(PART_MARKER in p.name for p in services.config.raw_root.rglob("*"))


@pytest.mark.parametrize("before", [None, b"an older, shorter copy"])
def test_a_cancel_mid_download_leaves_no_file_and_no_temporary_file(
    sliced_services: tuple[ServiceContainer, bytes], before: bytes | None
) -> None:
    """Cancelled after the first MiB of the sliced download: nothing new at the final path (a file there before,
    which skip replaces because its size differs, is kept as it was) and no temporary file behind."""
    services, data = sliced_services
    target = local_raw_dir(services.config.raw_root, RUN) / f"rosbag{BAG}"
    if before is not None:
        target.parent.mkdir(parents=True)
        target.write_bytes(before)
    plan = services.transfers.plan_raw_download(RUN)
    assert [f.replaces for f in plan.to_transfer] == [before is not None]
    cancel = threading.Event()
    seen: list[int] = []

    def progress(event: TransferProgress) -> None:
        seen.append(event.bytes_done)
        if event.bytes_done:
            cancel.set()

    result = services.transfers.execute(plan, progress=progress, cancel=cancel)
    assert result.cancelled and [o.status for o in result.outcomes] == ["cancelled"]
    assert 0 < max(seen) < len(data)  # stopped mid-way, after some bytes had arrived
    assert landed(services.config) == ([] if before is None else [target.name])
    if before is not None:
        assert target.read_bytes() == before
    assert not any(PART_MARKER in p.name for p in services.config.raw_root.rglob("*"))


def test_a_disk_with_room_for_one_large_bag_takes_one(fresh_config: RuntoolConfig,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: a file system with room for one of three bags, which allocates a file's blocks a step
    at a time (a full tmpfs needs root here). Preallocated in parallel, each bag took a third of the room and
    all three failed, on every retry (on a real 100 MiB tmpfs, 3 × 64 MiB: 0 bags twice in three runs)."""
    bags = [f"_2025-08-03-08-00-2{i}_{i}.bag" for i in range(3)]
    bucket = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.raw_bucket)
    for i, name in enumerate(bags):
        bucket.blob(raw_bag_key(RUN, name)).upload_from_string(np.random.default_rng(i).bytes(2 * MIB))
    services = ServiceContainer(fresh_config.with_overrides(sliced_download_bytes=MIB))
    step, lock = 256 * 1024, threading.Lock()
    room = [2 * MIB + step]

    def posix_fallocate(_fd: int, _offset: int, length: int) -> None:
        taken = 0
        while taken < length:
            with lock:
                if room[0] < step:  # what it took stays taken until its file is removed, as on ext4
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                room[0] -= step
            taken += step
            time.sleep(0.01)  # the others' turn

    monkeypatch.setattr(os, "posix_fallocate", posix_fallocate)
    result = services.transfers.execute(services.transfers.plan_raw_download(RUN))
    assert sorted(o.status for o in result.outcomes) == ["failed", "failed", "transferred"]
    assert all(str(o.error).startswith("Not enough disk space") for o in result.outcomes if o.status == "failed")
    assert not any(PART_MARKER in p.name for p in services.config.raw_root.rglob("*"))
