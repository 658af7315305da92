"""Inventory benchmark: runtool's refresh against the legacy discovery and the API floor, then queries.

Run: ``.venv/bin/python -m benchmarks.inventory [--objects N] [--backend memory|filesystem]``.

Everything is measured in one process against one emulator, so each ratio compares methods under the
same conditions; absolute seconds on a loopback emulator are not GCS seconds, request counts carry over.
The table goes to stdout and to ``benchmarks/results/inventory.md``; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from google.cloud import storage

from benchmarks import legacy_discovery
from benchmarks.common import (
    ML_BUCKET,
    RAW_BUCKET,
    RESULTS_DIR,
    Backend,
    build_fleet,
    counted_client,
    ensure_fleet,
    fleet_dir,
    markdown_table,
    median,
    say,
    serve_fleet,
)
from runtool.config import RuntoolConfig
from runtool.models import CoverageSettings, Filters
from runtool.services.data_state import DataStateService
from runtool.services.inventory import CloudInventoryService, RefreshProgress
from runtool.services.local_state import LocalStateService

QUERY_GOAL_MS = 50.0
LOAD_GOAL_S = 1.0
SPEEDUP_GOAL = 10.0
FLOOR_GOAL = 1.5
QUERY_REPEATS = 15


@dataclass
class Samples:
    """Repeated measurements of one method: seconds and HTTP requests per repeat."""

    seconds: list[float] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return median(self.seconds)

    @property
    def median_requests(self) -> int:
        return int(median([float(count) for count in self.requests]))


@dataclass
class RefreshStages:
    """Where a refresh spends its time, from the progress callbacks (which mark stage boundaries)."""

    discovery: list[float] = field(default_factory=list)
    listing: list[float] = field(default_factory=list)
    table: list[float] = field(default_factory=list)


def _config(url: str, cache_dir: Path) -> RuntoolConfig:
    return RuntoolConfig(
        raw_bucket=RAW_BUCKET, ml_bucket=ML_BUCKET, cache_dir=cache_dir, emulator_host=url, data_dir=cache_dir,
        raw_root=cache_dir / "raw", processed_root=cache_dir / "processed", ml_root=cache_dir / "ML",
    )


def runtool_refresh(url: str, cache_dir: Path, samples: Samples, stages: RefreshStages) -> dict[str, int]:
    """One full refresh into an empty cache folder; returns the run totals it found."""
    client, counter = counted_client(url)
    service = CloudInventoryService(_config(url, cache_dir), lambda: client)
    marks: dict[str, float] = {}

    def progress(report: RefreshProgress) -> None:
        marks.setdefault(report.stage, time.perf_counter())

    started = time.perf_counter()
    service.refresh(progress=progress)
    ended = time.perf_counter()
    samples.seconds.append(ended - started)
    samples.requests.append(counter.count)
    stages.discovery.append(marks["listing"] - started)
    stages.listing.append(marks["done"] - marks["listing"])
    stages.table.append(ended - marks["done"])
    runs = service.snapshot.runs()
    return {
        "raw_runs": int((runs["raw_bags"] > 0).sum()),
        "raw_bags": int(runs["raw_bags"].sum()),
        "ml_runs": int((runs["ml_frames"] > 0).sum()),
        "ml_frames": int(runs["ml_frames"].sum()),
    }


def floor_listing(url: str, samples: Samples) -> int:
    """The API floor: one bare single-stream listing of every object of both buckets, 1,000 per page."""
    client, counter = counted_client(url)
    started = time.perf_counter()
    objects = sum(1 for bucket in (RAW_BUCKET, ML_BUCKET) for _ in client.list_blobs(bucket, page_size=1000))
    samples.seconds.append(time.perf_counter() - started)
    samples.requests.append(counter.count)
    return objects


def legacy(url: str, samples: Samples) -> dict[str, int]:
    """The baseline: the legacy level-by-level discovery of both buckets; returns what it found."""
    client, counter = counted_client(url)
    started = time.perf_counter()
    discovered = legacy_discovery.discover(client, RAW_BUCKET, ML_BUCKET)
    samples.seconds.append(time.perf_counter() - started)
    samples.requests.append(counter.count)
    return legacy_discovery.totals(discovered)


def _no_client() -> storage.Client:
    raise RuntimeError("the query benchmark answers from the cache and must not reach storage")


def _timed(call: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(first call, median of the following ``repeats`` calls), in seconds."""
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times[0], median(times[1:])


