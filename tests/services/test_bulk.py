"""Operations over many runs: per-run plans, runs left out with reasons, runs at once, cancel, export-id
uploads, a Dask worker dying under a run, and two processes downloading the same runs at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from runtool.cli import main
from runtool.config import RuntoolConfig
from runtool.files import exclusive_lock
from runtool.models import Filters, RunCoordinate, SyncStatus
from runtool.services import ExportTrackingError, ServiceContainer, TransferError
from runtool.services.executor import DASK_SCHEDULER_ENV, DaskExecutor, LocalExecutor
from runtool.services.transfers import ALREADY_DOWNLOADED, BulkPlan, BulkResult, TransferProgress
from runtool.storage import local_ml_dir, local_raw_dir, make_client, ml_file_key, raw_bag_key
from tests.conftest import write_toml

BOX = "acme/north/field_7/TW_1/LB_0001"
RUNS = [RunCoordinate.parse(f"{BOX}/2025_08_0{day}T08:00:00Z") for day in (1, 2, 3)]
ML_ONLY = RunCoordinate.parse(f"{BOX}/2025_08_04T08:00:00Z")
MORE = [RunCoordinate.parse(f"{BOX}/2025_08_1{day}T08:00:00Z") for day in (1, 2, 3)]


@pytest.fixture
def services(fresh_config: RuntoolConfig) -> ServiceContainer:
    client = make_client(emulator_host=fresh_config.emulator_host)
    raw, ml = client.bucket(fresh_config.raw_bucket), client.bucket(fresh_config.ml_bucket)
    for n, run in enumerate(RUNS):
        for i in range(n + 1):
            raw.blob(raw_bag_key(run, f"_2025-08-0{n + 1}-08-00-2{i}_{i}.bag")).upload_from_string(bytes([i]) * 20_000)
    ml.blob(ml_file_key(ML_ONLY, "_2025-08-04-08-00-20_0", "labels", "1.000000000.txt")).upload_from_string(b"")
    container = ServiceContainer(fresh_config)
    container.inventory.refresh()
    return container


def test_bulk_download_mixed_states(services: ServiceContainer) -> None:
    services.transfers.execute(services.transfers.plan_raw_download(RUNS[0]))  # already downloaded
    bulk = services.transfers.plan_bulk("raw_download", [*RUNS, ML_ONLY])
    assert [p.coordinate for p in bulk.plans] == RUNS
    assert [c for c, _ in bulk.left_out] == [ML_ONLY] and "No bags" in bulk.left_out[0][1]
    assert bulk.files_to_transfer == 2 + 3  # the first run's bag is skipped
    assert bulk.describe() == "Download 5 files, 97.7 KiB over 2 runs (1 run left out)"
    result = services.transfers.execute_bulk(bulk)
    assert result.ok and len(result.results) == 2
    rows = {RunCoordinate.from_dict(r): r for r in services.data_state.run_records(Filters(lbid="LB_0001"))}
    assert all(rows[run]["raw_sync"] == SyncStatus.SYNCED for run in RUNS)


def test_cancel_between_runs_reports_the_rest_not_started(services: ServiceContainer) -> None:
    bulk = services.transfers.plan_bulk("raw_download", RUNS)
    cancel = threading.Event()

    def stop_after_first_run(run_index: int, runs: int, event: object) -> None:
        if run_index == 0 and getattr(event, "files_done", 0) == getattr(event, "files_total", -1):
            cancel.set()

    one_run_at_a_time = LocalExecutor(workers=1)
    result = services.transfers.execute_bulk(bulk, progress=stop_after_first_run, cancel=cancel,
                                             executor=one_run_at_a_time)
    assert [r.plan.coordinate for r in result.results] == RUNS[:1] and result.results[0].count("transferred") == 1
    assert result.not_started == tuple(RUNS[1:]) and not result.ok
    assert "2 not started" in result.summary()
    for run in RUNS[1:]:
        folder = local_raw_dir(services.config.raw_root, run)
        assert not folder.exists() or not any(folder.iterdir())  # untouched


def assert_complete(services: ServiceContainer, bulk: BulkPlan, runs: list[RunCoordinate]) -> None:
    """Every planned file of ``runs`` is at its path with its object's bytes, and no temporary file is left."""
    bucket = make_client(emulator_host=services.config.emulator_host).bucket(services.config.raw_bucket)
    for plan in bulk.plans:
        if plan.coordinate in runs:
            for file in plan.files:
                assert file.path.read_bytes() == bucket.blob(file.key).download_as_bytes(), file.path
    assert [p for p in services.config.raw_root.rglob("*") if ".part-" in p.name] == []


