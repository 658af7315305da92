"""ExtractionService: the processed folder is replaced atomically, bad bags are isolated, cancel and backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from runtool.config import RuntoolConfig
from runtool.errors import ReadOnlyError
from runtool.extract.outputs import OUTPUT_FILES, ExtractionProgress, ExtractionStage
from runtool.services import extraction as extraction_module
from runtool.services.extraction import (
    ExtractionCancelled,
    ExtractionError,
    ExtractionResult,
    ExtractionService,
)
from runtool.services.local_state import ANALYSIS_MARKER, LocalStateService
from runtool.storage import local_raw_dir, processed_dir
from tests.extract.bagfiles import COORD, DemoRun, garble_middle, truncate_half, write_image_bag


def siblings(config: RuntoolConfig) -> list[str]:
    """Everything beside the run's processed folder (temporary and set-aside folders would show here)."""
    return sorted(p.name for p in processed_dir(config.processed_root, COORD).parent.iterdir())


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_extract_writes_the_run_and_refreshes_local_state(
    raw_run: DemoRun, service: ExtractionService, local: LocalStateService, config: RuntoolConfig
) -> None:
    assert not local.run(COORD).extraction.extracted
    result = service.extract(COORD)

    out = processed_dir(config.processed_root, COORD)
    assert result.output_dir == out and result.backend == "local"
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert siblings(config) == [COORD.timestamp]
    assert result.bags_ok == raw_run.names and result.bags_failed == ()
    assert result.frames == sum(s.frames for s in raw_run.summaries)
    assert result.tracked_objects == sum(s.objects for s in raw_run.summaries)
    assert result.bag_bytes == sum(s.path.stat().st_size for s in raw_run.summaries)
    assert result.seconds > 0 and result.warnings == ()
    assert len(pd.read_csv(out / "frames.csv")) == result.frames
    assert local.run(COORD).extraction.extracted  # refreshed without a rescan
    assert json.dumps(result.to_dict())


def test_no_bags_is_an_error_with_a_sentence(service: ExtractionService, config: RuntoolConfig) -> None:
    local_raw_dir(config.raw_root, COORD).mkdir(parents=True)
    with pytest.raises(ExtractionError, match=r"^No bags downloaded for .*; download them first\.$"):
        service.extract(COORD)
    assert not config.processed_root.exists()


def test_read_only_refuses(raw_run: DemoRun, config: RuntoolConfig, local: LocalStateService) -> None:
    with pytest.raises(ReadOnlyError):
        ExtractionService(config, local, read_only=True).extract(COORD)
    assert not config.processed_root.exists()


def test_unknown_backend(raw_run: DemoRun, service: ExtractionService) -> None:
    with pytest.raises(ExtractionError, match="Unknown extraction backend 'podman'"):
        service.extract(COORD, backend="podman")


def test_bad_bags_are_recorded_while_the_others_are_extracted(
    raw_run: DemoRun, service: ExtractionService, config: RuntoolConfig
) -> None:
    folder = raw_run.folder
    truncated, garbled = raw_run.summaries[0].path, raw_run.summaries[1].path
    truncate_half(truncated)
    garble_middle(garbled)
    (folder / "rosbag_2025-08-25-09-59-59_9.bag").write_text("this is not a bag\n")

    result = service.extract(COORD)

    assert result.bags_ok == (raw_run.names[2],)
    assert result.bags_failed == (raw_run.names[0], raw_run.names[1], "rosbag_2025-08-25-09-59-59_9")
    out = result.output_dir
    document = yaml.safe_load((out / "metadata.yaml").read_text())
    by_name = {bag["name"]: bag for bag in document["bags"]}
    assert [bag["name"] for bag in document["bags"]] == [*raw_run.names, "rosbag_2025-08-25-09-59-59_9"]
    for name in result.bags_failed:
        assert by_name[name]["status"] == "failed"
        assert by_name[name]["error"].endswith(".")
        assert by_name[name]["frames"] == 0
    assert by_name[raw_run.names[1]]["rows_dropped"]["frames"] > 0
    frames = pd.read_csv(out / "frames.csv")
    assert set(frames["bag_file"]) == {raw_run.names[2]}
    assert len(frames) == raw_run.summaries[2].frames


