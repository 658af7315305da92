"""Raw downloads against a real fake-gcs-server: plans, conflict modes, resume and every fault path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from runtool.cli import main
from runtool.config import RuntoolConfig
from runtool.demo.emulator import Emulator
from runtool.errors import ReadOnlyError
from runtool.files import exclusive_lock
from runtool.formatting import format_bytes
from runtool.models import Filters, RunCoordinate, SyncStatus
from runtool.services import ServiceContainer, TransferError, TransferProgress
from runtool.services.executor import DASK_SCHEDULER_ENV
from runtool.services.transfers import ALREADY_DOWNLOADED
from runtool.services.transfers import engine as transfer_engine_module
from runtool.storage import local_raw_dir, make_client, raw_bag_key
from tests.conftest import make_config, write_toml

RUN = RunCoordinate.parse("acme/north/field_7/TW_1/LB_0001/2025_08_01T08:00:00Z")
BAGS = [f"_2025-08-01-08-00-{20 + i}_{i}.bag" for i in range(4)]


def payloads(size: int = 300_000) -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    return {name: rng.bytes(size + i * 1000) for i, name in enumerate(BAGS)}


def seed(config: RuntoolConfig, content: dict[str, bytes]) -> None:
    bucket = make_client(emulator_host=config.emulator_host).bucket(config.raw_bucket)
    for name, data in content.items():
        bucket.blob(raw_bag_key(RUN, name)).upload_from_string(data)


def local(config: RuntoolConfig, name: str) -> Path:
    return local_raw_dir(config.raw_root, RUN) / ("rosbag" + name)


def leftovers(config: RuntoolConfig) -> list[str]:
    folder = local_raw_dir(config.raw_root, RUN)
    return sorted(p.name for p in folder.iterdir() if ".part-" in p.name) if folder.exists() else []


@pytest.fixture
def content(fresh_config: RuntoolConfig) -> dict[str, bytes]:
    data = payloads()
    seed(fresh_config, data)
    return data


@pytest.fixture
def services(fresh_config: RuntoolConfig, content: dict[str, bytes]) -> ServiceContainer:
    container = ServiceContainer(fresh_config)
    container.inventory.refresh()
    return container


def test_download_verifies_and_refreshes_state(services: ServiceContainer, content: dict[str, bytes]) -> None:
    plan = services.transfers.plan_raw_download(RUN)
    assert [f.action for f in plan.files] == ["transfer"] * 4
    assert plan.bytes_to_transfer == sum(len(v) for v in content.values())
    assert plan.describe() == "Download 4 bags, 1.2 MiB"
    seen: list[TransferProgress] = []
    threads: set[str] = set()

    def record(progress: TransferProgress) -> None:
        seen.append(progress)
        threads.add(threading.current_thread().name)

    result = services.transfers.execute(plan, progress=record)
    assert result.ok and result.count("transferred") == 4
    for name, data in content.items():
        assert local(services.config, name).read_bytes() == data
    assert seen[-1].bytes_done == plan.bytes_to_transfer and max(p.files_done for p in seen) == 4
    assert len(threads) >= 2, threads  # parallel workers
    record_after = services.data_state.run_records(RUN.to_filters())[0]
    assert record_after["raw_sync"] == SyncStatus.SYNCED  # no manual refresh needed
    assert leftovers(services.config) == []


def test_conflict_modes(services: ServiceContainer, content: dict[str, bytes]) -> None:
    services.transfers.execute(services.transfers.plan_raw_download(RUN))
    tampered = local(services.config, BAGS[1])
    tampered.write_bytes(b"X" + content[BAGS[1]][1:])  # same size, different bytes
    local(services.config, BAGS[2]).write_bytes(content[BAGS[2]][:100])  # truncated
    skip = services.transfers.plan_raw_download(RUN, conflict="skip")
    assert [f.action for f in skip.files] == ["skip", "skip", "transfer", "skip"]  # the size tells them apart
    verify = services.transfers.plan_raw_download(RUN, conflict="verify")
    assert [f.action for f in verify.files] == ["skip", "transfer", "transfer", "skip"]
    assert verify.files[1].reason == "replaced: CRC32C differs" and "size differs" in verify.files[2].reason
    assert [f.replaces for f in verify.files] == [False, True, True, False]
    overwrite = services.transfers.plan_raw_download(RUN, conflict="overwrite")
    assert [f.action for f in overwrite.files] == ["transfer"] * 4
    assert {f.reason for f in overwrite.files} == {"replaced: as asked (every file again)"}
    result = services.transfers.execute(verify)
    assert result.count("transferred") == 2 and result.count("skipped") == 2
    assert tampered.read_bytes() == content[BAGS[1]]
    assert local(services.config, BAGS[2]).read_bytes() == content[BAGS[2]]


def test_skip_replaces_a_local_file_of_another_size_and_the_plan_says_so(services: ServiceContainer,
                                                                         content: dict[str, bytes]) -> None:
    services.transfers.execute(services.transfers.plan_raw_download(RUN))
    cut = local(services.config, BAGS[2])
    cut.write_bytes(content[BAGS[2]][:1000])  # a copy cut short outside runtool
    plan = services.transfers.plan_raw_download(RUN, conflict="skip")
    [replaced] = plan.replaced
    assert replaced.path == cut and replaced.action == "transfer"
    assert replaced.reason == f"replaced: size differs (local 1,000 B, cloud {len(content[BAGS[2]]):,} B)"
    assert plan.describe() == f"Download 1 bag, {format_bytes(len(content[BAGS[2]]))} (1 replaced, 3 skipped)"
    assert plan.to_dict()["files_replaced"] == 1 and plan.to_dict()["files"][2]["replaces"] is True
    result = services.transfers.execute(plan)
    assert result.ok and result.count("transferred") == 1
    assert cut.read_bytes() == content[BAGS[2]] and leftovers(services.config) == []


def test_skip_leaves_a_local_file_of_the_same_size_untouched(services: ServiceContainer,
                                                             content: dict[str, bytes]) -> None:
    services.transfers.execute(services.transfers.plan_raw_download(RUN))
    other = local(services.config, BAGS[0])
    other.write_bytes(bytes(len(content[BAGS[0]])))  # same size, other bytes: skip does not read it
    os.utime(other, ns=(1_000_000_000, 1_000_000_000))
    plan = services.transfers.plan_raw_download(RUN, conflict="skip")
    assert plan.to_transfer == ()
    assert plan.files[0].reason == "already there with the same size (kept; checksums not compared)"
    result = services.transfers.execute(plan)
    assert result.ok and result.count("skipped") == 4
    assert other.stat().st_mtime_ns == 1_000_000_000 and other.read_bytes() == bytes(len(content[BAGS[0]]))


def test_verify_replaces_a_local_file_of_the_same_size_with_other_bytes(services: ServiceContainer,
                                                                        content: dict[str, bytes]) -> None:
    services.transfers.execute(services.transfers.plan_raw_download(RUN))
    other = local(services.config, BAGS[3])
    other.write_bytes(content[BAGS[3]][::-1])
    untouched = local(services.config, BAGS[0])
    os.utime(untouched, ns=(1_000_000_000, 1_000_000_000))
    plan = services.transfers.plan_raw_download(RUN, conflict="verify")
    assert [f.path for f in plan.replaced] == [other] and plan.replaced[0].reason == "replaced: CRC32C differs"
    assert services.transfers.execute(plan).ok
    assert other.read_bytes() == content[BAGS[3]]
    assert untouched.stat().st_mtime_ns == 1_000_000_000  # verified identical: left alone


def test_a_file_another_job_downloaded_meanwhile_is_skipped(services: ServiceContainer,
                                                             content: dict[str, bytes]) -> None:
    plan = services.transfers.plan_raw_download(RUN)
    other_job = services.transfers.plan_raw_download(RUN, bags=["0", "1"])
    assert services.transfers.execute(other_job).count("transferred") == 2
    local(services.config, BAGS[1]).write_bytes(content[BAGS[1]][::-1])  # same size, different bytes
    result = services.transfers.execute(plan)
    by_name = {o.file.key.rsplit("/", 1)[1]: o for o in result.outcomes}
    assert (by_name[BAGS[0]].status, by_name[BAGS[0]].reason) == ("skipped", ALREADY_DOWNLOADED)
    assert [by_name[name].status for name in BAGS[1:]] == ["transferred"] * 3  # the CRC32C differed
    assert result.ok and all(local(services.config, name).read_bytes() == data for name, data in content.items())


def test_temporary_files_of_a_killed_download_are_removed(services: ServiceContainer) -> None:
    folder = local_raw_dir(services.config.raw_root, RUN)
    folder.mkdir(parents=True)
    stale = folder / f".rosbag{BAGS[2]}.part-0badc0de"  # what a killed process leaves behind
    stale.write_bytes(b"half a bag")
    unrelated = folder / "notes.part-of-the-run.txt"
    unrelated.write_text("kept")
    assert services.transfers.execute(services.transfers.plan_raw_download(RUN, bags=["1"])).ok
    assert stale.exists(), "only the files of the plan being executed are cleaned"
    assert services.transfers.execute(services.transfers.plan_raw_download(RUN)).ok
    assert not stale.exists() and unrelated.read_text() == "kept"


def test_a_rerun_with_nothing_to_download_removes_what_a_killed_replacement_left(
    services: ServiceContainer, fresh_config: RuntoolConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A download killed while it replaced a file (overwrite, verify) leaves the old file at its final path and
    its temporary file beside it (a sliced one preallocated to the whole size); the next plan skips that file, and
    its run removes the temporary file all the same, unless another job holds the run."""
    assert services.transfers.execute(services.transfers.plan_raw_download(RUN)).ok
    stale = local(fresh_config, BAGS[2]).with_name(f".rosbag{BAGS[2]}.part-0badc0de")
    stale.write_bytes(b"\0" * 300_000)
    toml = str(write_toml(fresh_config, tmp_path / "runtool.toml"))
    assert main(["--config", toml, "download", RUN.to_path_str(), "--dry-run"]) == 0
    assert stale.exists()
    assert main(["--config", toml, "download", RUN.to_path_str(), "--yes"]) == 0
    assert "Nothing to download: all 4 bags are present" in capsys.readouterr().out
    assert leftovers(fresh_config) == []
    stale.write_bytes(b"\0" * 300_000)
    plan = services.transfers.plan_raw_download(RUN)
    assert not plan.to_transfer
    with exclusive_lock(services.transfers.engine.lock_path(plan)):  # another job: no waiting, nothing removed
        result = services.transfers.execute(plan)
    assert result.ok and not result.cancelled and stale.exists()
    assert services.transfers.execute(plan).ok and leftovers(fresh_config) == []


