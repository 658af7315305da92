"""Issue 9 (a): the fleet KPI table for 10,000 analysed runs: first query and re-filter.

Synthetic analysis caches in a temporary folder: every run has the files that make it extracted
(``metadata.yaml`` and the three message CSVs) and an ``analysis/kpis.json`` of the current cache version whose
fingerprint matches them, with the KPI names of ``runtool analyze --json`` (values varied per run). The run
table joins the local state with a scanned inventory of empty buckets; it is built before anything
is timed, as a page kernel holds it.

Timed (each a fresh :class:`~runtool.services.kpis.KpiService` unless said otherwise):

- cold build: no index on disk: every cache is read and its fingerprint checked, then the index is written;
- first query: a new service (a new process, a page kernel) finds the index on disk and stats every cache;
- re-filter: the same service, another laser box (within ``recheck_s``: no sweep);
- re-filter with a sweep: the same with ``refresh=True`` (one ``stat`` per run);
- baseline (the naive way): read every ``kpis.json`` of the selection and build the table, per query.

    python -m benchmarks.kpi_table [--runs 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

from benchmarks.common import RESULTS_DIR, markdown_table, median, say
from runtool.demo.emulator import Emulator
from runtool.models import Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.services.analytics import CACHE_VERSION, extraction_fingerprint
from runtool.services.kpis import KpiService
from runtool.services.local_state import ANALYSIS_MARKER
from runtool.storage import make_client, processed_dir
from tests.conftest import make_config

FIRST_GOAL_MS, REFILTER_GOAL_MS = 200.0, 50.0
_LBS = 100
_KPI_TEMPLATE = {
    **{f"{s}_{k}": 0.0 for s in ("frames", "detections", "tracking")
       for k in ("messages", "median_fps", "p5_fps", "share_below_target", "dropped_frames")},
    **{f"{p}_{k}": 0.0 for p in ("detection_latency", "tracking_latency") for k in ("mean_ms", "p50_ms", "p95_ms",
                                                                                    "p99_ms")},
    "mean_detections_per_frame": 0.0, "mean_tracks_per_frame": 0.0, "avg_detection_confidence": 0.0,
    "avg_track_confidence": 0.0, "total_tracks": 0, "avg_track_lifetime": 0.0, "mean_track_density": 0.0,
    "tracks_per_minute": 0.0, "run_duration_s": 0.0, "failed_bags": 0, "fps_target": 25.0,
}


def write_caches(root: Path, runs: int) -> None:
    """``runs`` extracted and analysed runs over 100 laser boxes, one run a day per box."""
    start = datetime(2025, 1, 1, 8, tzinfo=UTC)
    for number in range(runs):
        lb, day = number % _LBS, number // _LBS
        stamp = (start + timedelta(days=day, minutes=lb)).strftime("%Y_%m_%dT%H:%M:%SZ")
        coord = RunCoordinate("client_001", "region_01", f"field_{lb // 10:03d}", "TW_001", f"LB_{lb:04d}", stamp)
        folder = processed_dir(root, coord)
        (folder / "analysis").mkdir(parents=True)
        (folder / "metadata.yaml").write_text(f"run: {number}\nbags: []\n", encoding="utf-8")
        for name in ("frames.csv", "detections.csv", "tracking.csv"):
            (folder / name).write_text("bag_file,bag_timestamp_s,header_timestamp_s\n", encoding="utf-8")
        kpis = {name: (number % 7 + index if isinstance(value, int) else 20.0 + (number * 31 + index) % 97 / 10)
                for index, (name, value) in enumerate(_KPI_TEMPLATE.items())}
        document = {"version": CACHE_VERSION, "coordinate": str(coord), "fingerprint": extraction_fingerprint(folder),
                    "analysed_at": start.isoformat(), "has_detections": True, "has_tracking": True, "kpis": kpis,
                    "histograms": {"detection_confidence": {"edges": list(range(21)), "counts": [3] * 20}},
                    "failed_bags": []}
        (folder / ANALYSIS_MARKER).write_text(json.dumps(document, indent=2), encoding="utf-8")
        if number and number % 2000 == 0:
            say(f"  {number:,} caches written")


def naive_table(services: ServiceContainer, filters: Filters) -> pd.DataFrame:
    """The baseline: open every selected run's kpis.json on each query."""
    rows = []
    for coord in services.data_state.generate_coordinates_from_filters(filters):
        try:
            document = json.loads((processed_dir(services.config.processed_root, coord) / ANALYSIS_MARKER).read_text())
        except FileNotFoundError:
            continue
        if document.get("version") == CACHE_VERSION:
            rows.append({**coord.to_dict(), **document["kpis"]})
    return pd.DataFrame(rows)


