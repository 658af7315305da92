"""Page render benchmark: how long the coverage page takes to show its first KPI in a real browser.

Run: ``.venv/bin/python -m benchmarks.page_render [--repeats N]``.

It starts fake-gcs-server (memory backend), seeds the small demo fleet, scans the inventory, starts
``runtool serve`` and a headless Debian chromium, then times, for each repeat, a new tab from the GET of the
page to the first visible ``.rt-kpi-value``: the aggregated view (client only) and a single-laser-box view.
The baseline is plain Voila (``python -m voila FOLDER --no-browser --port=P``) serving a one-cell notebook
that prints "ok", timed from the GET to "ok" visible: what any Voila page costs before runtool does anything.
``runtool serve`` runs with its defaults (preheated, one kernel per page): the repeats are back to back, so
most opens find the coverage pool refilling; ``benchmarks.serving`` spaces them and covers every page.
Cases are interleaved within each repeat, after one unmeasured warm-up of each. The table goes to stdout and
to ``benchmarks/results/page_render.md``; progress goes to stderr.

``--preset NAME`` seeds another demo preset (default ``small``). ``--compare-to TREE`` times every page instead
(coverage, per-run with no run picked, download manager, fleet KPIs), each opened with no query, so "All" at
every level, on two ``runtool serve --no-preheat`` servers (``--preheat``: both with their default pool of 1)
on the same fleet: "before" runs the runtool of the source tree ``TREE`` (``PYTHONPATH=TREE``), "after" the
one this benchmark is run from. Each server gets its own copy of the seeded data folder, scanned by its own
code. Per page: the GET to the first content (the static first screen's copy or the live widgets, whichever
shows first), to the same content in the live widgets, and to the heavy part drawn (coverage charts, the
download manager's grid, the fleet KPIs trend chart); interleaved before/after (the order alternates between
repeats), with the one-cell plain Voila page as baseline; then each page's Python build timed in fresh
interpreters of both trees. Its table goes to ``benchmarks/results/page_render_compare.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import (
    DEMO_PRESET,
    DEMO_SEED,
    RESULTS_DIR,
    SeededDemo,
    demo_config,
    markdown_table,
    median,
    say,
    seeded_demo,
    write_config,
)
from runtool.demo.emulator import Emulator, free_port
from runtool.demo.fleet import plan_fleet, write_fleet_tree
from runtool.demo.server import VoilaProcess
from runtool.models import LEVELS, Filters
from runtool.services import ServiceContainer
from tests.browser.conftest import VoilaServer
from tests.conftest import CHROMIUM, LAUNCH_ARGS

if TYPE_CHECKING:
    from benchmarks.serving import Load, Server

COVERAGE = "01_temporal_coverage.ipynb"
BASELINE = "baseline.ipynb"
TIMEOUT_MS = 120_000
BENCH_DIR_TREE = Path(__file__).resolve().parents[1]
"""The source tree this benchmark runs from: "after" in ``--compare-to``."""
KERNEL_SETTLE_S = 0.5
"""Pause after closing a tab, so the previous page's kernel shutdown does not overlap the next GET."""


def plain_voila_command(folder: Path, port: int) -> list[str]:
    """The plainest Voila: no template, no preheat, no option beyond the port."""
    return [sys.executable, "-m", "voila", str(folder), "--no-browser", f"--port={port}"]


