"""The selection in the page URL: read it from Voila's ``QUERY_STRING``, write it into links.

A link such as ``02_per_run_analysis.ipynb?cid=c1&regionid=r1`` opens the other page on the same
selection; the links are relative so they work under any server prefix (``/voila/render/``, a proxy).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlencode

from runtool.models import LEVELS, CoordinateError, Filters, RunCoordinate
from runtool.ui.formatting import format_typed

__all__ = [
    "COVERAGE",
    "DOWNLOAD_MANAGER",
    "FLEET_KPIS",
    "PAGES",
    "PER_RUN",
    "PageLink",
    "QuerySelection",
    "known_selection",
    "page_url",
    "query_parameters",
    "read_selection",
    "run_url",
    "selection_query",
    "strict_selection",
]


@dataclass(frozen=True)
class PageLink:
    """One page of the app: its title in the header and its notebook file."""

    title: str
    notebook: str


COVERAGE = PageLink("Coverage", "01_temporal_coverage.ipynb")
PER_RUN = PageLink("Per-run analysis", "02_per_run_analysis.ipynb")
DOWNLOAD_MANAGER = PageLink("Download manager", "03_download_manager.ipynb")
FLEET_KPIS = PageLink("Fleet KPIs", "04_fleet_kpis.ipynb")
PAGES: tuple[PageLink, ...] = (COVERAGE, PER_RUN, DOWNLOAD_MANAGER, FLEET_KPIS)
_PART_NAMES = {"cid": "client", "regionid": "region", "fieldid": "field", "twid": "TW", "lbid": "laser box",
               "timestamp": "run time"}


@dataclass(frozen=True)
class QuerySelection:
    """The selection a URL asks for; ``error`` says (as a sentence) why it fell back to All."""

    filters: Filters
    error: str | None = None


def query_parameters(query: str | None = None) -> dict[str, str]:
    """Every parameter of a URL query (default: ``$QUERY_STRING``, which Voila sets for the page's kernel).

    A parameter given twice keeps its first value; a percent-escape that is not UTF-8 text (``%ff``) reads as
    U+FFFD (the selection's levels are read apart, and such a level is refused: :func:`read_selection`).
    """
    return _parameters(query, "replace")


def _parameters(query: str | None, errors: str) -> dict[str, str]:
    """The parameters of ``query`` (default ``$QUERY_STRING``), percent-escapes decoded as UTF-8 with ``errors``."""
    text = os.environ.get("QUERY_STRING", "") if query is None else query
    parsed = parse_qs(text.lstrip("?"), keep_blank_values=True, errors=errors)
    return {name: values[0] for name, values in parsed.items()}


def read_selection(query: str | None = None) -> QuerySelection:
    """The selection a URL query asks for (default query: ``$QUERY_STRING``).

    Keys other than the coordinate parts (Voila's own, a page's settings) are ignored. An invalid value
    never raises: the levels above it are kept, it and the levels below it fall back to All (they only mean
    something under it), and ``error`` says what was wrong and what is shown instead.
    """
    kept, refused = _checked_parts(query)
    if refused is not None:
        name, problem = refused
        return _fallen_back(kept, f"The {_PART_NAMES[name]} in the link could not be used ({problem})")
    return QuerySelection(Filters(**kept))


def strict_selection(query: str) -> Filters:
    """The selection a URL query asks for, each part checked as :func:`read_selection` checks it.

    Raises:
        CoordinateError: naming the first part that cannot be used (where a list cannot fall back, as the served
            reports list).
    """
    kept, refused = _checked_parts(query)
    if refused is not None:
        raise CoordinateError(refused[1])
    return Filters(**kept)


def _checked_parts(query: str | None) -> tuple[dict[str, str], tuple[str, str] | None]:
    """The query's coordinate parts down to the first that cannot be used, and that one's name and why."""
    kept: dict[str, str] = {}
    for name, value in _set_values(query).items():
        problem = _refusal(name, value, kept)
        if problem is not None:
            return kept, (name, problem)
        kept[name] = value
    return kept, None


def _refusal(name: str, value: str, kept: Mapping[str, str]) -> str | None:
    """Why a link's ``value`` cannot be its part ``name`` under the parts ``kept``, else None."""
    raw = value.encode("utf-8", "surrogateescape")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        # Decoded as U+FFFD, a run search or the empty state would repeat a "�" nobody typed.
        return f"{name} '{format_typed(quote(raw, safe=''))}' has a percent-escape that is not UTF-8 text"
    try:
        Filters(**kept, **{name: value})
    except CoordinateError as exc:
        return str(exc)
    return None


def _fallen_back(kept: Mapping[str, str], why: str) -> QuerySelection:
    """The selection of the parts ``kept``, and the sentence saying ``why`` and what is shown instead."""
    shown = Filters(**kept)
    instead = f"{shown.describe()} is shown instead" if kept else "all data is shown instead"
    return QuerySelection(shown, f"{why}, so {instead}.")


def known_selection(filters: Filters, options: Mapping[str, Sequence[str]]) -> QuerySelection:
    """A link's ``filters`` with only the level values the inventory holds: ``options`` are the inventory's
    (:meth:`~runtool.services.DataStateService.filter_options` of ``filters``). The first level whose value matches
    nothing falls back to All with the levels below it (they only mean something under it), the run time too, and
    ``error`` names it and says what is shown instead."""
    kept: dict[str, str] = {}
    for level in LEVELS:
        value = getattr(filters, level)
        if value is None:
            continue
        if value not in options.get(level, ()):
            under = f" under {' → '.join(kept.values())}" if kept else ""
            return _fallen_back(kept, f"The {_PART_NAMES[level]} '{format_typed(value)}' in the link matches nothing "
                                      f"in the inventory{under}")
        kept[level] = value
    return QuerySelection(filters)


def _set_values(query: str | None) -> dict[str, str]:
    """The coordinate parts a query sets, top down (blank and "All" mean unset), not yet checked; a percent-escape
    that is not UTF-8 text stays as its bytes (surrogates), for :func:`_refusal` to refuse."""
    parameters = _parameters(query, "surrogateescape")
    return {
        name: parameters[name] for name in RunCoordinate.PARTS if parameters.get(name) not in (None, "", "All")
    }


def selection_query(filters: Filters, settings: Mapping[str, str] | None = None) -> str:
    """The query string of a selection, levels top down (``cid=c1&regionid=r1``), then ``settings``."""
    # Colons stay readable in timestamps (2025_08_25T08:59:38Z); they are legal in a query.
    return urlencode({**filters.to_dict(), **(settings or {})}, safe=":")


def page_url(page: PageLink, filters: Filters, settings: Mapping[str, str] | None = None) -> str:
    """A relative link to ``page`` on ``filters`` (plus page settings such as E)."""
    query = selection_query(filters, settings)
    return f"{page.notebook}?{query}" if query else page.notebook


def run_url(coordinate: RunCoordinate, page: PageLink = PER_RUN) -> str:
    """A relative link opening ``page`` on one run."""
    return page_url(page, coordinate.to_filters())
