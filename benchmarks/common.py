"""Shared parts of the benchmarks: a synthetic fleet, the emulators it is served from, request counting, and
the seeded demo fleet the page benchmarks serve (:func:`seeded_demo`).

Seeding a fleet of tens of thousands of objects takes minutes, so it is done once into fake-gcs-server's
filesystem backend, whose folder (``benchmarks/.fleet-<N>/store``) is reused by later runs. Listing is then
measured either on that filesystem server or on a memory-backend server that loads the same folder at
start-up (``-data``): see ``docs/performance.md`` for why the memory backend is the fair one.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import requests
from google.cloud import storage

from runtool.config import RuntoolConfig
from runtool.demo.emulator import Emulator
from runtool.demo.fleet import FleetPlan, SeedReport, plan_fleet, seed_fleet
from runtool.models import RunCoordinate
from runtool.services import CacheInfo, ServiceContainer
from runtool.storage import make_client, ml_file_key, raw_bag_key

__all__ = [
    "BENCH_DIR",
    "DEMO_PRESET",
    "DEMO_SEED",
    "FLEET_VERSION",
    "ML_BUCKET",
    "RAW_BUCKET",
    "RESULTS_DIR",
    "Backend",
    "Fleet",
    "PreloadedEmulator",
    "RequestCounter",
    "SeededDemo",
    "build_fleet",
    "counted_client",
    "demo_config",
    "ensure_fleet",
    "fleet_dir",
    "markdown_table",
    "measured_commit",
    "median",
    "say",
    "seeded_demo",
    "serve_fleet",
    "spread",
    "write_config",
]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
RAW_BUCKET = "runtool-bench-raw"
ML_BUCKET = "runtool-bench-ml"
# Bump when the fleet's shape changes, so a cached fleet folder of the old shape is reseeded.
FLEET_VERSION = 1
SEED_THREADS = 16
Backend = Literal["memory", "filesystem"]
DEMO_PRESET, DEMO_SEED = "small", 7
"""The demo fleet the page benchmarks (page_render, kernel_memory, serving) serve: :func:`seeded_demo`."""

# Hierarchy fan-out: 2 clients x 3 regions x 4 fields x 3 TWs x 3 laser boxes = 216 laser boxes.
_CLIENTS, _REGIONS, _FIELDS, _TWS, _LBS = 2, 3, 4, 3, 3
_OBJECTS_PER_RUN = 6  # ~4 bags per run in the raw bucket plus ML samples filling the rest of the budget
_ML_RUN_EVERY = 10  # one run in ten has labelled samples, like a fleet where labelling lags recording
_ML_BAG_DIRS = 2
_FIRST_SESSION = datetime(2025, 3, 3, 6, 0, 0, tzinfo=UTC)


def say(message: str) -> None:
    """Progress on stderr, so stdout carries only the result table."""
    print(message, file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


@dataclass(frozen=True)
class Fleet:
    """The object keys of a synthetic fleet, shaped like the real buckets (legacy-dashboard.md §1.4-1.5)."""

    objects: int
    raw_keys: tuple[str, ...]
    ml_keys: tuple[str, ...]
    runs: int
    ml_runs: int

    def describe(self) -> str:
        return (
            f"{len(self.raw_keys) + len(self.ml_keys):,} objects: {self.runs:,} runs with "
            f"{len(self.raw_keys):,} bags in the raw bucket; {len(self.ml_keys):,} frames and labels "
            f"for {self.ml_runs:,} runs in the ML bucket"
        )


def _coordinates(runs: int) -> Iterator[RunCoordinate]:
    """Runs in recording sessions: every laser box of a TW starts a run within a minute of the others."""
    tws = [
        (f"client_{c + 1:03d}", f"region_{r + 1:02d}", f"field_{f + 1:03d}", f"TW_{t + 1:03d}")
        for c in range(_CLIENTS)
        for r in range(_REGIONS)
        for f in range(_FIELDS)
        for t in range(_TWS)
    ]
    made = 0
    session = 0
    while made < runs:
        index, sequence = session % len(tws), session // len(tws)
        start = _FIRST_SESSION + timedelta(
            days=3 * sequence + index % 3, hours=2 * (sequence % 4), minutes=(7 * index) % 60
        )
        for lb in range(_LBS):
            if made == runs:
                break
            stamp = start + timedelta(seconds=13 * lb)
            # A few runs use '-' between the date parts, as the legacy timestamp rule allows.
            separator = "-" if made % 50 == 49 else "_"
            timestamp = stamp.strftime(f"%Y{separator}%m{separator}%dT%H:%M:%SZ")
            yield RunCoordinate(*tws[index], f"LB_{lb + 1:04d}", timestamp)
            made += 1
        session += 1


def build_fleet(objects: int) -> Fleet:
    """A deterministic fleet of exactly ``objects`` objects (about one run per six objects).

    Every run has 2-6 bags; every tenth run has ML samples for its first two bags, added breadth-first
    (sample k of every bag dir before sample k+1) until the object budget is spent, and one frame in nine
    has no label.
    """
    raw_keys: list[str] = []
    ml_dirs: list[tuple[int, RunCoordinate, str, datetime]] = []
    coords = list(_coordinates(max(1, objects // _OBJECTS_PER_RUN)))
    for number, coord in enumerate(coords):
        bags = 2 + number % 5
        for index in range(bags):
            started = coord.start_time + timedelta(seconds=25 + 57 * index)
            stem = f"_{started:%Y-%m-%d-%H-%M-%S}_{index}"
            raw_keys.append(raw_bag_key(coord, f"{stem}.bag"))
            if number % _ML_RUN_EVERY == 0 and index < _ML_BAG_DIRS:
                ml_dirs.append((number, coord, stem, started))
    ml_keys: list[str] = []
    budget = objects - len(raw_keys)
    sample = 0
    while ml_dirs and len(ml_keys) < budget:
        for number, coord, stem, started in ml_dirs:
            seconds = int(started.timestamp()) + 1 + 2 * sample
            name = f"{seconds}.{(sample * 123_456_789 + number * 7_919) % 1_000_000_000:09d}"
            ml_keys.append(ml_file_key(coord, stem, "frames", f"{name}.jpg"))
            if (sample + number) % 9 != 8:
                ml_keys.append(ml_file_key(coord, stem, "labels", f"{name}.txt"))
        sample += 1
    del ml_keys[budget:]
    ml_runs = len({number for number, *_ in ml_dirs})
    return Fleet(objects, tuple(raw_keys), tuple(ml_keys), len(coords), ml_runs)


def fleet_dir(objects: int) -> Path:
    return BENCH_DIR / f".fleet-{objects}"


def _widen_pool(client: storage.Client, size: int) -> None:
    """Give the client's session as many pooled connections as threads use it (requests defaults to 10)."""
    adapter = requests.adapters.HTTPAdapter(pool_connections=size, pool_maxsize=size)
    client._http.mount("http://", adapter)