def write_baseline_notebook(folder: Path) -> Path:
    """``folder`` holding one notebook (``BASELINE``) whose only cell prints "ok"."""
    notebook = {
        "cells": [{"cell_type": "code", "execution_count": None, "id": "ok", "metadata": {}, "outputs": [],
                   "source": ['print("ok")']}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / BASELINE).write_text(json.dumps(notebook), encoding="utf-8")
    return folder


class BaselineServer(VoilaProcess):
    """Plain Voila (:func:`plain_voila_command`) on a folder holding one notebook that prints "ok"."""

    def __init__(self, folder: Path) -> None:
        write_baseline_notebook(folder)
        port = free_port()
        super().__init__(plain_voila_command(folder, port), port, folder.parent / "baseline-voila.log")


@dataclass
class Case:
    """One page to time: its URL and what must be visible for it to count as rendered."""

    name: str
    url: str
    ready: Callable[[Any], None]
    warmup: float = 0.0
    seconds: list[float] = field(default_factory=list)


def _first_kpi(page: Any) -> None:
    page.wait_for_selector(".rt-kpi-value", state="visible", timeout=TIMEOUT_MS)


def _ok_printed(page: Any) -> None:
    page.locator(".jp-OutputArea-output", has_text="ok").first.wait_for(state="visible", timeout=TIMEOUT_MS)


def _time_render(browser: Any, case: Case) -> float:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        started = time.perf_counter()
        page.goto(case.url, wait_until="commit", timeout=TIMEOUT_MS)
        case.ready(page)
        return time.perf_counter() - started
    finally:
        context.close()
        time.sleep(KERNEL_SETTLE_S)


def _python_breakdown(config_path: Path, queries: dict[str, str], repeats: int) -> dict[str, float]:
    """Median seconds, in a fresh interpreter as a kernel is: ``import runtool.ui`` and each page build."""
    script = (
        "import sys, time; t = time.perf_counter(); from runtool.ui import CoveragePage; "
        "i = time.perf_counter() - t; t = time.perf_counter(); "
        "page = CoveragePage(query=sys.argv[1]); b = time.perf_counter() - t; "
        "assert page.view != 'empty', page.empty_text; print(i, b)"
    )
    env = {**os.environ, "RUNTOOL_CONFIG": str(config_path)}
    imports: list[float] = []
    builds: dict[str, list[float]] = {name: [] for name in queries}
    for _ in range(repeats):
        for name, query in queries.items():
            out = subprocess.run([sys.executable, "-c", script, query], env=env, capture_output=True, text=True,
                                 check=True).stdout.split()
            imports.append(float(out[0]))
            builds[name].append(float(out[1]))
    return {"import runtool.ui": median(imports), **{f"CoveragePage() {n}": median(v) for n, v in builds.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed renders per page (default 5)")
    parser.add_argument("--preset", default=DEMO_PRESET, help=f"demo fleet preset (default {DEMO_PRESET})")
    parser.add_argument("--compare-to", type=Path, metavar="TREE",
                        help="time every page with 'All' selected against the runtool of this source tree")
    parser.add_argument("--preheat", action="store_true",
                        help="with --compare-to: serve both with their default pool (1) instead of --no-preheat")
    parser.add_argument("--logs", type=Path, help="with --compare-to: keep the servers' logs in this folder")
    parser.add_argument("--preload", action="store_true",
                        help="with --compare-to: seed by preloading files into the filesystem backend on tmpfs")
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        say(f"{CHROMIUM} is missing: apt-get install -y chromium")
        return 2
    if args.compare_to is not None:
        return compare_pages(args)
    from playwright.sync_api import sync_playwright

    with seeded_demo("page", args.preset) as demo:
        root, config_path, data_state = demo.root, demo.config_path, demo.services.data_state
        cid = data_state.filter_options(Filters())["cid"][0]
        boxes = data_state.laser_box_stats(Filters(cid=cid))
        busiest = max(boxes, key=lambda b: b.runs)
        lb_filters = Filters(**dict(zip(LEVELS, busiest.lb_key.split("/"), strict=True)))
        lb_query = "&".join(f"{level}={getattr(lb_filters, level)}" for level in LEVELS)
        queries = {"aggregated": f"cid={cid}", "single": lb_query}

        say("Starting runtool serve and the baseline voila ...")
        runtool_server = VoilaServer(config_path)
        baseline_server: BaselineServer | None = None
        try:
            baseline_server = BaselineServer(root / "baseline")
            cases = [
                Case("Voila baseline: one-cell notebook printing \"ok\"", baseline_server.url(BASELINE),
                     _ok_printed),
                Case(f"Coverage, aggregated view (`cid={cid}`, {len(boxes)} laser boxes)",
                     runtool_server.url(COVERAGE, queries["aggregated"]), _first_kpi),
                Case(f"Coverage, single laser box (`{busiest.lb_key}`, {busiest.runs} runs)",
                     runtool_server.url(COVERAGE, queries["single"]), _first_kpi),
            ]
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
                try:
                    for case in cases:
                        case.warmup = _time_render(browser, case)
                        say(f"  warm-up {case.name}: {case.warmup:.2f} s")
                    for repeat in range(args.repeats):
                        for case in cases:
                            case.seconds.append(_time_render(browser, case))
                        say(f"  repeat {repeat + 1}/{args.repeats}: "
                            + ", ".join(f"{c.seconds[-1]:.2f} s" for c in cases))
                finally:
                    browser.close()
        finally:
            runtool_server.stop()
            if baseline_server is not None:
                baseline_server.stop()
        say("Timing the Python side in fresh interpreters ...")
        breakdown = _python_breakdown(config_path, queries, min(args.repeats, 3))

    baseline = median(cases[0].seconds)
    rows = [
        [case.name, f"{median(case.seconds):.2f}", f"{min(case.seconds):.2f}", f"{max(case.seconds):.2f}",
         "1.0×" if index == 0 else f"{median(case.seconds) / baseline:.1f}×"]
        for index, case in enumerate(cases)
    ]
    table = markdown_table(
        ["GET → first visible content", "median s", "min s", "max s", "× baseline (median)"], rows
    )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    notes = [
        f"- Fleet: demo preset `{args.preset}` (seed {DEMO_SEED}): {demo.report.runs} runs, {demo.info.objects:,} "
        f"objects, seeded in {demo.seed_s:.1f} s; fake-gcs-server memory backend; inventory scanned before the "
        "server starts.",
        f"- Repeats: {args.repeats} per page, interleaved, each in a new browser context (so a new kernel), "
        f"after one unmeasured warm-up per page (warm-up: "
        + ", ".join(f"{c.warmup:.2f} s" for c in cases)
        + "). Coverage: to the first `.rt-kpi-value` visible; baseline: to \"ok\" visible.",
        "- Python side, median in a fresh interpreter (as a kernel): "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in breakdown.items())
        + ". The rest of a render is voila, the kernel start and the widget round trips.",
        f"- Browser: headless Debian chromium ({CHROMIUM}); machine: {os.cpu_count()} cores (load average "
        f"{load} at the end: other work shares them, so compare ratios more than seconds), Python "
        f"{platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
    ]
    text = "\n".join(
        ["# Page render benchmark", "", "`.venv/bin/python -m benchmarks.page_render"
         + (f" --repeats {args.repeats}" if args.repeats != 5 else "")
         + (f" --preset {args.preset}" if args.preset != DEMO_PRESET else "") + "`", "", table, "", *notes, ""]
    )
    print(table)
    print()
    print("\n".join(notes))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "page_render.md").write_text(text, encoding="utf-8")
    return 0


# -- --compare-to: every page with "All" selected, before and after --------------------------------


HEAVY = {
    "01_temporal_coverage.ipynb": ".rt-page-coverage .rt-view-aggregated .bqplot, "
                                  ".rt-page-coverage .rt-view-single .bqplot",
    "03_download_manager.ipynb": ".rt-page-download-manager .rt-inventory-grid",
    "04_fleet_kpis.ipynb": ".rt-page-fleet-kpis .rt-kpi-trend .bqplot",
}
"""The heavy part each page draws after its first content (the per-run page with no run picked has none)."""
PAGE_NAMES = {
    "01_temporal_coverage.ipynb": ("Coverage", "CoveragePage"),
    "02_per_run_analysis.ipynb": ("Per-run, no run picked", "PerRunPage"),
    "03_download_manager.ipynb": ("Download manager", "DownloadManagerPage"),
    "04_fleet_kpis.ipynb": ("Fleet KPIs", "FleetKpiPage"),
}
"""Each page's name in the table and its class in ``runtool.ui``."""
SIDES = ("before", "after")
COMPARE_TIMEOUT_MS = 180_000
"""How long an open of ``--compare-to`` waits for each thing it times (benchmarks.serving's READY waits as long)."""
WARMUP_HEAVY_MS = 120_000
"""How long the warm-up waits for a heavy part; a page that does not draw it then is timed without it."""


@dataclass
class PageTimes:
    """One page on one server: seconds from the GET to its first content, its live widgets and its heavy part."""

    server: Server
    page: str
    heavy: str | None
    first: list[float] = field(default_factory=list)
    live: list[float] = field(default_factory=list)
    drawn: list[float] = field(default_factory=list)
    failures: int = 0
    errors: int = 0
    shown: str = ""
    """What the warm-up open showed first (the first content's text, shortened)."""
    no_heavy: str = ""
    """Why the page drew no heavy part in the warm-up (then none is waited for)."""


@contextmanager
def preloaded_demo(name: str, preset: str) -> Iterator[SeededDemo]:
    """What :func:`benchmarks.common.seeded_demo` gives, seeded faster: the fleet written as files
    (:func:`write_fleet_tree`) that fake-gcs-server's filesystem backend loads at start, both on tmpfs
    (``/dev/shm``). Uploading the medium fleet into the memory backend grows with the square of a bucket's
    objects and took over 20 minutes on a loaded machine."""
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix=f"runtool-{name}-bench-") as temp, \
            tempfile.TemporaryDirectory(dir=shm, prefix=f"runtool-{name}-gcs-") as store:
        root = Path(temp)
        emulator = Emulator(data_dir=Path(store) / "backend", preload=Path(store) / "objects")
        config = demo_config(root / "data", emulator.url, name)
        say(f"Writing the {preset} demo fleet for {emulator.url} to preload ...")
        started = time.perf_counter()
        plan = plan_fleet(preset, DEMO_SEED)
        report = write_fleet_tree(config, plan, Path(store) / "objects")
        with emulator.start(timeout=1200.0):
            seed_s = time.perf_counter() - started
            config_path = write_config(config, root / "runtool.toml")
            services = ServiceContainer.from_environment(config_path)
            yield SeededDemo(root, config_path, plan, report, seed_s, services, services.inventory.refresh())