def test_bag_selection(services: ServiceContainer) -> None:
    plan = services.transfers.plan_raw_download(RUN, bags=["0", "rosbag" + BAGS[2], BAGS[3][:-4]])
    assert [f.key.rsplit("/", 1)[1] for f in plan.files] == [BAGS[0], BAGS[2], BAGS[3]]
    with pytest.raises(TransferError, match="no bag index 9"):
        services.transfers.plan_raw_download(RUN, bags=["9"])
    with pytest.raises(TransferError, match="no bag named"):
        services.transfers.plan_raw_download(RUN, bags=["_nope_0.bag"])
    with pytest.raises(TransferError, match="No bags"):
        services.transfers.plan_raw_download(RunCoordinate.parse("a/b/c/d/e/2025_01_01T00:00:00Z"))


def test_object_changed_after_preview_is_not_taken(services: ServiceContainer, fresh_config: RuntoolConfig) -> None:
    plan = services.transfers.plan_raw_download(RUN)
    seed(fresh_config, {BAGS[0]: b"a new version of the bag"})
    result = services.transfers.execute(plan)
    failed = [o for o in result.outcomes if o.status == "failed"]
    assert [o.file.name for o in failed] == ["rosbag" + BAGS[0]]
    assert "changed in the cloud since the preview" in str(failed[0].error)
    assert not local(fresh_config, BAGS[0]).exists() and not result.ok
    assert leftovers(fresh_config) == []


