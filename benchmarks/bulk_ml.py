"""Bulk ML download of many small files: runtool's bulk plan + execute against the legacy sequential download.

Run: ``.venv/bin/python -m benchmarks.bulk_ml [--runs 20] [--samples 65] [--repeats 3] [--latency-ms 0]
[--stream-mbps 0]``. The ML
bucket (frames of 2-6 KiB and their YOLO labels, 2 bags per run) is written as a fake-gcs-server ``-data`` folder
and served by a memory-backend emulator started here; both methods download every file of every run into a fresh
folder, in turns, in this one process. ``--latency-ms`` (and ``--stream-mbps``) put ``benchmarks/relay.py``'s
:class:`NetworkRelay` in front of the emulator, which delays every request (and caps each connection's rate), as
the network to a real bucket does. The table goes to stdout and ``benchmarks/results/bulk_ml.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psutil

from benchmarks.common import ML_BUCKET, RAW_BUCKET, RESULTS_DIR, PreloadedEmulator, markdown_table, median, say
from benchmarks.legacy_ml_download import download_runs
from benchmarks.relay import NetworkRelay, NetworkShape
from runtool.config import RuntoolConfig
from runtool.demo.bags import yolo_label_lines
from runtool.models import RunCoordinate
from runtool.services import ServiceContainer
from runtool.storage import make_client, ml_file_key, raw_bag_key

__all__ = ["MLStore", "bench_config", "machine", "tree", "write_ml_store"]

GOAL = 5.0
_FIRST_DAY = datetime(2025, 6, 2, 7, 0, tzinfo=UTC)


@dataclass(frozen=True)
class MLStore:
    """What :func:`write_ml_store` wrote: the runs and the ML bucket's files."""

    folder: Path
    runs: tuple[RunCoordinate, ...]
    frames: int
    labels: int
    bytes: int

    @property
    def files(self) -> int:
        return self.frames + self.labels

    def describe(self) -> str:
        return (
            f"{len(self.runs)} runs × 2 bags, {self.frames:,} frames (2-6 KiB) and {self.labels:,} YOLO labels, "
            f"{self.files:,} files, {self.bytes / 1e6:.1f} MB"
        )


