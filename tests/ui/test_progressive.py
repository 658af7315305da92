"""Progressive pages: light parts first, heavy parts (charts, the grid) once the browser says it has drawn.

The browser's message is what a real page's DrawnSignal view sends (tests/browser/test_serving.py checks it comes
from a real browser); here it is delivered by hand, to test the kernel side alone.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runtool.models import LEVELS, Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.ui import CoveragePage, DownloadManagerPage, FleetKpiPage, PerRunPage, serving
from runtool.ui.drawn import DrawnSignal
from runtool.ui.page import Page
from runtool.ui.query import selection_query
from runtool.ui.snapshot import snapshot_html
from tests.conftest import write_toml
from tests.ui.widget_tree import descendants

DRAWN = {"event": "drawn"}
LOADING = {"event": "loading"}


def _browser_drew(signal: DrawnSignal | None) -> None:
    assert signal is not None
    signal._message(signal, DRAWN, [])


def test_a_page_built_directly_is_complete_at_once(services: ServiceContainer) -> None:
    page = CoveragePage(services=services)
    assert page.drawn and page.drawn_signal is None
    assert page.aggregated is not None and page.aggregated.widget in descendants(page.widget)


def test_a_progressive_coverage_page_draws_its_charts_after_the_browser_drew_the_rest(
    services: ServiceContainer,
) -> None:
    page = CoveragePage(services=services, progressive=True)
    assert not page.drawn
    assert page.kpis["Laser boxes"] != "" and page.view == "aggregated"
    tree = descendants(page.widget)
    assert page.drawing_note in tree and page.aggregated is None
    assert page.drawn_signal in tree

    _browser_drew(page.drawn_signal)

    assert page.drawn and page.aggregated is not None
    tree = descendants(page.widget)
    assert page.aggregated.widget in tree and page.drawing_note not in tree


def test_the_browser_message_draws_once(services: ServiceContainer) -> None:
    page = CoveragePage(services=services, progressive=True)
    _browser_drew(page.drawn_signal)
    charts = page.aggregated
    _browser_drew(page.drawn_signal)
    assert page.aggregated is charts


def test_other_messages_are_ignored(services: ServiceContainer) -> None:
    page = CoveragePage(services=services, progressive=True)
    assert page.drawn_signal is not None
    page.drawn_signal._message(page.drawn_signal, {"event": "something else"}, [])
    page.drawn_signal._message(page.drawn_signal, "drawn", [])
    assert not page.drawn and page.aggregated is None


def test_without_word_from_the_browser_the_fallback_draws_the_page(
    services: ServiceContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNTOOL_DRAWN_FALLBACK_S", "0.2")
    page = DownloadManagerPage(services=services, progressive=True)
    time.sleep(0.5)  # nothing waits before the page is sent
    # Not even created: its model (and the grid's JavaScript) would reach the browser before the first paint.
    assert page.view == "table" and not page.grid.created
    page.sent()
    assert page.actions is None  # built once drawn
    deadline = time.monotonic() + 10
    # The grid first, then the operations (built after it in the same redraw, on the fallback's thread).
    while page.actions is None or not (page.grid.created and page.grid.grid in descendants(page.widget)):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert page.drawn
    assert page.grid.grid in descendants(page.widget) and page.drawing_note not in descendants(page.widget)
    assert page.actions in descendants(page.widget)
    assert len(page.grid.rows) > 0


def test_the_fallback_clock_starts_only_when_armed() -> None:
    fired = threading.Event()
    signal = DrawnSignal(fired.set, fallback_s=0.05)
    time.sleep(0.2)
    assert not fired.is_set()
    signal.arm()
    assert fired.wait(5)


def test_a_browser_loading_the_page_gets_the_longer_fallback() -> None:
    """A slow browser still loading the page's widgets must not have the heavy parts built under it."""
    fired = threading.Event()
    signal = DrawnSignal(fired.set, fallback_s=0.2, loading_fallback_s=1.5)
    signal.arm()
    signal._message(signal, LOADING, [])
    assert not fired.wait(0.8)  # the short clock would have gone off by now
    assert fired.wait(5)
    signal._message(signal, DRAWN, [])  # the browser's word after the fallback changes nothing
    assert signal.fired


def test_the_browser_word_while_loading_draws_at_once() -> None:
    fired = threading.Event()
    signal = DrawnSignal(fired.set, fallback_s=60, loading_fallback_s=60)
    signal.arm()
    signal._message(signal, LOADING, [])
    signal._message(signal, DRAWN, [])
    assert fired.is_set()


# -- a preheated kernel builds the page of a link without a query before the viewer comes ------------------


@pytest.mark.parametrize(("query", "refresh", "reused"),
                         [("", False, True), ("cid=c1", False, True),
                          ("cid=c1&expected_samples=3", False, False), ("", True, False)])
