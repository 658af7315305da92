"""The fleet KPI page (04_fleet_kpis.ipynb) in a real chromium, served by ``runtool serve`` over the demo fleet.

A few runs of one laser box are analysed through the real services before the page opens (extraction outputs
written by the analytics tests' helper, the fourth run's detections 50 ms late, so it regresses), and one run of
each of nine more laser boxes, so "All" has more laser boxes than the legend has colours; the module's own data
folder keeps them away from the other browser tests.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import pytest
from playwright.sync_api import expect

from runtool.models import Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.ui.query import selection_query
from tests.browser.conftest import Contexts, VoilaServer, screenshot
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
    expect(page.locator("a.rt-csv-link")).to_have_attribute("href", re.compile(r"^data:text/csv"))
    expect(page.locator(".rt-compare a.rt-csv-compare")).to_have_attribute("href", re.compile(r"^data:text/csv"))
    assert_no_traceback(page)
    screenshot(page, "fleet_kpis_compare")


def test_a_laser_box_selection(contexts: Contexts, server: VoilaServer, analysed: list[RunCoordinate]) -> None:
    page = open_fleet_page(contexts, server, selection_query(analysed[0].to_filters().replace(timestamp=None)))
    expect(page.locator(".rt-kpis")).to_contain_text("Analysed runs")
    expect(page.locator(".rt-kpi-legend .rt-legend-item")).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator(".rt-kpi-legend")).to_contain_text(f"{analysed[0].lbid} 4 runs")
    expect(page.locator(".rt-kpi-legend")).not_to_contain_text("others")
    assert_chart_reads_well(page)
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
