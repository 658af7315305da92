"""The first slices of the per-run and download-manager pages over the hand-made fleet."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from runtool.models import Filters
from runtool.services import ServiceContainer
from runtool.ui import CoveragePage, DownloadManagerPage, PerRunPage
from runtool.ui.fleet_kpis import FleetKpiPage
from runtool.ui.page import Page

from .conftest import FLEET, LB01

LB01_QUERY = "cid=c1&regionid=r1&fieldid=f1&twid=t1&lbid=lb01"


def test_the_run_picker_lists_the_laser_boxs_runs_newest_first(services: ServiceContainer) -> None:
    page = PerRunPage(services, query=LB01_QUERY)
    newest_first = sorted((s.timestamp for s in FLEET if s.lb == LB01), reverse=True)
    assert [value for _, value in page.run_picker.options] == newest_first
    assert page.run_picker.options[0][0] == "2025-08-05 10:00"
    # Without a run in the link the newest is shown, and the link now names it.
    assert page.filters.timestamp == newest_first[0]
    assert f"timestamp={newest_first[0]}" in page.view_link.value


def test_a_run_from_a_link_shows_its_state_and_next_step(services: ServiceContainer) -> None:
    page = PerRunPage(services, query=f"{LB01_QUERY}&timestamp=2025_08_03T09:30:00Z")
    assert page.view == "run"
    assert page.run_picker.value == "2025_08_03T09:30:00Z"
    assert page.run_state is not None
    assert (page.run_state.cloud_raw.bag_count, page.run_state.cloud_ml.label_count) == (3, 3)
    assert page.next_action_text == "Preview download of 3 bags"
    cards = [card.value for card in page.cards.children]
    assert len(cards) == 4
    assert "Raw: 3 bags" in cards[0] and "not downloaded" in cards[1]
    assert "not extracted" in cards[2] and "not analysed" in cards[3]
    page.run_picker.value = "2025_08_01T08:00:00Z"
    assert page.filters.timestamp == "2025_08_01T08:00:00Z"
    assert page.run_state.cloud_raw.bag_count == 2


def test_the_run_page_asks_for_a_laser_box_first(services: ServiceContainer) -> None:
    page = PerRunPage(services, query="cid=c1")
    assert page.view == "empty"
    assert page.empty_text == ("Pick a region, field, TW and laser box to list the runs, or type part of a run's "
                               "coordinate in the search box.")
    assert PerRunPage(services, query="").empty_text.startswith("Pick a client, region, field, TW and laser box ")
    assert PerRunPage(services, query="cid=c1&regionid=r1&fieldid=f1&twid=t1").empty_text.startswith(
        "Pick a laser box to list the runs")
    # Disabled, and saying so in its own box (disabled and empty, it looked usable).
    assert page.run_picker.disabled and page.run_picker.label == "Pick a laser box first"
    # Picking the laser box fills it.
    page.set_filters(page.filters.replace(regionid="r1", fieldid="f1", twid="t1", lbid="lb01"))
    assert not page.run_picker.disabled and page.run_picker.label == "2025-08-05 10:00"


def test_a_link_that_skips_levels_above_its_laser_box_says_which_it_gave(services: ServiceContainer) -> None:
    """?lbid=lb01 named a laser box, yet the page asked to "Pick a client, …" as if the link had named nothing."""
    page = PerRunPage(services, query="lbid=lb01")
    assert page.view == "empty"
    assert page.empty_text == ("The link names laser box lb01 but not its client, region, field and TW. Pick a "
                               "client, region, field and TW to list the runs, or type part of a run's coordinate in "
                               "the search box.")
    page = PerRunPage(services, query="cid=c1&lbid=lb01")
    assert page.empty_text.startswith("The link names client c1 and laser box lb01 but not its region, field and "
                                      "TW. Pick a region, field and TW to list the runs")
    # A selection made on the page is not the link's.
    page.set_filters(Filters(twid="t1", lbid="lb01"))
    assert page.empty_text.startswith("The selection names TW t1 and laser box lb01 but not its client, region and "
                                      "field. Pick a client, region and field to list the runs")


INJECTED = '<img src=x onerror="window.pwned=1">'


@pytest.mark.parametrize("page_class", [CoveragePage, PerRunPage, DownloadManagerPage, FleetKpiPage])
def test_the_empty_state_shows_a_selections_values_as_text(services: ServiceContainer, page_class: type[Page]) -> None:
    """A link's ?cid=<img onerror=…> reached the empty state's HTML unescaped on three pages: its script ran in the
    viewer's browser (hostile review of the served app)."""
    page = page_class(services, query="")
    page.set_filters(Filters(cid=INJECTED, lbid=INJECTED))
    assert page.view == "empty" and INJECTED in page.empty_text
    assert "<img" not in page.empty_state.value and "&lt;img" in page.empty_state.value
    # The per-run page's sentence about the levels a link skipped names its values too.
    linked = page_class(services, query=f"cid=c1&lbid={quote(INJECTED)}")
    assert "<img" not in linked.empty_state.value
