"""How numbers, sizes and times are shown, the same in the pages and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["format_bytes", "format_count", "format_pct", "format_time"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(size: float | None) -> str:
    """Base-1024 units with one decimal: ``1.3 GiB``; plain bytes below 1 KiB."""
    if size is None:
        return "–"
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_count(count: float | None) -> str:
    """Thousands separators: ``12,345``."""
    return "–" if count is None else f"{int(count):,}"


def format_pct(pct: float | None) -> str:
    """One decimal: ``87.5 %``; a dash when there is no value (e.g. a run without bags)."""
    return "–" if pct is None else f"{pct:.1f} %"


def format_time(moment: datetime | None) -> str:
    """UTC as ``YYYY-MM-DD HH:MM``."""
    if moment is None:
        return "–"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
