"""The selection in the page URL: read it from Voila's ``QUERY_STRING``, write it into links.

A link such as ``02_per_run_analysis.ipynb?cid=c1&regionid=r1`` opens the other page on the same
selection; the links are relative so they work under any server prefix (``/voila/render/``, a proxy).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode

from runtool.models import CoordinateError, Filters, RunCoordinate

__all__ = [
    "COVERAGE",
    "DOWNLOAD_MANAGER",
    "PAGES",
    "PER_RUN",
    "PageLink",
    "QuerySelection",
    "page_url",
    "read_selection",
    "run_url",
    "selection_query",
]


@dataclass(frozen=True)
class PageLink:
    """One page of the app: its title in the header and its notebook file."""

    title: str
    notebook: str


COVERAGE = PageLink("Coverage", "01_temporal_coverage.ipynb")
PER_RUN = PageLink("Per-run analysis", "02_per_run_analysis.ipynb")
DOWNLOAD_MANAGER = PageLink("Download manager", "03_download_manager.ipynb")
PAGES: tuple[PageLink, ...] = (COVERAGE, PER_RUN, DOWNLOAD_MANAGER)


@dataclass(frozen=True)
class QuerySelection:
    """The selection a URL asks for; ``error`` says (as a sentence) why it fell back to All."""

    filters: Filters
    error: str | None = None


def read_selection(query: str | None = None) -> QuerySelection:
    """Parse a URL query (default: ``$QUERY_STRING``, which Voila sets for the page's kernel).

    Keys other than the coordinate parts (Voila's own, for instance) are ignored. An invalid value
    never raises: the whole selection falls back to All and ``error`` explains why, because a half-applied
    link would show a view nobody asked for.
    """
    text = os.environ.get("QUERY_STRING", "") if query is None else query
    values = parse_qs(text.lstrip("?"), keep_blank_values=True)
    try:
        return QuerySelection(Filters.from_mapping(values))
    except CoordinateError as exc:
        return QuerySelection(
            Filters(), f"The selection in the link could not be used ({exc}), so all data is shown instead."
        )


def selection_query(filters: Filters) -> str:
    """The query string of a selection, levels top down (``cid=c1&regionid=r1``); empty for All."""
    # Colons stay readable in timestamps (2025_08_25T08:59:38Z); they are legal in a query.
    return urlencode(filters.to_dict(), safe=":")


def page_url(page: PageLink, filters: Filters) -> str:
    """A relative link to ``page`` on ``filters``."""
    query = selection_query(filters)
    return f"{page.notebook}?{query}" if query else page.notebook


def run_url(coordinate: RunCoordinate, page: PageLink = PER_RUN) -> str:
    """A relative link opening ``page`` on one run."""
    return page_url(page, coordinate.to_filters())
