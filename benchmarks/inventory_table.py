"""Issue 4 (c): the download manager's inventory table for 10,000 runs: build the rows, re-filter them.

The synthetic 60,000-object fleet (10,000 runs, see benchmarks/common.py) is scanned once from
fake-gcs-server into a private cache; everything timed afterwards is in memory. Timed:

- building the rows: the run table with sync statuses and issue texts (``state_overview``) plus the
  display rows (``inventory_rows``), for the whole fleet;
- re-filtering: one status filter (``filter_rows``) on those rows;
- the same two on the page itself: drawing the page for the whole fleet, and switching the status filter,
  both including the hand-over of the rows to the ipydatagrid widget (its JSON serialisation).

The baseline is the legacy way (legacy-dashboard.md §7.2) re-implemented in the same process: one Python
object per run with its status worked out in a loop, and a list comprehension per filter.

    python -m benchmarks.inventory_table [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

from benchmarks.common import (
    ML_BUCKET,
    RAW_BUCKET,
    RESULTS_DIR,
    build_fleet,
    ensure_fleet,
    markdown_table,
    median,
    say,
    serve_fleet,
)
from runtool.config import RuntoolConfig
from runtool.models import Filters
from runtool.services import ServiceContainer
from runtool.ui import DownloadManagerPage
from runtool.ui.inventory_grid import filter_rows, inventory_rows

GOAL_MS = 200.0
OBJECTS = 60_000

_LEGACY_LABELS = {
    "synced": "✅ Synced",
    "cloud_only": "🟠 Not Downloaded",
    "local_only": "💻 Local Only",
    "mismatch": "🔴 Mismatch",
    "missing": "🔴 Missing",
}


def legacy_rows(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """The legacy inventory: an item per run, built field by field in Python (§7.2)."""
    items = []
    for row in runs.to_dict("records"):
        cloud, local = row["raw_bags"] > 0, row["local_bags"] > 0
        if cloud and local:
            same = row["raw_bags"] == row["local_bags"] and row["raw_bytes"] == row["local_raw_bytes"]
            status = "synced" if same else "mismatch"
        else:
            status = "cloud_only" if cloud else "local_only" if local else "missing"
        issues = []
        if not local and cloud:
            issues.append("Not downloaded locally")
        if row["raw_bags"] and row["local_bags"] and row["raw_bags"] != row["local_bags"]:
            issues.append(f"Bag count mismatch: cloud={row['raw_bags']}, local={row['local_bags']}")
        items.append({
            "lbid": row["lbid"],
            "datetime": row["start_time"].strftime("%m-%d %H:%M"),
            "status": status,
            "status_label": _LEGACY_LABELS[status],
            "data": f"📦 {row['raw_bags'] or row['local_bags']} bags" if (cloud or local) else "No data",
            "size": row["raw_bytes"],
            "issues": issues,
        })
    return sorted(items, key=lambda item: item["datetime"], reverse=True)


def legacy_filter(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item for item in items if item["status"] == "cloud_only"]


def _timed(call: Callable[[], Any], repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return median(times)


def scan(cache_dir: Path) -> RuntoolConfig:
    """Scan the synthetic fleet once into ``cache_dir``; the returned config works without the emulator."""
    fleet = build_fleet(OBJECTS)
    say(f"Fleet: {fleet.describe()}")
    store, _manifest = ensure_fleet(fleet)
    emulator = serve_fleet(store, "filesystem")
    emulator.start(timeout=600)
    try:
        config = RuntoolConfig(
            raw_bucket=RAW_BUCKET, ml_bucket=ML_BUCKET, cache_dir=cache_dir, emulator_host=emulator.url,
            data_dir=cache_dir, raw_root=cache_dir / "raw", processed_root=cache_dir / "processed",
            ml_root=cache_dir / "ML",
        )
        started = time.perf_counter()
        ServiceContainer(config).inventory.refresh()
        say(f"Scanned in {time.perf_counter() - started:.1f} s")
    finally:
        emulator.stop()
    return config.with_overrides(emulator_host="http://127.0.0.1:1")


def measure(config: RuntoolConfig, repeats: int) -> dict[str, Any]:
    services = ServiceContainer(config)
    state = services.data_state
    whole = Filters()
    runs = state.runs(whole)
    names = {key: key for key in runs["lb_key"].unique()}

    def build() -> pd.DataFrame:
        return inventory_rows(state.state_overview(whole), "raw", names)

    rows = build()
    page = DownloadManagerPage(services, query="")
    choices = ["Not downloaded", "All"]

    def switch_filter() -> None:
        page.status_filter.value = choices[0] if page.status_filter.value != choices[0] else choices[1]

    timings = {
        "runs": len(rows),
        "build": _timed(build, repeats),
        "overview": _timed(lambda: state.state_overview(whole), repeats),
        "refilter": _timed(lambda: filter_rows(rows, "Not downloaded"), repeats),
        "page_draw": _timed(page.render, repeats),
        "page_refilter": _timed(switch_filter, repeats),
        "legacy_build": _timed(lambda: legacy_rows(runs), repeats),
    }
    items = legacy_rows(runs)
    timings["legacy_refilter"] = _timed(lambda: legacy_filter(items), repeats)
    if len(legacy_filter(items)) != len(filter_rows(rows, "Not downloaded")):
        raise SystemExit("the legacy and the runtool filters disagree")
    return timings


def report(t: dict[str, Any], repeats: int) -> str:
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:,.1f} ms"

    def met(seconds: float) -> str:
        return "yes" if seconds * 1000 < GOAL_MS else "**no**"

    runs = f"{t['runs']:,} runs"
    rows = [
        [f"Build the rows ({runs}: statuses, issue texts, display rows)", ms(t["build"]), ms(t["legacy_build"]),
         f"{t['legacy_build'] / t['build']:.1f}×", "< 200 ms", met(t["build"])],
        ["  of which `state_overview` (run table + issue texts)", ms(t["overview"]), "—", "—", "—", "—"],
        ["Re-filter (\"Not downloaded\")", ms(t["refilter"]), ms(t["legacy_refilter"]),
         f"{t['legacy_refilter'] / t['refilter']:.1f}×", "< 200 ms", met(t["refilter"])],
        [f"Page: draw the whole fleet ({runs}, rows handed to the grid)", ms(t["page_draw"]), "—", "—", "—", "—"],
        ["Page: switch the status filter, All ⇄ Not downloaded (rows handed to the grid)",
         ms(t["page_refilter"]), "—", "—", "< 200 ms", met(t["page_refilter"])],
    ]
    table = markdown_table(["Measure (median)", "runtool", "legacy way", "ratio", "goal", "met"], rows)
    return (
        f"{table}\n\n- Median of {repeats} calls after a warm-up; the inventory is the 60,000-object synthetic fleet "
        f"scanned from fake-gcs-server. Machine: {psutil.cpu_count()} cores, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inventory_table", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="runtool-bench-table-") as scratch:
        config = scan(Path(scratch))
        timings = measure(config, args.repeats)
    text = report(timings, args.repeats)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "inventory_table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
