"""Find runs from a typed or pasted piece of their coordinate.

The search text may be a full coordinate (either timestamp spelling, ``T09-13-00`` too), anything that holds one
(a bag key, an ML sample key, a ``gs://`` URL, a local path), a page link with the coordinate in its query, or a
part of one (``LB_0011``, ``field_115/TW_001``, ``2025-09-12 09:13``). Matching ignores case and works on whole
columns of the run table, never on per-run Python objects, so it stays interactive at fleet scale (100k runs).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from runtool.errors import RuntoolError
from runtool.models import LEVELS, CoordinateError, Filters, RunCoordinate

if TYPE_CHECKING:
    from runtool.services.container import ServiceContainer

__all__ = ["SEARCH_LIMIT", "RunIndex", "RunSearch", "RunSearchError", "RunSearchResult", "SearchHit", "canonical",
           "canonical_timestamps"]

SEARCH_LIMIT = 20
"""Hits listed at most; the rest are counted."""
TEXT_MAX = 2048
"""Longer text is refused: no key or link of a run is that long, and pasted pages are not searched."""
_PARTS = RunCoordinate.PARTS
_INVISIBLE = frozenset({"Cc", "Cf"})
_DATE_TIME = re.compile(r"(\d{4})[-_](\d{2})[-_](\d{2})(?:[t ](\d{2})(?:[-_:](\d{2})(?:[-_:](\d{2})z?)?)?)?")
_FULL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}t\d{2}:\d{2}:\d{2}z")
_SEPARATORS = re.compile(r"\s*·\s*|\s+")
_LINE_SPACE = re.compile(r"[\t\r\n]+")
_LEADING_TRIES = 4
"""Leading path segments dropped, one at a time, when the whole text matches nothing (``gs:``, the bucket, ``raw``)."""


class RunSearchError(RuntoolError, ValueError):
    """The text cannot be searched (a control character, too long, a bad link) or there is nothing to search."""


@dataclass(frozen=True)
class SearchHit:
    """A run (every part of :attr:`filters` set) or a level set (levels set down to :attr:`level`) and its run count."""

    filters: Filters
    runs: int

    @property
    def is_run(self) -> bool:
        return self.filters.timestamp is not None

    @property
    def level(self) -> str:
        """The deepest set part: ``timestamp`` for a run, else the level the hit names (``fieldid``, ``lbid``…)."""
        return [name for name in _PARTS if getattr(self.filters, name) is not None][-1]

    @property
    def path(self) -> str:
        """The set parts, ``/``-joined (a link may skip levels: ``client_001/LB_0011``)."""
        return "/".join(self.filters.to_dict().values())


@dataclass(frozen=True)
class RunSearchResult:
    """The hits for one text: level sets first, then runs, at most the limit; the counts cover every match."""

    text: str
    hits: tuple[SearchHit, ...] = ()
    matched_runs: int = 0
    """Runs the text matches as runs (a link to a level set lists the set alone: 0)."""
    matched_sets: int = 0
    exact: SearchHit | None = None
    """The one run or level set the text names outright (a full coordinate, a key, a link, a full level path)."""

    @property
    def more_runs(self) -> int:
        return self.matched_runs - sum(hit.is_run for hit in self.hits)

    @property
    def more_sets(self) -> int:
        return self.matched_sets - sum(not hit.is_run for hit in self.hits)


def canonical(text: str) -> str:
    """``text`` lower-cased with every date and time spelled one way (``2025-09-12t09:13:00z``).

    The stored timestamps use ``_`` or ``-`` between date parts, people paste ``T09-13-00`` (a folder name) or
    type ``2025-09-12 09:13`` (as the pages show times); all of them find the same runs.
    """
    return _DATE_TIME.sub(_spell_time, text.lower())


def _spell_time(match: re.Match[str]) -> str:
    year, month, day, hour, minute, second = match.groups()
    spelled = f"{year}-{month}-{day}"
    if hour is not None:
        spelled += f"t{hour}"
    if minute is not None:
        spelled += f":{minute}"
    if second is not None:
        spelled += f":{second}z"
    return spelled


def _has_invisible(text: str) -> bool:
    return not text.isprintable() and any(unicodedata.category(c) in _INVISIBLE for c in text)


def _refuse_invisible(text: str) -> None:
    if _has_invisible(text):
        raise RunSearchError(
            "The search text has a control or invisible format character (such as a zero-width space or a "
            "text-direction mark), so it was not searched. Type the coordinate again."
        )


def _link_filters(text: str) -> Filters | None:
    """The selection of a page link (``…?cid=…&lbid=…``) or of a bare query, or None if ``text`` is neither."""
    query = urlsplit(text).query if "?" in text else text
    if "=" not in query:
        return None
    parameters = parse_qs(query, keep_blank_values=True)
    if not any(name in parameters for name in _PARTS):
        return None
    try:
        return Filters.from_mapping(parameters)
    except CoordinateError as exc:
        raise RunSearchError(f"The link could not be used: {exc}.") from exc


def canonical_timestamps(values: pd.Series) -> pa.Array:
    """:func:`canonical` of stored timestamps, vectorised: they are valid, so only the date separator varies."""
    lowered = pc.utf8_lower(pa.array(values.to_numpy(dtype=object), type=pa.string()))
    return pc.replace_substring(lowered, "_", "-")


def _join_keys(columns: list[pa.Array], length: int) -> pa.Array:
    """``/a/b/…/`` for each row: slashes on both ends, so ``/x/`` matches whole segments only."""
    if not columns:
        return pa.array(["/"] * length, type=pa.string())
    return pc.binary_join_element_wise("", *columns, "", "/")


def _mask(array: pa.Array) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=bool)


@dataclass(frozen=True)
class _Level:
    """One level's distinct values (sorted), their canonical spellings, and each run's value as a code."""

    codes: np.ndarray
    values: np.ndarray
    canonical: pa.Array

    @classmethod
    def of(cls, column: pd.Series) -> _Level:
        codes, uniques = pd.factorize(column, sort=True)
        values = np.asarray(uniques, dtype=object)
        # canonical() once per distinct value: a fleet has few names per level.
        return cls(codes, values, pa.array([canonical(str(value)) for value in values], type=pa.string()))


@dataclass(frozen=True)
class _LevelSets:
    """The distinct level sets down to one level: each level's codes, run counts and canonical keys."""

    codes: list[np.ndarray]
    runs: np.ndarray
    key: pa.Array
    parent: pa.Array
    name: pa.Array


