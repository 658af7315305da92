"""How numbers, sizes, times, object names and OS errors are shown, the same in the pages and the CLI."""

from __future__ import annotations

import errno
from datetime import UTC, datetime

__all__ = ["format_bytes", "format_count", "format_count_of", "format_os_error", "format_pct", "format_time",
           "printable"]

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


def format_count_of(count: int, noun: str, plural: str | None = None) -> str:
    """A count and its noun, singular for one: ``1 run``, ``2 runs``, ``1,204 runs`` (``plural`` if not noun + s)."""
    return f"{format_count(count)} {noun if count == 1 else plural or noun + 's'}"


def format_pct(pct: float | None) -> str:
    """One decimal: ``87.5 %``; a dash when there is no value (e.g. a run without bags)."""
    return "–" if pct is None else f"{pct:.1f} %"


def format_time(moment: datetime | None) -> str:
    """UTC as ``YYYY-MM-DD HH:MM``."""
    if moment is None:
        return "–"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def printable(text: object) -> str:
    """``text`` with every character a terminal would act on escaped (``\\x1b``, ``\\n``, ``\\u202e``).

    Object names come from buckets anyone may write to: printed raw, an ESC could rewrite the screen and a
    newline could forge a preview line. Printable characters, including non-ASCII letters, stay as they are.
    """
    shown = str(text)
    if shown.isprintable():
        return shown
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in shown)


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def format_os_error(exc: OSError) -> str:
    """One sentence for a failed file operation, naming the path when the error carries one."""
    where = f" {printable(exc.filename)}" if exc.filename is not None else ""
    if exc.filename2 is not None:
        where += f" → {printable(exc.filename2)}"
    reason = exc.strerror or str(exc)
    if exc.errno in _DISK_FULL:
        return f"Not enough disk space to write{where or ' a file'} ({reason})."
    if exc.errno in _READ_ONLY:
        return f"Cannot write{where or ' a file'}: {reason} (a read-only or protected place)."
    if exc.errno == errno.ENAMETOOLONG:
        return f"The name is too long for the file system:{where or ' a path'} ({reason})."
    return f"Cannot use{where}: {reason}." if where else f"{reason}."