def test_each_file_is_whole_and_synced_before_it_gets_its_name(services: ServiceContainer, fresh_config: RuntoolConfig,
                                                               content: dict[str, bytes],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    by_size = {len(data): name for name, data in content.items()}
    synced: list[tuple[str, bool]] = []

    def sync(fd: int) -> None:
        name = by_size[os.fstat(fd).st_size]  # the whole object is in the temporary file
        synced.append((name, local(fresh_config, name).exists()))
        os.fsync(fd)

    monkeypatch.setattr(transfer_engine_module, "_sync_data", sync)
    assert services.transfers.execute(services.transfers.plan_raw_download(RUN)).ok
    assert sorted(synced) == [(name, False) for name in sorted(content)]  # each synced once, before the rename


def test_cancel_leaves_no_partial_file(services: ServiceContainer, fresh_config: RuntoolConfig) -> None:
    cancel = threading.Event()
    result = services.transfers.execute(services.transfers.plan_raw_download(RUN), progress=lambda p: cancel.set(),
                                        cancel=cancel)
    assert result.cancelled and not result.ok
    for outcome in result.outcomes:
        target = outcome.file.path
        assert not target.exists() or target.stat().st_size == outcome.file.size
    assert leftovers(fresh_config) == []


def test_unwritable_target_is_a_clear_failure(services: ServiceContainer, fresh_config: RuntoolConfig) -> None:
    run_dir = local_raw_dir(fresh_config.raw_root, RUN)
    run_dir.parent.mkdir(parents=True)
    run_dir.write_text("a file where the run folder should be")
    result = services.transfers.execute(services.transfers.plan_raw_download(RUN))
    assert result.count("failed") == 4
    assert all("Cannot write" in str(o.error) for o in result.outcomes)


def test_a_folder_of_the_bags_size_at_its_path_fails_that_bag_only(services: ServiceContainer,
                                                                    fresh_config: RuntoolConfig,
                                                                    content: dict[str, bytes]) -> None:
    """A folder where a bag goes fails that bag, also when the folder's size is the bag's (a 4,096-byte bag under
    an ext4 folder), which made the check for a copy another job downloaded read the folder and stop the run."""
    folder = local(fresh_config, BAGS[0])
    folder.mkdir(parents=True)
    bucket = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.raw_bucket)
    bucket.blob(raw_bag_key(RUN, BAGS[0])).upload_from_string(b"b" * folder.stat().st_size)
    result = services.transfers.execute(services.transfers.plan_raw_download(RUN))
    assert [o.status for o in result.outcomes] == ["failed", "transferred", "transferred", "transferred"]
    assert "Is a directory" in str(result.outcomes[0].error) and folder.is_dir()
    assert all(local(fresh_config, name).read_bytes() == content[name] for name in BAGS[1:])