def tree_environment(tree: Path, config_path: Path) -> dict[str, str]:
    """The environment in which ``python`` imports runtool from ``tree``, never from its working folder."""
    return {**os.environ, "PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1", "RUNTOOL_CONFIG": str(config_path)}


def tree_commit(tree: Path) -> str:
    """``tree``'s short commit, with " + uncommitted changes" when its runtool folder differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "runtool")
    return (git("rev-parse", "--short", "HEAD") or "?") + (" + uncommitted changes" if dirty else "")


def side_config(demo: SeededDemo, name: str, tree: Path) -> tuple[Path, float]:
    """A config file for ``name``'s own copy of the seeded data folder (without the inventory cache), whose
    inventory is then scanned by ``tree``'s code; and the seconds that scan took."""
    source = demo.root / "data"
    folder = demo.root / name
    shutil.copytree(source, folder / "data", ignore=lambda where, _names: ["cache"] if Path(where) == source else [])
    text = demo.config_path.read_text(encoding="utf-8")
    data_line = f'data_dir = "{source}"'
    if data_line not in text:
        raise RuntimeError(f"{demo.config_path} does not name {source}")
    config_path = folder / "runtool.toml"
    config_path.write_text(text.replace(data_line, f'data_dir = "{folder / "data"}"'), encoding="utf-8")
    scan = ("import sys; from pathlib import Path; from runtool.services import ServiceContainer; "
            "ServiceContainer.from_environment(Path(sys.argv[1])).inventory.refresh()")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", scan, str(config_path)], env=tree_environment(tree, config_path),
                   cwd=folder, check=True)
    return config_path, time.perf_counter() - started


