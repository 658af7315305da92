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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import DEMO_PRESET, DEMO_SEED, RESULTS_DIR, markdown_table, median, say, seeded_demo
from runtool.demo.emulator import free_port
from runtool.demo.server import VoilaProcess
from runtool.models import LEVELS, Filters
from tests.browser.conftest import VoilaServer
from tests.conftest import CHROMIUM, LAUNCH_ARGS

COVERAGE = "01_temporal_coverage.ipynb"
BASELINE = "baseline.ipynb"
TIMEOUT_MS = 120_000
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
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        say(f"{CHROMIUM} is missing: apt-get install -y chromium")
        return 2
    from playwright.sync_api import sync_playwright

    with seeded_demo("page") as demo:
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
        f"- Fleet: demo preset `{DEMO_PRESET}` (seed {DEMO_SEED}): {demo.report.runs} runs, {demo.info.objects:,} "
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
         + (f" --repeats {args.repeats}" if args.repeats != 5 else "") + "`", "", table, "", *notes, ""]
    )
    print(table)
    print()
    print("\n".join(notes))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "page_render.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