def test_the_summary_counts_the_bytes_of_the_files_transferred(services: ServiceContainer,
                                                                fresh_config: RuntoolConfig,
                                                                content: dict[str, bytes]) -> None:
    """A file fetched whole that then could not be renamed (a folder at its path), or stopped part-way, is not
    transferred: its bytes were counted as such ('1 files, 4.0 KiB … 1 failed' for a 0-byte bag and a failed
    4 KiB one; '0 files, 164.0 MiB … cancelled')."""
    local(fresh_config, BAGS[0]).mkdir(parents=True)
    result = services.transfers.execute(services.transfers.plan_raw_download(RUN))
    assert [o.status for o in result.outcomes] == ["failed", "transferred", "transferred", "transferred"]
    landed = sum(len(content[name]) for name in BAGS[1:])
    assert result.bytes == landed and result.to_dict()["bytes"] == landed
    assert result.summary().startswith(f"3 files, {format_bytes(landed)} in ")


def test_read_only_refuses(fresh_config: RuntoolConfig, content: dict[str, bytes]) -> None:
    services = ServiceContainer(fresh_config, read_only=True)
    plan = services.transfers.plan_raw_download(RUN)  # previewing is reading: allowed
    with pytest.raises(ReadOnlyError):
        services.transfers.execute(plan)


