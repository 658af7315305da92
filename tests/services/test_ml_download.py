"""ML sample downloads for one run against a real fake-gcs-server."""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path

import pytest

from runtool.cli import main
from runtool.config import RuntoolConfig
from runtool.models import RunCoordinate, SyncStatus
from runtool.services import ServiceContainer, TransferError
from runtool.services.transfers.engine import DISK_FULL_NOT_STARTED
from runtool.storage import local_ml_dir, make_client, ml_file_key
from tests.conftest import write_toml

RUN = RunCoordinate.parse("acme/north/field_7/TW_1/LB_0001/2025_08_01T08:00:00Z")
BAG_DIRS = ["_2025-08-01-08-00-20_0", "_2025-08-01-08-00-21_1"]


def sample_name(bag: int, n: int) -> str:
    return f"17540352{20 + bag}.{n:09d}"


@pytest.fixture
def services(fresh_config: RuntoolConfig) -> ServiceContainer:
    ml = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.ml_bucket)
    for bag, stem in enumerate(BAG_DIRS):
        for n in range(5):
            ml.blob(ml_file_key(RUN, stem, "frames", f"{sample_name(bag, n)}.jpg")).upload_from_string(b"\xff\xd8" * n)
        for n in range(3):  # the last two frames of each bag have no label
            ml.blob(ml_file_key(RUN, stem, "labels", f"{sample_name(bag, n)}.txt")).upload_from_string(
                b"0 0.5 0.5 0.1 0.1\n" * n)
    ml.blob(ml_file_key(RUN, BAG_DIRS[0], "frames", "notes.json")).upload_from_string(b"{}")  # an anomaly
    container = ServiceContainer(fresh_config)
    container.inventory.refresh()
    return container


def test_downloads_frames_and_labels_into_the_local_layout(services: ServiceContainer) -> None:
    plan = services.transfers.plan_ml_download(RUN)
    assert len(plan.to_transfer) == 16 and plan.describe().startswith("Download 16 files")
    result = services.transfers.execute(plan)
    assert result.ok and result.count("transferred") == 16
    root = local_ml_dir(services.config.ml_root, RUN)
    label = root / "rosbag_2025-08-01-08-00-21_1" / "labels" / f"{sample_name(1, 2)}.txt"
    assert label.read_bytes() == b"0 0.5 0.5 0.1 0.1\n" * 2
    assert not (root / "rosbag_2025-08-01-08-00-20_0" / "frames" / "notes.json").exists()
    record = services.data_state.run_records(RUN.to_filters())[0]
    assert record["ml_sync"] == SyncStatus.SYNCED and record["local_labels"] == 6
    again = services.transfers.plan_ml_download(RUN)
    assert again.to_transfer == () and again.describe() == "Nothing to download: all 16 files are present"


def test_selection_by_kind_and_bag(services: ServiceContainer) -> None:
    labels = services.transfers.plan_ml_download(RUN, kinds=["labels"])
    assert len(labels.files) == 6 and all("/labels/" in f.key for f in labels.files)
    one_bag = services.transfers.plan_ml_download(RUN, bags=["rosbag_2025-08-01-08-00-21_1"], kinds=["frames"])
    assert len(one_bag.files) == 5 and all(BAG_DIRS[1] in f.key for f in one_bag.files)
    with pytest.raises(TransferError, match="no ML samples for _nope"):
        services.transfers.plan_ml_download(RUN, bags=["_nope"])
    with pytest.raises(TransferError, match="frames and/or labels"):
        services.transfers.plan_ml_download(RUN, kinds=["masks"])
    with pytest.raises(TransferError, match="No ML samples"):
        services.transfers.plan_ml_download(RunCoordinate.parse("acme/north/field_7/TW_1/LB_0009/2025_08_01T08:00:00Z"))


def test_verify_replaces_a_changed_local_label(services: ServiceContainer) -> None:
    services.transfers.execute(services.transfers.plan_ml_download(RUN))
    label = local_ml_dir(services.config.ml_root, RUN) / "rosbag_2025-08-01-08-00-20_0" / "labels"
    changed = label / f"{sample_name(0, 1)}.txt"
    changed.write_bytes(b"1 0.5 0.5 0.1 0.1\n")  # same size, edited class
    plan = services.transfers.plan_ml_download(RUN, conflict="verify")
    assert [f.path for f in plan.to_transfer] == [changed]
    assert services.transfers.execute(plan).ok
    assert changed.read_bytes() == b"0 0.5 0.5 0.1 0.1\n"


