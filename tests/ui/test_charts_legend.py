"""The heatmap's colour legend says in words the colours its cells get, and its bar shows those colours."""

from __future__ import annotations

import re
from datetime import date

import pytest

from runtool.models import LaserBoxDay
from runtool.ui.coverage_calendar import FleetCalendar, coverage_legend
from runtool.ui.theme import COVERAGE_AMBER, COVERAGE_COLOUR_NAMES, COVERAGE_GREEN, COVERAGE_RED


def note(threshold: float) -> str:
    found = re.search(r'<span class="rt-legend-note">(.*?)</span>', coverage_legend(threshold))
    assert found is not None
    return found.group(1)


def cell_colour(pct: float, threshold: float) -> str:
    """The background of a heatmap cell of one run at ``pct`` % with bags."""
    cell = LaserBoxDay(lb_key="a/b/c/d/e", day=date(2025, 9, 1), raw_bags=10, ml_labels=int(pct * 1.7), runs=1,
                       coverage_pct=pct, only_run=None)
    found = re.search(r"background:(#[0-9a-f]{6})", FleetCalendar._cell(cell, "e", threshold, None))
    assert found is not None
    return found.group(1)


def test_the_words_name_the_colours_of_the_cells_at_the_ends_of_each_range() -> None:
    # An under-labelled cell runs from red at 0 % to amber at the threshold; the legend said "(amber)" for all of them.
    assert cell_colour(0.0, 80.0) == COVERAGE_RED
    assert cell_colour(40.0, 80.0) not in (COVERAGE_AMBER, COVERAGE_RED)
    assert cell_colour(80.0, 80.0) == COVERAGE_AMBER
    assert cell_colour(100.0, 80.0) == COVERAGE_GREEN
    names = COVERAGE_COLOUR_NAMES
    assert note(80.0) == (f"{names[COVERAGE_RED]} → {names[COVERAGE_AMBER]}: under-labelled, below 80 % · "
                          f"{names[COVERAGE_AMBER]} → {names[COVERAGE_GREEN]}: 80–100 %")
    assert "(amber)" not in coverage_legend(80.0)


@pytest.mark.parametrize(("threshold", "words"), [
    (50.0, "red → amber: under-labelled, below 50 % · amber → green: 50–100 %"),
    (0.0, "amber → green: 0–100 %"),  # nothing is under-labelled
    (100.0, "red → amber: under-labelled, below 100 % · amber: 100 %"),  # a full run is amber, never green
])
def test_the_words_follow_the_threshold(threshold: float, words: str) -> None:
    assert note(threshold) == words
    assert cell_colour(100.0, threshold) == (COVERAGE_AMBER if threshold == 100 else COVERAGE_GREEN)


@pytest.mark.parametrize("threshold", [0.0, 30.0, 80.0, 100.0])
def test_the_bar_shows_the_colours_cells_get_at_its_stops(threshold: float) -> None:
    found = re.search(r"linear-gradient\(to right, ([^)]*)\)", coverage_legend(threshold))
    assert found is not None
    stops = [part.strip().split(" ") for part in found.group(1).split(",")]
    for colour, at in stops:
        assert colour == cell_colour(float(at.rstrip("%")), threshold), f"the bar at {at}"
