"""Operations over many runs: per-run plans, runs left out with reasons, cancel, export-id uploads."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from runtool.cli import main
from runtool.config import RuntoolConfig
from runtool.models import Filters, RunCoordinate, SyncStatus
from runtool.services import ExportTrackingError, ServiceContainer, TransferError
from runtool.storage import local_ml_dir, local_raw_dir, make_client, ml_file_key, raw_bag_key
from tests.conftest import write_toml

BOX = "acme/north/field_7/TW_1/LB_0001"
RUNS = [RunCoordinate.parse(f"{BOX}/2025_08_0{day}T08:00:00Z") for day in (1, 2, 3)]
ML_ONLY = RunCoordinate.parse(f"{BOX}/2025_08_04T08:00:00Z")


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
    assert bulk.describe() == "Download 5 files, 97.7 KiB over 2 runs (1 runs left out)"
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

    result = services.transfers.execute_bulk(bulk, progress=stop_after_first_run, cancel=cancel)
    assert [r.plan.coordinate for r in result.results] == RUNS[:1] and result.results[0].count("transferred") == 1
    assert result.not_started == tuple(RUNS[1:]) and not result.ok
    assert "2 not started" in result.summary()
    for run in RUNS[1:]:
        folder = local_raw_dir(services.config.raw_root, run)
        assert not folder.exists() or not any(folder.iterdir())  # untouched


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