def _timed(call: Callable[[], Any], repeats: int, setup: Callable[[], None] | None = None) -> list[float]:
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def scanned_services(root: Path) -> ServiceContainer:
    """Services on ``root`` (caches under ``root/processed``) with an inventory cache of two empty buckets.

    The emulator is stopped on return: the run table comes from the inventory cache and the local state.
    """
    with Emulator() as emulator:
        services = ServiceContainer(make_config(root, emulator.url), read_only=False)
        client = make_client(emulator_host=emulator.url)
        for name in (services.config.raw_bucket, services.config.ml_bucket):
            client.create_bucket(name)
        services.inventory.refresh()
    return services


def measure(root: Path, runs: int, repeats: int) -> dict[str, list[float]]:
    # An inventory of empty buckets, scanned once: the run table then has a cache, as in any deployment.
    services = scanned_services(root)
    services.data_state.all_runs()  # the run table, built once as a page kernel holds it
    whole, box = Filters(), Filters(lbid="LB_0042")
    index_path = services.kpis.index_path
    fresh: dict[str, KpiService] = {}

    def new_service() -> None:
        fresh["service"] = KpiService(services.config, services.data_state)

    def cold() -> None:
        new_service()
        index_path.unlink(missing_ok=True)

    timings = {"cold": _timed(lambda: fresh["service"].table(whole), repeats, cold)}
    if len(fresh["service"].table(whole).rows) != runs:
        raise SystemExit("the KPI table does not hold every run")
    timings["first"] = _timed(lambda: fresh["service"].table(whole), repeats, new_service)
    warm = fresh["service"]
    warm.table(whole)
    boxes = [Filters(lbid=f"LB_{lb:04d}") for lb in range(repeats + 1)]
    timings["refilter"] = _timed(lambda: warm.table(boxes.pop()), repeats)
    timings["refilter_sweep"] = _timed(lambda: warm.table(box, refresh=True), repeats)
    timings["naive_whole"] = _timed(lambda: naive_table(services, whole), repeats)
    timings["naive_box"] = _timed(lambda: naive_table(services, box), repeats)
    if len(naive_table(services, box)) != len(warm.table(box).rows):
        raise SystemExit("the naive and the indexed tables disagree")
    return timings


def report(t: dict[str, list[float]], runs: int, repeats: int) -> str:
    def ms(times: list[float]) -> str:
        return f"{median(times) * 1000:,.1f} ms"

    def spread(times: list[float]) -> str:
        return f"{min(times) * 1000:,.1f}–{max(times) * 1000:,.1f} ms"

    def met(times: list[float], goal: float) -> str:
        return "yes" if median(times) * 1000 < goal else "**no**"

    rows = [
        [f"Cold build: no index on disk ({runs:,} caches read, fingerprints checked, index written)",
         ms(t["cold"]), spread(t["cold"]), ms(t["naive_whole"]), "—", "—"],
        [f"First query, whole fleet ({runs:,} rows): index from disk + one stat per run",
         ms(t["first"]), spread(t["first"]), ms(t["naive_whole"]), "< 200 ms", met(t["first"], FIRST_GOAL_MS)],
        ["Re-filter (one laser box, within recheck_s)", ms(t["refilter"]), spread(t["refilter"]),
         ms(t["naive_box"]), "< 50 ms", met(t["refilter"], REFILTER_GOAL_MS)],
        ["Re-filter with a stat sweep (`refresh=True`)", ms(t["refilter_sweep"]), spread(t["refilter_sweep"]),
         ms(t["naive_box"]), "—", "—"],
    ]
    table = markdown_table(["Measure (median)", "runtool", "spread (min–max)", "naive: read the JSON caches",
                            "goal", "met"], rows)
    return (f"{table}\n\n- {repeats} repeats each. Machine: {psutil.cpu_count()} cores, Python "
            f"{platform.python_version()}, load average {psutil.getloadavg()[0]:.1f}, "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kpi_table", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="runtool-bench-kpis-") as scratch:
        root = Path(scratch)
        say(f"Writing {args.runs:,} synthetic analysis caches …")
        write_caches(root / "processed", args.runs)
        timings = measure(root, args.runs, args.repeats)
    text = report(timings, args.runs, args.repeats)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "kpi_table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
