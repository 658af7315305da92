"""Reading the selection from the page URL and writing it into links."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtool.models import Filters, RunCoordinate
from runtool.ui.query import (
    COVERAGE,
    PER_RUN,
    QuerySelection,
    known_selection,
    page_url,
    query_parameters,
    read_selection,
    run_url,
    selection_query,
)


def test_a_valid_query_gives_the_selection() -> None:
    selection = read_selection("cid=c1&regionid=r1&lbid=lb01")
    assert selection.filters == Filters(cid="c1", regionid="r1", lbid="lb01")
    assert selection.error is None


def test_blank_all_and_foreign_keys_are_ignored() -> None:
    selection = read_selection("?cid=c1&regionid=All&fieldid=&voila-theme=dark")
    assert selection.filters == Filters(cid="c1")
    assert selection.error is None


@pytest.mark.parametrize("query", ["cid=a%2Fb", "cid=..&regionid=r1"])
def test_an_invalid_client_falls_back_to_all_with_a_sentence(query: str) -> None:
    selection = read_selection(query)
    assert selection.filters == Filters()
    assert selection.error is not None
    assert selection.error.startswith("The client in the link could not be used (cid ")
    assert selection.error.endswith("so all data is shown instead.")


@pytest.mark.parametrize("character", ["%E2%80%AE", "%E2%80%8B", "%1B", "%C2%9B"])
def test_a_format_or_control_character_in_a_link_is_refused_and_not_echoed_raw(character: str) -> None:
    selection = read_selection(f"cid=c1&regionid=region{character}&fieldid=f1")
    assert selection.filters == Filters(cid="c1")
    assert selection.error is not None
    assert selection.error.startswith("The region in the link could not be used (regionid 'region\\")
    assert "has surrounding blanks, control or format characters), so c1 → All is shown instead." in selection.error
    assert selection.error.isprintable()


def test_an_invalid_level_keeps_the_levels_above_it_and_drops_those_below() -> None:
    selection = read_selection("cid=c1&regionid=..&fieldid=f1")
    assert selection.filters == Filters(cid="c1")
    assert selection.error == (
        "The region in the link could not be used (regionid '..' is not allowed), so c1 → All is shown instead."
    )


@pytest.mark.parametrize("timestamp", ["yesterday", "2025_13_45T08:59:38Z", "2025_08_25 08:59:38"])
def test_a_malformed_run_time_keeps_the_laser_box_and_says_what_was_wrong(timestamp: str) -> None:
    laser_box = Filters(cid="c1", regionid="r1", fieldid="f1", twid="t1", lbid="lb01")
    selection = read_selection(f"{selection_query(laser_box)}&timestamp={timestamp}")
    assert selection.filters == laser_box
    assert selection.error is not None
    assert selection.error.startswith(f"The run time in the link could not be used (bad timestamp {timestamp!r}")
    assert selection.error.endswith("so c1 → r1 → f1 → t1 → lb01 is shown instead.")


@pytest.mark.parametrize(("query", "shown", "said"), [
    ("lbid=%ff", Filters(), "The laser box in the link could not be used (lbid '%FF' has a percent-escape that is not "
                            "UTF-8 text), so all data is shown instead."),
    ("cid=c1&regionid=r%C3%28x&fieldid=f1", Filters(cid="c1"),
     "The region in the link could not be used (regionid 'r%C3%28x' has a percent-escape that is not UTF-8 text), "
     "so c1 → All is shown instead."),
])
def test_a_percent_escape_that_is_not_text_is_refused_and_named(query: str, shown: Filters, said: str) -> None:
    """``%ff`` was read as U+FFFD: the page selected a laser box "�" nobody typed."""
    selection = read_selection(query)
    assert selection.filters == shown
    assert selection.error == said


def test_a_percent_escaped_letter_is_read() -> None:
    assert read_selection("cid=caf%C3%A9").filters == Filters(cid="café")


OPTIONS = {"cid": ["c1", "c2"], "regionid": ["r1"], "fieldid": ["f1"], "twid": ["t1"], "lbid": ["lb01"]}
"""The inventory's options under c1 → r1 → f1 → t1."""


def test_level_values_the_inventory_holds_are_kept() -> None:
    filters = Filters(cid="c1", regionid="r1", lbid="lb01", timestamp="2025_08_25T08:59:38Z")
    assert known_selection(filters, OPTIONS) == QuerySelection(filters)


@pytest.mark.parametrize(("filters", "shown", "said"), [
    (Filters(cid="nobody"), Filters(),
     "The client 'nobody' in the link matches nothing in the inventory, so all data is shown instead."),
    (Filters(cid="c1", regionid="nope", fieldid="f1", lbid="lb01", timestamp="2025_08_25T08:59:38Z"), Filters(cid="c1"),
     "The region 'nope' in the link matches nothing in the inventory under c1, so c1 → All is shown instead."),
    (Filters(cid="c1", regionid="r1", fieldid="f1", twid="t1", lbid="LB_9"), Filters(cid="c1", regionid="r1",
                                                                                      fieldid="f1", twid="t1"),
     "The laser box 'LB_9' in the link matches nothing in the inventory under c1 → r1 → f1 → t1, so "
     "c1 → r1 → f1 → t1 → All is shown instead."),
])
def test_a_level_value_the_inventory_lacks_falls_back_and_is_named(filters: Filters, shown: Filters, said: str) -> None:
    selection = known_selection(filters, OPTIONS)
    assert selection.filters == shown
    assert selection.error == said


def test_the_default_query_is_voilas_query_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUERY_STRING", "cid=c9")
    assert read_selection().filters == Filters(cid="c9")
    monkeypatch.delenv("QUERY_STRING")
    assert read_selection().filters == Filters()


def test_links_carry_the_selection_top_down() -> None:
    assert page_url(COVERAGE, Filters()) == "01_temporal_coverage.ipynb"
    assert page_url(COVERAGE, Filters(cid="c1", twid="t1")) == "01_temporal_coverage.ipynb?cid=c1&twid=t1"
    coordinate = RunCoordinate("c1", "r1", "f1", "t1", "lb01", "2025_08_25T08:59:38Z")
    assert run_url(coordinate) == (
        "02_per_run_analysis.ipynb?cid=c1&regionid=r1&fieldid=f1&twid=t1&lbid=lb01&timestamp=2025_08_25T08:59:38Z"
    )
    assert run_url(coordinate, PER_RUN) == run_url(coordinate)
    assert page_url(COVERAGE, Filters(cid="c1"), {"expected_samples": "8"}) == (
        "01_temporal_coverage.ipynb?cid=c1&expected_samples=8"
    )


def test_query_parameters_keep_the_first_of_repeated_values() -> None:
    assert query_parameters("?a=1&b=&a=2") == {"a": "1", "b": ""}


_part = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs"), blacklist_characters="/\\"), min_size=1, max_size=12
).filter(lambda s: s == s.strip() and s not in (".", "..", "All"))


@given(cid=_part, lbid=_part)
def test_a_selection_survives_the_round_trip_through_a_link(cid: str, lbid: str) -> None:
    filters = Filters(cid=cid, lbid=lbid, timestamp="2025-08-25T08:59:38Z")
    assert read_selection(selection_query(filters)).filters == filters
