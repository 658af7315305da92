"""The dashboard pages (ipywidgets + bqplot) and the pieces they share.

Each page is a class with a ``.widget``; a notebook only builds it and displays it:

>>> from runtool.ui import CoveragePage
>>> CoveragePage().widget
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtool.ui.components import FilterBar, Kpi, KpiCards, Message, MessageArea, PageHeader
    from runtool.ui.coverage import CoveragePage
    from runtool.ui.download_manager import DownloadManagerPage
    from runtool.ui.fleet_kpis import FleetKpiPage
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
    "FleetKpiPage",
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

# Imported on first use: each viewer's kernel runs one page, and the pages differ in what they pull in
# (bqplot charts, the ipydatagrid table, the extraction and report services), so a kernel that imported
# every page would pay for all of them (see "Issue 8 (c)" in docs/performance.md).
_HOMES = {
    "FilterBar": "runtool.ui.components",
    "Kpi": "runtool.ui.components",
    "KpiCards": "runtool.ui.components",
    "Message": "runtool.ui.components",
    "MessageArea": "runtool.ui.components",
    "PageHeader": "runtool.ui.components",
    "CoveragePage": "runtool.ui.coverage",
    "DownloadManagerPage": "runtool.ui.download_manager",
    "FleetKpiPage": "runtool.ui.fleet_kpis",
    "Page": "runtool.ui.page",
    "PerRunPage": "runtool.ui.per_run",
    "PAGES": "runtool.ui.query",
    "PageLink": "runtool.ui.query",
    "QuerySelection": "runtool.ui.query",
    "page_url": "runtool.ui.query",
    "query_parameters": "runtool.ui.query",
    "read_selection": "runtool.ui.query",
    "run_url": "runtool.ui.query",
    "selection_query": "runtool.ui.query",
    "BackgroundTask": "runtool.ui.tasks",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'runtool.ui' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
