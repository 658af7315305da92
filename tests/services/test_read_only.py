"""Read-only mode changes nothing under the data folder: every read, plan and dry run, library and command line.

The data folder's whole tree (every path, its kind, size and mtime) is compared before and after.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtool.cli import main
from runtool.config import RuntoolConfig
from runtool.errors import ReadOnlyError
from runtool.models import Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.services.datasets import LABELS_CACHE, DatasetOptions
from runtool.storage import make_client, ml_file_key, raw_bag_key
from tests.conftest import write_toml

RUNS = (
    RunCoordinate.parse("acme/north/field_1/TW_1/LB_0001/2025_05_10T08:00:00Z"),
    RunCoordinate.parse("acme/north/field_1/TW_1/LB_0002/2025_06_01T08:00:00Z"),
)
BAG = "_2025-01-01-08-00-00_0"
Tree = dict[str, tuple[bool, int, int]]


def tree(root: Path) -> Tree:
    """Every path under ``root`` (root included): is it a folder, its size and its mtime in ns."""
    found: Tree = {}
    for folder, dirs, names in os.walk(root):
        for name in ["", *dirs, *names]:
            path = Path(folder) / name
            stat = path.lstat()
            found[str(path.relative_to(root))] = (path.is_dir(), stat.st_size, stat.st_mtime_ns)
    return found


@pytest.fixture
def seeded(fresh_config: RuntoolConfig, tmp_path: Path) -> tuple[RuntoolConfig, Path]:
    """Two runs with bags, frames and labels; the inventory scanned once (writable); a runtool.toml for the CLI."""
    client = make_client(emulator_host=fresh_config.emulator_host)
    ml, raw = client.bucket(fresh_config.ml_bucket), client.bucket(fresh_config.raw_bucket)
    for coord in RUNS:
        raw.blob(raw_bag_key(coord, f"{BAG}.bag")).upload_from_string(b"bag")
        for stem in ("1.0", "2.0"):
            ml.blob(ml_file_key(coord, BAG, "frames", f"{stem}.jpg")).upload_from_string(b"jpeg" * 10)
            ml.blob(ml_file_key(coord, BAG, "labels", f"{stem}.txt")).upload_from_string(b"0 0.5 0.5 0.1 0.1\n")
    ServiceContainer(fresh_config).inventory.refresh()
    # The data folder holds the config file's folder too (tmp_path), so the toml sits outside it.
    toml = write_toml(fresh_config, tmp_path.parent / f"{tmp_path.name}-runtool.toml")
    return fresh_config, toml


def test_read_only_services_plan_and_read_without_writing(seeded: tuple[RuntoolConfig, Path]) -> None:
    config, _ = seeded
    before = tree(config.data_dir)
    services = ServiceContainer(config, read_only=True)
    plan = services.datasets.plan_dataset_fetch("weeds", Filters(), DatasetOptions())
    assert len(plan.samples) == 4  # the labels were read (into memory) to check them
    services.data_state.run_records(Filters())
    services.data_state.coverage_statistics(Filters())
    services.local.scan()
    services.inventory.cache_info()
    transfer = services.transfers.plan_ml_download(RUNS[0])
    services.transfers.plan_raw_download(RUNS[0])
    with pytest.raises(ReadOnlyError):
        services.datasets.execute(plan)
    with pytest.raises(ReadOnlyError):
        services.transfers.execute(transfer)
    for scope in (None, Filters(cid="acme")):
        with pytest.raises(ReadOnlyError):
            services.inventory.refresh(scope)
    assert tree(config.data_dir) == before
    assert not (config.ml_root / "trainings").exists()


def test_read_only_commands_leave_the_data_folder_as_it_was(
    seeded: tuple[RuntoolConfig, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config, toml = seeded
    env = {**os.environ, "RUNTOOL_READ_ONLY": "1"}
    runtool = str(Path(sys.executable).with_name("runtool"))
    for stage in ("nothing fetched yet", "after a fetch filled the dataset and the label cache"):
        before = tree(config.data_dir)
        # The command of the report, in its own process, as a user runs it.
        done = subprocess.run([runtool, "--config", str(toml), "dataset", "fetch", "weeds", "--dry-run"],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and "4 samples from 2 runs" in done.stdout, done.stderr
        monkeypatch.setenv("RUNTOOL_READ_ONLY", "1")
        coord = RUNS[0].to_path_str()
        for args in (["runs"], ["status"], ["coverage"], ["anomalies"], ["inventory", "info"],
                     ["dataset", "fetch", "weeds", "--dry-run", "--json"], ["download", coord, "--dry-run"],
                     ["ml", "download", coord, "--dry-run"]):
            assert main(["--config", str(toml), *args]) == 0, (args, capsys.readouterr())
        for args in (["dataset", "fetch", "weeds", "--yes"], ["inventory", "refresh"],
                     ["inventory", "refresh", "--cid", "acme"], ["download", coord, "--yes"]):
            assert main(["--config", str(toml), *args]) != 0, args
            assert "read-only" in capsys.readouterr().err, args
        assert tree(config.data_dir) == before, stage
        monkeypatch.delenv("RUNTOOL_READ_ONLY")
        assert main(["--config", str(toml), "dataset", "fetch", "weeds", "--yes"]) == 0
        assert any((config.ml_root / "trainings" / LABELS_CACHE).iterdir())
