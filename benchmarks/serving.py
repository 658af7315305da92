"""Serving benchmark (issue 8 (a)(b)(d), issue 12 "Performance"): `runtool serve` in headless Debian chromium.

Run: ``.venv/bin/python -m benchmarks.serving [--repeats 5]`` (``--parts a,b,d`` to run only some parts).

It starts fake-gcs-server (memory backend), seeds the small demo fleet and scans the inventory, then serves
it four ways at once:

- **baseline**: plain Voila, ``python -m voila FOLDER --no-browser --port=P``, on a folder holding one
  notebook that prints "ok" (the plainest honest Voila page);
- **preheated**: ``runtool serve`` with its defaults (a pool of ``--pool-size`` kernels per page, 1 by default);
- **no-preheat**: ``runtool serve --no-preheat``;
- **before** (issue 12): plain ``python -m voila`` on runtool's page notebooks with the options ``runtool
  serve --no-preheat`` gives its own Voila (runtool template, no tracebacks, culling) but none of
  ``RuntoolVoila``'s guards: the first render before the guards.

Parts:

(a) time from the GET of each page to its first content (coverage: a KPI value; per-run: the "pick a run"
    sentence, or with a run in the query its status cards; download manager: a KPI value; baseline: "ok"),
    each open in a new browser context (so a new viewer), closed like a tab (``beforeunload``: Voila's leave
    beacon). Every case of a repeat is timed in turn after one unmeasured warm-up per server. Before every
    open the benchmark waits until each server's kernels are idle (under ``IDLE_CPU_S`` of CPU in
    ``IDLE_WINDOW_S``) and back to their resting number (a full pool per page for ``preheated``, none for the
    others), so each preheated open finds a warm kernel and no refill or shutdown overlaps a measurement; the
    wait is reported. Then a back-to-back burst of coverage opens on ``preheated`` (the pool has no time to
    refill). Plain Voila servers never get the leave beacon (its ``_xsrf`` cookie is never set), so their
    kernels are shut down by the benchmark after each close, outside the timing.
(b) ``--viewers`` browser contexts open the coverage page at once on ``runtool serve --max-kernels
    VIEWERS+2`` (the default cap, 4 per core, would turn some away by design), for each ``--pools`` size:
    every viewer must see content (failures are listed); median and worst time; server RSS (the Voila
    process alone and with its kernels, psutil) at its peak during the opens and when all show content.
(c) is ``benchmarks.kernel_memory``.
(d) ``--cycles`` open-and-close cycles of the coverage page on ``preheated``, back to back: live kernels
    and RSS of the Voila process alone and with its children at the start (pool full, idle), every
    ``cycles // 5`` cycles, right after the last close and once settled.

Tables go to stdout and to ``benchmarks/results/serving.md``; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import requests

from benchmarks.common import (
    DEMO_PRESET,
    DEMO_SEED,
    RESULTS_DIR,
    markdown_table,
    median,
    say,
    seeded_demo,
    spread,
)
from benchmarks.page_render import BASELINE, plain_voila_command, write_baseline_notebook
from runtool.demo.emulator import free_port
from runtool.demo.server import VoilaProcess
from runtool.models import LEVELS, Filters
from runtool.serve import PAGES, ServeOptions, serve_command, serve_environment
from runtool.ui.query import selection_query
from tests.conftest import CHROMIUM, LAUNCH_ARGS

COVERAGE, PER_RUN, DOWNLOAD_MANAGER, FLEET_KPIS = PAGES[:4]
TIMEOUT_MS = 180_000
IDLE_WINDOW_S = 1.0
IDLE_CPU_S = 0.1
"""Servers count as idle when all their processes together used less CPU than this over ``IDLE_WINDOW_S``."""
SETTLE_LIMIT_S = 120.0
CLOSE_WAIT_S = 5.0
MIB = 1024 * 1024
_KERNEL_ID = re.compile(r'"kernelId"\s*:\s*"([0-9a-f-]{36})"')
_XSRF = "0123456789abcdef0123456789abcdef"
"""Sent as both the ``_xsrf`` cookie and header: what a page of plain Voila would need to shut its kernel."""


# -- servers ---------------------------------------------------------------------------------------


class Server:
    """A Voila server in a child process, its kernels and its memory, and the number of kernels it rests at."""

    def __init__(self, name: str, command: list[str], log: Path, env: dict[str, str] | None, port: int,
                 pool: int, beacon: bool) -> None:
        self.name = name
        self.pool = pool
        self.beacon = beacon
        """Whether the page's leave beacon shuts its kernel (runtool) or the benchmark must (plain Voila)."""
        self.command = command
        self.beacon_misses = 0
        self.process = VoilaProcess(command, port, log, env=env, timeout=120.0)
        self.base = self.process.base

    def url(self, page: str, query: str = "") -> str:
        return self.process.url(page, query)

    @property
    def voila(self) -> psutil.Process:
        """The Voila process (`runtool serve` runs it as its child)."""
        parent = psutil.Process(self.process.process.pid)
        if "-m" in parent.cmdline() and "voila" in parent.cmdline():
            return parent
        for child in parent.children():
            if "runtool.serve.app" in child.cmdline():
                return child
        raise RuntimeError(f"{self.name}: no Voila process under {parent.pid}")

    @property
    def resting_kernels(self) -> int:
        """The kernels of a server no viewer uses: a full pool for each page it preheats (from its command line)."""
        args = self.voila.cmdline()
        if self.pool == 0 or "--VoilaConfiguration.preheat_kernel=True" not in args:
            return 0
        pages = next(a for a in args if a.startswith("--RuntoolVoila.pages=")).partition("=")[2]
        return self.pool * len([page for page in pages.split(",") if page])

    def processes(self) -> list[psutil.Process]:
        voila = self.voila
        return [voila, *voila.children(recursive=True)]

    def kernels(self) -> list[psutil.Process]:
        found = []
        for child in self.voila.children(recursive=True):
            try:
                if any("ipykernel" in part for part in child.cmdline()):
                    found.append(child)
            except psutil.NoSuchProcess:
                pass
        return found

    def memory(self) -> tuple[int, float, float]:
        """Live kernels, RSS of the Voila process, RSS of it and all its children (MiB)."""
        voila = self.voila
        own = voila.memory_info().rss
        total = own
        for child in voila.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += child.memory_info().rss
        return len(self.kernels()), own / MIB, total / MIB

    def shutdown_kernel(self, kernel_id: str) -> None:
        """What the leave beacon asks: Voila's shutdown endpoint, with a matching ``_xsrf`` cookie and header."""
        requests.post(f"{self.base}/voila/api/shutdown/{kernel_id}", headers={"X-XSRFToken": _XSRF},
                      cookies={"_xsrf": _XSRF}, timeout=30)

    def stop(self) -> None:
        self.process.stop()


