"""The coverage colour scale and the sync-status styles."""

from __future__ import annotations

import pytest

from runtool.models import SyncStatus
from runtool.ui.theme import (
    COVERAGE_AMBER,
    COVERAGE_GREEN,
    COVERAGE_NONE,
    COVERAGE_RED,
    SYNC_STYLES,
    coverage_colour,
    coverage_stops,
    sync_style,
)


def test_the_scale_is_red_at_zero_amber_at_the_threshold_and_green_at_full() -> None:
    assert coverage_colour(0, 80) == COVERAGE_RED
    assert coverage_colour(80, 80) == COVERAGE_AMBER
    assert coverage_colour(100, 80) == COVERAGE_GREEN


@pytest.mark.parametrize(
    ("pct", "colour"),
    [
        # Halfway red (211, 47, 47) → amber (255, 179, 0): (233, 113, 23.5 → 24).
        (40, "#e97118"),
        # Halfway amber (255, 179, 0) → green (46, 125, 50): (150.5 → 150, 152, 25).
        (90, "#969819"),
    ],
)
def test_colours_between_stops_are_interpolated_linearly(pct: float, colour: str) -> None:
    assert coverage_colour(pct, 80) == colour


def test_values_outside_the_scale_are_clamped_and_no_coverage_is_grey() -> None:
    assert coverage_colour(130, 80) == COVERAGE_GREEN
    assert coverage_colour(-5, 80) == COVERAGE_RED
    assert coverage_colour(None, 80) == COVERAGE_NONE


def test_thresholds_at_the_ends_of_the_scale() -> None:
    assert coverage_colour(0, 0) == COVERAGE_AMBER
    assert coverage_colour(100, 100) == COVERAGE_AMBER
    assert coverage_colour(50, 100) != COVERAGE_AMBER


def test_stops_follow_the_threshold() -> None:
    assert coverage_stops(75) == ([0.0, 75.0, 100.0], [COVERAGE_RED, COVERAGE_AMBER, COVERAGE_GREEN])


def test_sync_styles_carry_words_and_distinct_colours() -> None:
    assert sync_style(SyncStatus.SYNCED).label == "synced"
    assert sync_style(SyncStatus.CLOUD_ONLY).label == "not downloaded"
    assert sync_style(SyncStatus.LOCAL_ONLY, "raw").label == "local only"
    assert sync_style(SyncStatus.LOCAL_ONLY, "ml").label == "not uploaded"
    assert sync_style("mismatch").label == "mismatch"
    assert sync_style(SyncStatus.MISSING).label == "missing"
    assert len({style.colour for style in SYNC_STYLES.values()}) == len(SYNC_STYLES) == 6