def ensure_fleet(fleet: Fleet) -> tuple[Path, dict[str, Any]]:
    """The filesystem-backend store holding ``fleet``, seeded now unless a complete one is cached.

    Returns the store folder and its manifest (which records how long seeding took). A folder without a
    manifest is a seed that did not finish and is started over.
    """
    folder = fleet_dir(fleet.objects)
    store, manifest_path = folder / "store", folder / "fleet.json"
    if manifest_path.exists():
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if manifest.get("version") == FLEET_VERSION and manifest.get("objects") == fleet.objects:
            manifest["reused"] = True
            return store, manifest
    shutil.rmtree(folder, ignore_errors=True)
    with Emulator(data_dir=store) as emulator:
        client = make_client(emulator_host=emulator.url)
        _widen_pool(client, SEED_THREADS)
        buckets = {name: client.create_bucket(name) for name in (RAW_BUCKET, ML_BUCKET)}
        jobs = [(RAW_BUCKET, key) for key in fleet.raw_keys] + [(ML_BUCKET, key) for key in fleet.ml_keys]
        done = 0
        started = time.perf_counter()

        def upload(job: tuple[str, str]) -> None:
            bucket, key = job
            buckets[bucket].blob(key).upload_from_string(b"")

        with ThreadPoolExecutor(max_workers=SEED_THREADS) as pool:
            for _ in pool.map(upload, jobs):
                done += 1
                if done % 10_000 == 0:
                    say(f"  seeded {done:,}/{len(jobs):,} objects ({done / (time.perf_counter() - started):.0f}/s)")
        seconds = time.perf_counter() - started
    manifest = {"version": FLEET_VERSION, "objects": fleet.objects, "seed_seconds": seconds, "threads": SEED_THREADS}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    manifest["reused"] = False
    return store, manifest


