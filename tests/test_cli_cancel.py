"""Ctrl-C against a real ``runtool`` process in the middle of real transfers.

The process talks to the emulator through a relay that passes a limited number of bytes per second (and can
hold them all), so a transfer is reliably in flight when the SIGINT arrives. The SIGINT goes to the process
group, as a terminal sends it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtool.cli import main
from runtool.config import RuntoolConfig
from runtool.demo.emulator import Emulator
from runtool.models import RunCoordinate
from runtool.services.executor import DASK_SCHEDULER_ENV
from runtool.services.transfers import PART_MARKER
from runtool.storage import local_ml_dir, local_raw_dir, make_client, ml_file_key, raw_bag_key
from runtool.storage.checksums import file_crc32c
from tests.conftest import write_toml

BOX = "acme/north/field_7/TW_1/LB_0001"
RUN = RunCoordinate.parse(f"{BOX}/2025_08_01T08:00:00Z")
RUNS = [RunCoordinate.parse(f"{BOX}/2025_08_0{day}T08:00:00Z") for day in range(1, 7)]
BAG = "_2025-08-01-08-00-20_0"
KIB = 1024
RUNTOOL = Path(sys.executable).with_name("runtool")


class ThrottledRelay:
    """A TCP relay to the emulator passing at most ``rate`` bytes per second per connection and direction.

    ``stall`` holds every byte until cleared: a transfer then hangs as on a dead network.
    """

    def __init__(self, target_port: int, rate: int) -> None:
        self.target_port, self.rate = target_port, rate
        self.stall = threading.Event()
        self._closed = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(16 * KIB):
                while self.stall.is_set() and not self._closed.is_set():
                    time.sleep(0.02)
                sink.sendall(data)
                time.sleep(len(data) / self.rate)
        except OSError:
            pass  # the other side went away (a killed runtool, a closed emulator connection): this pump ends
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):  # already shut by the pump of the other direction
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed.set()
        self._server.close()


@pytest.fixture
def relay(emulator: Emulator) -> Iterator[ThrottledRelay]:
    port = int(emulator.url.rsplit(":", 1)[1])
    server = ThrottledRelay(port, rate=512 * KIB)
    yield server
    server.close()


@pytest.fixture
def slow_toml(fresh_config: RuntoolConfig, relay: ThrottledRelay, tmp_path: Path) -> Path:
    """The test's buckets, reached through the relay."""
    return write_toml(fresh_config.with_overrides(emulator_host=relay.url), tmp_path / "slow.toml")


@pytest.fixture
def fast_toml(fresh_config: RuntoolConfig, tmp_path: Path) -> Path:
    """The same buckets and folders, reached directly (to finish what was cancelled, quickly)."""
    return write_toml(fresh_config, tmp_path / "fast.toml")


