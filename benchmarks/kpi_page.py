"""Issue 9 (b): the Fleet KPIs page's first render with 10,000 analysed runs in the selection, in-process.

The fleet is the one of :mod:`benchmarks.kpi_table` (its helpers, imported): 10,000 extracted and analysed runs
(synthetic caches, current version, matching fingerprints) of one client, 100 laser boxes, with an inventory
cache of two empty buckets. No browser and no Voila: what is timed is the kernel's work, building
``FleetKpiPage(services=..., query=...)``, which draws the page for the link's selection before it returns
(not progressive: the chart and the tables are drawn at once, as in JupyterLab; a served page draws the same
in two steps). Selections: the whole fleet (no query), one client (``?cid=client_001``: the same 10,000 runs,
through the filter) and one field (1,000 runs).

Cases, each against its data part alone in the same process (so the difference is what the page adds):

- new kernel: a new :class:`~runtool.services.ServiceContainer` whose inventory cache is read beforehand, as in a
  preheated kernel; timed: the page (run table from the local state, KPI index from disk and its stat sweep,
  the drawing). Baseline: a new container's ``data_state.all_runs()`` then ``kpis.table(selection)``;
- warm services: services that answered the same selection just before (run table and KPI index in memory);
  timed: the page. Baseline: ``kpis.table(selection)`` on those services.

Also reported, once per selection: the widget models the page creates (``ipywidgets.Widget.widgets`` before
and after), what their state weighs (JSON plus binary buffers: what the kernel sends the browser), and the
chart's largest series.

    python -m benchmarks.kpi_page [--runs 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import ipywidgets as widgets
import psutil
from ipywidgets.widgets.widget import _remove_buffers

from benchmarks.common import RESULTS_DIR, markdown_table, median, say
from benchmarks.kpi_table import scanned_services, write_caches
from runtool.models import Filters
from runtool.services import ServiceContainer
from runtool.ui.fleet_kpis import FleetKpiPage
from runtool.ui.query import selection_query

SLOW_S = 1.0
"""A first render slower than this at 10,000 runs is looked into (the issue's brief)."""
SELECTIONS = {
    "whole fleet": Filters(),
    "one client": Filters(cid="client_001"),
    "one field": Filters(cid="client_001", regionid="region_01", fieldid="field_003", twid="TW_001"),
}


@dataclass
class Footprint:
    """What one page build leaves in the kernel and sends the browser."""

    rows: int
    models: int
    state_bytes: int
    largest_series: int
    points: int
    hover_chars: int


def _models() -> dict[str, widgets.Widget]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Widget.widgets: the registry the brief asks to count
        return dict(widgets.Widget.widgets)


def _state_bytes(models: list[widgets.Widget]) -> int:
    """JSON plus binary buffers of the models' states, as the kernel sends them to the browser."""
    total = 0
    for model in models:
        state, _paths, buffers = _remove_buffers(model.get_state())
        total += len(json.dumps(state, default=str)) + sum(memoryview(b).nbytes for b in buffers)
    return total


def page(services: ServiceContainer, filters: Filters) -> FleetKpiPage:
    built = FleetKpiPage(services=services, query=selection_query(filters))
    if built.view != "chart":
        raise SystemExit(f"the page shows no chart: {built.empty_text or built.messages}")
    return built


def footprint(services: ServiceContainer, filters: Filters) -> Footprint:
    before = _models()
    built = page(services, filters)
    created = [model for key, model in _models().items() if key not in before]
    assert built.chart is not None and built.table is not None
    shown = built.chart.shown
    result = Footprint(
        rows=len(built.table.rows), models=len(created), state_bytes=_state_bytes(created),
        largest_series=max((len(series.keys) for series in shown), default=0),
        points=sum(len(series.keys) for series in shown) + len(built.chart.regressed_keys),
        hover_chars=sum(len(text) for series in shown for text in series.hover),
    )
    widgets.Widget.close_all()
    return result


def new_services(config_of: ServiceContainer) -> ServiceContainer:
    """A container as a preheated kernel holds it when a viewer arrives: configuration and inventory read."""
    services = ServiceContainer(config_of.config, read_only=False)
    services.inventory.has_data  # noqa: B018 - read before the viewer comes, as runtool.ui.serving does
    return services


def _timed(call: Callable[[], object], setup: Callable[[], object]) -> float:
    setup()
    started = time.perf_counter()
    call()
    seconds = time.perf_counter() - started
    widgets.Widget.close_all()  # the pages' models, so repeats do not pile up in memory
    return seconds


def measure(root: Path, repeats: int) -> tuple[dict[str, dict[str, list[float]]], dict[str, Footprint]]:
    base = scanned_services(root)
    base.kpis.table()  # the KPI index is built and saved once (issue 9 (a)'s cold build), as after any analysis
    warm = new_services(base)
    timings: dict[str, dict[str, list[float]]] = {name: {} for name in SELECTIONS}
    held: dict[str, ServiceContainer] = {}

    def fresh() -> None:
        held["services"] = new_services(base)

    def add(name: str, case: str, seconds: float) -> None:
        timings[name].setdefault(case, []).append(seconds)

    for filters in SELECTIONS.values():  # unmeasured warm-up: imports, first bqplot models, caches
        page(warm, filters)
        widgets.Widget.close_all()
    for repeat in range(repeats):
        say(f"  repeat {repeat + 1}/{repeats}")
        for name, filters in SELECTIONS.items():
            def new_page(f: Filters = filters) -> None:
                page(held["services"], f)

            def new_data(f: Filters = filters) -> None:
                held["services"].data_state.all_runs()
                held["services"].kpis.table(f)

            def warm_page(f: Filters = filters) -> None:
                page(warm, f)

            def warm_data(f: Filters = filters) -> None:
                warm.kpis.table(f)

            add(name, "new_page", _timed(new_page, fresh))
            add(name, "new_data", _timed(new_data, fresh))
            add(name, "warm_page", _timed(warm_page, warm_data))  # the table just answered, as before a redraw
            add(name, "warm_data", _timed(warm_data, warm_data))
    footprints = {name: footprint(warm, filters) for name, filters in SELECTIONS.items()}
    return timings, footprints


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(timings: dict[str, dict[str, list[float]]], footprints: dict[str, Footprint], runs: int,
           repeats: int, load: tuple[float, float]) -> str:
    def ms(times: list[float]) -> str:
        return f"{median(times) * 1000:,.0f} ms ({min(times) * 1000:,.0f}–{max(times) * 1000:,.0f})"

    def added(page_times: list[float], data_times: list[float]) -> str:
        return f"{(median(page_times) - median(data_times)) * 1000:,.0f} ms"

    rows = []
    for name, t in timings.items():
        size = f"{footprints[name].rows:,}"
        rows.append([f"{name} ({size} runs), new kernel", ms(t["new_page"]), ms(t["new_data"]),
                     added(t["new_page"], t["new_data"]),
                     "yes" if median(t["new_page"]) < SLOW_S else "**no**"])
        rows.append([f"{name} ({size} runs), warm services", ms(t["warm_page"]), ms(t["warm_data"]),
                     added(t["warm_page"], t["warm_data"]),
                     "yes" if median(t["warm_page"]) < SLOW_S else "**no**"])
    table = markdown_table(["First render (median (min–max))", "page: FleetKpiPage(...) built and drawn",
                            "data only: KpiService.table", "the page adds", "< 1 s"], rows)
    sizes = markdown_table(
        ["Selection", "runs", "widget models created", "their state (JSON + buffers)", "largest chart series",
         "points on the chart (with regression rings)", "hover text"],
        [[name, f"{f.rows:,}", f"{f.models:,}", f"{f.state_bytes / 1e6:,.2f} MB", f"{f.largest_series:,} points",
          f"{f.points:,}", f"{f.hover_chars / 1e6:,.2f} M characters"] for name, f in footprints.items()],
    )
    return (f"{table}\n\n{sizes}\n\n- {runs:,} analysed runs (one client, 100 laser boxes); {repeats} repeats, cases "
            f"interleaved, after one unmeasured page per selection. Machine: {psutil.cpu_count()} cores, Python "
            f"{platform.python_version()}, load average {load[0]:.1f} at the start and {load[1]:.1f} at the end, "
            f"commit {_commit()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kpi_page", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="runtool-bench-kpi-page-") as scratch:
        root = Path(scratch)
        say(f"Writing {args.runs:,} synthetic analysis caches …")
        write_caches(root / "processed", args.runs)
        load_before = psutil.getloadavg()[0]
        timings, footprints = measure(root, args.repeats)
    text = report(timings, footprints, args.runs, args.repeats, (load_before, psutil.getloadavg()[0]))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "kpi_page.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