def _run_coordinates(count: int) -> list[RunCoordinate]:
    """Runs of 3 fields × 3 laser boxes, nine a day."""
    coords = []
    for index in range(count):
        start = _FIRST_DAY + timedelta(days=index // 9, minutes=13 * (index % 9))
        coords.append(
            RunCoordinate(
                "client_001",
                "region_01",
                f"field_{index % 3 + 1:03d}",
                "TW_001",
                f"LB_{index // 3 % 3 + 1:04d}",
                start.strftime("%Y_%m_%dT%H:%M:%SZ"),
            )
        )
    return coords


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def write_ml_store(folder: Path, runs: int, samples_per_bag: int, unlabelled_every: int = 0) -> MLStore:
    """A ``-data`` folder (``<bucket>/<key>``) with the ML bucket laid out as ``runtool.storage.layout`` reads it.

    Each run has 2 bags (a tiny object each in the raw bucket) and ``samples_per_bag`` frames per bag; every
    frame is labelled except one in ``unlabelled_every`` (0: none). Deterministic.
    """
    rng = np.random.default_rng(1)
    coords = _run_coordinates(runs)
    frames = labels = size = 0
    for coord in coords:
        for bag in range(2):
            started = coord.start_time + timedelta(seconds=20 + 60 * bag)
            stem = f"_{started:%Y-%m-%d-%H-%M-%S}_{bag}"
            _put(folder / RAW_BUCKET / raw_bag_key(coord, f"{stem}.bag"), b"bag")
            for sample in range(samples_per_bag):
                name = f"{int(started.timestamp()) + sample // 3}.{sample % 3 * 333_333_333 + 1_000:09d}"
                frame = b"\xff\xd8\xff\xe0" + rng.bytes(int(rng.integers(2048, 6144)))
                _put(folder / ML_BUCKET / ml_file_key(coord, stem, "frames", f"{name}.jpg"), frame)
                frames, size = frames + 1, size + len(frame)
                if unlabelled_every and sample % unlabelled_every == unlabelled_every - 1:
                    continue
                label = yolo_label_lines(rng, 1 + int(rng.poisson(2.5))).encode()
                _put(folder / ML_BUCKET / ml_file_key(coord, stem, "labels", f"{name}.txt"), label)
                labels, size = labels + 1, size + len(label)
    return MLStore(folder, tuple(coords), frames, labels, size)


def bench_config(url: str, work: Path) -> RuntoolConfig:
    return RuntoolConfig(
        raw_bucket=RAW_BUCKET,
        ml_bucket=ML_BUCKET,
        emulator_host=url,
        data_dir=work,
        raw_root=work / "raw",
        processed_root=work / "processed",
        ml_root=work / "ML",
        cache_dir=work / "cache",
    )


def tree(root: Path) -> dict[str, int]:
    """Every file under ``root``: relative path → size."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def machine(started_load: float) -> str:
    """One line naming the machine and how busy it was (other work shares it)."""
    return (
        f"{psutil.cpu_count()} cores, Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"load average {started_load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )


def _per_file(cpu: list[tuple[float, float]], files: int) -> str:
    ours, server = (median([c[i] for c in cpu]) * 1000 / files for i in (0, 1))
    return f"{ours:.2f} + {server:.2f} ms"


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def legacy(config: RuntoolConfig, coords: list[RunCoordinate], target: Path) -> float:
    client = make_client(emulator_host=config.emulator_host)
    started = time.perf_counter()
    done = download_runs(client, config.ml_bucket, coords, target)
    seconds = time.perf_counter() - started
    assert not done.failed, f"legacy: {done.failed} files failed"
    return seconds


def _cpu(process: psutil.Process) -> float:
    """CPU seconds ``process`` has used so far (all its threads)."""
    times = process.cpu_times()
    return float(times.user + times.system)


def runtool(config: RuntoolConfig, coords: list[RunCoordinate]) -> tuple[float, float]:
    """(plan seconds, execute seconds) of ``plan_bulk("ml_download")`` + ``execute_bulk`` into ``config.ml_root``."""
    services = ServiceContainer(config)
    # The local index is built before timing, as a page or command that showed the selection has built it.
    services.local.scan()
    started = time.perf_counter()
    bulk = services.transfers.plan_bulk("ml_download", coords)
    planned = time.perf_counter()
    result = services.transfers.execute_bulk(bulk)
    ended = time.perf_counter()
    assert result.ok and not bulk.left_out, result.summary()
    return planned - started, ended - planned


@dataclass
class Timings:
    legacy: list[float] = dataclasses.field(default_factory=list)
    plan: list[float] = dataclasses.field(default_factory=list)
    execute: list[float] = dataclasses.field(default_factory=list)
    legacy_cpu: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    runtool_cpu: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    """(this process, the emulator) CPU seconds of each repeat: what a method costs whatever the load."""


def measure(url: str, work: Path, store: MLStore, repeats: int, server: psutil.Process) -> Timings:
    """Both methods in turns, each into a fresh folder; they must end with the same files."""
    timings = Timings()
    client = psutil.Process()

    def cpu() -> tuple[float, float]:
        return _cpu(client), _cpu(server)

    def used(before: tuple[float, float]) -> tuple[float, float]:
        after = cpu()
        return after[0] - before[0], after[1] - before[1]

    config = bench_config(url, work)
    ServiceContainer(config).inventory.refresh()
    coords = list(store.runs)
    for repeat in range(repeats):
        target = work / f"legacy-{repeat}"
        before = cpu()
        timings.legacy.append(legacy(config, coords, target))
        timings.legacy_cpu.append(used(before))
        legacy_tree = tree(target)
        shutil.rmtree(target)
        ours = dataclasses.replace(config, ml_root=work / f"runtool-{repeat}")
        before = cpu()
        plan, execute = runtool(ours, coords)
        timings.runtool_cpu.append(used(before))
        timings.plan.append(plan)
        timings.execute.append(execute)
        ours_tree = tree(ours.ml_root)
        shutil.rmtree(ours.ml_root)
        if len(legacy_tree) != store.files or ours_tree != legacy_tree:
            raise SystemExit(
                f"methods disagree: legacy {len(legacy_tree)} files, runtool {len(ours_tree)}, expected {store.files}"
            )
        say(f"  repeat {repeat + 1}: legacy {timings.legacy[-1]:.2f} s, runtool {plan:.2f} + {execute:.2f} s")
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bulk_ml", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--samples", type=int, default=65, help="frames per bag, all labelled (default 65)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every request (default 0)")
    parser.add_argument("--stream-mbps", type=float, default=0.0,
                        help="with --latency-ms: cap each connection's responses at this many MB/s (default 0: no cap)")
    args = parser.parse_args(argv)
    shape = (NetworkShape(args.latency_ms, args.stream_mbps * 1e6 or None)
             if args.latency_ms or args.stream_mbps else None)
    work = Path(tempfile.mkdtemp(prefix="runtool-bench-bulk-ml-"))
    try:
        store = write_ml_store(work / "store", args.runs, args.samples)
        say(f"{store.describe()}; loading the emulator …")
        emulator = PreloadedEmulator(store.folder)
        emulator.start(timeout=3600)  # loading is quadratic in the objects: about a minute at 20,000
        try:
            load = os.getloadavg()[0]
            assert emulator.process is not None
            server = psutil.Process(emulator.process.pid)
            if shape is not None:
                with NetworkRelay(emulator.port, shape) as relay:
                    timings = measure(relay.url, work, store, args.repeats, server)
            else:
                timings = measure(emulator.url, work, store, args.repeats, server)
            host = machine(load)
        finally:
            emulator.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mb = store.bytes / 1e6
    base = median(timings.legacy)
    totals = [p + e for p, e in zip(timings.plan, timings.execute, strict=True)]

    def row(name: str, seconds: float, ratio: str) -> list[str]:
        return [
            name,
            f"{store.files:,}",
            f"{mb:.1f}",
            f"{seconds:.2f}",
            f"{store.files / seconds:,.0f}",
            f"{mb / seconds:.2f}",
            ratio,
        ]

    ours_s = median(totals)
    rows = [
        row("legacy: sequential, one client, one file at a time, size check", base, "1.00×"),
        row('runtool: `plan_bulk("ml_download")` + `execute_bulk`', ours_s, f"{base / ours_s:.2f}×"),
    ]
    table = markdown_table(["method (median)", "files", "MB", "seconds", "files/s", "MB/s", "vs legacy"], rows)
    details = [
        f"- Data: {store.describe()}, in a fake-gcs-server memory backend loaded with `-data`; "
        + (f"through a relay (`benchmarks/relay.py`): {shape.describe()}." if shape else "on loopback."),
        f"- runtool: plan {median(timings.plan):.2f} s (one listing per run), execute {median(timings.execute):.2f} s "
        f"(parallel downloads, CRC32C verified, temp file + fsync + rename); the legacy lists each run too.",
        f"- Goal ≥ {GOAL:.0f}×: {'met' if base / ours_s >= GOAL else '**not met**'} ({base / ours_s:.2f}×). "
        f"Repeats: {args.repeats}, interleaved, each into a fresh folder; legacy {_seconds(timings.legacy)} s, "
        f"runtool {_seconds(totals)} s.",
        f"- CPU per file (median of the repeats; this process's threads, then the emulator's): legacy "
        f"{_per_file(timings.legacy_cpu, store.files)}, runtool {_per_file(timings.runtool_cpu, store.files)}; "
        "unlike the seconds, these hardly move with the load from other work.",
        f"- Machine: {host}.",
    ]
    text = table + "\n\n" + "\n".join(details) + "\n"
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    command = (
        f".venv/bin/python -m benchmarks.bulk_ml --runs {args.runs} --samples {args.samples} --repeats {args.repeats}"
        f" --latency-ms {args.latency_ms:g}" + (f" --stream-mbps {args.stream_mbps:g}" if args.stream_mbps else "")
    )
    name = "bulk_ml.md"
    if shape:
        name = f"bulk_ml-latency-{args.latency_ms:g}ms{f'-{args.stream_mbps:g}MBs' if args.stream_mbps else ''}.md"
    (RESULTS_DIR / name).write_text(f"# Bulk ML download\n\n`{command}`\n\n{text}")


if __name__ == "__main__":
    main()
