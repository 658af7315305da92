"""Issue 11 (d): fleet queries at 100,000 runs (about 1,000,000 objects).

A synthetic inventory is built in-process: object keys shaped like the real buckets, parsed by the scanner's
own parser into the scanner's table and written by the inventory's own cache writer, so the cache on disk is
the one a scan of such buckets would leave. Everything is then timed through the public services, in a fresh
process (so its peak RSS is the services', not the generator's):

- cache load: a new ``CloudInventoryService`` reading the cache, and the first query after it (the run table);
- whole fleet: ``coverage_statistics``, ``aggregated_coverage``, ``laser_box_stats``, ``filter_options`` and
  ``state_overview`` (the download manager's KPI-free run table);
- one TW (about 500 runs): the same queries;
- a one-run refresh: that run's objects served by fake-gcs-server (memory backend), ``refresh`` of its prefix,
  and the first query after it;
- peak RSS of that process.

Baseline, in the same process: the plainest honest way, pandas reading the Parquet file and grouping the raw
object table per query (for the refresh: the whole cache rewritten, as a one-run refresh did before).

    python -m benchmarks.fleet_scale [--runs 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pyarrow.parquet as pq

from benchmarks.common import RESULTS_DIR, markdown_table, measured_commit, say, spread
from runtool.config import RuntoolConfig
from runtool.demo.emulator import Emulator
from runtool.models import Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.services.data_state import DataStateService
from runtool.services.inventory import CloudInventoryService, InventorySnapshot, _objects_frame, _records_to_columns
from runtool.storage import ObjectRecord, make_client, ml_file_key, raw_bag_key

MEASURED = ["runtool/services", "runtool/analysis", "runtool/models", "runtool/storage", "benchmarks/fleet_scale.py"]
RAW_BUCKET, ML_BUCKET = "fleet-scale-raw", "fleet-scale-ml"
# 3 clients x 4 regions x 4 fields x 4 TWs x 3 laser boxes = 576 laser boxes, about 174 runs each.
_CLIENTS, _REGIONS, _FIELDS, _TWS, _LBS = 3, 4, 4, 4, 3
_ML_RUN_EVERY = 4  # one run in four has labelled samples
_FIRST = datetime(2025, 3, 3, 6, 0, 0, tzinfo=UTC)
GOALS_MS = {"fleet": 200.0, "tw": 50.0, "load": 1000.0, "refresh": 1000.0}
RSS_GOAL_MIB = 1024.0


def fleet_coordinates(runs: int) -> list[RunCoordinate]:
    """Every laser box records about one run every 16 hours; TWs start at different times of day."""
    boxes = [
        (f"client_{c + 1:03d}", f"region_{r + 1:02d}", f"field_{f + 1:03d}", f"TW_{t + 1:03d}", f"LB_{b + 1:04d}")
        for c in range(_CLIENTS)
        for r in range(_REGIONS)
        for f in range(_FIELDS)
        for t in range(_TWS)
        for b in range(_LBS)
    ]
    coords = []
    for number in range(runs):
        box, session = divmod(number, len(boxes))[::-1]
        start = _FIRST + timedelta(hours=16 * session + (box // _LBS) % 9, seconds=13 * (box % _LBS))
        separator = "-" if number % 50 == 49 else "_"
        coords.append(RunCoordinate(*boxes[box], start.strftime(f"%Y{separator}%m{separator}%dT%H:%M:%SZ")))
    return coords


def run_objects(
    number: int, coord: RunCoordinate, extra_bags: int = 0
) -> tuple[list[ObjectRecord], list[ObjectRecord]]:
    """The raw bags and ML samples of run ``number``: 2-6 bags; every fourth run has 3-9 samples in each of two
    bag folders, one frame in nine without a label."""
    raw, ml = [], []
    for index in range(2 + number % 5 + extra_bags):
        started = coord.start_time + timedelta(seconds=25 + 57 * index)
        stem = f"_{started:%Y-%m-%d-%H-%M-%S}_{index}"
        raw.append(ObjectRecord(raw_bag_key(coord, f"{stem}.bag"), 900_000_000 + 7_919 * number + index,
                                1_700_000_000_000_000 + number, f"AAA{number % 99_999:05d}"))
        if number % _ML_RUN_EVERY or index >= 2:
            continue
        for sample in range(3 + number % 7):
            name = f"{int(started.timestamp()) + 1 + 2 * sample}.{sample * 123_456_789 % 1_000_000_000:09d}"
            ml.append(ObjectRecord(ml_file_key(coord, stem, "frames", f"{name}.jpg"), 180_000 + sample, 1, "BBBBBB=="))
            if (sample + number) % 9 != 8:
                ml.append(ObjectRecord(ml_file_key(coord, stem, "labels", f"{name}.txt"), 90 + sample, 1, "CCCCCC=="))
    return raw, ml


def build_cache(config: RuntoolConfig, runs: int) -> dict[str, int]:
    """Write the synthetic inventory with the scanner's parser and the inventory's cache writer."""
    coords = fleet_coordinates(runs)
    raw: list[ObjectRecord] = []
    ml: list[ObjectRecord] = []
    for number, coord in enumerate(coords):
        bags, samples = run_objects(number, coord)
        raw += bags
        ml += samples
    raw += [ObjectRecord(f"{coords[i].to_path_str()}/notes.txt", 10, 1, "DDDDDD==") for i in range(0, runs, 500)]
    columns = _records_to_columns("raw", raw)
    for name, values in _records_to_columns("ml", ml).items():
        columns[name] += values
    service = CloudInventoryService(config, lambda: make_client(emulator_host=config.emulator_host))
    service._write(InventorySnapshot(_objects_frame(columns), datetime.now(UTC)))
    return {"runs": runs, "objects": len(raw) + len(ml), "raw": len(raw), "ml": len(ml)}


def _paired(ours: Callable[[], Any], base: Callable[[], Any] | None, repeats: int, warm: bool = True
            ) -> tuple[list[float], list[float], list[float]]:
    """Wall seconds of ``ours`` and ``base`` called in turn ``repeats`` times (after one warm-up call each unless
    ``warm`` is False), and the CPU seconds of ``ours``: on a shared machine the load changes from one second to
    the next, so the two sides are measured side by side, and CPU time shows what the wall time waited for."""
    if warm:
        ours()
        if base is not None:
            base()
    walls, bases, cpus = [], [], []
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        ours()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
        if base is not None:
            started = time.perf_counter()
            base()
            bases.append(time.perf_counter() - started)
    return walls, bases, cpus


def _config(root: Path, emulator_host: str = "http://127.0.0.1:1") -> RuntoolConfig:
    return RuntoolConfig(
        raw_bucket=RAW_BUCKET, ml_bucket=ML_BUCKET, cache_dir=root / "cache", emulator_host=emulator_host,
        data_dir=root, raw_root=root / "raw", processed_root=root / "processed", ml_root=root / "ML",
    )


def _baseline_load(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def _baseline_query(objects: pd.DataFrame, tw: dict[str, str] | None) -> pd.DataFrame:
    entries = objects[objects["reason"].isna()]
    if tw:
        mask = pd.Series(True, index=entries.index)
        for level, value in tw.items():
            mask &= entries[level] == value
        entries = entries[mask]
    bags = (entries["kind"] == "bag").astype("int64")
    labels = (entries["kind"] == "label").astype("int64")
    keys = [entries[c] for c in ("cid", "regionid", "fieldid", "twid", "lbid", "timestamp")]
    return pd.DataFrame({"bags": bags, "labels": labels}).groupby(keys, observed=True).sum()


def _baseline_options(objects: pd.DataFrame, tw: dict[str, str] | None) -> dict[str, list[str]]:
    mask = objects["reason"].isna()
    options = {}
    for level in ("cid", "regionid", "fieldid", "twid", "lbid"):
        options[level] = sorted(objects.loc[mask, level].dropna().astype(str).unique())
        if tw and level in tw:
            mask &= objects[level] == tw[level]
    return options


def measure(root: Path, repeats: int) -> dict[str, Any]:
    """Time everything in this process (meant to be a fresh one) and report its peak RSS."""
    config = _config(root)
    cache = config.cache_dir / "inventory.parquet"
    whole = Filters()
    first = fleet_coordinates(1)[0]
    tw = Filters(cid=first.cid, regionid=first.regionid, fieldid=first.fieldid, twid=first.twid)
    results: dict[str, Any] = {"cache_mib": cache.stat().st_size / 2**20}

    def load() -> ServiceContainer:
        services = ServiceContainer(config)
        services.inventory.snapshot  # noqa: B018 - reads the cache
        return services

    def record(name: str, timed: tuple[list[float], list[float], list[float]]) -> None:
        results[name], results[f"base:{name}"], results[f"cpu:{name}"] = timed

    objects = _baseline_load(cache)
    tw_dict = tw.to_dict()
    record("load", _paired(load, lambda: _baseline_load(cache), repeats))

    def first_query() -> None:
        state = load().data_state
        started, cpu = time.perf_counter(), time.process_time()
        state.coverage_statistics(whole)
        first_walls.append(time.perf_counter() - started)
        first_cpus.append(time.process_time() - cpu)

    first_walls: list[float] = []
    first_cpus: list[float] = []
    _, base_first, _ = _paired(first_query, lambda: _baseline_query(objects, None), repeats, warm=False)
    results["first_query"], results["base:first_query"], results["cpu:first_query"] = (
        first_walls, base_first, first_cpus)
    services = load()
    state = services.data_state
    results["runs_in_table"] = len(state.all_runs())
    results["tw_runs"] = len(state.runs(tw))
    for name, query in _queries(state).items():
        base = _baseline_options if name == "filter_options" else _baseline_query
        record(f"fleet:{name}", _paired(lambda query=query: query(whole), lambda base=base: base(objects, None),
                                        repeats))
        record(f"tw:{name}", _paired(lambda query=query: query(tw), lambda base=base: base(objects, tw_dict),
                                     repeats))
    results.update(measure_refresh(root, repeats))
    return results


def _queries(state: DataStateService) -> dict[str, Callable[[Filters], Any]]:
    return {
        "coverage_statistics": state.coverage_statistics,
        "aggregated_coverage": state.aggregated_coverage,
        "laser_box_stats": state.laser_box_stats,
        "filter_options": state.filter_options,
        "state_overview": state.state_overview,
    }


def services_rss(root: Path) -> float:
    """Peak RSS of a process that loads the cache once, answers every query (whole fleet and one TW) and
    refreshes one run: what a page's kernel holds."""
    first = fleet_coordinates(1)[0]
    tw = Filters(cid=first.cid, regionid=first.regionid, fieldid=first.fieldid, twid=first.twid)
    state = ServiceContainer(_config(root)).data_state
    for query in _queries(state).values():
        query(Filters())
        query(tw)
    measure_refresh(root, 1)
    return peak_rss_mib()