def runtool_server(name: str, config_path: Path, root: Path, *flags: str, pool: int) -> Server:
    """``runtool serve FLAGS`` on a free port, as a user starts it."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("runtool")), "--config", str(config_path), "serve",
               "--port", str(port), *flags]
    env = {**os.environ, "RUNTOOL_CONFIG": str(config_path)}
    return Server(name, command, root / f"{name}.log", env, port, pool, beacon=True)


def before_guards_server(config_path: Path, root: Path) -> Server:
    """Plain ``python -m voila`` on the page notebooks with ``runtool serve --no-preheat``'s own options."""
    port = free_port()
    options = ServeOptions(port=port, preheat=False)
    command = [part for part in serve_command(options) if not part.startswith("--RuntoolVoila.")]
    command[command.index("runtool.serve.app")] = "voila"
    env = serve_environment(options, None, {"RUNTOOL_CONFIG": str(config_path)})
    return Server("before", command, root / "before.log", env, port, 0, beacon=False)


def baseline_server(root: Path) -> Server:
    """Plain ``python -m voila FOLDER --no-browser --port=P`` on a folder holding the one-cell notebook."""
    port = free_port()
    command = plain_voila_command(write_baseline_notebook(root / "baseline"), port)
    return Server("baseline", command, root / "baseline.log", None, port, 0, beacon=False)