def query_timings(cache_dir: Path, repeats: int) -> dict[str, Any]:
    """Part (c), run in a fresh interpreter so load time and memory are those of a new dashboard process."""
    process = psutil.Process()
    rss_before = process.memory_info().rss
    config = _config("http://127.0.0.1:1", cache_dir)
    loads = []
    for _ in range(repeats):
        started = time.perf_counter()
        inventory = CloudInventoryService(config, _no_client)
        runs = inventory.snapshot.runs()
        loads.append(time.perf_counter() - started)
    rss_loaded = process.memory_info().rss
    state = DataStateService(inventory, LocalStateService(config), CoverageSettings())
    busiest = runs.groupby(["cid", "regionid", "fieldid", "twid", "lbid"], observed=True).size().idxmax()
    lb = Filters(*busiest)
    tw = Filters(*busiest[:4])
    first_options, options = _timed(lambda: state.filter_options(tw), repeats)
    _, temporal = _timed(lambda: state.temporal_coverage(lb), repeats)
    _, aggregated = _timed(lambda: state.aggregated_coverage(tw), repeats)
    # The coverage page opens on the whole fleet, so the widest selection is timed too.
    _, fleet_aggregated = _timed(lambda: state.aggregated_coverage(Filters()), repeats)
    _, fleet_statistics = _timed(lambda: state.coverage_statistics(Filters()), repeats)
    return {
        "load_first": loads[0],
        "load": median(loads),
        "runs": len(runs),
        "lb_runs": len(state.runs(lb)),
        "tw_runs": len(state.runs(tw)),
        "first_query": first_options,
        "filter_options": options,
        "temporal_coverage": temporal,
        "aggregated_coverage": aggregated,
        "fleet_aggregated_coverage": fleet_aggregated,
        "fleet_coverage_statistics": fleet_statistics,
        "objects_bytes": int(inventory.snapshot.objects.memory_usage(deep=True).sum()),
        "rss_before": rss_before,
        "rss_loaded": rss_loaded,
        "rss_end": process.memory_info().rss,
    }


