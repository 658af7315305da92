"""The run search box of the filter bar: on its own over a run table, and on the pages over the hand-made fleet."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import ipywidgets as widgets
import pandas as pd
import pytest

from runtool.errors import RuntoolError
from runtool.models import LEVELS, Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.services.run_search import RunIndex, RunSearchResult
from runtool.ui import CoveragePage, PerRunPage
from runtool.ui.components import FilterBar
from runtool.ui.query import COVERAGE, PER_RUN, run_url

from .conftest import FLEET
from .widget_tree import with_class

RUNS = [spec.coordinate for spec in FLEET]
LB01_RUN = RUNS[1]  # c1/r1/f1/t1/lb01/2025_08_03T09:30:00Z


def run_table() -> pd.DataFrame:
    frame = pd.DataFrame([c.to_dict() for c in RUNS])
    frame["start_time"] = [c.start_time for c in RUNS]
    return frame.sort_values([*LEVELS, "start_time"], ignore_index=True)


def options(filters: Filters) -> Mapping[str, list[str]]:
    """Filter options over RUNS, as DataStateService.filter_options answers them."""
    rows = [c.to_dict() for c in RUNS]
    found: dict[str, list[str]] = {}
    for level in LEVELS:
        found[level] = sorted({row[level] for row in rows})
        value = getattr(filters, level)
        if value is not None:
            rows = [row for row in rows if row[level] == value]
    return found


@pytest.fixture
def selected() -> list[Filters]:
    return []


def make_bar(selected: list[Filters], page: object = COVERAGE) -> FilterBar:
    bar = FilterBar(options, search=RunIndex(run_table()).search, page=page)  # type: ignore[arg-type]
    bar.on_change(selected.append)
    return bar


def labels(bar: FilterBar) -> list[str]:
    return [str(child.description) for child in bar.search_results.children if isinstance(child, widgets.Button)]


def test_without_a_search_the_bar_has_no_search_box() -> None:
    bar = FilterBar(options)
    assert bar.search_box is None
    assert with_class(bar.widget, "rt-run-search") == []
    assert with_class(bar.widget, "rt-filter-bar") == [bar.widget]


def test_a_laser_box_name_lists_the_laser_box_then_its_runs(selected: list[Filters]) -> None:
    bar = make_bar(selected)
    assert bar.search_box is not None and "paste" in bar.search_box.placeholder
    bar.search("lb02")
    assert labels(bar) == [
        "Laser box c1/r1/f1/t1/lb02 · 2 runs",
        "Run c1/r1/f1/t1/lb02 · 2025-08-02 07:00",
        "Run c1/r1/f1/t1/lb02 · 2025-08-06 07:00",
    ]
    assert with_class(bar.widget, "rt-run-search-hit")
    assert selected == [] and bar.search_text == ""


def test_picking_a_level_set_sets_the_levels_down_to_it(selected: list[Filters]) -> None:
    bar = make_bar(selected)
    bar.search("f1/t2")
    bar.search_results.children[0].click()  # type: ignore[attr-defined]
    assert selected == [Filters("c1", "r1", "f1", "t2")]
    assert bar.dropdowns["twid"].value == "t2" and bar.dropdowns["lbid"].value == ""
    assert bar.search_results.children == () and bar.search_hits == ()
    assert bar.search_text == "Showing TW c1/r1/f1/t2."


def test_a_pasted_coordinate_opens_its_run_at_once(selected: list[Filters]) -> None:
    bar = make_bar(selected)
    bar.search(f"gs://fleet-raw/{LB01_RUN}/rosbag/_2025-08-03-09-30-25_0.bag\n")
    assert selected == [LB01_RUN.to_filters()]
    assert bar.dropdowns["lbid"].value == "lb01"
    assert bar.search_text == "Run lb01 · 2025-08-03 09:30: its laser box is selected. Open the run on the per-run page"
    assert f'href="{run_url(LB01_RUN)}"' in bar.search_status.value.replace("&amp;", "&")
    # The same run again (the text completed by one more character) does not redraw the page again.
    bar.search(str(LB01_RUN))
    assert len(selected) == 1


def test_on_the_per_run_page_a_run_is_shown_there_without_a_link(selected: list[Filters]) -> None:
    bar = make_bar(selected, PER_RUN)
    assert bar.search_box is not None and "opens on this page" in bar.search_box.tooltip
    bar.search(str(LB01_RUN))
    assert selected == [LB01_RUN.to_filters()]
    assert bar.search_text == "Run lb01 · 2025-08-03 09:30 is shown." and "href" not in bar.search_status.value


def test_enter_picks_the_first_match(selected: list[Filters]) -> None:
    bar = make_bar(selected)
    bar.search("lb03")
    assert bar.search_box is not None
    bar.search_box._handle_custom_msg({"event": "submit"}, [])  # what the browser sends on Enter
    assert selected == [Filters("c1", "r1", "f1", "t2", "lb03")]


def test_text_that_matches_nothing_says_so(selected: list[Filters]) -> None:
    bar = make_bar(selected)
    bar.search("lb0")
    assert labels(bar)
    bar.search("lb99")
    assert bar.search_text == "No run matches “lb99”."
    bar.search("x" * 500)
    assert bar.search_text == f"No run matches “{'x' * 59}…”."
    assert bar.search_results.children == ()
    bar.search("  ")
    assert bar.search_text == "" and selected == []


@pytest.mark.parametrize("text", ["lb01\u202e", "lb\u200b01", "lb\x1b01"])
def test_control_and_format_characters_are_refused_next_to_the_box(selected: list[Filters], text: str) -> None:
    bar = make_bar(selected)
    bar.search(text)
    assert "control or invisible format character" in bar.search_text
    assert "Traceback" not in bar.search_status.value
    assert with_class(bar.widget, "rt-run-search-status")[0].value.startswith('<span class="rt-run-search-error">')
    assert selected == [] and bar.search_results.children == ()


def test_a_search_bug_is_a_sentence_next_to_the_box_and_a_logged_traceback(
    selected: list[Filters], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_text: str) -> RunSearchResult:
        raise KeyError("cid")

    bar = FilterBar(options, search=broken)
    with caplog.at_level(logging.ERROR):
        bar.search("lb01")
    assert bar.search_text == "The search failed unexpectedly (KeyError). Try other text."
    assert "run search for 'lb01' failed" in caplog.text and "Traceback" in caplog.text


def test_an_expected_error_is_shown_as_its_sentence(selected: list[Filters]) -> None:
    def no_inventory(_text: str) -> RunSearchResult:
        raise RuntoolError("There are no runs to search yet: the buckets have not been scanned.")

    bar = FilterBar(options, search=no_inventory)
    bar.search("lb01")
    assert bar.search_text == "There are no runs to search yet: the buckets have not been scanned."


def test_many_matches_list_a_few_and_count_the_rest() -> None:
    many = [RunCoordinate("c", "r", "f", "t", f"LB_{i:04d}", f"2025_09_{1 + i % 28:02d}T08:00:00Z") for i in range(60)]
    frame = pd.DataFrame([c.to_dict() for c in many])
    bar = FilterBar(options, search=RunIndex(frame).search)
    bar.search("LB_00")
    assert len(labels(bar)) == 20
    more = with_class(bar.widget, "rt-run-search-more")[0]
    assert more.value == "…and 50 more runs and 50 more clients, fields or laser boxes: type more of the coordinate " \
                         "to narrow the list."
    # The buttons are reused from search to search, not made anew.
    buttons = list(bar.search_results.children[:20])
    bar.search("LB_001")
    assert list(bar.search_results.children[:10]) == buttons[:10]


# -- on the pages -------------------------------------------------------------------------------------


def test_the_coverage_page_shows_the_searched_runs_laser_box(services: ServiceContainer) -> None:
    page = CoveragePage(services, query="")
    assert page.view == "aggregated"
    page.filter_bar.search(str(LB01_RUN))
    assert page.filters == LB01_RUN.to_filters()
    assert page.view == "single"
    assert f"timestamp={LB01_RUN.timestamp}" in page.header.nav.value  # the Per-run link opens the run
    page.filter_bar.search("t2")
    page.filter_bar.search_results.children[0].click()  # type: ignore[attr-defined]
    assert page.filters == Filters("c1", "r1", "f1", "t2")


def test_the_per_run_page_opens_the_searched_run(services: ServiceContainer) -> None:
    page = PerRunPage(services, query="cid=c1&regionid=r1&fieldid=f1&twid=t1&lbid=lb02")
    page.filter_bar.search(f"raw/{LB01_RUN}/rosbag/_2025-08-03-09-30-25_0/labels/1.txt")
    assert page.view == "run" and page.coordinate == LB01_RUN
    assert page.run_picker.value == LB01_RUN.timestamp
    assert not [m for m in page.messages.messages if m.level != "info"]


def test_a_page_without_inventory_says_so_next_to_the_box(empty_config: object) -> None:
    page = CoveragePage(ServiceContainer(empty_config, read_only=True), query="")  # type: ignore[arg-type]
    page.filter_bar.search("lb01")
    assert page.filter_bar.search_text == "There are no runs to search yet: the buckets have not been scanned."


def test_changing_a_level_by_hand_clears_what_the_box_said(selected: list[Filters]) -> None:
    bar = make_bar(selected)
    bar.search(str(LB01_RUN))
    assert bar.search_text
    bar.search("lb0")
    bar.select("lbid", "lb02")
    assert bar.search_text == "" and bar.search_results.children == ()
    assert selected[-1] == Filters("c1", "r1", "f1", "t1", "lb02")