def cpu_seconds(servers: list[Server]) -> float:
    total = 0.0
    for server in servers:
        for process in server.processes():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    return total


def settle(servers: list[Server], limit_s: float = SETTLE_LIMIT_S) -> tuple[float, bool]:
    """Wait until every server rests at its number of kernels and all are idle; (seconds waited, settled)."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        if all(len(s.kernels()) == s.resting_kernels for s in servers):
            before = cpu_seconds(servers)
            time.sleep(IDLE_WINDOW_S)
            if cpu_seconds(servers) - before < IDLE_CPU_S and all(
                len(s.kernels()) == s.resting_kernels for s in servers
            ):
                return time.perf_counter() - started, True
        else:
            time.sleep(0.25)
    return time.perf_counter() - started, False


# -- pages -----------------------------------------------------------------------------------------


def _text_visible(selector: str) -> Callable[[Any], None]:
    def ready(page: Any) -> None:
        page.locator(selector).filter(has_text=re.compile(r"\S")).first.wait_for(state="visible",
                                                                                  timeout=TIMEOUT_MS)

    return ready


LIVE = {
    COVERAGE: ".rt-page-coverage .rt-kpi-value",
    PER_RUN: ".rt-page-per-run .rt-view-empty, .rt-page-per-run .rt-status-card",
    DOWNLOAD_MANAGER: ".rt-page-download-manager .rt-kpi-value",
    FLEET_KPIS: ".rt-page-fleet-kpis .rt-kpi-value, .rt-page-fleet-kpis .rt-view-empty",
}
"""A page's first content in its live widgets."""


def _or_copy(selector: str) -> str:
    """``selector``, or the same content in the page's static first screen (runtool.ui.snapshot: rts- classes)."""
    return f"{selector}, {selector.replace('.rt-', '.rts-')}"


BASELINE_READY = ".jp-OutputArea-output"
READY = {"baseline": _text_visible(BASELINE_READY)} | {
    page: _text_visible(_or_copy(selector)) for page, selector in LIVE.items()
}
ASYNC_READY = ".rt-page-coverage .rt-kpi-value"
DRAWN = {
    COVERAGE: ".rt-page-coverage .rt-view-aggregated .bqplot, .rt-page-coverage .rt-view-single .bqplot",
    DOWNLOAD_MANAGER: ".rt-page-download-manager .rt-inventory-grid",
}
"""The heavy part a progressive page draws after its first content (pages not listed have none in (a))."""


@dataclass
class Case:
    server: Server
    page: str
    query: str = ""
    seconds: list[float] = field(default_factory=list)
    live: list[float] = field(default_factory=list)
    """Seconds from the GET to the first content in the live widgets (``LIVE``), the static copy gone."""
    drawn: list[float] = field(default_factory=list)
    """Seconds from the GET to the heavy part (``DRAWN``) visible, for pages that have one."""
    errors: int = 0
    failures: int = 0

    @property
    def url(self) -> str:
        return self.server.url(self.page, self.query)

    @property
    def ready(self) -> Callable[[Any], None]:
        return READY["baseline" if self.page == BASELINE else self.page]