def test_runs_execute_at_once_and_cancel_reports_the_waiting_ones_not_started(services: ServiceContainer) -> None:
    raw = make_client(emulator_host=services.config.emulator_host).bucket(services.config.raw_bucket)
    for run in MORE:
        raw.blob(raw_bag_key(run, f"_{run.timestamp[:10].replace('_', '-')}-08-00-20_0.bag")).upload_from_string(
            b"m" * 30_000)
    bulk = services.transfers.plan_bulk("raw_download", [*RUNS, *MORE])
    finished: set[int] = set()
    rest_done, cancel = threading.Event(), threading.Event()

    def progress(index: int, runs: int, event: TransferProgress) -> None:
        if event.files_done == event.files_total:
            finished.add(index)
        if finished >= {3, 4, 5}:
            rest_done.set()

    results: list[BulkResult] = []
    with ExitStack() as held:
        for plan in bulk.plans[:3]:  # another job holds the first three runs
            held.enter_context(exclusive_lock(services.transfer_engine.lock_path(plan)))
        job = threading.Thread(target=lambda: results.append(
            services.transfers.execute_bulk(bulk, progress=progress, cancel=cancel)))
        job.start()
        assert rest_done.wait(60), "the other runs waited behind the locked ones instead of running at once"
        cancel.set()
        job.join(60)
        assert not job.is_alive(), "a cancel did not stop the runs waiting for their lock"
    (result,) = results
    assert [r.plan.coordinate for r in result.results] == MORE and all(r.ok for r in result.results)
    assert result.not_started == tuple(RUNS) and not result.ok
    assert "3 runs complete, 0 with failures, 3 not started" in result.summary()
    assert not services.config.raw_root.joinpath(*RUNS[0].to_path_str().split("/")).exists()
    assert_complete(services, bulk, MORE)


def test_a_failing_run_is_reported_and_the_others_complete(services: ServiceContainer) -> None:
    bulk = services.transfers.plan_bulk("raw_download", RUNS)
    services.transfer_engine.lock_path(bulk.plans[1]).mkdir(parents=True)  # its lock cannot be taken
    result = services.transfers.execute_bulk(bulk)
    assert [r.plan.coordinate for r in result.results] == RUNS and [r.ok for r in result.results] == [1, 0, 1]
    failed = result.results[1]
    assert failed.count("failed") == 2 and all("Cannot lock" in str(o.error) for o in failed.outcomes)
    assert "2 runs complete, 1 with failures, 0 not started" in result.summary() and not result.ok
    assert_complete(services, bulk, [RUNS[0], RUNS[2]])


@pytest.fixture(scope="module")
def dask_executor() -> Iterator[DaskExecutor]:
    with DaskExecutor("local-cluster") as executor:
        yield executor


def process_holding(executor: DaskExecutor, path: Path, timeout_s: float = 60) -> int:
    """The pid of the Dask worker that has ``path`` open (waits until one has)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in executor.client.run(os.getpid).values():
            fds = Path(f"/proc/{pid}/fd")
            try:
                if any(os.readlink(fd) == str(path) for fd in fds.iterdir()):
                    return int(pid)
            except FileNotFoundError:  # the process or the descriptor went away while we looked
                continue
        time.sleep(0.05)
    raise AssertionError(f"no Dask worker opened {path} within {timeout_s} s")


def test_a_dask_worker_killed_under_a_run_is_retried_or_failed_never_done(
    services: ServiceContainer, dask_executor: DaskExecutor
) -> None:
    bulk = services.transfers.plan_bulk("raw_download", RUNS)
    victim = bulk.plans[1]
    events: list[tuple[int, int, TransferProgress]] = []
    results: list[BulkResult] = []
    job = threading.Thread(target=lambda: results.append(services.transfers.execute_bulk(
        bulk, progress=lambda *event: events.append(event), executor=dask_executor)))
    with exclusive_lock(services.transfer_engine.lock_path(victim)):
        job.start()
        pid = process_holding(dask_executor, services.transfer_engine.lock_path(victim))  # waiting for the run's lock
        os.kill(pid, signal.SIGKILL)
    job.join(180)
    (result,) = results
    by_run = {r.plan.coordinate: r for r in result.results}
    assert by_run[RUNS[0]].ok and by_run[RUNS[2]].ok
    retried = by_run[victim.coordinate]
    if retried.ok:
        assert retried.count("transferred") == len(victim.to_transfer)
        assert_complete(services, bulk, RUNS)
    else:
        assert retried.count("failed") == len(victim.to_transfer) and "KilledWorker" in str(retried.outcomes[0].error)
        assert_complete(services, bulk, [RUNS[0], RUNS[2]])
    assert sorted(index for index, _, _ in events) == [0, 1, 2]  # one progress event per finished run
    assert all(e.bytes_done == bulk.plans[i].bytes_to_transfer for i, _, e in events if result.results[i].ok)
    rows = {RunCoordinate.from_dict(r): r for r in services.data_state.run_records(Filters(lbid="LB_0001"))}
    assert rows[RUNS[2]]["raw_sync"] == SyncStatus.SYNCED  # the driver refreshed what the workers wrote


RACE = """
import json, sys, time
from pathlib import Path
from runtool.config import load_config
from runtool.models import RunCoordinate
from runtool.services import ServiceContainer