def start(*argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``runtool`` in its own process group, as a terminal's foreground job."""
    return subprocess.Popen([str(RUNTOOL), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "RUNTOOL_CONFIG": "", **(env or {})})


def ctrl_c(process: subprocess.Popen[str]) -> None:
    os.killpg(process.pid, signal.SIGINT)


def wait_until(condition: Callable[[], bool], process: subprocess.Popen[str], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"runtool ended ({process.returncode}) before the moment awaited:\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"not reached within {timeout_s} s:\n{process.communicate()}")
        time.sleep(0.02)


def files_under(folder: Path) -> tuple[dict[str, bytes], list[str]]:
    """Final files (name → bytes) and temporary files under ``folder``."""
    final, parts = {}, []
    for path in folder.rglob("*") if folder.exists() else ():
        if path.is_file() and PART_MARKER in path.name:
            parts.append(path.name)
        elif path.is_file() and not path.name.startswith("."):
            final[path.name] = path.read_bytes()
    return final, parts


def bag_bytes(index: int, size: int) -> bytes:
    return bytes([65 + index]) * size


def seed_bags(config: RuntoolConfig, runs: list[RunCoordinate], sizes: list[int]) -> dict[str, bytes]:
    """Bags of ``sizes`` in each run; returns local name → content."""
    raw = make_client(emulator_host=config.emulator_host).bucket(config.raw_bucket)
    expected = {}
    for run in runs:
        for i, size in enumerate(sizes):
            name = f"_2025-08-01-08-00-{20 + i}_{i}.bag"
            raw.blob(raw_bag_key(run, name)).upload_from_string(bag_bytes(i, size))
            expected[f"rosbag{name}"] = bag_bytes(i, size)
    return expected


def test_ctrl_c_stops_a_download_keeping_only_complete_files(
        fresh_config: RuntoolConfig, slow_toml: Path, fast_toml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = seed_bags(fresh_config, [RUN], [32 * KIB, 64 * KIB, 3072 * KIB, 3072 * KIB])
    folder = local_raw_dir(fresh_config.raw_root, RUN)
    assert main(["--config", str(fast_toml), "inventory", "refresh"]) == 0
    runtool = start("--config", str(slow_toml), "download", RUN.to_path_str(), "--yes")
    # The small bags are complete while the big ones are still arriving (3 MiB at 512 KiB/s).
    wait_until(lambda: len(files_under(folder)[0]) == 2 and len(files_under(folder)[1]) == 2, runtool)
    ctrl_c(runtool)
    out, err = runtool.communicate(timeout=60)
    assert runtool.returncode == 130, err
    assert "cancelling" in err and "Traceback" not in err
    final, parts = files_under(folder)
    assert parts == []  # the abandoned downloads' temporary files are gone
    assert final == {name: data for name, data in expected.items() if len(data) < 1024 * KIB}  # complete or absent
    assert "\n2 files, " in out and "cancelled (2 not transferred)" in out
    assert "Cancelled: 2 files transferred and complete, 2 not transferred" in out
    # The same command again fetches the rest.
    assert main(["--config", str(fast_toml), "download", RUN.to_path_str(), "--yes"]) == 0
    assert "2 files, 6.0 MiB" in capsys.readouterr().out
    assert files_under(folder) == (expected, [])


def test_ctrl_c_stops_an_ml_download(fresh_config: RuntoolConfig, slow_toml: Path, fast_toml: Path) -> None:
    ml = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.ml_bucket)
    sizes = [8 * KIB] * 3 + [3072 * KIB] * 2
    for n, size in enumerate(sizes):
        ml.blob(ml_file_key(RUN, BAG, "frames", f"1754035220.{n:09d}.jpg")).upload_from_string(bag_bytes(n, size))
    folder = local_ml_dir(fresh_config.ml_root, RUN)
    assert main(["--config", str(fast_toml), "inventory", "refresh"]) == 0
    runtool = start("--config", str(slow_toml), "ml", "download", RUN.to_path_str(), "--yes")
    wait_until(lambda: len(files_under(folder)[0]) == 3 and len(files_under(folder)[1]) == 2, runtool)
    ctrl_c(runtool)
    out, err = runtool.communicate(timeout=60)
    assert runtool.returncode == 130, err
    assert files_under(folder) == ({f"1754035220.{n:09d}.jpg": bag_bytes(n, 8 * KIB) for n in range(3)}, [])
    assert "Cancelled: 3 files transferred and complete, 2 not transferred" in out


def test_a_second_ctrl_c_exits_at_once_and_a_rerun_cleans_up(
        fresh_config: RuntoolConfig, relay: ThrottledRelay, slow_toml: Path, fast_toml: Path) -> None:
    expected = seed_bags(fresh_config, [RUN], [16 * KIB, 2048 * KIB, 2048 * KIB])
    folder = local_raw_dir(fresh_config.raw_root, RUN)
    assert main(["--config", str(fast_toml), "inventory", "refresh"]) == 0
    runtool = start("--config", str(slow_toml), "download", RUN.to_path_str(), "--yes")
    wait_until(lambda: len(files_under(folder)[0]) == 1 and len(files_under(folder)[1]) == 2, runtool)
    relay.stall.set()  # the network goes dead: the files in flight cannot even notice the cancel
    ctrl_c(runtool)
    time.sleep(1.0)
    assert runtool.poll() is None  # the first Ctrl-C waits for the files in flight to stop
    ctrl_c(runtool)
    _, err = runtool.communicate(timeout=15)
    assert runtool.returncode == 130
    assert "interrupted again" in err and "Traceback" not in err
    final, parts = files_under(folder)
    assert final == {name: data for name, data in expected.items() if len(data) < 1024 * KIB}  # no half file
    assert len(parts) == 2 and all(part.startswith(".") for part in parts)  # hidden, abandoned
    relay.stall.clear()
    assert main(["--config", str(fast_toml), "download", RUN.to_path_str(), "--yes"]) == 0
    assert files_under(folder) == (expected, [])  # the dead process's temporary files were removed


def test_ctrl_c_during_a_bulk_download_reports_the_runs_not_started(
        fresh_config: RuntoolConfig, slow_toml: Path, fast_toml: Path) -> None:
    seed_bags(fresh_config, RUNS, [16 * KIB, 2048 * KIB])
    assert main(["--config", str(fast_toml), "inventory", "refresh"]) == 0
    folders = {run: local_raw_dir(fresh_config.raw_root, run) for run in RUNS}

    def landed() -> set[RunCoordinate]:
        return {run for run, folder in folders.items() if files_under(folder)[0]}

    runtool = start("--config", str(slow_toml), "download", "--lbid", "LB_0001", "--yes")
    wait_until(lambda: bool(landed()), runtool)  # 4 runs at once: two wait while 2 MiB bags arrive
    ctrl_c(runtool)
    out, err = runtool.communicate(timeout=60)
    assert runtool.returncode == 130, err
    not_started = {RunCoordinate.parse(line.split("not started: ")[1]) for line in out.splitlines()
                   if line.startswith("  not started: ")}
    assert len(not_started) >= 2 and not_started == set(RUNS) - landed()
    assert all(files_under(folder)[1] == [] for folder in folders.values())
    transferred = sum(len(files_under(folder)[0]) for folder in folders.values())
    assert f"Cancelled: {transferred} files transferred and complete, {12 - transferred} not transferred " \
           f"({len(not_started)} runs not started)" in out
    assert all(len(data) == 16 * KIB for folder in folders.values() for data in files_under(folder)[0].values())


def export_frames(config: RuntoolConfig, count: int, size: int) -> dict[str, bytes]:
    frames = local_ml_dir(config.ml_root, RUN) / f"rosbag{BAG}" / "frames"
    frames.mkdir(parents=True)
    written = {}
    for n in range(count):
        data = bytes([n]) * size
        (frames / f"1754035220.{n:09d}.jpg").write_bytes(data)
        written[ml_file_key(RUN, BAG, "frames", f"1754035220.{n:09d}.jpg")] = data
    tracking = config.ml_root / "raw" / ".export_tracking.json"
    tracking.write_text(json.dumps({"exports": {"exp_1": {"coordinates": [BOX]}}}))
    return written


@pytest.mark.parametrize("command", [["ml", "upload", RUN.to_path_str()], ["ml", "upload", "--export-id", "exp_1"]])
def test_ctrl_c_stops_an_upload_and_every_object_sent_is_whole(
        command: list[str], fresh_config: RuntoolConfig, slow_toml: Path, fast_toml: Path) -> None:
    local = export_frames(fresh_config, 40, 96 * KIB)
    assert main(["--config", str(fast_toml), "inventory", "refresh"]) == 0
    bucket = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.ml_bucket)

    def in_cloud() -> dict[str, str]:
        return {blob.name: blob.crc32c for blob in bucket.list_blobs()}

    runtool = start("--config", str(slow_toml), *command, "--yes")
    wait_until(lambda: len(in_cloud()) >= 8, runtool)  # 8 at once, each 96 KiB at 512 KiB/s
    ctrl_c(runtool)
    out, err = runtool.communicate(timeout=60)
    assert runtool.returncode == 130, err
    sent = in_cloud()
    assert 8 <= len(sent) < len(local)
    frames = local_ml_dir(fresh_config.ml_root, RUN) / f"rosbag{BAG}" / "frames"
    assert all(crc == file_crc32c(frames / key.rsplit("/", 1)[1]) for key, crc in sent.items())  # each one whole
    assert f"Cancelled: {len(sent)} files transferred and complete, {len(local) - len(sent)} not transferred" in out


def test_ctrl_c_stops_a_raw_upload(fresh_config: RuntoolConfig, slow_toml: Path, fast_toml: Path) -> None:
    folder = local_raw_dir(fresh_config.raw_root, RUN)
    folder.mkdir(parents=True)
    for i in range(24):
        (folder / f"rosbag_2025-08-01-08-00-{20 + i}_{i}.bag").write_bytes(bag_bytes(i, 128 * KIB))
    assert main(["--config", str(fast_toml), "inventory", "refresh"]) == 0
    bucket = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.raw_bucket)
    runtool = start("--config", str(slow_toml), "raw", "upload", RUN.to_path_str(), "--yes")
    wait_until(lambda: len(list(bucket.list_blobs())) >= 1, runtool)
    ctrl_c(runtool)
    out, err = runtool.communicate(timeout=60)
    assert runtool.returncode == 130, err
    sent = {blob.name: blob.download_as_bytes() for blob in bucket.list_blobs()}
    assert 1 <= len(sent) < 24
    assert all(data == (folder / f"rosbag{key.rsplit('/', 1)[1]}").read_bytes() for key, data in sent.items())
    assert f"Cancelled: {len(sent)} files transferred and complete, {24 - len(sent)} not transferred" in out


