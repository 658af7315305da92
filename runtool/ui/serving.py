"""Opening a page in its notebook, preheated or not.

Under `runtool serve`, Voila keeps preheated kernels: each runs its page notebook up to the moment a viewer asks
for the page. :func:`open_page` does the slow part then (imports, configuration, reading the inventory, the page
of a link without a query), waits for the viewer's request, then sets on that page the selection the request's
URL query asks for (a query with page settings too gets a page built for it), so a link with a selection opens
that selection. Outside a preheated kernel (a plain Voila kernel, JupyterLab) it builds the page at once. Either
way the page is progressive: what costs the browser most to draw comes after the first paint; and
:func:`show_page` sends its first screen as static HTML first.
"""

from __future__ import annotations

import logging
import os
from typing import TypeVar

from runtool.config import ConfigError
from runtool.models import RunCoordinate
from runtool.services import ServiceContainer
from runtool.ui.components import close_tree
from runtool.ui.page import Page
from runtool.ui.query import query_parameters, read_selection
from runtool.ui.snapshot import snapshot_html

__all__ = ["open_page", "preheated", "selects_only", "show_page", "wait_for_viewer"]

log = logging.getLogger(__name__)
P = TypeVar("P", bound=Page)


def preheated() -> bool:
    """Whether this kernel is one of Voila's preheated kernels (it runs its page before any viewer asks)."""
    return os.environ.get("VOILA_PREHEAT") == "True"


def wait_for_viewer() -> None:
    """In a preheated Voila kernel, block until a viewer's request arrives and its URL query is set."""
    if not preheated():
        return
    from voila.utils import wait_for_request  # only a preheated kernel needs Voila's client side

    wait_for_request()


_SELECTION_KEYS = frozenset({*RunCoordinate.PARTS, "token"})
"""A query with only these keys asks for a selection and nothing else (Voila passes a token server's token on)."""


def selects_only(query: str) -> bool:
    """Whether the URL ``query`` sets nothing but the selection (no page setting such as E or a tab)."""
    return set(query_parameters(query)) <= _SELECTION_KEYS


def open_page(page_class: type[P]) -> P:
    """``page_class`` built for the viewer's request, with as much as possible done before the viewer came.

    A preheated kernel builds the page of a link without a query before the request arrives; a request without
    a query (most of them) gets that page, one with only a selection gets it with that selection set, and any other
    gets a page built for it, with every code path warm (a fresh kernel's first page takes several times longer
    than its next). If the inventory cache changed while the kernel waited (a
    refresh by another viewer or the CLI), the page is built again from it; the local copies are scanned again
    (a download meanwhile redraws the page). So a preheated page is never older than its request. The page is
    progressive: its charts and grids come once the browser has drawn the rest (:class:`~runtool.ui.page.Page`).
    """
    try:
        services: ServiceContainer | None = ServiceContainer.from_environment()
    except ConfigError:
        services = None  # the page reads the configuration again and shows the error as a message
    # Stamped before the cache is read, so a cache replaced while it is read counts as changed.
    stamp = services.inventory.cache_stamp() if services is not None else None
    if not preheated() or services is None or not services.inventory.has_data:
        # Without an inventory a page starts a scan: only for a viewer.
        wait_for_viewer()
        page = page_class(services=services, progressive=True)
    else:
        ready = page_class(services=services, query="", progressive=True)
        wait_for_viewer()
        changed = services.inventory.cache_stamp() != stamp
        # Local copies may have changed while the kernel waited (a download by the CLI or another viewer).
        local_changed = services.local.rescan()
        query = os.environ.get("QUERY_STRING", "")
        selection = read_selection(query) if query and not changed and selects_only(query) else None
        if selection is not None and selection.error is None:
            # Only the selection differs from the ready page: it is set on that page, so only what changes goes to
            # the browser (a page built again sent ~300 widget messages after the request, through Voila's server).
            page = ready
            page.follow_link(selection.filters)
        elif changed or query:
            close_tree(ready.widget)
            page = page_class(services=ServiceContainer.from_environment() if changed else services,
                              progressive=True)
        else:
            page = ready
            if local_changed:
                page.render()
    page.sent()
    return page


def show_page(page_class: type[P]) -> P:
    """Display :func:`open_page`'s page: its first screen as static HTML at once, then the live widgets.

    The static copy (:func:`~runtool.ui.snapshot.snapshot_html`) shows as soon as the browser shows the page;
    the live page takes its place once the browser has loaded its widgets.
    """
    from IPython.display import HTML, display

    page = open_page(page_class)
    display(HTML(snapshot_html(page.widget)), page.widget)
    return page