def measure_refresh(root: Path, repeats: int) -> dict[str, Any]:
    """A one-run refresh: the run's objects (one more bag each time) on fake-gcs-server, its prefix refreshed."""
    coord = fleet_coordinates(1)[0]
    refresh: list[float] = []
    refresh_cpu: list[float] = []
    after: list[float] = []
    rewrite: list[float] = []
    table = pq.read_table(_config(root).cache_dir / "inventory.parquet")
    scratch = root / "rewrite.parquet"
    with Emulator() as emulator:
        config = _config(root, emulator.url)
        client = make_client(emulator_host=emulator.url)
        buckets = {"raw": client.create_bucket(RAW_BUCKET), "ml": client.create_bucket(ML_BUCKET)}
        services = ServiceContainer(config)
        state = services.data_state
        state.coverage_statistics(Filters())
        first: list[float] = []
        for repeat in range(repeats + 1):
            raw, ml = run_objects(0, coord, extra_bags=repeat + 1)
            for role, records in (("raw", raw), ("ml", ml)):
                for record in records:
                    buckets[role].blob(record.name).upload_from_string(b"")
            started, cpu = time.perf_counter(), time.process_time()
            services.inventory.refresh(coord.to_filters())
            # The first refresh of a process also builds the storage client.
            (refresh if repeat else first).append(time.perf_counter() - started)
            if repeat:
                refresh_cpu.append(time.process_time() - cpu)
            started = time.perf_counter()
            bags = int(state.runs(coord.to_filters())["raw_bags"].iloc[0])
            if repeat:
                after.append(time.perf_counter() - started)
                started = time.perf_counter()
                pq.write_table(table, scratch, compression="zstd")
                rewrite.append(time.perf_counter() - started)
            if bags != len(raw):
                raise SystemExit(f"the refreshed run shows {bags} bags, not {len(raw)}")
    return {"refresh": refresh, "cpu:refresh": refresh_cpu, "first_refresh": first, "after_refresh": after,
            "base:refresh": rewrite,
            "delta_kib": (config.cache_dir / "inventory.delta.parquet").stat().st_size / 1024}