class RunIndex:
    """The run table's coordinates prepared for searching: one canonical key per run and per level set.

    Built once per run table (a refresh makes a new one); :meth:`search` then costs a few vectorised passes
    (pyarrow string kernels) over the runs and the level sets.
    """

    def __init__(self, runs: pd.DataFrame) -> None:
        parts = runs[list(_PARTS)].astype(str).reset_index(drop=True)
        self._parts = parts.to_numpy(dtype=object)
        self._levels = [_Level.of(parts[name]) for name in LEVELS]
        run_columns = [level.canonical.take(pa.array(level.codes)) for level in self._levels]
        times = canonical_timestamps(parts["timestamp"])
        self._times = times
        """Each run's timestamp as :func:`canonical` spells it (a link may use the other date separator)."""
        self._keys = _join_keys([*run_columns, times], len(parts))
        self._sets: list[_LevelSets] = []
        for depth in range(len(LEVELS)):
            # Sorted codes are sorted names: the sets come in hierarchy order.
            frame = pd.DataFrame({i: level.codes for i, level in enumerate(self._levels[: depth + 1])})
            counts = frame.groupby(list(frame.columns), sort=True).size()
            codes = [np.asarray(counts.index.get_level_values(i)) for i in range(depth + 1)]
            columns = [level.canonical.take(pa.array(code)) for level, code in zip(self._levels, codes, strict=False)]
            self._sets.append(_LevelSets(codes, counts.to_numpy(), _join_keys(columns, len(counts)),
                                         _join_keys(columns[:-1], len(counts)), columns[-1]))

    def __len__(self) -> int:
        return len(self._parts)

    def search(self, text: str, limit: int = SEARCH_LIMIT) -> RunSearchResult:
        """The runs and level sets ``text`` names or is part of (see the module docstring).

        Raises:
            RunSearchError: the text is too long, has control or format characters, or is a link with a bad part.
        """
        # Tabs and line ends separate as spaces do (a coordinate copied from a spreadsheet's cells).
        stripped = _LINE_SPACE.sub(" ", text).strip()
        if not stripped:
            return RunSearchResult(text)
        if len(stripped) > TEXT_MAX:
            raise RunSearchError(
                f"The search text is {len(stripped):,} characters long; paste a coordinate, a key or a link "
                f"(at most {TEXT_MAX:,} characters)."
            )
        _refuse_invisible(stripped)
        linked = _link_filters(stripped)
        if linked is not None:
            return self._linked(text, linked, limit)
        decoded = unquote(stripped) if "%" in stripped else stripped
        _refuse_invisible(decoded)
        # A table's way of writing a run ("LB_0004 · 2025-07-10 10:05", or with a space) separates like "/": the
        # time's own space is gone once canonical() has spelled it.
        spaced = _SEPARATORS.sub("/", canonical(decoded).replace("\\", "/"))
        segments = [segment for segment in spaced.split("/") if segment]
        if not segments:
            return RunSearchResult(text)
        exact = self._exact_runs(segments)
        if exact:
            hits = tuple(SearchHit(self._run_filters(row), 1) for row in exact[:limit])
            return RunSearchResult(text, hits, len(exact), 0, hits[0] if len(exact) == 1 else None)
        for start in range(min(len(segments), _LEADING_TRIES)):
            result = self._match(text, segments[start:], limit)
            if result.hits:
                return result
        return RunSearchResult(text)

    # -- the kinds of text -------------------------------------------------------------------------

    def _linked(self, text: str, filters: Filters, limit: int) -> RunSearchResult:
        mask = np.ones(len(self._parts), dtype=bool)
        for index, name in enumerate(_PARTS):
            value = getattr(filters, name)
            if name == "timestamp" and value is not None:
                mask &= _mask(pc.equal(self._times, canonical(value)))
            elif value is not None:
                mask &= self._parts[:, index] == value
        rows = np.flatnonzero(mask)
        if not len(rows):
            return RunSearchResult(text)
        if filters.timestamp is not None:
            hits = tuple(SearchHit(self._run_filters(int(row)), 1) for row in rows[:limit])
            return RunSearchResult(text, hits, len(rows), 0, hits[0] if len(rows) == 1 else None)
        # A link's levels need not be contiguous from the top (cid and lbid only): the hit is what the link selects.
        hit = SearchHit(filters, len(rows))
        return RunSearchResult(text, (hit,), 0, 1, hit)

    def _exact_runs(self, segments: list[str]) -> list[int]:
        """Rows of the runs whose full coordinate appears in ``segments`` (a coordinate, a key, a path)."""
        rows: list[int] = []
        for end in range(len(_PARTS) - 1, len(segments)):
            if not _FULL_TIME.fullmatch(segments[end]):
                continue
            key = "/" + "/".join(segments[end - len(_PARTS) + 1 : end + 1]) + "/"
            found = np.flatnonzero(_mask(pc.equal(self._keys, key)))
            rows.extend(int(row) for row in found if row not in rows)
        return rows

    def _match(self, text: str, segments: list[str], limit: int) -> RunSearchResult:
        """Level sets and runs whose key holds ``segments``: whole segments first, then any part of them."""
        query = "/".join(segments)
        whole = "/" + query + "/"
        whole_sets: list[tuple[int, np.ndarray]] = []
        part_sets: list[tuple[int, np.ndarray]] = []
        exact: SearchHit | None = None
        for depth, sets in enumerate(self._sets):
            is_whole = _mask(pc.ends_with(sets.key, whole))
            # Part of a set's name: the text ends inside the set's own (last) segment.
            if len(segments) == 1:
                is_part = _mask(pc.match_substring(sets.name, segments[0]))
            else:
                parent_ends = _mask(pc.ends_with(sets.parent, "/".join(segments[:-1]) + "/"))
                is_part = parent_ends & _mask(pc.starts_with(sets.name, segments[-1]))
            whole_sets.append((depth, np.flatnonzero(is_whole)))
            part_sets.append((depth, np.flatnonzero(is_part & ~is_whole)))
            named = np.flatnonzero(_mask(pc.equal(sets.key, whole)))
            if len(named) == 1:
                exact = self._set_hit(depth, int(named[0]))
        set_rows = [(depth, int(row)) for depth, rows in (*whole_sets, *part_sets) for row in rows]
        run_whole = _mask(pc.match_substring(self._keys, whole))
        run_part = _mask(pc.match_substring(self._keys, query)) & ~run_whole
        run_rows = np.concatenate([np.flatnonzero(run_whole), np.flatnonzero(run_part)])
        # Level sets take at most half the list when runs match too, so a run is never pushed out by them.
        set_room = limit // 2 if len(run_rows) else limit
        listed_sets = set_rows[:set_room]
        listed_runs = run_rows[: limit - len(listed_sets)]
        hits = (
            *(self._set_hit(depth, row) for depth, row in listed_sets),
            *(SearchHit(self._run_filters(int(row)), 1) for row in listed_runs),
        )
        return RunSearchResult(text, hits, len(run_rows), len(set_rows), exact)

    # -- hits --------------------------------------------------------------------------------------

    def _run_filters(self, row: int) -> Filters:
        return Filters(**dict(zip(_PARTS, self._parts[row], strict=True)))

    def _set_hit(self, depth: int, row: int) -> SearchHit:
        sets = self._sets[depth]
        values = {name: str(level.values[code[row]])
                  for name, level, code in zip(LEVELS, self._levels, sets.codes, strict=False)}
        return SearchHit(Filters(**values), int(sets.runs[row]))


class RunSearch:
    """Searches the runs of a container's current inventory; the index follows the run table (a refresh).

    ``services`` None (runtool could not start) or an inventory not scanned yet: a search says so.
    """

    def __init__(self, services: ServiceContainer | None, limit: int = SEARCH_LIMIT) -> None:
        self.services = services
        self.limit = limit
        self._table: pd.DataFrame | None = None
        self._index: RunIndex | None = None

    def search(self, text: str) -> RunSearchResult:
        if not text.strip():
            return RunSearchResult(text)
        if self.services is None:
            raise RunSearchError("There are no runs to search: runtool could not start (the page says why).")
        if not self.services.inventory.has_data:
            raise RunSearchError("There are no runs to search yet: the buckets have not been scanned.")
        table = self.services.data_state.all_runs()
        if self._index is None or self._table is not table:
            self._index = RunIndex(table)
            self._table = table
        return self._index.search(text, self.limit)
