"""Run coordinates and partial selections (filters)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

from runtool.errors import RuntoolError

__all__ = ["LEVELS", "CoordinateError", "Filters", "RunCoordinate", "parse_timestamp"]

LEVELS: tuple[str, ...] = ("cid", "regionid", "fieldid", "twid", "lbid")
"""The hierarchy levels above the run timestamp, top down."""

_TIMESTAMP = re.compile(r"([0-9]{4})[_-]([0-9]{2})[_-]([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")


_INVISIBLE = frozenset({"Cc", "Cf"})
"""Unicode categories a level may not contain: control (``\\x1b``, ``\\x7f``, C1) and format characters
(U+202E RIGHT-TO-LEFT OVERRIDE reverses the text after it, U+200B ZERO WIDTH SPACE hides a difference)."""

NAME_MAX = 255
"""Bytes in one file or folder name on the file systems runtool writes to (ext4, xfs, btrfs, tmpfs)."""


class CoordinateError(RuntoolError, ValueError):
    """A coordinate, a level value or a timestamp is not valid."""


def parse_timestamp(value: str) -> datetime:
    """Parse a stored run timestamp (``2025_08_25T08:59:38Z``, ``_`` or ``-`` between date parts).

    Raises:
        CoordinateError: the string is not a run timestamp or not a real date.
    """
    match = _TIMESTAMP.fullmatch(value)
    if match is None:
        raise CoordinateError(f"bad timestamp {value!r}: expected YYYY_MM_DDTHH:MM:SSZ")
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise CoordinateError(f"bad timestamp {value!r}: {exc}") from exc


def check_part(level: str, value: str) -> str:
    """Return ``value`` if it can be one path segment of a coordinate, else raise CoordinateError."""
    if not isinstance(value, str) or not value:
        raise CoordinateError(f"{level} is empty")
    if "/" in value or "\\" in value:
        raise CoordinateError(f"{level} {value!r} contains a path separator")
    if value in (".", ".."):
        raise CoordinateError(f"{level} {value!r} is not allowed")
    if value != value.strip() or _has_invisible(value):
        raise CoordinateError(f"{level} {value!r} has surrounding blanks, control or format characters")
    if len(value.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise CoordinateError(f"{level} {value[:40]!r}… is too long for a folder name (at most {NAME_MAX} bytes)")
    return value


def _has_invisible(value: str) -> bool:
    """Whether ``value`` has a control or format character (``isprintable`` first: most names are plain)."""
    return not value.isprintable() and any(unicodedata.category(c) in _INVISIBLE for c in value)


@dataclass(frozen=True, order=False)
class RunCoordinate:
    """The address of one run: ``cid/regionid/fieldid/twid/lbid/timestamp``.

    The timestamp keeps its stored spelling (either date separator); :attr:`start_time` is the parsed
    UTC time, used for sorting and calendars.
    """

    cid: str
    regionid: str
    fieldid: str
    twid: str
    lbid: str
    timestamp: str

    PARTS: ClassVar[tuple[str, ...]] = (*LEVELS, "timestamp")

    def __post_init__(self) -> None:
        for level in LEVELS:
            check_part(level, getattr(self, level))
        parse_timestamp(self.timestamp)

    @property
    def start_time(self) -> datetime:
        """The run's start time in UTC."""
        return parse_timestamp(self.timestamp)

    def to_path_tuple(self) -> tuple[str, str, str, str, str, str]:
        return (self.cid, self.regionid, self.fieldid, self.twid, self.lbid, self.timestamp)

    def to_path_str(self) -> str:
        return "/".join(self.to_path_tuple())

    def to_dict(self) -> dict[str, str]:
        return dict(zip(self.PARTS, self.to_path_tuple(), strict=True))

    def to_filters(self) -> Filters:
        return Filters(**self.to_dict())

    def sort_key(self) -> tuple[str, str, str, str, str, datetime]:
        return (self.cid, self.regionid, self.fieldid, self.twid, self.lbid, self.start_time)

    def __str__(self) -> str:
        return self.to_path_str()

    @classmethod
    def from_checked_parts(
        cls, cid: str, regionid: str, fieldid: str, twid: str, lbid: str, timestamp: str
    ) -> RunCoordinate:
        """A coordinate from parts that were validated already (a row of the parsed inventory), not checked again.

        Building one validated coordinate costs microseconds; a view over 100,000 runs would spend most of its
        time re-checking parts that the scanner checked when it parsed the keys.
        """
        coord = object.__new__(cls)
        coord.__dict__.update(
            cid=cid, regionid=regionid, fieldid=fieldid, twid=twid, lbid=lbid, timestamp=timestamp
        )
        return coord

    @classmethod
    def parse(cls, path: str) -> RunCoordinate:
        """Parse ``cid/regionid/fieldid/twid/lbid/timestamp``."""
        parts = path.strip().strip("/").split("/")
        if len(parts) != 6:
            raise CoordinateError(
                f"bad coordinate {path!r}: expected 6 parts cid/regionid/fieldid/twid/lbid/timestamp, "
                f"got {len(parts)}"
            )
        return cls(*parts)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunCoordinate:
        missing = [part for part in cls.PARTS if not data.get(part)]
        if missing:
            raise CoordinateError(f"coordinate is missing {', '.join(missing)}")
        return cls(*(str(data[part]) for part in cls.PARTS))

    @classmethod
    def from_filters(cls, filters: Filters) -> RunCoordinate:
        """The run a fully specified selection points at."""
        return cls.from_dict(filters.to_dict())


@dataclass(frozen=True)
class Filters:
    """A partial selection: any level may be ``None``, meaning "All"."""

    cid: str | None = None
    regionid: str | None = None
    fieldid: str | None = None
    twid: str | None = None
    lbid: str | None = None
    timestamp: str | None = None

    def __post_init__(self) -> None:
        for level in LEVELS:
            value = getattr(self, level)
            if value is not None:
                check_part(level, value)
        if self.timestamp is not None:
            parse_timestamp(self.timestamp)

    def to_dict(self) -> dict[str, str]:
        """The set levels only."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def prefix_parts(self) -> tuple[str, ...]:
        """The leading levels that are set, up to the first "All" (what a bucket prefix can express)."""
        parts: list[str] = []
        for name in RunCoordinate.PARTS:
            value = getattr(self, name)
            if value is None:
                break
            parts.append(value)
        return tuple(parts)

    def matches(self, coord: RunCoordinate) -> bool:
        return all(getattr(coord, name) == value for name, value in self.to_dict().items())

    def is_empty(self) -> bool:
        return not self.to_dict()

    def describe(self) -> str:
        """A human label: ``client_001 → region_a → All``."""
        labels = [getattr(self, level) or "All" for level in LEVELS]
        while len(labels) > 1 and labels[-1] == "All" and labels[-2] == "All":
            labels.pop()
        return " → ".join(labels)

    def replace(self, **changes: str | None) -> Filters:
        """A copy with some levels changed; every level below the deepest change is reset to "All"."""
        if not changes:
            return self
        order = RunCoordinate.PARTS
        deepest = max(order.index(name) for name in changes)
        values = {name: getattr(self, name) for name in order}
        values.update(changes)
        for name in order[deepest + 1 :]:
            values[name] = None
        return Filters(**values)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Filters:
        """Build from a mapping (URL query, CLI options); blank, "All" and unknown keys are ignored."""
        values: dict[str, str] = {}
        for name in RunCoordinate.PARTS:
            value = data.get(name)
            if isinstance(value, list | tuple):
                value = value[0] if value else None
            if value is None or value == "" or value == "All":
                continue
            values[name] = str(value)
        return cls(**values)