def test_when_every_bag_fails_the_previous_output_is_kept(
    raw_run: DemoRun, service: ExtractionService, config: RuntoolConfig
) -> None:
    service.extract(COORD)
    out = processed_dir(config.processed_root, COORD)
    before = snapshot(out)
    for summary in raw_run.summaries:
        truncate_half(summary.path)
    with pytest.raises(ExtractionError, match="None of the 3 bags .* could be read") as caught:
        service.extract(COORD)
    # The sentence names the first bag (a run may have hundreds); the details name every bag with its reason.
    assert raw_run.names[0] in str(caught.value) and raw_run.names[1] not in str(caught.value)
    assert str(caught.value).endswith(" and 2 more.")
    details = caught.value.details or ""
    assert [line.split(": ", 1)[0] for line in details.splitlines()] == list(raw_run.names)
    assert snapshot(out) == before
    assert siblings(config) == [COORD.timestamp]


def failing_at(stage: ExtractionStage, bag_index: int, error: BaseException) -> Callable[[ExtractionProgress], None]:
    def progress(event: ExtractionProgress) -> None:
        if event.stage == stage and event.bags_done == bag_index:
            raise error

    return progress


def test_re_extraction_replaces_the_folder_atomically(
    raw_run: DemoRun, service: ExtractionService, config: RuntoolConfig
) -> None:
    service.extract(COORD)
    out = processed_dir(config.processed_root, COORD)
    (out / ANALYSIS_MARKER).parent.mkdir()
    (out / ANALYSIS_MARKER).write_text("{}")  # an analysis of the first extraction
    before = snapshot(out)

    # a failure in the middle of the second bag: the old output stays whole, no temporary folder remains
    with pytest.raises(RuntimeError, match="disk on fire"):
        service.extract(COORD, progress=failing_at(ExtractionStage.READING, 1, RuntimeError("disk on fire")))
    assert snapshot(out) == before
    assert siblings(config) == [COORD.timestamp]

    # a failure after everything was read (while writing the tables) changes nothing either
    with pytest.raises(RuntimeError):
        service.extract(COORD, progress=failing_at(ExtractionStage.WRITING, 3, RuntimeError("late")))
    assert snapshot(out) == before and siblings(config) == [COORD.timestamp]

    # a successful re-extraction replaces the folder, stale analysis included, and leaves nothing aside
    raw_run.summaries[2].path.unlink()
    result = service.extract(COORD)
    assert result.bags_ok == raw_run.names[:2]
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    assert set(pd.read_csv(out / "frames.csv")["bag_file"]) == set(raw_run.names[:2])
    assert siblings(config) == [COORD.timestamp]


def test_cancel_stops_between_chunks_and_keeps_the_previous_output(
    raw_run: DemoRun, service: ExtractionService, config: RuntoolConfig
) -> None:
    service.extract(COORD)
    out = processed_dir(config.processed_root, COORD)
    before = snapshot(out)
    cancel = threading.Event()
    seen: list[ExtractionProgress] = []

    def progress(event: ExtractionProgress) -> None:
        seen.append(event)
        if event.stage == ExtractionStage.READING:
            cancel.set()

    with pytest.raises(ExtractionCancelled, match="cancelled; the previous output is kept"):
        service.extract(COORD, progress=progress, cancel=cancel)
    assert seen[-1].stage == ExtractionStage.READING and seen[-1].bags_done == 0  # stopped in the first bag
    assert snapshot(out) == before and siblings(config) == [COORD.timestamp]


def test_cancel_before_the_start_writes_nothing(
    raw_run: DemoRun, service: ExtractionService, config: RuntoolConfig
) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ExtractionCancelled):
        service.extract(COORD, cancel=cancel)
    assert siblings(config) == []


def test_one_extraction_per_run_at_a_time(raw_run: DemoRun, service: ExtractionService) -> None:
    nested: list[BaseException] = []

    def progress(event: ExtractionProgress) -> None:
        if event.stage == ExtractionStage.BAG_STARTED and not nested:
            with pytest.raises(ExtractionError, match="already being extracted") as caught:
                service.extract(COORD)
            nested.append(caught.value)

    service.extract(COORD, progress=progress)
    assert nested
    service.extract(COORD)  # the run is free again afterwards


