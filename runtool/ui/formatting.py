"""How the pages write numbers, sizes, ages and times.

The basic formats live in :mod:`runtool.formatting` so the pages and the command line print the same
thing; this module re-exports them and adds the few formats only the pages need.
"""

from __future__ import annotations

from datetime import date

from runtool.formatting import format_bytes, format_count, format_count_of, format_pct, format_time, printable

__all__ = [
    "format_age",
    "format_bytes",
    "format_count",
    "format_count_of",
    "format_day",
    "format_decimal",
    "format_pct",
    "format_time",
    "format_typed",
]


TYPED_ECHO_MAX = 60
"""Characters of what a viewer typed that a message repeats (500 ran off the page and pushed the rest down)."""


def format_typed(text: str) -> str:
    """What a viewer typed, to repeat in a message: trimmed, control characters escaped, at most
    ``TYPED_ECHO_MAX`` characters (a longer text ends in "…")."""
    typed = printable(text.strip())
    return typed if len(typed) <= TYPED_ECHO_MAX else f"{typed[:TYPED_ECHO_MAX - 1]}…"


def format_decimal(value: float | None, digits: int = 1) -> str:
    """An average or a ratio: thousands separators and ``digits`` decimals (``1,234.5``); a dash for None."""
    return "–" if value is None else f"{value:,.{digits}f}"


def format_day(day: date | None) -> str:
    """A calendar day as ``YYYY-MM-DD`` (the date part of :func:`format_time`)."""
    return "–" if day is None else day.strftime("%Y-%m-%d")


def format_age(seconds: float | None) -> str:
    """How old something is, in its two largest units: ``<1 min``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    if seconds is None:
        return "–"
    minutes = int(max(0.0, seconds) // 60)
    if minutes < 1:
        return "<1 min"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