def test_checksum_mismatch_is_rejected(tmp_path: Path) -> None:
    data_dir = tmp_path / "gcs"
    with Emulator(data_dir=data_dir) as private:
        config = make_config(tmp_path / "data", private.url)
        client = make_client(emulator_host=private.url)
        client.create_bucket(config.raw_bucket)
        seed(config, {BAGS[0]: b"the original bytes of a bag"})
        stored = data_dir / config.raw_bucket / raw_bag_key(RUN, BAGS[0])
        stored.write_bytes(b"THE original bytes of a bag")  # same size, metadata keeps the old CRC32C
        services = ServiceContainer(config)
        result = services.transfers.execute(services.transfers.plan_raw_download(RUN))
        (outcome,) = result.outcomes
        assert outcome.status == "failed" and "Checksum mismatch" in str(outcome.error)
        assert not local(config, BAGS[0]).exists() and leftovers(config) == []


def test_emulator_killed_mid_download_then_resume(tmp_path: Path) -> None:
    data_dir = tmp_path / "gcs"
    content = payloads(3_000_000)
    with Emulator(data_dir=data_dir) as private:
        port = private.port
        config = make_config(tmp_path / "data", private.url)
        make_client(emulator_host=private.url).create_bucket(config.raw_bucket)
        seed(config, content)
        services = ServiceContainer(config)
        services.transfer_engine.workers = 1  # one file at a time, so some finish before the kill

        def kill_in_second_file(progress: TransferProgress) -> None:
            if progress.bytes_done >= 4_000_000 and private.process is not None:
                private.stop()

        result = services.transfers.execute(services.transfers.plan_raw_download(RUN), progress=kill_in_second_file)
    assert not result.ok and result.count("transferred") >= 1 and result.count("failed") >= 1
    failed = [o for o in result.outcomes if o.status == "failed"]
    assert all("could not be reached" in str(o.error) or "Connection" in str(o.error) for o in failed), failed
    for name, data in content.items():
        target = local(config, name)
        assert not target.exists() or target.read_bytes() == data  # never a partial file at a final path
    assert leftovers(config) == []
    with Emulator(port=port, data_dir=data_dir):
        resumed = ServiceContainer(config).transfers
        plan = resumed.plan_raw_download(RUN)
        assert len(plan.to_transfer) == result.count("failed") + result.count("cancelled")
        assert resumed.execute(plan).ok
    assert all(local(config, name).read_bytes() == data for name, data in content.items())


DISK_FULL_SCRIPT = """
import resource, signal, sys
from runtool.models import RunCoordinate
from runtool.services import ServiceContainer
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
services = ServiceContainer.from_environment()
plan = services.transfers.plan_raw_download(RunCoordinate.parse(sys.argv[1]), conflict="overwrite")
result = services.transfers.execute(plan)
print(result.outcomes[0].status, result.outcomes[0].error)
"""