def test_a_preheated_kernel_builds_the_plain_page_before_the_request(
    services: ServiceContainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, query: str, refresh: bool,
    reused: bool,
) -> None:
    """The page built before the request is the viewer's, with the link's selection set on it, unless the link has
    page settings too or the inventory cache was replaced meanwhile. Voila's wait for the request is replaced by
    setting the query it would set (the browser tests run the real one: tests/browser/test_serving.py)."""
    monkeypatch.setenv("RUNTOOL_CONFIG", str(write_toml(services.config, tmp_path / "runtool.toml")))
    monkeypatch.setenv("VOILA_PREHEAT", "True")
    monkeypatch.setenv("RUNTOOL_DRAWN_FALLBACK_S", "3600")
    built: list[CoveragePage] = []

    class Counted(CoveragePage):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    def viewer_asks() -> None:
        # Built, not sent: the fallback clock is not running while the kernel waits.
        assert len(built) == 1 and built[0].drawn_signal is not None and built[0].drawn_signal._timer is None
        if refresh:
            services.inventory.refresh()  # another viewer's refresh, or the CLI's
        monkeypatch.setenv("QUERY_STRING", query)

    monkeypatch.setattr(serving, "wait_for_viewer", viewer_asks)
    page = serving.open_page(Counted)
    assert (page is built[0]) is reused and len(built) == (1 if reused else 2)
    assert page.filters.cid == ("c1" if query else None)
    assert page.drawn_signal is not None and page.drawn_signal._timer is not None  # armed once sent
    page.drawn_signal.fire()


def test_a_download_while_the_kernel_waited_shows_on_the_page_built_before(
    services: ServiceContainer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Local copies change without an inventory refresh (the CLI downloads a run): the page built before the
    request must not show them as they were."""
    monkeypatch.setenv("RUNTOOL_CONFIG", str(write_toml(services.config, tmp_path / "runtool.toml")))
    monkeypatch.setenv("VOILA_PREHEAT", "True")
    monkeypatch.setenv("RUNTOOL_DRAWN_FALLBACK_S", "3600")
    runs = services.data_state.all_runs()
    coord = RunCoordinate(*(str(runs[runs["raw_bags"] > 0].iloc[0][level]) for level in (*LEVELS, "timestamp")))
    before = DownloadManagerPage(services=services).kpis["Bags cloud / local"]

    def download_meanwhile() -> None:
        services.transfers.execute(services.transfers.plan_raw_download(coord))
        monkeypatch.setenv("QUERY_STRING", "")

    monkeypatch.setattr(serving, "wait_for_viewer", download_meanwhile)
    page = serving.open_page(DownloadManagerPage)
    local = int(page.kpis["Bags cloud / local"].split(" / ")[1].replace(",", ""))
    assert local == int(before.split(" / ")[1].replace(",", "")) + int(runs[runs["raw_bags"] > 0].iloc[0]["raw_bags"])
    assert page.drawn_signal is not None
    page.drawn_signal.fire()


@pytest.mark.parametrize("page_class", [CoveragePage, PerRunPage, DownloadManagerPage, FleetKpiPage])
@pytest.mark.parametrize("depth", [1, 5, 6, 0])
def test_a_selection_set_on_the_preheated_page_shows_what_a_page_built_for_it_shows(
    services: ServiceContainer, page_class: type[Page], depth: int
) -> None:
    """A preheated page given the link's selection (serving.open_page) must be the page the link would build: same
    first screen, same selection, same links, same messages. Depth: a client, a laser box, a run; 0: a run's laser
    box and time only (a link that skips levels: completed to the one run that matches)."""
    runs = services.data_state.all_runs()
    coord = RunCoordinate(*(str(runs.iloc[len(runs) // 2][level]) for level in (*LEVELS, "timestamp")))
    filters = (Filters(**dict(list(coord.to_filters().to_dict().items())[:depth])) if depth
               else Filters(lbid=coord.lbid, timestamp=coord.timestamp))
    query = selection_query(filters)
    assert serving.selects_only(query) and serving.selects_only(f"{query}&token=abc")
    built = page_class(services=services, query=query, progressive=True)
    reused = page_class(services=services, query="", progressive=True)
    reused.follow_link(filters)  # what serving.open_page does with the link's selection
    assert reused.filters == built.filters  # the per-run page picks a laser box's newest run
    assert {k: v for k, v in built.filters.to_dict().items() if k in filters.to_dict()} == filters.to_dict()
    if depth in (0, 6):
        assert built.filters == coord.to_filters()
    assert snapshot_html(reused.widget) == snapshot_html(built.widget)
    for page in (built, reused):
        assert page.drawn_signal is not None
        page.drawn_signal.fire()
    assert snapshot_html(reused.widget) == snapshot_html(built.widget)


def test_a_query_with_page_settings_is_not_a_selection_only() -> None:
    assert not serving.selects_only("cid=c1&E=3") and not serving.selects_only("family=ml")
    assert serving.selects_only("") and serving.selects_only("cid=c1&regionid=r1&token=t")