def test_ctrl_c_stops_a_dataset_fetch_before_its_manifest(
        fresh_config: RuntoolConfig, slow_toml: Path, fast_toml: Path) -> None:
    ml = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.ml_bucket)
    raw = make_client(emulator_host=fresh_config.emulator_host).bucket(fresh_config.raw_bucket)
    raw.blob(raw_bag_key(RUN, f"{BAG}.bag")).upload_from_string(b"bag")
    for n in range(30):
        ml.blob(ml_file_key(RUN, BAG, "frames", f"1754035220.{n:09d}.jpg")).upload_from_string(bytes([n]) * 256 * KIB)
        ml.blob(ml_file_key(RUN, BAG, "labels", f"1754035220.{n:09d}.txt")).upload_from_string(b"0 0.5 0.5 0.1 0.1\n")
    assert main(["--config", str(fast_toml), "inventory", "refresh"]) == 0
    root = fresh_config.ml_root / "trainings" / "weeds"
    runtool = start("--config", str(slow_toml), "dataset", "fetch", "weeds", "--yes")
    wait_until(lambda: len([p for p in root.glob("images/*/*.jpg")]) >= 1, runtool)
    ctrl_c(runtool)
    out, err = runtool.communicate(timeout=60)
    assert runtool.returncode == 130, err
    images, parts = files_under(root / "images")
    assert parts == [] and 1 <= len(images) < 30
    assert all(data == bytes([data[0]]) * 256 * KIB for data in images.values())  # each image whole
    assert not (root / "manifest.json").exists()
    assert "cancelled: the manifest was not updated" in out and "Cancelled: " in out
    assert main(["--config", str(fast_toml), "dataset", "fetch", "weeds", "--yes"]) == 0
    assert len(json.loads((root / "manifest.json").read_text())["samples"]) == 30