def tree_server(name: str, tree: Path, config_path: Path, logs: Path, preheat: bool) -> Server:
    """``runtool serve`` of ``tree`` (``--no-preheat`` unless ``preheat``) on a free port."""
    from benchmarks.serving import Server

    port = free_port()
    command = [sys.executable, "-m", "runtool", "--config", str(config_path), "serve", "--port", str(port),
               *([] if preheat else ["--no-preheat"])]
    server = Server(name, command, logs / f"{name}.log", tree_environment(tree, config_path), port,
                    pool=1 if preheat else 0, beacon=True)
    notebooks = str(tree / "runtool" / "notebooks")
    if notebooks not in server.voila.cmdline():
        server.stop()
        raise RuntimeError(f"{name}: the server does not serve {notebooks}: {server.voila.cmdline()}")
    return server


def time_page(browser: Any, case: PageTimes, warmup: bool = False) -> None:
    """One open of ``case`` in a new browser context, closed like a tab; its times appended (unless ``warmup``)."""
    from benchmarks.serving import BASELINE_READY, LIVE, READY, close_page, errors_shown

    is_baseline = case.page == BASELINE
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    started = time.perf_counter()
    first = live = drawn = None
    try:
        page.goto(case.server.url(case.page), wait_until="commit", timeout=COMPARE_TIMEOUT_MS)
        READY["baseline" if is_baseline else case.page](page)
        first = time.perf_counter() - started
        if not is_baseline:
            page.locator(LIVE[case.page]).first.wait_for(state="visible", timeout=COMPARE_TIMEOUT_MS)
            live = time.perf_counter() - started
        if warmup and case.heavy is not None and page.locator(".rt-view-empty").first.is_visible():
            case.heavy, case.no_heavy = None, "it shows its empty state"
        if case.heavy is not None:
            try:
                page.locator(case.heavy).first.wait_for(state="visible",
                                                        timeout=WARMUP_HEAVY_MS if warmup else COMPARE_TIMEOUT_MS)
                drawn = time.perf_counter() - started
            except Exception as exc:
                say(f"  {case.server.name} {case.page}: heavy part not drawn ({type(exc).__name__})")
                if warmup:
                    case.heavy, case.no_heavy = None, f"not drawn within {WARMUP_HEAVY_MS // 1000} s"
                else:
                    case.failures += 1
        if warmup:
            selector = BASELINE_READY if is_baseline else LIVE[case.page]
            case.shown = " ".join(page.locator(selector).first.inner_text().split())[:90]
        if not is_baseline:
            case.errors += errors_shown(page)
    except Exception as exc:
        say(f"  {case.server.name} {case.page}: no content ({type(exc).__name__})")
        case.failures += 1
    finally:
        close_page(case.server, context, page)
    if not warmup:
        for values, value in ((case.first, first), (case.live, live), (case.drawn, drawn)):
            if value is not None:
                values.append(value)


