"""Opening a page in its notebook, preheated or not.

Under `runtool serve`, Voila keeps preheated kernels: each runs its page notebook up to the moment a viewer asks
for the page. :func:`open_page` does the slow part then (imports, configuration, reading the inventory), waits
for the viewer's request, and only then builds the page, from the request's URL query, so a link with a
selection opens that selection. Outside a preheated kernel (a plain Voila kernel, JupyterLab) it builds the page
at once. Either way the page is progressive: what costs the browser most to draw comes after the first paint.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TypeVar

from runtool.config import ConfigError
from runtool.services import ServiceContainer
from runtool.ui.page import Page
from runtool.ui.snapshot import snapshot_html

__all__ = ["open_page", "show_page", "wait_for_viewer"]

log = logging.getLogger(__name__)
P = TypeVar("P", bound=Page)


def wait_for_viewer() -> None:
    """In a preheated Voila kernel, block until a viewer's request arrives and its URL query is set."""
    if os.environ.get("VOILA_PREHEAT") != "True":
        return
    from voila.utils import wait_for_request  # only a preheated kernel needs Voila's client side

    wait_for_request()


def open_page(page_class: type[P]) -> P:
    """``page_class`` built for the viewer's request, with the inventory read before the viewer came.

    If the inventory cache changed while the kernel waited (a refresh by another viewer or the CLI), the page
    reads it again, so a preheated page is never older than its request. The page is progressive: its charts
    and grids come once the browser has drawn the rest (:class:`~runtool.ui.page.Page`).
    """
    try:
        services: ServiceContainer | None = ServiceContainer.from_environment()
    except ConfigError:
        services = None  # the page reads the configuration again and shows the error as a message
    if services is None:
        wait_for_viewer()
        return page_class(progressive=True)
    # Stamped before reading, so a cache replaced during the read counts as changed.
    stamp = _stamp(services.inventory.cache_path)
    services.inventory.has_data  # noqa: B018 - reads the cache now, while no viewer waits
    wait_for_viewer()
    if _stamp(services.inventory.cache_path) != stamp:
        services = ServiceContainer.from_environment()
    return page_class(services=services, progressive=True)


def show_page(page_class: type[P]) -> P:
    """Display :func:`open_page`'s page: its first screen as static HTML at once, then the live widgets.

    The static copy (:func:`~runtool.ui.snapshot.snapshot_html`) shows as soon as the browser shows the page;
    the live page takes its place once the browser has loaded its widgets.
    """
    from IPython.display import HTML, display

    page = open_page(page_class)
    display(HTML(snapshot_html(page.widget)), page.widget)
    return page


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