def test_ctrl_c_on_the_dask_executor_leaves_the_remaining_runs_unstarted(
        fresh_config: RuntoolConfig, slow_toml: Path, fast_toml: Path) -> None:
    pytest.importorskip("distributed")
    runs = RUNS[:5]
    seed_bags(fresh_config, runs, [1024 * KIB])
    assert main(["--config", str(fast_toml), "inventory", "refresh"]) == 0
    folders = {run: local_raw_dir(fresh_config.raw_root, run) for run in runs}

    def touched() -> set[RunCoordinate]:
        return {run for run, folder in folders.items() if any(files_under(folder))}

    runtool = start("--config", str(slow_toml), "download", "--lbid", "LB_0001", "--yes",
                    env={DASK_SCHEDULER_ENV: "local-cluster"})
    wait_until(lambda: bool(touched()), runtool, timeout_s=180)  # two workers, one run each at a time
    ctrl_c(runtool)  # to the whole group: the cluster's worker processes hear it too, as from a terminal
    out, err = runtool.communicate(timeout=120)
    assert runtool.returncode == 130, err
    not_started = {RunCoordinate.parse(line.split("not started: ")[1]) for line in out.splitlines()
                   if line.startswith("  not started: ")}
    assert len(not_started) >= 3
    for run, folder in folders.items():
        final, parts = files_under(folder)
        assert parts == []
        # A run on a worker when the cancel came ran to its end (a worker cannot be stopped mid-call).
        assert final == ({} if run in not_started else {"rosbag_2025-08-01-08-00-20_0.bag": bag_bytes(0, 1024 * KIB)})
