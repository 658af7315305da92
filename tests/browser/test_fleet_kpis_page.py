"""The fleet KPI page (04_fleet_kpis.ipynb) in a real chromium, served by ``runtool serve`` over the demo fleet.

A few runs of one laser box are analysed through the real services before the page opens (extraction outputs
written by the analytics tests' helper, the fourth run's detections 50 ms late, so it regresses), and one run of
each of nine more laser boxes, so "All" has more laser boxes than the legend has colours; the module's own data
folder keeps them away from the other browser tests.

At fleet scale the page runs on the medium demo fleet (51 laser boxes, ids repeated across fields) with every
run analysed: synthetic analysis caches of the current version (:func:`write_analyses`), since extracting ~400
runs' bags would take an hour; the page reads only the caches' KPIs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from playwright.sync_api import expect

from runtool.models import Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.services.analytics import CACHE_VERSION, extraction_fingerprint
from runtool.services.local_state import ANALYSIS_MARKER
from runtool.storage import processed_dir
from runtool.ui.labels import distinct_laser_box_names
from runtool.ui.query import selection_query
from tests.browser.conftest import Contexts, VoilaServer, crowded_axis_titles, overlapping_texts, screenshot
from tests.browser.test_coverage_page import MEDIUM_TIMEOUT_S, medium_config  # noqa: F401 (a fixture)
from tests.ui.test_fleet_kpis_page import analyse, extract, first_runs, laser_box_runs

pytestmark = pytest.mark.browser

FLEET_KPIS = "04_fleet_kpis.ipynb"
WAIT_MS = 90_000
OTHER_BOXES = 9


@pytest.fixture(scope="module")
def analysed(services: ServiceContainer) -> list[RunCoordinate]:
    """The four runs of the laser box with the most analysed runs (drawn first); nine more boxes with one each."""
    runs = laser_box_runs(services)[:4]
    for index, coord in enumerate(runs):
        extract(services, coord, latency_s=0.05 if index == 3 else 0.0)
        services.analytics.analyze_run(coord)
    box = runs[0].to_filters().replace(timestamp=None)
    others = [c for c in first_runs(services, OTHER_BOXES + 1) if c.to_filters().replace(timestamp=None) != box]
    analyse(services, others[:OTHER_BOXES])
    return runs


def boxes(page: Any, selector: str) -> list[dict[str, float]]:
    """The bounding boxes (x, y, width, height in page pixels) of the elements matching ``selector``."""
    return page.eval_on_selector_all(selector, "els => els.map(e => { const r = e.getBoundingClientRect();"
                                               " return {x: r.x, y: r.y, width: r.width, height: r.height}; })")


def assert_chart_reads_well(page: Any) -> None:
    """The legend is beside the plot (never over its points) and every axis label lies inside the chart."""
    page.locator(".rt-kpi-trend .axis .tick text").last.wait_for(timeout=WAIT_MS)  # charts come after the rest
    (figure,) = boxes(page, ".rt-kpi-trend > .bqplot")
    (legend,) = boxes(page, ".rt-kpi-legend")
    assert figure["x"] + figure["width"] <= legend["x"] + 1, (figure, legend)
    labels = boxes(page, ".rt-kpi-trend .axis .tick text")
    assert labels
    for label in labels:
        assert figure["x"] - 1 <= label["x"] and label["x"] + label["width"] <= figure["x"] + figure["width"] + 1, label
    # Axis titles clear of the tick labels (at d3's offsets they touched them).
    assert crowded_axis_titles(page, ".rt-kpi-trend .axis") == []


def assert_chart_reads_well_below(page: Any) -> None:
    """Every axis label of the trend chart lies inside it, its titles clear of the tick labels (legend anywhere)."""
    (figure,) = boxes(page, ".rt-kpi-trend > .bqplot")
    for label in boxes(page, ".rt-kpi-trend .axis .tick text"):
        assert figure["x"] - 1 <= label["x"] and label["x"] + label["width"] <= figure["x"] + figure["width"] + 1, label
    assert crowded_axis_titles(page, ".rt-kpi-trend .axis") == []
    assert overlapping_texts(page, ".rt-kpi-trend svg .axis") == []


def assert_no_traceback(page: Any) -> None:
    content = page.content()
    assert "Traceback" not in content
    assert 'data-mime-type="application/vnd.jupyter.stderr"' not in content
    expect(page.locator(".rt-message-error")).to_have_count(0)


def open_fleet_page(contexts: Contexts, server: VoilaServer, query: str = "") -> Any:
    page = contexts.new_page(viewport={"width": 1440, "height": 900})
    page.goto(server.url(FLEET_KPIS, query))
    page.wait_for_selector(".rt-page-fleet-kpis", state="visible", timeout=WAIT_MS)
    expect(page.locator(".rt-view-chart")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(".rt-kpi-trend .dot").first).to_be_attached(timeout=WAIT_MS)
    return page


def test_pick_a_kpi_follow_a_run_and_compare_two(contexts: Contexts, server: VoilaServer, services: ServiceContainer,
                                                 analysed: list[RunCoordinate]) -> None:
    page = open_fleet_page(contexts, server)  # "All" at every level
    expect(page.locator(".rt-nav")).to_contain_text("Fleet KPIs")
    expect(page.locator("button.rt-analyse-runs")).to_contain_text(re.compile(r"Analyse \d+ runs"))
    expect(page.locator(".rt-kpi-trend")).to_contain_text("Detection rate p5 per run")
    # 10 laser boxes: 8 in colours of their own, 2 as "others"; the legend does not grow with the selection.
    legend = page.locator(".rt-kpi-legend .rt-legend-item")
    expect(legend).to_have_count(9, timeout=WAIT_MS)
    expect(legend.first).to_contain_text("4 runs")
    expect(legend.last).to_contain_text("others: 2 laser boxes")
    assert_chart_reads_well(page)
    screenshot(page, "fleet_kpis_all")

    page.locator(".rt-kpi-picker select").select_option(label="Detection latency p95")
    expect(page.locator(".rt-kpi-trend")).to_contain_text("Detection latency p95 per run", timeout=WAIT_MS)
    expect(page.locator(".rt-runs-table")).to_contain_text("regressed on this KPI")
    assert_no_traceback(page)
    screenshot(page, "fleet_kpis_latency")

    page.locator(".rt-kpi-trend .dot").first.hover(force=True)
    expect(page.locator(".rt-chart-tip").first).to_be_visible(timeout=WAIT_MS)
    page.locator(".rt-kpi-trend .dot").first.click(force=True)
    open_run = page.locator("a.rt-open-run")
    expect(open_run).to_be_visible(timeout=WAIT_MS)
    href = open_run.get_attribute("href") or ""
    assert href.startswith("02_per_run_analysis.ipynb?")
    clicked = RunCoordinate(*(unquote(part.split("=", 1)[1]) for part in href.split("?", 1)[1].split("&")))
    rows = services.kpis.table(Filters()).rows
    assert clicked.to_path_str() in {f"{lb}/{ts}" for lb, ts in zip(rows["lb_key"], rows["timestamp"], strict=True)}
    screenshot(page, "fleet_kpis_clicked")

    open_run.click()
    page.wait_for_selector(".rt-page-per-run", state="visible", timeout=WAIT_MS)
    assert selection_query(clicked.to_filters()) in unquote(page.url).replace("%3A", ":")

    page.go_back()
    page.wait_for_selector(".rt-page-fleet-kpis", state="visible", timeout=WAIT_MS)
    expect(page.locator(".rt-view-chart")).to_be_visible(timeout=WAIT_MS)
    page.locator(".rt-compare-a select").select_option(index=1)
    page.locator(".rt-compare-b select").select_option(index=2)
    expect(page.locator(".rt-compare table")).to_contain_text("B − A", timeout=WAIT_MS)
    expect(page.locator(".rt-distributions svg").first).to_be_visible(timeout=WAIT_MS)
    page.wait_for_timeout(1000)  # bqplot lays the axes out after the marks arrive
    assert crowded_axis_titles(page, ".rt-distributions .axis") == []
    expect(page.locator("a.rt-csv-link")).to_have_attribute("href", re.compile(r"^data:text/csv"))
    expect(page.locator(".rt-compare a.rt-csv-compare")).to_have_attribute("href", re.compile(r"^data:text/csv"))
    assert_no_traceback(page)
    screenshot(page, "fleet_kpis_compare")


def test_a_laser_box_selection(contexts: Contexts, server: VoilaServer, services: ServiceContainer,
                               analysed: list[RunCoordinate]) -> None:
    page = open_fleet_page(contexts, server, selection_query(analysed[0].to_filters().replace(timestamp=None)))
    expect(page.locator(".rt-kpis")).to_contain_text("Analysed runs")
    expect(page.locator(".rt-kpi-legend .rt-legend-item")).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator(".rt-kpi-legend")).to_contain_text(f"{analysed[0].lbid} 4 runs")
    expect(page.locator(".rt-kpi-legend")).not_to_contain_text("others")
    assert_chart_reads_well(page)
    # Its runs share one detection rate p5: one tick, level with the points (d3 labelled the ends of a flat scale
    # "5" and "5", with the points halfway between).
    rows = services.kpis.table(analysed[0].to_filters().replace(timestamp=None)).rows
    assert rows["detections_p5_fps"].nunique() == 1
    (tick,) = value_ticks(page)
    dots = {round(box["y"] + box["height"] / 2) for box in boxes(page, ".rt-kpi-trend .dot")}
    assert len(dots) == 1 and abs(dots.pop() - tick[1]) <= 3, (dots, tick)
    # The lone tick reads as the value does in the table (d3's default for it was "3e+1" for 28).
    value = float(rows["detections_p5_fps"].iloc[0])
    assert tick[0] == f"{value:,.4g}", (tick, value)
    assert_no_traceback(page)
    screenshot(page, "fleet_kpis_laser_box")

    # Dates are typed as ISO; the whole date fits its box; a US-style date is said next to the field.
    until = page.locator(".rt-until input")
    until.fill("2099-12-31")
    until.press("Enter")
    assert until.evaluate("e => e.scrollWidth <= e.clientWidth"), "the date is cut in its box"
    since = page.locator(".rt-since input")
    since.fill("01/02/2025")
    since.press("Enter")
    expect(page.locator(".rt-date-message")).to_contain_text("must be a date written YYYY-MM-DD", timeout=WAIT_MS)
    expect(page.locator(".rt-view-chart")).to_be_visible()
    assert_no_traceback(page)
    screenshot(page, "fleet_kpis_bad_date")


def test_at_760_px_the_runs_table_keeps_each_name_on_one_line(contexts: Contexts, server: VoilaServer,
                                                               analysed: list[RunCoordinate]) -> None:
    """At 760 px the runs table broke its laser box names over two lines ("field_175 · | LB_0004") while the
    Regression column beside them took the room."""
    page = contexts.new_page(viewport={"width": 760, "height": 900})
    page.goto(server.url(FLEET_KPIS))
    page.wait_for_selector(".rt-page-fleet-kpis", state="visible", timeout=WAIT_MS)
    cells = page.locator(".rt-runs-table tbody tr td:nth-child(2)")
    expect(cells.first).to_be_visible(timeout=WAIT_MS)
    broken = page.eval_on_selector_all(
        ".rt-runs-table tbody tr td:nth-child(1), .rt-runs-table tbody tr td:nth-child(2)",
        "cells => cells.filter(c => { const r = document.createRange(); r.selectNodeContents(c);"
        " return new Set([...r.getClientRects()].filter(q => q.width > 0).map(q => Math.round(q.top))).size > 1; })"
        ".map(c => c.textContent)")
    assert broken == []
    screenshot(page, "fleet_kpis_760")


def test_at_760_px_the_legend_goes_under_the_chart(contexts: Contexts, server: VoilaServer,
                                                   analysed: list[RunCoordinate]) -> None:
    """At 760 px the legend kept its 250 px beside the chart: the plot was ~350 px wide, and at "All" on the medium
    fleet the regression squares of different days ran into each other."""
    page = contexts.new_page(viewport={"width": 760, "height": 900})
    page.goto(server.url(FLEET_KPIS))
    page.wait_for_selector(".rt-page-fleet-kpis", state="visible", timeout=WAIT_MS)
    page.locator(".rt-kpi-trend .axis .tick text").last.wait_for(timeout=WAIT_MS)
    page.wait_for_timeout(1000)
    (plot,) = boxes(page, ".rt-kpi-trend .plotarea_background")
    (legend,) = boxes(page, ".rt-kpi-legend")
    assert plot["width"] >= 500, plot
    assert legend["y"] >= plot["y"] + plot["height"], (plot, legend)
    assert_chart_reads_well_below(page)
    screenshot(page, "fleet_kpis_760_legend")


# -- fleet scale: the medium demo fleet, every run analysed, "All" at every level ---------------------------


def write_analyses(processed_root: Path, coords: Sequence[RunCoordinate]) -> None:
    """A current analysis cache for each run (an extraction's files and ``analysis/kpis.json``), KPIs varied by
    laser box and run; every laser box's seventh run has its detection latency 60 ms higher (a regression)."""
    by_box: dict[str, int] = {}
    for coord in sorted(coords, key=lambda c: c.start_time):
        folder = processed_dir(processed_root, coord)
        if (folder / ANALYSIS_MARKER).exists():
            continue
        box = "/".join(coord.to_path_tuple()[:5])
        nth = by_box[box] = by_box.get(box, -1) + 1
        seed = sum(map(ord, box)) % 97
        (folder / "analysis").mkdir(parents=True, exist_ok=True)
        (folder / "metadata.yaml").write_text(f"run: {coord}\nbags: []\n", encoding="utf-8")
        for name in ("frames.csv", "detections.csv", "tracking.csv"):
            (folder / name).write_text("bag_file,bag_timestamp_s,header_timestamp_s\n", encoding="utf-8")
        wobble = ((seed * 7 + nth * 13) % 11) / 10  # 0.0 .. 1.0, small against the regression margins
        latency = 38.0 + seed / 4 + 1.5 * wobble + (60.0 if nth == 6 else 0.0)
        duration = 600.0 + 40 * nth
        kpis: dict[str, float | int | None] = {
            "run_duration_s": duration, "fps_target": 25.0, "failed_bags": int(nth % 9 == 8),
            "mean_detections_per_frame": 3.0 + seed / 20 + wobble, "mean_tracks_per_frame": 2.0 + wobble,
            "avg_detection_confidence": 0.7, "avg_track_confidence": 0.65, "total_tracks": 900 + 10 * seed,
            "avg_track_lifetime": 3.5, "mean_track_density": 1.5, "tracks_per_minute": 40.0 + seed / 3 + 5 * wobble,
        }
        for index, stream in enumerate(("frames", "detections", "tracking")):
            p5 = 29.0 - index * 1.5 - seed / 40 - 0.4 * wobble
            kpis |= {f"{stream}_messages": int(duration * 30), f"{stream}_median_fps": 30.0 - index * 0.2,
                     f"{stream}_p5_fps": p5, f"{stream}_share_below_target": max(0.0, (26.0 - p5) / 20),
                     f"{stream}_dropped_frames": (seed // 3 + nth % 2) * index}
        for prefix, extra in (("detection_latency", 0.0), ("tracking_latency", 12.0)):
            kpis |= {f"{prefix}_mean_ms": latency + extra - 8, f"{prefix}_p50_ms": latency + extra - 10,
                     f"{prefix}_p95_ms": latency + extra, f"{prefix}_p99_ms": latency + extra + 25}
        document = {"version": CACHE_VERSION, "coordinate": str(coord), "fingerprint": extraction_fingerprint(folder),
                    "analysed_at": "2025-09-01T08:00:00+00:00", "has_detections": True, "has_tracking": True,
                    "kpis": kpis, "histograms": {}, "failed_bags": []}
        (folder / ANALYSIS_MARKER).write_text(json.dumps(document), encoding="utf-8")


@pytest.fixture(scope="module")
def medium_analysed(medium_config: Path) -> Path:  # noqa: F811 (the fixture imported above)
    """The medium fleet's config, every run with raw bags analysed (synthetic caches)."""
    services = ServiceContainer.from_environment(medium_config)
    runs = services.data_state.all_runs()
    runs = runs[runs["raw_bags"] > 0]
    columns = ["cid", "regionid", "fieldid", "twid", "lbid", "timestamp"]
    write_analyses(services.config.processed_root,
                   [RunCoordinate(*(str(part) for part in row)) for row in runs[columns].itertuples(index=False)])
    return medium_config


@pytest.fixture(scope="module")
def medium_kpi_voila(medium_analysed: Path) -> Iterator[VoilaServer]:
    server = VoilaServer(medium_analysed)
    yield server
    server.stop()




def text_left(label: Any) -> float:
    """Where the text of ``label`` starts on the page (its box may be wider, the text aligned right in it)."""
    left: float = label.evaluate("e => { const r = document.createRange(); r.selectNodeContents(e);"
                                 " return r.getBoundingClientRect().left; }")
    return left


def value_ticks(page: Any) -> list[tuple[str, float]]:
    """The value axis's tick labels with the y of their centres, bottom to top (the trend chart's tick labels that
    are not dates)."""
    ticks: list[list[Any]] = page.eval_on_selector_all(
        ".rt-kpi-trend svg .axis .tick text",
        "els => els.map(t => { const r = t.getBoundingClientRect(); return [t.textContent, r.y + r.height / 2]; })"
        ".sort((a, b) => b[1] - a[1])",
    )
    return [(text, y) for text, y in ticks if not re.fullmatch(r"\d{4}-\d{2}-\d{2}( \d{2}:\d{2})?", text)]


@pytest.mark.timeout(MEDIUM_TIMEOUT_S)
def test_at_fleet_scale_with_all_at_every_level_the_chart_reads(contexts: Contexts, medium_analysed: Path,
                                                                medium_kpi_voila: VoilaServer) -> None:
    """The medium fleet, every run analysed, "All" everywhere: 51 laser boxes in 8 colours and "others", no axis
    text over another (the axis title sat on the date labels), and a count KPI on whole-number ticks (Failed
    bags, 0 or 1 per run, was drawn on ticks 0, 0.1, … 0.9, 1)."""
    services = ServiceContainer.from_environment(medium_analysed)
    table = services.kpis.table(Filters())
    boxes = int(table.rows["lb_key"].nunique())
    assert boxes > 40 and len(table.rows) > 300  # the fleet scale this test is about
    page = open_fleet_page(contexts, medium_kpi_voila)
    expect(page.locator(".rt-kpis")).to_contain_text(re.compile(rf"{len(table.rows):,}\s*Analysed runs"))
    legend = page.locator(".rt-kpi-legend .rt-legend-item")
    expect(legend).to_have_count(9, timeout=WAIT_MS)
    expect(legend.last).to_contain_text(f"others: {boxes - 8} laser boxes")
    assert_chart_reads_well(page)
    # Tick labels and the axis titles.
    assert overlapping_texts(page, ".rt-kpi-trend svg .axis", "text") == []
    # Laser boxes named as on the coverage page (ids repeat across fields: "field · laser box" for every one, not
    # "LB_0011" beside "TW_001/LB_0001"), the full coordinate on hover.
    names = distinct_laser_box_names(list(table.rows["lb_key"].unique()))
    own = legend.locator(".rt-legend-label").all_text_contents()[:-1]
    titles = [legend.nth(i).get_attribute("title") for i in range(len(own))]
    assert own == [names[str(title)] for title in titles] and all(" · " in name for name in own), own
    # One precision on the value axis ("24.5, 25, 25.5" was drawn with one decimal and none by turns).
    values = [text for text, _ in value_ticks(page)]
    assert len(values) > 2 and len({len(text.partition(".")[2]) for text in values}) == 1, values
    # The settings and compare rows start where the filter bar does ("KPI" sat 60 px in, right-aligned in a fixed
    # label width; "Run A" 40 px).
    client_text = text_left(page.get_by_text("Client", exact=True).first)
    for row in (".rt-kpi-picker", ".rt-compare-a"):
        assert abs(text_left(page.locator(f"{row} .widget-label")) - client_text) <= 2, row
    assert_no_traceback(page)
    screenshot(page, "fleet_kpis_medium_all")

    page.locator(".rt-kpi-picker select").select_option(label="Failed bags")
    expect(page.locator(".rt-kpi-trend")).to_contain_text("Failed bags per run", timeout=WAIT_MS)
    expect(page.locator(".rt-kpi-legend .rt-legend-regressed")).to_be_visible(timeout=WAIT_MS)
    assert set(table.rows["failed_bags"]) == {0, 1}
    # The axis redraws after the title: wait until its ticks are the new KPI's.
    page.wait_for_function("() => ![...document.querySelectorAll('.rt-kpi-trend svg .axis .tick text')]"
                           ".some(t => t.textContent.includes('.'))", timeout=WAIT_MS)
    assert [text for text, _ in value_ticks(page)] == ["0", "1"]
    # Tick labels and the axis titles.
    assert overlapping_texts(page, ".rt-kpi-trend svg .axis", "text") == []
    assert_chart_reads_well(page)
    assert_no_traceback(page)
    screenshot(page, "fleet_kpis_medium_failed_bags")