def open_page(browser: Any, server: Server, page_name: str, query: str) -> tuple[float, Any, Any]:
    """A new viewer opens the page: seconds from the GET to the first content; the context and page, open."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    started = time.perf_counter()
    page.goto(server.url(page_name, query), wait_until="commit", timeout=TIMEOUT_MS)
    READY["baseline" if page_name == BASELINE else page_name](page)
    return time.perf_counter() - started, context, page


def close_page(server: Server, context: Any, page: Any) -> None:
    """Close the tab as a viewer does (``beforeunload`` runs: Voila's page sends its leave beacon)."""
    match = _KERNEL_ID.search(page.content())
    page.close(run_before_unload=True)
    deadline = time.monotonic() + CLOSE_WAIT_S
    while not page.is_closed() and time.monotonic() < deadline:
        time.sleep(0.05)
    context.close()
    if not server.beacon and match:
        server.shutdown_kernel(match.group(1))


def errors_shown(page: Any) -> int:
    return int(page.locator(".rt-message-error").count()) + int("Traceback" in page.content())


def time_case(browser: Any, case: Case) -> None:
    """One timed open of ``case``; an open that shows no content in time counts as a failure."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    started = time.perf_counter()
    try:
        page.goto(case.url, wait_until="commit", timeout=TIMEOUT_MS)
        case.ready(page)
    except Exception as exc:
        say(f"  {case.server.name} {case.page} ?{case.query}: no content ({type(exc).__name__})")
        case.failures += 1
    else:
        case.seconds.append(time.perf_counter() - started)
        if case.page in LIVE:
            try:
                page.locator(LIVE[case.page]).first.wait_for(state="visible", timeout=TIMEOUT_MS)
                case.live.append(time.perf_counter() - started)
            except Exception as exc:
                say(f"  {case.server.name} {case.page} ?{case.query}: live page not drawn ({type(exc).__name__})")
        heavy = DRAWN.get(case.page)
        if heavy is not None:
            try:
                page.locator(heavy).first.wait_for(state="visible", timeout=TIMEOUT_MS)
                case.drawn.append(time.perf_counter() - started)
            except Exception as exc:
                say(f"  {case.server.name} {case.page} ?{case.query}: heavy part not drawn ({type(exc).__name__})")
        case.errors += errors_shown(page) if case.page != BASELINE else 0
    close_page(case.server, context, page)


# -- parts -----------------------------------------------------------------------------------------


@dataclass
class Load:
    samples: list[float] = field(default_factory=list)

    def sample(self) -> None:
        self.samples.append(os.getloadavg()[0])

    def describe(self) -> str:
        return f"1-min load average {min(self.samples):.1f}–{max(self.samples):.1f} (sampled {len(self.samples)}×)"


def part_a(browser: Any, servers: dict[str, Server], queries: dict[str, tuple[str, ...]], repeats: int, burst: int,
           load: Load) -> tuple[list[str], list[str]]:
    """(a) and issue 12: every page, preheated or not, against the baseline; before/after the guards."""
    all_servers = list(servers.values())
    baseline = Case(servers["baseline"], BASELINE)
    grid = {
        (mode, page, query): Case(servers[mode], page, query)
        for page in PAGES for query in ("", *queries.get(page, ())) for mode in ("preheated", "no-preheat")
    }
    before = {page: Case(servers["before"], page) for page in PAGES}
    cases = [baseline, *grid.values(), *before.values()]
    waits: list[float] = []
    unsettled = 0
    say("Warm-up: one unmeasured open per server ...")
    for server, page in ((servers["baseline"], BASELINE), (servers["preheated"], COVERAGE),
                         (servers["no-preheat"], COVERAGE), (servers["before"], COVERAGE)):
        settle(all_servers)
        warm = Case(server, page)
        time_case(browser, warm)  # an open without content is said, and the run goes on
        say(f"  {server.name}: " + (f"{warm.seconds[0]:.2f} s" if warm.seconds else "no content"))
    for repeat in range(repeats):
        for case in cases:
            waited, settled = settle(all_servers)
            waits.append(waited)
            unsettled += not settled
            time_case(browser, case)
        load.sample()
        shown = ", ".join(f"{c.seconds[-1]:.1f}" if c.seconds else "—" for c in cases)
        say(f"  repeat {repeat + 1}/{repeats}: {shown} s (load {os.getloadavg()[0]:.1f})")
    settle(all_servers)
    say(f"Burst: {burst} back-to-back opens of the coverage page on the preheated server ...")
    burst_seconds = []
    for _ in range(burst):
        seconds, context, tab = open_page(browser, servers["preheated"], COVERAGE, "")
        close_page(servers["preheated"], context, tab)
        burst_seconds.append(seconds)
    say("  " + ", ".join(f"{s:.2f}" for s in burst_seconds))
    settle(all_servers)
    for server in all_servers:
        if server.beacon and len(server.kernels()) != server.resting_kernels:
            say(f"  {server.name}: {len(server.kernels())} kernels, resting number {server.resting_kernels}")

    base = median(baseline.seconds)

    def ratio(case: Case) -> str:
        return f"{median(case.seconds) / base:.2f}×" if case.seconds else "—"

    titles = {COVERAGE: "Coverage", PER_RUN: "Per-run", DOWNLOAD_MANAGER: "Download manager"}
    rows = [["Baseline: plain Voila, one-cell notebook printing \"ok\"", spread(baseline.seconds), "1.00×",
             "—", "—", "—", "—"]]
    for page in PAGES:
        for query in ("", *queries.get(page, ())):
            pre, cold = grid[("preheated", page, query)], grid[("no-preheat", page, query)]
            label = f"{titles.get(page, page)}, " + (f"`?{query}`" if query else "no query")
            rows.append([label, spread(pre.seconds), ratio(pre), spread(cold.seconds), ratio(cold),
                         spread(pre.live), spread(pre.drawn) if page in DRAWN else "—"])
    table_a = markdown_table(
        ["GET → first content (s: median (min–max))", "preheated", "× baseline", "--no-preheat", "× baseline",
         "preheated, live widgets", "preheated, charts/grid drawn"],
        rows,
    )
    table_burst = markdown_table(
        ["Burst on preheated: open #", *[str(i + 1) for i in range(len(burst_seconds))]],
        [["GET → first content (s)", *[f"{s:.2f}" for s in burst_seconds]]],
    )
    rows_12 = []
    for page in PAGES:
        after = grid[("no-preheat", page, "")]
        both = after.seconds and before[page].seconds
        rows_12.append([titles.get(page, page), spread(before[page].seconds), spread(after.seconds),
                        f"{median(after.seconds) / median(before[page].seconds):.2f}×" if both else "—"])
    table_12 = markdown_table(
        ["First render, no query (s: median (min–max))", "before: plain Voila, same options, no guards",
         "after: `runtool serve --no-preheat`", "after / before"],
        rows_12,
    )
    errors = sum(c.errors for c in cases)
    notes = [
        f"- (a) {repeats} timed opens per case, interleaved (every case once per repeat, in the table's order), "
        "after one unmeasured warm-up per server; each open is a new browser context (a new viewer) closed like "
        "a tab. Before each open the benchmark waited until every server's kernels were idle (< "
        f"{IDLE_CPU_S} s CPU in {IDLE_WINDOW_S:.0f} s) and at their resting number (preheated: a full pool, "
        f"{servers['preheated'].resting_kernels} kernels; others: none): waited median {median(waits):.1f} s, "
        f"max {max(waits):.1f} s; {unsettled} of {len(waits)} waits hit the {SETTLE_LIMIT_S:.0f} s limit.",
        "- First content: coverage and download manager, a KPI value with text; per-run, the \"pick a run\" "
        "sentence or, with a run in the query, its status cards; baseline, \"ok\". A page's first screen comes "
        "first as static HTML (runtool.ui.snapshot) in the page itself, drawn as the browser reads it, before "
        "Voila's scripts have loaded (a plain Voila page shows its outputs only once they have), and its live "
        "widgets take its place: first content is whichever shows first (in practice the copy), the \"live "
        "widgets\" column the same content in the live widgets. Pages draw progressively: "
        "the last column is the GET to the coverage charts (a bqplot figure) or the download manager's grid "
        "visible, the part a page draws once the browser has painted its first content. "
        f"Error messages or tracebacks seen on the pages: {errors}; opens without content within "
        f"{TIMEOUT_MS // 1000} s: {sum(c.failures for c in cases)}.",
        "- Burst: back-to-back opens of the coverage page (no query) on the preheated server, each closed "
        "before the next. The pool starts its refill when a viewer takes its kernel, so the next open finds a "
        "warm kernel only if the refill finished during the previous open; otherwise it waits for it.",
        "- Issue 12 \"before\": `python -m voila` (no `RuntoolVoila`) on runtool's notebooks with the options "
        "`runtool serve --no-preheat` passes its Voila: runtool template, `--show_tracebacks=False`, the same "
        "culling; \"after\" is the `--no-preheat` column above (same run, interleaved).",
    ]
    return [table_a, "", table_burst, "", "Issue 12, first render before and after the guards:", "", table_12], notes


Memory = tuple[int, float, float]
"""A server's (kernels, Voila RSS MiB, Voila + children RSS MiB)."""


async def _viewers_at_once(url: str, viewers: int, server: Server, ready: str
                           ) -> tuple[list[float | None], list[str], Memory, Memory]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            contexts = [await browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(viewers)]
            pages = [await context.new_page() for context in contexts]
            peak = server.memory()
            done = asyncio.Event()

            async def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    now = server.memory()
                    if now[2] > peak[2]:
                        peak = now
                    await asyncio.sleep(0.5)

            async def one(page: Any) -> tuple[float | None, str]:
                started = time.perf_counter()
                try:
                    await page.goto(url, wait_until="commit", timeout=TIMEOUT_MS)
                    await page.locator(ready).filter(has_text=re.compile(r"\S")).first.wait_for(
                        state="visible", timeout=TIMEOUT_MS)
                    return time.perf_counter() - started, ""
                except Exception as exc:
                    text, kernel = "", None
                    with contextlib.suppress(Exception):
                        text = (await page.inner_text("body"))[:120].replace("\n", " ")
                        kernel = _KERNEL_ID.search(await page.content())
                    return None, (f"{type(exc).__name__} after {time.perf_counter() - started:.1f} s; kernel "
                                  f"{kernel.group(1) if kernel else '?'}; page text: {text!r}")

            sampler = asyncio.create_task(sample())
            results = await asyncio.gather(*(one(page) for page in pages))
            done.set()
            await sampler
            shown = server.memory()
            for page in pages:
                await page.close(run_before_unload=True)
            await asyncio.sleep(1.0)
            for context in contexts:
                await context.close()
        finally:
            await browser.close()
    return [r[0] for r in results], [r[1] for r in results if r[1]], peak, shown


def part_b(config_path: Path, root: Path, viewers: int, pools: list[int], load: Load) -> tuple[list[str], list[str]]:
    rows, notes, failures = [], [], []
    for pool in [None, *pools]:
        if pool is None:  # the plainest honest baseline: the same browser load on a one-cell plain Voila page
            server = baseline_server(root / "concurrent-baseline")
            url, ready, label = server.url(BASELINE), BASELINE_READY, "plain Voila, one-cell notebook (baseline)"
        else:
            server = runtool_server(f"concurrent-pool{pool}", config_path, root, "--pool-size", str(pool),
                                    "--max-kernels", str(viewers + 2), pool=pool)
            url, ready, label = server.url(COVERAGE), ASYNC_READY, f"`--pool-size {pool} --max-kernels {viewers + 2}`"
        try:
            waited, settled = settle([server], limit_s=600.0)
            name = "baseline" if pool is None else f"pool {pool}"
            say(f"{viewers} viewers at once, {name}: pools full after {waited:.1f} s ({settled=}) ...")
            if not settled:
                notes.append(f"- (b) {name}: the pools were not full and idle after {waited:.0f} s.")
            idle = server.memory()
            times, errors, peak, shown = asyncio.run(_viewers_at_once(url, viewers, server, ready))
            load.sample()
            ok = [t for t in times if t is not None]
            say("  " + ", ".join("fail" if t is None else f"{t:.1f}" for t in times))
            time.sleep(2.0)
            waited, settled = settle([server], limit_s=180.0)
            after = server.memory()
            failures += [f"{name}: {e}" for e in errors]
            rows.append([
                label, f"{len(ok)}/{viewers}",
                f"{median(ok):.2f}" if ok else "—", f"{max(ok):.2f}" if ok else "—",
                f"{idle[1]:.0f} / {idle[2]:.0f} ({idle[0]})",
                f"{peak[1]:.0f} / {peak[2]:.0f} ({peak[0]})", f"{shown[1]:.0f} / {shown[2]:.0f} ({shown[0]})",
                f"{after[1]:.0f} / {after[2]:.0f} ({after[0]}, {waited:.0f} s{'' if settled else ', unsettled'})",
            ])
        finally:
            server.stop()
    table = markdown_table(
        ["Server", "viewers with content", "median s", "worst s",
         "RSS MiB Voila / + kernels (kernels): before", "peak", "all showing", "after close, settled"],
        rows,
    )
    notes.append(
        f"- (b) {viewers} browser contexts of one chromium open the coverage page (no query) at the same moment "
        f"(`--max-kernels {viewers + 2}`: the default cap, 4 per core, turns viewers past it away by design). "
        "Times from each GET to its first KPI value. RSS from psutil: the Voila process alone / with all its "
        "children, sampled every 0.5 s (peak = highest total). Before = pools full and idle; after close = the "
        "tabs closed (leave beacon) and the server settled."
    )
    notes.append("- (b) failures: " + ("; ".join(failures) if failures else "none (every viewer saw content)."))
    return [table], notes


def part_d(browser: Any, server: Server, cycles: int, load: Load) -> tuple[list[str], list[str]]:
    rows = []
    waited, settled = settle([server])
    kernels, own, total = server.memory()
    rows.append(["start (pool full, idle)", str(kernels), f"{own:.0f}", f"{total:.0f}"])
    times: list[float] = []
    every = max(1, cycles // 5)
    started = time.perf_counter()
    for cycle in range(1, cycles + 1):
        seconds, context, page = open_page(browser, server, COVERAGE, "")
        close_page(server, context, page)
        times.append(seconds)
        if cycle % every == 0 or cycle == cycles:
            kernels, own, total = server.memory()
            rows.append([f"after {cycle} cycles", str(kernels), f"{own:.0f}", f"{total:.0f}"])
            say(f"  {cycle}/{cycles}: {kernels} kernels, Voila {own:.0f} MiB, with children {total:.0f} MiB")
    elapsed = time.perf_counter() - started
    load.sample()
    waited, settled = settle([server])
    kernels, own, total = server.memory()
    rows.append([f"settled ({waited:.0f} s later{'' if settled else ', limit hit'})", str(kernels), f"{own:.0f}",
                 f"{total:.0f}"])
    table = markdown_table(["(d) coverage page, open and close", "live kernels", "Voila RSS MiB",
                            "Voila + children RSS MiB"], rows)
    notes = [
        f"- (d) {cycles} cycles back to back on `runtool serve` (defaults: pool 1 per page, so "
        f"{server.resting_kernels} kernels at rest) in {elapsed:.0f} s: a new context opens the coverage page, "
        "waits for a KPI value and closes the tab (beforeunload: the leave beacon); the kernel count right after "
        "a close includes the viewer kernel still shutting down and the refills under way. Open → content: "
        f"median {median(times):.2f} s, max {max(times):.2f} s."
    ]
    return [table], notes


# -- main ------------------------------------------------------------------------------------------


def write_results(args: argparse.Namespace, blocks: list[str], notes: list[str], fleet_note: str, load: Load,
                  started_at: datetime) -> str:
    """The results so far as markdown, written to ``benchmarks/results/serving.md``."""
    command = "`.venv/bin/python -m benchmarks.serving" + "".join(
        f" {flag} {value}" for flag, value, default in (
            ("--repeats", args.repeats, 5), ("--burst", args.burst, 5), ("--viewers", args.viewers, 10),
            ("--pools", args.pools, "1,10"), ("--cycles", args.cycles, 50), ("--parts", args.parts, "a,b,d"))
        if value != default
    ) + "`"
    machine = [
        fleet_note,
        f"- Browser: headless Debian chromium ({CHROMIUM}); machine: {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, shared with other work: {load.describe()}; Python "
        f"{platform.python_version()}; {started_at:%Y-%m-%d %H:%M}–{datetime.now(UTC):%H:%M} UTC.",
    ]
    text = "\n".join(["# Serving benchmark", "", command, "", *blocks, *notes, *machine, ""])
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "serving.md").write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed opens per case in (a) (default 5)")
    parser.add_argument("--burst", type=int, default=5, help="back-to-back opens in (a)'s burst (default 5)")
    parser.add_argument("--viewers", type=int, default=10, help="concurrent viewers in (b) (default 10)")
    parser.add_argument("--pools", default="1,10", help="pool sizes for (b), by commas (default 1,10)")
    parser.add_argument("--cycles", type=int, default=50, help="open-and-close cycles in (d) (default 50)")
    parser.add_argument("--parts", default="a,b,d", help="which parts to run, by commas (default a,b,d)")
    parser.add_argument("--logs", type=Path, help="keep the servers' logs in this folder (default: discarded)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if not CHROMIUM.exists():
        say(f"{CHROMIUM} is missing: apt-get install -y chromium")
        return 2
    from playwright.sync_api import sync_playwright

    load = Load()
    load.sample()
    started_at = datetime.now(UTC)
    blocks: list[str] = []
    notes: list[str] = []
    with seeded_demo("serving") as demo:
        root, config_path, data_state = demo.root, demo.config_path, demo.services.data_state
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
            root = args.logs.resolve()
        cid = data_state.filter_options(Filters())["cid"][0]
        busiest = max(data_state.laser_box_stats(Filters(cid=cid)), key=lambda b: b.runs)
        lb_filters = Filters(**dict(zip(LEVELS, busiest.lb_key.split("/"), strict=True)))
        run = data_state.generate_coordinates_from_filters(lb_filters)[0]
        queries: dict[str, tuple[str, ...]] = {
            COVERAGE: (f"cid={cid}",),
            PER_RUN: (selection_query(run.to_filters()),),
            DOWNLOAD_MANAGER: (selection_query(lb_filters),),
        }
        fleet_note = (f"- Fleet: demo preset `{DEMO_PRESET}` (seed {DEMO_SEED}): {demo.report.runs} runs, "
                      f"{demo.info.objects:,} objects; fake-gcs-server memory backend; inventory scanned before "
                      "the servers start.")
        servers: dict[str, Server] = {}
        try:
            if "a" in parts or "d" in parts:
                say("Starting the servers ...")
                servers["baseline"] = baseline_server(root)
                servers["preheated"] = runtool_server("preheated", config_path, root, pool=1)
                if "a" in parts:
                    servers["no-preheat"] = runtool_server("no-preheat", config_path, root, "--no-preheat", pool=0)
                    servers["before"] = before_guards_server(config_path, root)
                with sync_playwright() as playwright:
                    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                         args=LAUNCH_ARGS)
                    try:
                        if "a" in parts:
                            say(f"(a) + issue 12: {args.repeats} repeats ...")
                            more, more_notes = part_a(browser, servers, queries, args.repeats, args.burst, load)
                            blocks += ["### (a) First content of each page", "", *more, ""]
                            notes += more_notes
                            write_results(args, blocks, notes, fleet_note, load, started_at)
                        if "d" in parts:
                            for name in ("no-preheat", "before", "baseline"):
                                if name in servers:
                                    servers.pop(name).stop()
                            say(f"(d) {args.cycles} open-and-close cycles ...")
                            more, more_notes = part_d(browser, servers["preheated"], args.cycles, load)
                            blocks += ["### (d) Open and close, again and again", "", *more, ""]
                            notes += more_notes
                            write_results(args, blocks, notes, fleet_note, load, started_at)
                    finally:
                        browser.close()
        finally:
            for server in servers.values():
                server.stop()
        if "b" in parts:
            pools = [int(p) for p in args.pools.split(",") if p]
            more, more_notes = part_b(config_path, root, args.viewers, pools, load)
            blocks += [f"### (b) {args.viewers} viewers of the coverage page at once", "", *more, ""]
            notes += more_notes
    load.sample()
    print(write_results(args, blocks, notes, fleet_note, load, started_at))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