toml, ready, go, *runs = sys.argv[1:]
services = ServiceContainer(load_config(Path(toml)))
bulk = services.transfers.plan_bulk("raw_download", [RunCoordinate.parse(run) for run in runs])
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
result = services.transfers.execute_bulk(bulk)
print(json.dumps({"planned": bulk.files_to_transfer, **result.to_dict()}))
sys.exit(0 if result.ok else 1)
"""


def test_two_processes_downloading_the_same_runs_transfer_each_file_once(
    services: ServiceContainer, tmp_path: Path
) -> None:
    toml = write_toml(services.config, tmp_path / "runtool.toml")
    env = {k: v for k, v in os.environ.items() if k != DASK_SCHEDULER_ENV}
    go = tmp_path / "go"
    jobs = [
        subprocess.Popen([sys.executable, "-c", RACE, str(toml), str(tmp_path / f"ready-{n}"), str(go),
                          *(run.to_path_str() for run in RUNS)], stdout=subprocess.PIPE, text=True, env=env)
        for n in range(2)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{n}").exists() for n in range(2)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both have planned every file as missing; now both execute at once
    outputs = [json.loads(job.communicate(timeout=120)[0]) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0]
    files = 1 + 2 + 3
    assert [out["planned"] for out in outputs] == [files, files]
    assert sum(out["transferred"] for out in outputs) == files
    reasons = [f["reason"] for out in outputs for run in out["runs"] for f in run["files"] if f["status"] == "skipped"]
    assert reasons == [ALREADY_DOWNLOADED] * files
    assert_complete(services, services.transfers.plan_bulk("raw_download", RUNS), RUNS)


def write_tracking(config: RuntoolConfig, document: object) -> Path:
    path = config.ml_root / "raw" / ".export_tracking.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def export_run(config: RuntoolConfig, run: RunCoordinate) -> None:
    folder = local_ml_dir(config.ml_root, run) / "rosbag_2025-08-01-08-00-20_0" / "labels"
    folder.mkdir(parents=True)
    (folder / "1754035220.000000001.txt").write_text("0 0.5 0.5 0.1 0.1\n")


def test_upload_by_export_id(services: ServiceContainer) -> None:
    export_run(services.config, RUNS[0])
    export_run(services.config, RUNS[2])
    write_tracking(services.config, {"exports": {"exp_7": {"created": "2025-09-01", "samples": 2,
                                                           "coordinates": ["acme/north/field_7"]}}})
    services.local.scan()
    bulk = services.transfers.plan_export_upload("exp_7")
    assert [p.coordinate for p in bulk.plans] == [RUNS[0], RUNS[2]] and bulk.files_to_transfer == 2
    assert services.transfers.execute_bulk(bulk).ok
    names = {b.name for b in make_client(emulator_host=services.config.emulator_host)
             .list_blobs(services.config.ml_bucket)}
    assert ml_file_key(RUNS[2], "_2025-08-01-08-00-20_0", "labels", "1754035220.000000001.txt") in names
    with pytest.raises(TransferError, match="Unknown export id 'exp_9'.*exp_7"):
        services.transfers.plan_export_upload("exp_9")
    # A pasted wall of text is not echoed back whole, and a control character is shown escaped.
    with pytest.raises(TransferError) as refused:
        services.transfers.plan_export_upload("x" * 2000 + "\x1b[2J")
    assert "x" * 60 + "…'" in str(refused.value) and "x" * 61 not in str(refused.value)
    with pytest.raises(TransferError, match=r"Unknown export id 'a\\x1bb'"):
        services.transfers.plan_export_upload("a\x1bb")


def test_export_tracking_faults_are_clear(services: ServiceContainer, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    toml = str(write_toml(services.config, tmp_path / "runtool.toml"))
    assert main(["--config", toml, "ml", "upload", "--export-id", "exp_1"]) == 1
    assert "No export tracking file" in capsys.readouterr().err
    write_tracking(services.config, "{not json")
    with pytest.raises(ExportTrackingError, match="not valid JSON"):
        services.transfers.plan_export_upload("exp_1")
    write_tracking(services.config, {"exp_1": {"coordinates": ["acme/../etc"]}})
    with pytest.raises(TransferError, match="bad coordinate"):
        services.transfers.plan_export_upload("exp_1")


def test_cli_bulk_download(services: ServiceContainer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = str(write_toml(services.config, tmp_path / "runtool.toml"))
    assert main(["--config", toml, "download", "--lbid", "LB_0001", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Download 6 files" in out and "over 3 runs" in out
    assert main(["--config", toml, "download", "--lbid", "LB_0001", "--yes"]) == 0
    assert "3 runs complete, 0 with failures" in capsys.readouterr().out
    assert main(["--config", toml, "download"]) == 2


def test_cli_bulk_download_on_a_dask_cluster(services: ServiceContainer, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DASK_SCHEDULER_ENV, "local-cluster")
    toml = str(write_toml(services.config, tmp_path / "runtool.toml"))
    assert main(["--config", toml, "download", "--lbid", "LB_0001", "--yes", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "DaskExecutor('local-cluster'" in err
    result = json.loads(out[out.index("{"):])
    assert result["ok"] and result["transferred"] == 6
    assert_complete(services, services.transfers.plan_bulk("raw_download", RUNS), RUNS)