class PreloadedEmulator(Emulator):
    """A memory-backend fake-gcs-server that loads a seeded filesystem store when it starts (``-data``)."""

    def __init__(self, store: Path) -> None:
        super().__init__()
        self.store = store

    def command(self) -> list[str]:
        return [*super().command(), "-data", str(self.store)]


def serve_fleet(store: Path, backend: Backend) -> Emulator:
    """An emulator serving the seeded store on the chosen backend (not started yet)."""
    return PreloadedEmulator(store) if backend == "memory" else Emulator(data_dir=store)


class RequestCounter:
    """Counts the HTTP requests a storage client sends, by wrapping its session's ``request`` method.

    Every call of the JSON API goes through that one method, so the count is what real GCS would bill
    and what its per-request latency multiplies.
    """

    def __init__(self, client: storage.Client) -> None:
        self.count = 0
        self._lock = threading.Lock()
        session = client._http
        send: Callable[..., Any] = session.request

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.count += 1
            return send(*args, **kwargs)

        session.request = counted


def counted_client(url: str) -> tuple[storage.Client, RequestCounter]:
    """A fresh client for one measured method (no connections or state carried over) and its counter."""
    client = make_client(emulator_host=url)
    return client, RequestCounter(client)


def spread(values: list[float], digits: int = 2) -> str:
    """The median with the range of the repeats: ``2.31 (2.10–2.95)``; "—" for none."""
    if not values:
        return "—"
    return f"{median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def measured_commit(measured: Sequence[str]) -> str:
    """The short commit, with " + uncommitted changes" when any of the ``measured`` paths differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=BENCH_DIR.parent, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no", "--", *measured)
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty else "")


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def demo_config(root: Path, emulator_url: str, name: str) -> RuntoolConfig:
    """A config with every folder under ``root`` and the buckets ``bench-<name>-raw`` and ``bench-<name>-ml``."""
    return RuntoolConfig(
        raw_bucket=f"bench-{name}-raw", ml_bucket=f"bench-{name}-ml", emulator_host=emulator_url, data_dir=root,
        raw_root=root / "raw", processed_root=root / "processed", ml_root=root / "ML", cache_dir=root / "cache",
    )


def write_config(config: RuntoolConfig, path: Path) -> Path:
    """``config``'s buckets, emulator and data folder as a runtool.toml, for processes the benchmark starts."""
    path.write_text(
        f'[buckets]\nraw = "{config.raw_bucket}"\nml = "{config.ml_bucket}"\n'
        f'emulator_host = "{config.emulator_host}"\n[paths]\ndata_dir = "{config.data_dir}"\n',
        encoding="utf-8",
    )
    return path


@dataclass(frozen=True)
class SeededDemo:
    """The demo fleet, seeded into a fresh emulator and scanned: see :func:`seeded_demo`."""

    root: Path
    """A temporary folder holding the data folder (``data/``) and ``runtool.toml``; the benchmark may use it."""
    config_path: Path
    plan: FleetPlan
    report: SeedReport
    seed_s: float
    services: ServiceContainer
    info: CacheInfo
    """The inventory scan made before the benchmark starts anything."""


@contextmanager
def seeded_demo(name: str, preset: str = DEMO_PRESET) -> Iterator[SeededDemo]:
    """fake-gcs-server (memory backend) holding the ``preset`` demo fleet (default ``DEMO_PRESET``), its local
    folders and a config file in a temporary folder, and the inventory scanned; all of it goes when the block ends."""
    with tempfile.TemporaryDirectory(prefix=f"runtool-{name}-bench-") as temp, Emulator() as emulator:
        root = Path(temp)
        config = demo_config(root / "data", emulator.url, name)
        say(f"Seeding the {preset} demo fleet into {emulator.url} ...")
        started = time.perf_counter()
        plan = plan_fleet(preset, DEMO_SEED)
        report = seed_fleet(config, plan, make_client(emulator_host=emulator.url))
        seed_s = time.perf_counter() - started
        config_path = write_config(config, root / "runtool.toml")
        services = ServiceContainer.from_environment(config_path)
        yield SeededDemo(root, config_path, plan, report, seed_s, services, services.inventory.refresh())