def test_a_run_another_process_extracts_is_refused_not_extracted_twice(
    raw_run: DemoRun, service: ExtractionService
) -> None:
    """Two pages (two kernels) or a page and the CLI extracting one run at once both did the work: the guard was a
    lock of one process (review, two tabs on one run)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from runtool.files import exclusive_lock\n"
         "with exclusive_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
         str(service.lock_path(COORD))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ExtractionError, match="already being extracted .by another page or command"):
            service.extract(COORD)
        assert service.metadata(COORD) is None
    finally:
        holder.kill()
        holder.wait()
    assert service.extract(COORD).output_dir.is_dir()  # free once the other process is gone


def test_the_docker_backend_must_exist(
    raw_run: DemoRun, service: ExtractionService, config: RuntoolConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(extraction_module, "_DOCKER_MODULE", "runtool.extract.no_such_backend")
    with pytest.raises(ExtractionError, match="Docker extraction backend is not available"):
        service.extract(COORD, backend="docker")
    assert siblings(config) == []


@pytest.fixture
def subprocess_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """A stand-in for the Docker backend with its agreed signature: runs the extraction CLI in a child process.

    It does what the container does (``python -m runtool.extract`` into the given folder, one JSON line per
    event), so the service's side of the contract is tested without a Docker engine.
    """
    lines: list[dict[str, Any]] = []

    def run_in_docker(
        bags_dir: Path,
        out_dir: Path,
        timestamp: str,
        topics: dict[str, str],
        progress: Callable[[dict[str, Any]], None] | None,
        cancel: threading.Event | None,
        max_chunk_bytes: int,
    ) -> None:
        command = [sys.executable, "-m", "runtool.extract", "--bags-dir", str(bags_dir), "--out", str(out_dir),
                   "--timestamp", timestamp, "--topics-json", json.dumps(topics),
                   "--max-chunk-bytes", str(max_chunk_bytes)]
        child = subprocess.run(command, capture_output=True, text=True, check=False)
        for text in child.stdout.splitlines():
            line = json.loads(text)
            lines.append(line)
            if progress is not None:
                progress(line)
        if child.returncode != 0:
            raise ExtractionError(f"the container exited with {child.returncode}: {child.stderr.strip()}")

    module = types.ModuleType("fake_docker_backend")
    module.run_in_docker = run_in_docker  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_docker_backend", module)
    monkeypatch.setattr(extraction_module, "_DOCKER_MODULE", "fake_docker_backend")
    yield lines


def test_the_docker_backend_contract(
    raw_run: DemoRun, service: ExtractionService, config: RuntoolConfig, subprocess_backend: list[dict[str, Any]]
) -> None:
    garble_middle(raw_run.summaries[1].path)
    events: list[ExtractionProgress] = []
    result = service.extract(COORD, backend="docker", progress=events.append)

    assert isinstance(result, ExtractionResult) and result.backend == "docker"
    assert result.bags_ok == (raw_run.names[0], raw_run.names[2]) and result.bags_failed == (raw_run.names[1],)
    assert [event.to_dict() for event in events] == subprocess_backend
    assert events[-1].stage == ExtractionStage.DONE
    document = yaml.safe_load((result.output_dir / "metadata.yaml").read_text())
    assert document["backend"] == "docker"
    assert siblings(config) == [COORD.timestamp]


def test_a_failing_docker_run_keeps_the_previous_output(
    raw_run: DemoRun, service: ExtractionService, config: RuntoolConfig, subprocess_backend: list[dict[str, Any]]
) -> None:
    service.extract(COORD)
    out = processed_dir(config.processed_root, COORD)
    before = snapshot(out)
    for summary in raw_run.summaries:
        summary.path.write_text("not a bag")
    with pytest.raises(ExtractionError, match="in Docker failed: the container exited with 1"):
        service.extract(COORD, backend="docker")
    assert subprocess_backend[-1]["stage"] == "error"
    assert snapshot(out) == before and siblings(config) == [COORD.timestamp]


@pytest.mark.parametrize("backend", ["local", "docker"])
def test_the_configured_chunk_limit_reaches_the_extractor(
    raw_run: DemoRun,
    config: RuntoolConfig,
    local: LocalStateService,
    subprocess_backend: list[dict[str, Any]],
    backend: str,
) -> None:
    """A genuine 8 MiB chunk under a 4 MiB ``max_chunk_bytes``: that bag fails naming the setting, the run goes on."""
    big = "rosbag_2025-08-25-09-59-59_9"
    write_image_bag(raw_run.folder / f"{big}.bag", [os.urandom(8 << 20)], "lz4")
    service = ExtractionService(config.with_overrides(max_chunk_bytes=4 << 20), local)

    result = service.extract(COORD, backend=backend)

    assert result.bags_ok == raw_run.names and result.bags_failed == (big,)
    document = yaml.safe_load((result.output_dir / "metadata.yaml").read_text())
    error = {bag["name"]: bag["error"] for bag in document["bags"]}[big]
    assert error.startswith(f"{big}.bag: the chunk at byte ") and "max_chunk_bytes = 4,194,304" in error