def python_build(trees: dict[str, Path], configs: dict[str, Path], pages: list[str], repeats: int
                 ) -> dict[tuple[str, str], tuple[float, float]]:
    """Median seconds of ``import runtool.ui`` and of each page object built with no query, in fresh
    interpreters of each tree (as a kernel runs them); pages the tree lacks are left out."""
    script = (
        "import sys, time; t = time.perf_counter(); import runtool.ui as ui; cls = getattr(ui, sys.argv[1]); "
        "i = time.perf_counter() - t; t = time.perf_counter(); page = cls(query=''); "
        "print(i, time.perf_counter() - t)"
    )
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(repeats):
        for page in pages:
            for side, tree in trees.items():
                if not (tree / "runtool" / "notebooks" / page).is_file():
                    continue
                done = subprocess.run([sys.executable, "-c", script, PAGE_NAMES[page][1]],
                                      env=tree_environment(tree, configs[side]), cwd=configs[side].parent,
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    say(f"  {side} {page}: the page build failed: {done.stderr.strip()[-300:]}")
                    continue
                imported, built = (float(value) for value in done.stdout.split()[-2:])
                runs.setdefault((side, page), []).append((imported, built))
    return {key: (median([v[0] for v in values]), median([v[1] for v in values])) for key, values in runs.items()}


def compare_pages(args: argparse.Namespace) -> int:
    """``--compare-to``: every page opened with no query ("All") on the older tree's server and this one's."""
    from playwright.sync_api import sync_playwright

    from benchmarks.serving import Load, baseline_server, settle

    trees = {"before": args.compare_to.resolve(), "after": BENCH_DIR_TREE}
    if not (trees["before"] / "runtool" / "__init__.py").is_file():
        say(f"{trees['before']} holds no runtool package")
        return 2
    commits = {side: tree_commit(tree) for side, tree in trees.items()}
    load = Load()
    load.sample()
    started_at = datetime.now(UTC)
    seeded = preloaded_demo if args.preload else seeded_demo
    with seeded("page", args.preset) as demo:
        logs = (args.logs or demo.root).resolve()
        logs.mkdir(parents=True, exist_ok=True)
        configs: dict[str, Path] = {}
        scans: dict[str, float] = {}
        for side, tree in trees.items():
            say(f"{side}: copying the data folder and scanning it with {tree} ...")
            configs[side], scans[side] = side_config(demo, side, tree)
        servers: dict[str, Server] = {}
        try:
            say("Starting the servers ...")
            servers["baseline"] = baseline_server(logs)
            for side, tree in trees.items():
                servers[side] = tree_server(side, tree, configs[side], logs, args.preheat)
            baseline = PageTimes(servers["baseline"], BASELINE, None)
            pages = list(PAGE_NAMES)
            grid: dict[tuple[str, str], PageTimes | None] = {
                (side, page): PageTimes(servers[side], page, HEAVY.get(page))
                if (trees[side] / "runtool" / "notebooks" / page).is_file() else None
                for page in pages for side in SIDES
            }
            cases = [baseline, *(case for case in grid.values() if case is not None)]
            all_servers = list(servers.values())
            waits: list[float] = []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
                try:
                    say("Warm-up: one unmeasured open of each case ...")
                    for case in cases:
                        settle(all_servers)
                        warm = time.perf_counter()
                        time_page(browser, case, warmup=True)
                        say(f"  {case.server.name} {case.page}: {time.perf_counter() - warm:.1f} s, {case.shown!r}")
                    for repeat in range(args.repeats):
                        order = SIDES if repeat % 2 == 0 else SIDES[::-1]
                        round_cases = [baseline, *(grid[(side, page)] for page in pages for side in order)]
                        for maybe in round_cases:
                            if maybe is None:
                                continue
                            waited, _ = settle(all_servers)
                            waits.append(waited)
                            time_page(browser, maybe)
                        load.sample()
                        say(f"  repeat {repeat + 1}/{args.repeats}: " + ", ".join(
                            f"{c.server.name[:3]}{c.page[:2]} {c.first[-1]:.1f}"
                            + (f"/{c.drawn[-1]:.1f}" if c.drawn else "") for c in cases if c.first
                        ) + f" s (load {os.getloadavg()[0]:.1f})")
                finally:
                    browser.close()
        finally:
            for server in servers.values():
                server.stop()
        say("Timing each page's Python build in fresh interpreters of both trees ...")
        builds = python_build(trees, configs, pages, min(args.repeats, 3))
        fleet = (f"demo preset `{args.preset}` (seed {DEMO_SEED}): {demo.report.runs:,} runs, {demo.info.objects:,} "
                 f"objects, seeded in {demo.seed_s:.0f} s"
                 + ("; fake-gcs-server filesystem backend on tmpfs, preloaded (`--preload`)" if args.preload
                    else "; fake-gcs-server memory backend"))
    load.sample()
    text = compare_report(args, trees, commits, grid, baseline, builds, fleet, scans, waits, load, started_at)
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "page_render_compare.md").write_text(text, encoding="utf-8")
    return 0