def test_cli_ml_download(services: ServiceContainer, fresh_config: RuntoolConfig, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    toml = str(write_toml(fresh_config, tmp_path / "runtool.toml"))
    assert main(["--config", toml, "ml", "download", RUN.to_path_str(), "--kinds", "labels", "--yes"]) == 0
    assert "6 files" in capsys.readouterr().out
    assert main(["--config", toml, "ml", "download", "acme/x/field_7/TW_1/LB_0001/2025_08_01T08:00:00Z"]) == 2


def test_hidden_files_in_the_bucket_are_anomalies_not_samples(services: ServiceContainer) -> None:
    """A macOS copy uploads an AppleDouble ``._<frame>.jpg`` beside each frame. Counted as a frame and downloaded,
    it was then invisible to the local state (which leaves out hidden files, a transfer's temporary files), so
    the run never read as synced; and a frame named like a temporary file (``.<frame>.jpg.part-…``) was removed
    as one when that frame was downloaded again. Such names are anomalies, and an upload leaves them too."""
    ml = services.transfers.client.bucket(services.config.ml_bucket)
    frame = f"{sample_name(0, 1)}.jpg"
    hidden = [f"._{frame}", f".{frame}.part-0badc0de.jpg"]
    for name in hidden:
        ml.blob(ml_file_key(RUN, BAG_DIRS[0], "frames", name)).upload_from_string(b"\x00\x05\x16\x07")
    services.inventory.refresh()
    assert {name for name in hidden} <= {key.rsplit("/", 1)[1] for key in services.data_state.anomalies()["key"]}
    plan = services.transfers.plan_ml_download(RUN)
    assert len(plan.to_transfer) == 16 and not any(f.name.startswith(".") for f in plan.files)
    assert services.transfers.execute(plan).ok
    record = services.data_state.run_records(RUN.to_filters())[0]
    assert record["ml_sync"] == SyncStatus.SYNCED and record["local_frames"] == 10
    frames = local_ml_dir(services.config.ml_root, RUN) / f"rosbag{BAG_DIRS[0]}" / "frames"
    (frames / f"._{frame}").write_bytes(b"\x00\x05\x16\x07")
    upload = services.transfers.plan_ml_upload(RUN)
    assert len(upload.files) == 16 and not any(f.name.startswith(".") for f in upload.files)


def test_cli_preview_of_a_long_plan_counts_what_it_does_not_list(fresh_config: RuntoolConfig, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A plan of more than 50 files lists the first 50 to transfer; the line after counted the skipped files as
    more of them ('… 70 more files' for 10 more to download and 60 skipped)."""
    ml = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.ml_bucket)
    for n in range(60):
        for kind, suffix in (("frames", "jpg"), ("labels", "txt")):
            ml.blob(ml_file_key(RUN, BAG_DIRS[0], kind, f"{sample_name(0, n)}.{suffix}")).upload_from_string(b"x")
    toml = str(write_toml(fresh_config, tmp_path / "runtool.toml"))
    assert main(["--config", toml, "ml", "download", RUN.to_path_str(), "--kinds", "frames", "--yes"]) == 0
    capsys.readouterr()
    assert main(["--config", toml, "ml", "download", RUN.to_path_str(), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Download 60 files, 60 B (60 skipped)" in out and out.count("  → ") == 50
    assert out.rstrip().endswith("  … 10 more to download, 60 skipped")


def test_a_full_disk_stops_the_small_files_after_it_and_the_cli_counts_the_failures(
    fresh_config: RuntoolConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: a disk under the ML root with room for a few files (a full tmpfs needs root here). Every
    file after the disk filled was still fetched, only to fail alike, and the CLI printed one line per failed
    file (2,511 lines for 3,000 labels in the hostile review)."""
    ml = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.ml_bucket)
    for n in range(300):
        ml.blob(ml_file_key(RUN, BAG_DIRS[0], "labels", f"{sample_name(0, n)}.txt")).upload_from_string(b"0 1 1 1 1\n")
    toml = str(write_toml(fresh_config, tmp_path / "runtool.toml"))
    room, lock, real_write = [100], threading.Lock(), os.write
    ml_root = str(fresh_config.ml_root)

    def write(fd: int, data: bytes | memoryview) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(ml_root):
            with lock:
                if room[0] < len(data):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                room[0] -= len(data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    assert main(["--config", toml, "ml", "download", RUN.to_path_str(), "--yes"]) == 1
    _, err = capsys.readouterr()
    lines = err.splitlines()
    failed = [line for line in lines if line.startswith("  failed: ")]
    assert len(failed) == 20 and lines[lines.index(failed[-1]) + 1].startswith("  … 270 more failed")
    assert main(["--config", toml, "ml", "download", RUN.to_path_str(), "--yes", "--json"]) == 1
    out = capsys.readouterr().out  # the preview, then the result
    files = json.loads(out[out.index("\n{") + 1 :])["runs"][0]["files"]
    errors = [f["error"] for f in files if f["status"] == "failed"]
    out_of_space = [e for e in errors if e.startswith("Not enough disk space")]
    assert len(errors) == 290 and 1 <= len(out_of_space) <= 64  # at most the files in flight at the time
    assert errors.count(DISK_FULL_NOT_STARTED) == len(errors) - len(out_of_space)
    landed = [p for p in fresh_config.ml_root.rglob("*") if p.is_file()]
    assert len(landed) == 10 and all(p.read_bytes() == b"0 1 1 1 1\n" for p in landed)  # none half-written
