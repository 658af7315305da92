"""The Docker extraction backend against a real engine: image build, runs, ownership, failures, cancel."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from runtool.extract.docker_backend import (
    BASE_IMAGE,
    IMAGE_TAG,
    DockerBackendError,
    docker_available,
    ensure_image,
    run_in_docker,
)
from runtool.extract.outputs import ExtractionProgress, ExtractionStage, RunMetadata
from tests.conftest import require
from tests.extract.bagfiles import COORD, DemoRun, copy_run, write_bomb, zeros_bz2, zeros_lz4

ENGINE_HINT = "Docker engine not available: apt-get install docker.io && dockerd &"
SDK_HINT = "Docker SDK for Python not installed: pip install 'runtool[docker]'"
BASE_HINT = f"Docker base image {BASE_IMAGE} missing: sudo scripts/docker-base-image.sh"
# Differ between the two runs by design.
VOLATILE_METADATA = ("extraction_time", "backend")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """A client of a reachable engine that has the base image; skips (or fails under CI) otherwise."""
    require(importlib.util.find_spec("docker") is not None, SDK_HINT)
    require(docker_available() is None, ENGINE_HINT)
    import docker

    with contextlib.closing(docker.from_env()) as engine:
        require(bool(engine.images.list(name=BASE_IMAGE)), BASE_HINT)
        yield engine


@pytest.fixture(scope="module")
def image(client: Any) -> str:
    return ensure_image()


def containers_using(client: Any, folder: Path) -> list[Any]:
    """Containers (running or not) with a mount from ``folder``: what a run must not leave behind."""
    return [
        container
        for container in client.containers.list(all=True)
        if any(Path(mount["Source"]).is_relative_to(folder) for mount in container.attrs["Mounts"])
    ]


def test_unreachable_engine_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    require(importlib.util.find_spec("docker") is not None, SDK_HINT)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")
    reason = docker_available()
    assert reason is not None
    assert reason.startswith("Docker is not running: start dockerd or use --backend local")
    with pytest.raises(DockerBackendError, match="Docker is not running"):
        run_in_docker(tmp_path, tmp_path, COORD.timestamp, {})


def test_missing_sdk_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)  # makes `import docker` raise ImportError
    reason = docker_available()
    assert reason is not None and reason.endswith("pip install 'runtool[docker]'")


def test_image_is_built_once_and_labelled(client: Any, image: str) -> None:
    assert image == IMAGE_TAG
    labels = client.images.get(image).labels
    assert labels["org.runtool.version"] and len(labels["org.runtool.fingerprint"]) == 64
    lines: list[str] = []
    assert ensure_image(progress=lines.append) == IMAGE_TAG
    assert lines == []  # current: nothing rebuilt
    help_text = client.containers.run(image, ["--help"], remove=True).decode()
    assert "--bags-dir" in help_text


@dataclass(frozen=True)
class TwoRuns:
    docker_out: Path
    local_out: Path
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def two_runs(image: str, demo_run: DemoRun, tmp_path_factory: pytest.TempPathFactory) -> TwoRuns:
    """The demo run extracted in Docker and in a host process, into sibling folders."""
    root = tmp_path_factory.mktemp("docker-vs-local")
    # A real run folder name: its ':' would break a `-v host:container` mount.
    bags = copy_run(demo_run, root / "raw" / COORD.timestamp).folder
    docker_out, local_out = root / "docker", root / "local"
    docker_out.mkdir()
    events: list[dict[str, Any]] = []
    run_in_docker(bags, docker_out, COORD.timestamp, {}, progress=events.append)
    command = ["--bags-dir", str(bags), "--out", str(local_out), "--timestamp", COORD.timestamp]
    subprocess.run([sys.executable, "-m", "runtool.extract", *command], check=True, capture_output=True)
    return TwoRuns(docker_out, local_out, events)


def test_docker_outputs_equal_in_process_outputs(two_runs: TwoRuns) -> None:
    names = sorted(path.name for path in two_runs.local_out.iterdir())
    assert names == sorted(path.name for path in two_runs.docker_out.iterdir())
    assert {"frames.csv", "detections.csv", "tracking.csv", "metadata.yaml"} <= set(names)
    for name in names:
        local, docker = two_runs.local_out / name, two_runs.docker_out / name
        if name.endswith(".csv"):
            assert docker.read_bytes() == local.read_bytes(), name
        elif name.endswith(".parquet"):
            assert pq.read_table(docker).equals(pq.read_table(local)), name
        else:
            assert name == "metadata.yaml"
            ours, theirs = (yaml.safe_load(path.read_text(encoding="utf-8")) for path in (docker, local))
            for volatile in (ours, theirs):
                for key in VOLATILE_METADATA:
                    del volatile[key]
            assert ours == theirs


def test_progress_arrives_as_events(two_runs: TwoRuns) -> None:
    events = [ExtractionProgress.from_dict(event) for event in two_runs.events]
    assert events[-1].stage == ExtractionStage.DONE and events[-1].bags_done == events[-1].bags_total == 3
    assert [e.bag for e in events if e.stage == ExtractionStage.BAG_DONE] == [
        "rosbag_2025-08-25-08-59-57_0",
        "rosbag_2025-08-25-09-00-08_1",
        "rosbag_2025-08-25-09-00-19_2",
    ]


def test_outputs_belong_to_the_caller(two_runs: TwoRuns, client: Any) -> None:
    for path in two_runs.docker_out.iterdir():
        assert (path.stat().st_uid, path.stat().st_gid) == (os.getuid(), os.getgid()), path
    assert containers_using(client, two_runs.docker_out) == []  # removed after the run


def test_failed_extraction_raises_with_the_container_output(client: Any, image: str, tmp_path: Path) -> None:
    empty = tmp_path / COORD.timestamp
    empty.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DockerBackendError, match=r"code 1 \(nothing could be extracted\)") as info:
        run_in_docker(empty, out, COORD.timestamp, {})
    assert "No bags in /data" in str(info.value)
    assert containers_using(client, tmp_path) == []


def test_chunk_bombs_fail_alone_in_the_container(client: Any, image: str, demo_run: DemoRun, tmp_path: Path) -> None:
    """The chunk limit holds inside the container, and the one given to run_in_docker is the one applied."""
    bags = copy_run(demo_run, tmp_path / COORD.timestamp).folder
    write_bomb(bags / "bomb_lz4.bag", "lz4", zeros_lz4(2 << 30), declared=(1 << 32) - 1)
    write_bomb(bags / "understated_bz2.bag", "bz2", zeros_bz2(2 << 30))
    out = tmp_path / "out"
    out.mkdir()

    run_in_docker(bags, out, COORD.timestamp, {}, max_chunk_bytes=64 << 20)

    metadata = RunMetadata.read(out)
    failed = {bag.name: bag.error or "" for bag in metadata.bags_failed}
    assert sorted(failed) == ["bomb_lz4", "understated_bz2"]
    assert "declares 4,294,967,295 bytes uncompressed, more than max_chunk_bytes = 67,108,864" in failed["bomb_lz4"]
    assert "decompresses to more than the" in failed["understated_bz2"]
    assert {bag.name: bag.frames for bag in metadata.bags_ok} == {s.path.stem: s.frames for s in demo_run.summaries}
    assert containers_using(client, tmp_path) == []


def test_cancel_stops_the_container(client: Any, image: str, demo_run: DemoRun, tmp_path: Path) -> None:
    bags = tmp_path / "bags"
    bags.mkdir()
    # Enough bags that the extraction is still running when the cancel lands.
    for index in range(30):
        source = demo_run.summaries[index % 3].path
        shutil.copyfile(source, bags / f"rosbag_2025-08-25-09-{index // 60:02d}-{index % 60:02d}_{index}.bag")
    out = tmp_path / "out"
    out.mkdir()
    cancel = threading.Event()
    stages: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        stages.append(event["stage"])
        cancel.set()

    with pytest.raises(DockerBackendError, match="cancelled"):
        run_in_docker(bags, out, COORD.timestamp, {}, progress=on_event, cancel=cancel)
    assert ExtractionStage.DONE.value not in stages
    assert not (out / "metadata.yaml").exists()
    assert containers_using(client, tmp_path) == []


def test_missing_base_image_is_explained(client: Any) -> None:
    with pytest.raises(DockerBackendError, match="base image runtool-no-such-base:none is missing") as info:
        ensure_image(tag="runtool-extractor:test-no-base", base="runtool-no-such-base:none")
    assert "scripts/docker-base-image.sh" in str(info.value)


@pytest.fixture
def scratch_tag(client: Any) -> Iterator[Callable[[str], str]]:
    """Makes image tags private to this test run (other runs may share the engine); removes them afterwards."""
    tags: list[str] = []

    def make(name: str) -> str:
        tags.append(f"runtool-test-{name}:{os.getpid()}-{uuid.uuid4().hex[:8]}")
        return tags[-1]

    yield make
    for tag in tags:
        if client.images.list(name=tag):
            client.images.remove(tag, force=True)


def test_base_without_python_is_explained(client: Any, scratch_tag: Callable[[str], str]) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        entry = tarfile.TarInfo("etc/hostname")
        entry.size = 5
        tar.addfile(entry, io.BytesIO(b"empty"))
    base = scratch_tag("no-python")
    repository, tag = base.split(":")
    client.api.import_image_from_data(buffer.getvalue(), repository=repository, tag=tag)
    with pytest.raises(DockerBackendError, match=f"base image {base} cannot run python3"):
        ensure_image(tag=scratch_tag("extractor"), base=base)


def test_failing_build_shows_the_last_log_lines(client: Any, scratch_tag: Callable[[str], str]) -> None:
    base, extractor = scratch_tag("no-venv"), scratch_tag("extractor")
    # Python runs (the platform probe passes) but cannot make the venv the Dockerfile installs into.
    dockerfile = f"FROM {BASE_IMAGE}\nRUN rm -rf /usr/lib/python3.11/venv\n".encode()
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=base, rm=True)
    with pytest.raises(DockerBackendError, match=f"Building {extractor} failed") as info:
        ensure_image(tag=extractor, base=base)
    assert "No module named venv" in str(info.value)
    assert not client.images.list(name=extractor)
