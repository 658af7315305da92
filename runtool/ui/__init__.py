"""The dashboard pages (ipywidgets + bqplot) and the pieces they share.

Each page is a class with a ``.widget``; a notebook only builds it and displays it:

>>> from runtool.ui import CoveragePage
>>> CoveragePage().widget
"""

from __future__ import annotations

from runtool.ui.components import FilterBar, Kpi, KpiCards, Message, MessageArea, PageHeader
from runtool.ui.coverage import CoveragePage
from runtool.ui.download_manager import DownloadManagerPage
from runtool.ui.page import Page
from runtool.ui.per_run import PerRunPage
from runtool.ui.query import (
    PAGES,
    PageLink,
    QuerySelection,
    page_url,
    query_parameters,
    read_selection,
    run_url,
    selection_query,
)
from runtool.ui.tasks import BackgroundTask

__all__ = [
    "PAGES",
    "BackgroundTask",
    "CoveragePage",
    "DownloadManagerPage",
    "FilterBar",
    "Kpi",
    "KpiCards",
    "Message",
    "MessageArea",
    "Page",
    "PageHeader",
    "PageLink",
    "PerRunPage",
    "QuerySelection",
    "page_url",
    "query_parameters",
    "read_selection",
    "run_url",
    "selection_query",
]