def baseline_rss(root: Path) -> float:
    """Peak RSS of a process that only reads the cache with pandas and groups it once per run."""
    objects = _baseline_load(_config(root).cache_dir / "inventory.parquet")
    _baseline_query(objects, None)
    _baseline_options(objects, None)
    return peak_rss_mib()


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM): unlike ``ru_maxrss``, which Linux carries over from the parent across
    fork and exec, it starts again in a new program."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM in /proc/self/status")


def _child(mode: str, root: Path, repeats: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.fleet_scale", "--child", mode, "--root", str(root),
               "--repeats", str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{mode} process failed:\n{done.stderr}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def report(r: dict[str, Any], shape: dict[str, int], repeats: int, seconds_built: float, load_before: str) -> str:
    def ms(values: list[float]) -> str:
        return spread([v * 1000 for v in values], 1) if values else "—"

    def ratio(name: str) -> str:
        return f"{pd.Series(r[f'base:{name}']).median() / pd.Series(r[name]).median():.1f}×"

    def met(name: str, goal: str) -> str:
        return "yes" if pd.Series(r[name]).median() * 1000 < GOALS_MS[goal] else "**no**"

    def row(label: str, name: str, goal: str | None) -> list[str]:
        goal_text = f"< {GOALS_MS[goal]:,.0f} ms" if goal else "—"
        return [label, ms(r[name]), ms(r.get(f"cpu:{name}", [])), ms(r[f"base:{name}"]), ratio(name), goal_text,
                met(name, goal) if goal else "—"]

    rows = [
        row("Cache load (a new service reads the Parquet cache)", "load", "load"),
        row("First query after the load (builds the run table; whole-fleet `coverage_statistics`)", "first_query",
            None),
    ]
    goals = {"coverage_statistics": "fleet", "aggregated_coverage": "fleet", "laser_box_stats": "fleet",
             "filter_options": "tw", "state_overview": "fleet"}
    for scope, label in (("fleet", f"whole fleet ({r['runs_in_table']:,} runs)"),
                         ("tw", f"one TW ({r['tw_runs']} runs)")):
        for name, goal in goals.items():
            rows.append(row(f"`{name}`, {label}", f"{scope}:{name}", "tw" if scope == "tw" else goal))
    rows += [
        row("One-run refresh (prefix listed on fake-gcs-server, cache updated)", "refresh", "refresh"),
        ["  the first one-run refresh of the process (also builds the storage client)", ms(r["first_refresh"]),
         "—", "—", "—", "—", "—"],
        ["  then the first query of that run (run table joined again)", ms(r["after_refresh"]), "—", "—", "—", "—",
         "—"],
        ["Peak RSS (VmHWM) of a process that loads, answers every query above once and refreshes one run",
         f"{r['rss_mib']:,.0f} MiB", "—", f"{r['base_rss_mib']:,.0f} MiB", "—", "< 1,024 MiB",
         "yes" if r["rss_mib"] < RSS_GOAL_MIB else "**no**"],
    ]
    headers = ["Measure", "runtool wall (ms)", "runtool CPU (ms)", "baseline wall (ms)", "baseline / runtool",
               "goal", "met"]
    table = markdown_table(headers, rows)
    load = psutil.getloadavg()
    return (
        f"{table}\n\n- Median (min–max) of {repeats} repeats, runtool and baseline called in turn, after a warm-up "
        f"(cache load: a new service each time; first query: a new service each time, no warm-up). CPU is the "
        f"process's CPU time during the call (pyarrow reads on 2 threads). "
        f"Baseline: `pd.read_parquet` of the cache, and per query a pandas groupby of the object table (filter "
        f"options: distinct values per level of it); for the refresh, `pq.write_table` of the whole cache (what a "
        f"one-run refresh did before). Baseline RSS: a process that reads the cache with pandas and groups it once.\n"
        f"- {shape['runs']:,} runs, {shape['objects']:,} objects ({shape['raw']:,} raw incl. anomalies, "
        f"{shape['ml']:,} ML); cache {r['cache_mib']:.1f} MiB (delta after the refreshes "
        f"{r['delta_kib']:.0f} KiB), built in {seconds_built:.0f} s.\n"
        f"- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {measured_commit(MEASURED)}, {psutil.cpu_count()} cores, "
        f"load average before {load_before}, after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"Python {platform.python_version()}.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", choices=["measure", "rss", "baseline-rss"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.child == "measure":
            result = measure(args.root, args.repeats)
        else:
            result = {"rss": (services_rss if args.child == "rss" else baseline_rss)(args.root)}
        print(json.dumps(result))
        return
    load_before = " ".join(f"{value:.2f}" for value in psutil.getloadavg())
    with tempfile.TemporaryDirectory(prefix="runtool-fleet-scale-") as scratch:
        root = Path(scratch)
        say(f"Building the inventory of {args.runs:,} runs ...")
        started = time.perf_counter()
        shape = build_cache(_config(root), args.runs)
        built = time.perf_counter() - started
        say(f"  {shape['objects']:,} objects in {built:.0f} s; measuring in a fresh process ...")
        results = _child("measure", root, args.repeats)
        results["rss_mib"] = _child("rss", root, args.repeats)["rss"]
        results["base_rss_mib"] = _child("baseline-rss", root, args.repeats)["rss"]
    text = report(results, shape, args.repeats, built, load_before)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "fleet_scale.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
