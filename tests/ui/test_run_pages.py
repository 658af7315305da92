"""The first slices of the per-run and download-manager pages over the hand-made fleet."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from runtool.demo.emulator import Emulator
from runtool.models import Filters
from runtool.services import ServiceContainer
from runtool.storage import make_client
from runtool.ui import CoveragePage, DownloadManagerPage, PerRunPage
from runtool.ui.fleet_kpis import FleetKpiPage
from runtool.ui.page import Page

from .conftest import FLEET, LB01, RunSpec, _new_buckets, make_config, seed

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


def test_a_link_that_skips_levels_above_its_laser_box_says_which_it_gave(twin_services: ServiceContainer) -> None:
    """?lbid=lb01 named a laser box, yet the page asked to "Pick a client, …" as if the link had named nothing.
    (Two laser boxes are called lb01 here: a unique one is filled in.)"""
    services = twin_services
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


@pytest.mark.parametrize("page_class", [CoveragePage, PerRunPage, DownloadManagerPage, FleetKpiPage])
@pytest.mark.parametrize("query", ["lbid=lb01", "cid=c1&lbid=lb01", "twid=t2"])
def test_a_link_that_skips_levels_is_completed_when_one_place_matches(services: ServiceContainer,
                                                                      page_class: type[Page], query: str) -> None:
    """``?lbid=LB_0001`` alone, its laser box unique in the fleet, showed "pick a client, region, field and TW"
    (or, on the coverage page, a view without the levels above it): the page fills them in."""
    page = page_class(services, query=query)
    expected = {"lbid=lb01": Filters(cid="c1", regionid="r1", fieldid="f1", twid="t1", lbid="lb01"),
                "cid=c1&lbid=lb01": Filters(cid="c1", regionid="r1", fieldid="f1", twid="t1", lbid="lb01"),
                "twid=t2": Filters(cid="c1", regionid="r1", fieldid="f1", twid="t2")}[query]
    assert page.filters.replace(timestamp=None) == expected
    assert [m.text for m in page.messages.messages] == []


@pytest.fixture
def twin_services(emulator: Emulator, tmp_path: Path) -> ServiceContainer:
    """The hand-made fleet plus a laser box lb01 in a second field (two laser boxes called lb01)."""
    client = make_client(emulator_host=emulator.url)
    raw, ml = _new_buckets(client, "twins")
    seed(client, raw, ml, (*FLEET, RunSpec("c1/r1/f2/t1/lb01", "2025_08_07T08:00:00Z", bags=1, labels=4, frames=4)))
    container = ServiceContainer(make_config(tmp_path, emulator.url, raw, ml))
    container.inventory.refresh()
    return container


@pytest.mark.parametrize("page_class", [CoveragePage, PerRunPage, DownloadManagerPage, FleetKpiPage])
def test_a_link_to_a_laser_box_name_shared_by_two_says_so_and_lists_them(twin_services: ServiceContainer,
                                                                        page_class: type[Page]) -> None:
    page = page_class(twin_services, query="lbid=lb01")
    assert page.filters == Filters(lbid="lb01")  # not guessed
    (message,) = page.messages.messages
    assert message.level == "warning"
    assert message.text == ("The link names laser box lb01 but not its client, region, field and TW, and 2 laser "
                            "boxes are called lb01: c1/r1/f1/t1/lb01 and c1/r1/f2/t1/lb01. Pick one in the filters "
                            "above, or add its levels to the link.")