def _x(value: float) -> str:
    return f"{value:,.1f}×"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def _size(size: int) -> str:
    return f"{size / 2**20:,.1f} MiB" if size >= 2**20 else f"{size / 2**10:,.0f} KiB"


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def report(
    backend: Backend, fleet_text: str, repeats: int, ours: Samples, floor: Samples, old: Samples,
    stages: RefreshStages, queries: dict[str, Any], cache_size: int, busy: tuple[float, float],
) -> str:
    cores = psutil.cpu_count() or 1
    ours_s, ours_n = ours.median_s, ours.median_requests
    speedup, fewer, to_floor = old.median_s / ours_s, old.median_requests / ours_n, ours_s / floor.median_s
    rows = [
        ["(a) full refresh vs legacy discovery: time", f"{ours_s:.2f} s", f"{old.median_s:.2f} s",
         f"{_x(speedup)} faster", "≥ 10× faster", _met(speedup >= SPEEDUP_GOAL)],
        ["(a) full refresh vs legacy discovery: HTTP requests", f"{ours_n:,}", f"{old.median_requests:,}",
         f"{_x(fewer)} fewer", "≥ 10× fewer", _met(fewer >= SPEEDUP_GOAL)],
        ["(b) full refresh vs bare single-stream `list_blobs`: time", f"{ours_s:.2f} s", f"{floor.median_s:.2f} s",
         f"{_x(to_floor)} the floor", "≤ 1.5×", _met(to_floor <= FLOOR_GOAL)],
        ["(b) full refresh vs bare single-stream `list_blobs`: HTTP requests", f"{ours_n:,}",
         f"{floor.median_requests:,}", f"{_x(ours_n / floor.median_requests)} the floor", "—", "—"],
    ]
    for key, label in (
        ("filter_options", "`filter_options` (TW selection)"),
        ("temporal_coverage", f"`temporal_coverage`, one laser box ({queries['lb_runs']} runs)"),
        ("aggregated_coverage", f"`aggregated_coverage`, one TW ({queries['tw_runs']} runs)"),
        ("fleet_aggregated_coverage", f"`aggregated_coverage`, whole fleet ({queries['runs']:,} runs)"),
        ("fleet_coverage_statistics", f"`coverage_statistics`, whole fleet ({queries['runs']:,} runs)"),
    ):
        value = queries[key]
        rows.append([f"(c) {label}", _ms(value), "—", "—", "< 50 ms", _met(value * 1000 < QUERY_GOAL_MS)])
    rows += [
        ["(c) first query after load (builds the run table)", _ms(queries["first_query"]), "—", "—", "—", "—"],
        [f"(c) cache load: new service, first `.snapshot.runs()` ({queries['runs']:,} runs)",
         f"{queries['load']:.3f} s", "—", "—", "< 1 s", _met(queries["load"] < LOAD_GOAL_S)],
        ["(c) cache size on disk (Parquet, zstd)", _size(cache_size), "—", "—", "—", "—"],
        ["(c) process RSS with the inventory loaded, after the queries", _size(queries["rss_end"]), "—", "—", "—", "—"],
    ]
    table = markdown_table(["Measure (median)", "runtool", "baseline", "ratio", "goal", "met"], rows)
    details = [
        f"- Fleet: {fleet_text}.",
        f"- Backend: fake-gcs-server `{backend}` backend"
        + (" (loaded with `-data` from the seeded filesystem store)" if backend == "memory" else "") + ".",
        f"- Repeats: {repeats} per method, interleaved (runtool, floor, legacy); query and load times are the "
        f"median of {QUERY_REPEATS} calls (queries: after a first one).",
        f"- Refresh stages (median): shard discovery {median(stages.discovery):.2f} s, parallel listing + key "
        f"parsing {median(stages.listing):.2f} s, table build + Parquet write + run totals "
        f"{median(stages.table):.2f} s.",
        f"- Per-request cost here: legacy {_ms(old.median_s / old.median_requests)}, "
        f"floor {_ms(floor.median_s / floor.median_requests)} (a 1,000-object page).",
        f"- Cache load: first load in a fresh process {queries['load_first']:.3f} s; object table in memory "
        f"{_size(queries['objects_bytes'])}; RSS {_size(queries['rss_before'])} after imports, "
        f"{_size(queries['rss_loaded'])} after loading.",
        f"- Machine: {cores} cores, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average {busy[0]:.1f} when the measurements started, "
        f"{busy[1]:.1f} when they ended"
        + (" (more runnable processes than cores: other work shared the machine)." if max(busy) > cores else "."),
    ]
    return table + "\n\n" + "\n".join(details) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inventory", description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=60_000, help="fleet size in objects (default 60,000)")
    parser.add_argument("--backend", choices=["memory", "filesystem"], default="memory",
                        help="emulator backend the listings are measured on (default memory)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each timed measure (default 3)")
    args = parser.parse_args(argv)

    fleet = build_fleet(args.objects)
    say(f"Fleet: {fleet.describe()}; store {fleet_dir(args.objects)}")
    store, manifest = ensure_fleet(fleet)
    say(f"Seeding {'reused from cache; it took' if manifest['reused'] else 'took'} {manifest['seed_seconds']:.0f} s "
        f"({args.objects / manifest['seed_seconds']:.0f} objects/s, {manifest['threads']} threads)")

    ours, floor, old, stages = Samples(), Samples(), Samples(), RefreshStages()
    with tempfile.TemporaryDirectory(prefix="runtool-bench-") as scratch:
        emulator = serve_fleet(store, args.backend)
        started = time.perf_counter()
        # Loading the memory backend takes minutes at 60,000 objects (it inserts one object at a time).
        emulator.start(timeout=3600)
        try:
            say(f"Emulator ({args.backend}) ready in {time.perf_counter() - started:.0f} s")
            busy_at_start = os.getloadavg()[0]
            for repeat in range(args.repeats):
                cache_dir = Path(scratch) / f"cache-{repeat}"
                found = runtool_refresh(emulator.url, cache_dir, ours, stages)
                listed = floor_listing(emulator.url, floor)
                legacy_found = legacy(emulator.url, old)
                say(f"  repeat {repeat + 1}: runtool {ours.seconds[-1]:.2f} s / {ours.requests[-1]} requests, "
                    f"floor {floor.seconds[-1]:.2f} s / {floor.requests[-1]}, "
                    f"legacy {old.seconds[-1]:.2f} s / {old.requests[-1]}")
                if listed != args.objects or found != legacy_found:
                    raise SystemExit(f"methods disagree: floor {listed}, runtool {found}, legacy {legacy_found}")
            busy = (busy_at_start, os.getloadavg()[0])
        finally:
            emulator.stop()
        say(f"All methods agree: {found}")
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as child:
            queries = child.submit(query_timings, cache_dir, QUERY_REPEATS).result()
        cache_size = (cache_dir / "inventory.parquet").stat().st_size

    text = report(args.backend, fleet.describe(), args.repeats, ours, floor, old, stages, queries, cache_size, busy)
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "inventory.md").write_text(
        f"# Inventory benchmark\n\n`.venv/bin/python -m benchmarks.inventory --objects {args.objects} "
        f"--backend {args.backend}`\n\n{text}"
    )
    say(f"Written to {RESULTS_DIR / 'inventory.md'}")


if __name__ == "__main__":
    main()
