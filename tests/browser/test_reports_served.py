"""Reports served by the app, in a real chromium: the per-run page's "Open report" opens the report in a new tab.

The server runs read-only under a base URL: a viewer who cannot render reports opens the one rendered before
(with `runtool report`, here its service), and the page's relative link works under a reverse-proxy prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from runtool.models import RunCoordinate
from runtool.services import ServiceContainer
from runtool.ui.query import selection_query
from tests.browser.conftest import Contexts, VoilaServer, screenshot
from tests.ui.test_per_run_page import pick_run

pytestmark = pytest.mark.browser

PER_RUN = "02_per_run_analysis.ipynb"
BASE_URL = "/team/"
WAIT_S = 60.0


def assert_report_opens(page: Any, path: Path | None, coord: RunCoordinate) -> Any:
    """Clicking "Open report" opens the report itself in a new tab; returns that tab."""
    assert path is not None
    link = page.locator("a.rt-open-report").first
    expect(link).to_have_text("Open report", timeout=WAIT_S * 1000)
    assert link.get_attribute("target") == "_blank"
    with page.context.expect_page() as opened:
        link.click()
    tab = opened.value
    tab.wait_for_load_state()
    title = re.search(r"<title>([^<]+)</title>", path.read_text(encoding="utf-8"))
    assert title and tab.title() == title.group(1) == "Run report"
    expect(tab.locator(".rt-coordinate")).to_have_text(str(coord))
    expect(tab.locator("img").first).to_be_visible()  # the embedded figures load under the report's CSP
    return tab


@pytest.fixture(scope="module")
def reader(config_path: Path) -> Iterator[VoilaServer]:
    """A read-only server under :data:`BASE_URL`."""
    server = VoilaServer(config_path, True, "--base-url", BASE_URL)
    yield server
    server.stop()


def test_open_report_opens_the_served_report_in_a_new_tab_on_a_read_only_server(
    contexts: Contexts, reader: VoilaServer, services: ServiceContainer,
) -> None:
    coord = pick_run(services, bags=2)
    report = services.reports.render(coord).html  # what `runtool report COORD` does
    page = contexts.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{reader.base}{BASE_URL}voila/render/{PER_RUN}?{selection_query(coord.to_filters())}")
    page.wait_for_selector(".rt-page-per-run", state="visible")
    expect(page.locator(".rt-view-run")).to_be_visible(timeout=WAIT_S * 1000)
    expect(page.locator("button.rt-report")).to_have_count(0)
    expect(page.locator(".rt-report-link")).to_contain_text(re.compile(r"rendered .+ UTC"))
    expect(page.locator(".rt-report-link a[href^='data:']")).to_have_count(0)
    screenshot(page, "reports-served-per-run")
    tab = assert_report_opens(page, report, coord)
    assert tab.url.startswith(f"{reader.base}{BASE_URL}runtool/reports/")
    tab.screenshot(path=str(Path(__file__).resolve().parents[2] / "test-artifacts" / "reports-served-report.png"))
    # The laser box's list is one click further, and links back to the same report.
    with page.context.expect_page() as opened:
        page.locator(".rt-report-link a", has_text="All reports of this laser box").click()
    index = opened.value
    index.wait_for_load_state()
    expect(index.locator("td code")).to_have_text([str(coord)])
    expect(index.locator("a", has_text=report.name)).to_have_count(1)