def _ratio(after: list[float], before: list[float]) -> str:
    return f"{median(after) / median(before):.2f}×" if after and before else "—"


def compare_report(args: argparse.Namespace, trees: dict[str, Path], commits: dict[str, str],
                   grid: dict[tuple[str, str], PageTimes | None], baseline: PageTimes,
                   builds: dict[tuple[str, str], tuple[float, float]], fleet: str, scans: dict[str, float],
                   waits: list[float], load: Load, started_at: datetime) -> str:
    """The comparison as markdown: the command, the table, the Python builds and the notes."""
    from benchmarks.common import spread

    base = median(baseline.first) if baseline.first else float("nan")
    rows = [["Baseline: plain Voila, one-cell notebook printing \"ok\"", spread(baseline.first), "—", "—",
             "1.00×", "—", "—", "—"]]
    for page, (title, _cls) in PAGE_NAMES.items():
        before, after = grid[("before", page)], grid[("after", page)]
        if before is None or after is None:
            missing = "the older tree" if before is None else "this tree"
            rows.append([title, f"not comparable: no {page} in {missing}", *["—"] * 6])
            continue
        heavy = page in HEAVY and not (before.no_heavy or after.no_heavy)
        why = "; ".join(f"{c.server.name}: {c.no_heavy}" for c in (before, after) if c.no_heavy)
        rows.append([
            title,
            spread(before.first), spread(after.first), _ratio(after.first, before.first),
            f"{median(before.first) / base:.2f}× → {median(after.first) / base:.2f}×"
            if before.first and after.first else "—",
            spread(after.live),
            f"{spread(before.drawn)} → {spread(after.drawn)}" if heavy else f"— (none{': ' + why if why else ''})",
            _ratio(after.drawn, before.drawn) if heavy else "—",
        ])
    table = markdown_table(
        ["Page, no query (\"All\"); s: median (min–max)", "before: GET → first content",
         "after: GET → first content", "after / before", "× baseline (before → after)", "after: live widgets",
         "GET → heavy part drawn: before → after", "after / before (heavy)"],
        rows,
    )
    build_rows = []
    for page, (title, cls) in PAGE_NAMES.items():
        cells = []
        for side in SIDES:
            found = builds.get((side, page))
            cells.append(f"{found[0]:.2f} + {found[1]:.2f}" if found else "—")
        build_rows.append([f"{title} (`{cls}(query='')`)", *cells])
    build_table = markdown_table(["Python in a fresh interpreter: `import runtool.ui` + page built, s (median)",
                                  "before", "after"], build_rows)
    failures = sum(c.failures for c in grid.values() if c is not None) + baseline.failures
    errors = sum(c.errors for c in grid.values() if c is not None)
    shown = "; ".join(f"{PAGE_NAMES[page][0]}: {c.shown!r}" for (side, page), c in grid.items()
                      if side == "after" and c is not None)
    command = ("`.venv/bin/python -m benchmarks.page_render --compare-to " + str(args.compare_to)
               + (f" --preset {args.preset}" if args.preset != DEMO_PRESET else "")
               + (f" --repeats {args.repeats}" if args.repeats != 5 else "")
               + (" --preheat" if args.preheat else "") + (" --preload" if args.preload else "") + "`")
    mode = ("both with their default pool of one preheated kernel per page" if args.preheat
            else "both `--no-preheat` (each open starts its kernel, so the page is built while the viewer waits)")
    notes = [
        f"- Before: `{trees['before']}` at {commits['before']}; after: `{trees['after']}` at {commits['after']}. "
        f"Each is `python -m runtool serve` with `PYTHONPATH` set to its tree, {mode}, on its own copy of the same "
        f"seeded data folder, its inventory scanned by its own code ({scans['before']:.1f} s before, "
        f"{scans['after']:.1f} s after); same emulator, buckets and browser.",
        f"- Fleet: {fleet}.",
        "- \"All\" at every level is the absence of the level in the URL (runtool/ui/query.py: absent, blank or "
        "`All` all mean unset), so each page is opened with no query, as a viewer following the header's link "
        "does; every page opens on \"All\" by default. What each showed first (after): " + shown + ".",
        f"- {args.repeats} timed opens per case after one unmeasured warm-up of each; every open a new browser "
        "context (a new viewer) closed like a tab, after every server's kernels had stopped and all were idle "
        f"(waited median {median(waits):.1f} s, max {max(waits):.1f} s). Before and after of a page are opened one "
        "after the other, their order alternating between repeats.",
        "- First content: coverage, download manager and fleet KPIs a KPI value (or the fleet KPIs' empty-state "
        "sentence), per-run the \"pick a run\" sentence; after serves a static copy of the first screen "
        "(runtool.ui.snapshot, `rts-` classes) before its live widgets, before does not, so first content is the "
        "copy or the live widgets, whichever shows first, and \"live widgets\" the same content in the widgets. "
        "Heavy part: the coverage charts (a bqplot figure), the download manager's grid, the fleet KPIs trend chart "
        "(not drawn while no run is analysed: the page then shows its empty-state sentence, timed as first content).",
        f"- Opens without content, or without the heavy part, within {COMPARE_TIMEOUT_MS // 1000} s: {failures}; error "
        f"messages or tracebacks on the pages: {errors}.",
        f"- Browser: headless Debian chromium; machine: {os.cpu_count()} cores, shared with other work: "
        f"{load.describe()}; Python {platform.python_version()}; "
        f"{started_at:%Y-%m-%d %H:%M}–{datetime.now(UTC):%H:%M} UTC.",
    ]
    return "\n".join(["# Page render, every page with \"All\" selected, before and after", "", command, "", table,
                      "", build_table, "", *notes, ""])


if __name__ == "__main__":
    raise SystemExit(main())
