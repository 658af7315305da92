"""The run search box of the filter bar in a real chromium: a pasted coordinate finds its run (issue 10).

On the coverage page the run's laser box is selected and a link opens the run on the per-run page; on the
per-run page the run itself is shown. Expected values come from the services, never from the page classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from runtool.formatting import format_time
from runtool.models import LEVELS, Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.ui.query import selection_query
from tests.browser.conftest import VoilaServer, screenshot

pytestmark = pytest.mark.browser

COVERAGE = "01_temporal_coverage.ipynb"
PER_RUN = "02_per_run_analysis.ipynb"
WAIT_S = 30.0


@pytest.fixture(scope="module")
def runs(served_config: Path) -> tuple[RunCoordinate, RunCoordinate]:
    """Two runs of the demo fleet in different laser boxes: the one to find and one to start from."""
    services = ServiceContainer.from_environment(served_config)
    coordinates = services.data_state.generate_coordinates_from_filters(Filters())
    target = coordinates[len(coordinates) // 2]
    start = next(c for c in coordinates if c.lbid != target.lbid or c.twid != target.twid)
    return target, start


@pytest.fixture
def page(contexts: Any) -> Any:
    """A tab at the size the issue was seen at (1440×900)."""
    return contexts.new_page(viewport={"width": 1440, "height": 900})


def assert_levels(page: Any, filters: Filters) -> None:
    for level in LEVELS:
        expect(page.locator(f".rt-filter-{level} select")).to_have_value(getattr(filters, level) or "")


def test_a_pasted_coordinate_on_the_coverage_page_selects_its_laser_box_and_links_the_run(
    page: Any, voila: VoilaServer, runs: tuple[RunCoordinate, RunCoordinate]
) -> None:
    target, _ = runs
    page.goto(voila.url(COVERAGE))
    page.wait_for_selector(".rt-view-aggregated", state="visible")
    search = page.locator(".rt-run-search input")
    expect(search).to_be_visible()
    expect(search).to_have_attribute("placeholder", "Find a run: paste or type its coordinate")

    # Part of a coordinate lists matches; a text that matches nothing says so beside the box.
    search.fill("no_such_laser_box")
    expect(page.locator(".rt-run-search-status")).to_have_text("No run matches “no_such_laser_box”.")
    search.fill(f"{target.fieldid}/{target.twid}/{target.lbid}")
    first = page.locator(".rt-run-search-hit").first
    expect(first).to_contain_text(f"Laser box {'/'.join(target.to_path_tuple()[:-1])}", timeout=WAIT_S * 1000)
    screenshot(page, "run-search-coverage-matches")

    search.fill(f"  {target}/rosbag/_2025-01-01-00-00-00_0.bag\n")
    assert_levels(page, target.to_filters().replace(timestamp=None))
    page.wait_for_selector(".rt-view-single", state="visible")
    expect(page.locator(".rt-run-search-hit")).to_have_count(0)
    status = page.locator(".rt-run-search-status")
    expect(status).to_contain_text(f"Run {target.lbid} · {format_time(target.start_time)}: its laser box is selected.")
    expect(page.locator(".rt-message-error")).to_have_count(0)
    screenshot(page, "run-search-coverage-opened")

    page.locator("a.rt-run-search-open").click()
    page.wait_for_selector(".rt-page-per-run .rt-view-run", state="visible", timeout=WAIT_S * 2000)
    expect(page.locator(".rt-run-picker select option:checked")).to_have_text(format_time(target.start_time))


def test_a_pasted_coordinate_on_the_per_run_page_opens_its_run(
    page: Any, voila: VoilaServer, runs: tuple[RunCoordinate, RunCoordinate]
) -> None:
    target, start = runs
    page.goto(voila.url(PER_RUN, selection_query(start.to_filters())))
    page.wait_for_selector(".rt-page-per-run .rt-view-run", state="visible", timeout=WAIT_S * 2000)
    expect(page.locator(".rt-run-picker select option:checked")).to_have_text(format_time(start.start_time))

    page.locator(".rt-run-search input").fill(str(target))
    assert_levels(page, target.to_filters().replace(timestamp=None))
    expect(page.locator(".rt-run-picker select option:checked")).to_have_text(
        format_time(target.start_time), timeout=WAIT_S * 1000)
    expect(page.locator(".rt-run-search-status")).to_have_text(
        f"Run {target.lbid} · {format_time(target.start_time)} is shown.")
    expect(page.locator(".rt-view-link a")).to_have_attribute(
        "href", f"{PER_RUN}?{selection_query(target.to_filters())}")
    expect(page.locator(".rt-message-error")).to_have_count(0)
    screenshot(page, "run-search-per-run")
