"""Number, size, age and time formats, against hand-computed strings."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from runtool.ui.formatting import (
    format_age,
    format_bytes,
    format_count,
    format_day,
    format_decimal,
    format_pct,
    format_time,
)


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 * 1024**2, "5.0 MiB"),
        (int(1.3 * 1024**3), "1.3 GiB"),
        (None, "–"),
    ],
)
def test_bytes_use_base_1024_with_one_decimal(size: int | None, shown: str) -> None:
    assert format_bytes(size) == shown


def test_counts_have_thousands_separators() -> None:
    assert format_count(1_234_567) == "1,234,567"
    assert format_count(12) == "12"
    assert format_count(None) == "–"


def test_percentages_have_one_decimal() -> None:
    assert format_pct(58.3333) == "58.3 %"
    assert format_pct(100) == "100.0 %"
    assert format_pct(0) == "0.0 %"
    assert format_pct(None) == "–"


def test_decimals_and_days() -> None:
    assert format_decimal(1234.56) == "1,234.6"
    assert format_decimal(2.0) == "2.0"
    assert format_decimal(None) == "–"
    assert format_day(date(2025, 8, 1)) == "2025-08-01"


def test_times_are_shown_in_utc_to_the_minute() -> None:
    assert format_time(datetime(2025, 8, 25, 8, 59, 38, tzinfo=UTC)) == "2025-08-25 08:59"
    plus_two = timezone(timedelta(hours=2))
    assert format_time(datetime(2025, 8, 25, 10, 59, tzinfo=plus_two)) == "2025-08-25 08:59"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "–"),
        (30, "<1 min"),
        (12 * 60 + 5, "12 min"),
        (2 * 3600, "2 h"),
        (3 * 3600 + 5 * 60, "3 h 5 min"),
        (86_400, "1 d"),
        (2 * 86_400 + 4 * 3600 + 59, "2 d 4 h"),
    ],
)
def test_ages_use_their_two_largest_units(seconds: float | None, shown: str) -> None:
    assert format_age(seconds) == shown