def test_disk_full_keeps_the_previous_good_file(services: ServiceContainer, fresh_config: RuntoolConfig,
                                                 content: dict[str, bytes], tmp_path: Path) -> None:
    """A write that runs out of space (simulated with a file-size limit) fails clearly and replaces nothing."""
    services.transfers.execute(services.transfers.plan_raw_download(RUN, bags=["0"]))
    good = local(fresh_config, BAGS[0])
    assert good.read_bytes() == content[BAGS[0]]
    config_path = write_toml(fresh_config, tmp_path / "runtool.toml")
    out = subprocess.run([sys.executable, "-c", DISK_FULL_SCRIPT, RUN.to_path_str()], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "RUNTOOL_CONFIG": str(config_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("failed Not enough disk space"), out.stdout
    assert good.read_bytes() == content[BAGS[0]]
    assert leftovers(fresh_config) == []


def test_cli_single_run_download_executes_the_plan_as_the_page_does(
    services: ServiceContainer, content: dict[str, bytes], fresh_config: RuntoolConfig, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`download COORD` runs plan → execute in this process; only a selection goes through the executor, so an
    executor address that cannot work stops the selection and not the single run."""
    toml = str(write_toml(fresh_config, tmp_path / "runtool.toml"))
    monkeypatch.setenv(DASK_SCHEDULER_ENV, "no-such-scheduler")
    assert main(["--config", toml, "download", "--lbid", RUN.lbid, "--yes"]) == 1
    assert "no-such-scheduler" in capsys.readouterr().err and not local(fresh_config, BAGS[0]).exists()
    local(fresh_config, BAGS[1]).parent.mkdir(parents=True)
    local(fresh_config, BAGS[1]).write_bytes(b"cut")
    assert main(["--config", toml, "download", RUN.to_path_str(), "--yes", "--json"]) == 0
    out = capsys.readouterr().out  # the preview, then the result (the same document as a selection's)
    assert "replaced: size differs (local 3 B" in out
    result = json.loads(out[out.index("\n{") :])
    assert (result["transferred"], result["skipped"], result["not_started"]) == (4, 0, [])
    [run] = result["runs"]
    assert run["ok"] and run["refresh_error"] is None
    assert all(local(fresh_config, name).read_bytes() == data for name, data in content.items())
    assert main(["--config", toml, "download", RUN.to_path_str(), "--yes"]) == 0
    assert "Nothing to download: all 4 bags are present" in capsys.readouterr().out


def test_cli_download_says_it_waits_for_another_job_on_the_run(
    services: ServiceContainer, fresh_config: RuntoolConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second `download` of a run another job is transferring printed its plan, then nothing until that job
    ended (minutes for a large run): it says what it waits for."""
    toml = str(write_toml(fresh_config, tmp_path / "runtool.toml"))
    lock = services.transfers.engine.lock_path(services.transfers.plan_raw_download(RUN))
    held, release = threading.Event(), threading.Event()

    def other_job() -> None:
        with exclusive_lock(lock):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=other_job)
    holder.start()
    held.wait(10)
    threading.Timer(1.0, release.set).start()
    try:
        assert main(["--config", toml, "download", RUN.to_path_str(), "--yes"]) == 0
    finally:
        release.set()
        holder.join()
    captured = capsys.readouterr()
    assert f"Waiting for another job transferring {RUN} to finish (it holds {lock})" in captured.err
    assert "4 files" in captured.out
    assert main(["--config", toml, "download", RUN.to_path_str(), "--yes", "--conflict", "overwrite"]) == 0
    assert "Waiting" not in capsys.readouterr().err


def test_cli_download(services: ServiceContainer, fresh_config: RuntoolConfig, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    toml = str(write_toml(fresh_config, tmp_path / "runtool.toml"))
    assert main(["--config", toml, "download", RUN.to_path_str(), "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["files_to_transfer"] == 4 and not local(fresh_config, BAGS[0]).exists()
    assert main(["--config", toml, "download", RUN.to_path_str()]) == 1  # not confirmed (no terminal)
    assert "Not confirmed" in capsys.readouterr().err
    assert main(["--config", toml, "download", RUN.to_path_str(), "--yes"]) == 0
    assert "4 files" in capsys.readouterr().out and local(fresh_config, BAGS[3]).exists()
    assert main(["--config", toml, "download", "acme/north/field_7/TW_1/LB_0009/2025_08_01T08:00:00Z"]) == 2
    assert "unknown run" in capsys.readouterr().err
    assert main(["--config", toml, "download", "not/a/coordinate"]) == 2
    assert services.data_state.runs(Filters(lbid="LB_0001"))["raw_sync"].iloc[0] == SyncStatus.CLOUD_ONLY
