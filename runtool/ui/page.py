"""The frame shared by every page: services, selection from the URL, header, filter bar, messages, refresh.

A page subclass builds its own content widgets, hands them to :meth:`Page.frame`, implements
:meth:`Page._show` (draw the current selection) and calls :meth:`Page.start`.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Sequence
from typing import ClassVar

import ipywidgets as widgets

from runtool.config import ConfigError
from runtool.errors import RuntoolError
from runtool.models import LEVELS, Filters
from runtool.services import CacheInfo, RefreshCancelled, ServiceContainer
from runtool.services.run_search import RunSearch
from runtool.ui.components import LEVEL_LABELS, FilterBar, MessageArea, PageHeader
from runtool.ui.drawn import DrawnSignal
from runtool.ui.formatting import format_count
from runtool.ui.query import PageLink, page_url, query_parameters, read_selection
from runtool.ui.tasks import BackgroundTask
from runtool.ui.theme import STYLESHEET

__all__ = ["Page"]

log = logging.getLogger(__name__)


class Page:
    """Header, filter bar, "Link to this view", content, messages, and the inventory refresh lifecycle.

    ``services`` defaults to :meth:`ServiceContainer.from_environment`; ``query`` defaults to Voila's
    ``$QUERY_STRING``. Neither a bad configuration nor a bad link raises: both become messages.

    ``progressive`` (for a page on its way to a browser, as :func:`runtool.ui.serving.open_page` builds it):
    the page first shows its light parts and a "drawing" note where its heavy parts go (charts, the inventory
    grid); once the browser has painted that (:class:`~runtool.ui.drawn.DrawnSignal`), it redraws with them.
    A page built without it (JupyterLab, scripts, tests) is complete at once: :attr:`drawn` is always true.
    """

    link: ClassVar[PageLink]
    css_class: ClassVar[str]

    def __init__(
        self, services: ServiceContainer | None = None, query: str | None = None, progressive: bool = False
    ) -> None:
        self.messages = MessageArea()
        self.drawn_signal = DrawnSignal(self.render) if progressive else None
        self.drawing_note = widgets.HTML("Drawing…").add_class("rt-caption").add_class("rt-drawing")
        self.link_parameters = query_parameters(query)
        selection = read_selection(query)
        if selection.error:
            self.messages.error(selection.error)
        self.services = services if services is not None else self._services_from_environment()
        self.read_only = self.services.read_only if self.services is not None else True
        self.header = PageHeader(self.link, read_only=self.read_only)
        self.header.on_refresh(self.refresh)
        self.header.on_cancel(self.cancel_refresh)
        self.filter_bar = FilterBar(self._filter_options, selection.filters, RunSearch(self.services).search, self.link)
        self.filter_bar.on_change(lambda _filters: self._selection_changed())
        self.view_link = widgets.HTML().add_class("rt-view-link")
        self.refresh_task: BackgroundTask[CacheInfo] = BackgroundTask(f"refresh-{self.link.notebook}")
        self.empty_state = widgets.HTML().add_class("rt-empty-state").add_class("rt-view-empty")
        # Which view the content shows; "empty" means empty_state explains why there is nothing.
        self.view = "empty"
        self._refresh_started = 0.0
        # Renders come from the kernel thread (widget events) and from the refresh thread.
        self._render_lock = threading.RLock()
        self.widget = widgets.VBox().add_class("rt-page").add_class(self.css_class)

    def _services_from_environment(self) -> ServiceContainer | None:
        try:
            return ServiceContainer.from_environment()
        except ConfigError as exc:
            self.messages.report(exc, "reading the configuration")
            return None

    # -- building ------------------------------------------------------------------------------

    def frame(self, content: Sequence[widgets.Widget]) -> None:
        """Lay the page out: header, filter bar and view link, the messages (newest first), then ``content``.

        Messages sit above the content, where the eye is when a page opens (a rejected link, a bad configuration),
        not below thousands of pixels of charts.
        """
        # Top-aligned: the run search's suggestions grow the filter bar downwards, and the link stays on its row.
        filter_row = widgets.HBox(
            [self.filter_bar.widget, self.view_link],
            layout=widgets.Layout(align_items="flex-start", flex_flow="row wrap", justify_content="space-between"),
        )
        self.view_link.layout.margin = "6px 0 0 0"
        self.widget.children = [
            widgets.HTML(STYLESHEET),
            self.header.widget,
            filter_row,
            self.messages.widget,
            *content,
            *([self.drawn_signal] if self.drawn_signal is not None else []),
        ]

    def start(self) -> None:
        """Show the selection from the link; with no inventory yet, start the first scan in the background."""
        if self.services is not None:
            info = self.services.inventory.cache_info()
            if info.warning:
                self.messages.warning(info.warning)
            self.header.set_cache(info)
        self._update_links()
        if self.services is not None and not self.read_only and not self.services.inventory.has_data:
            self.refresh()
        else:
            self.render()

    def sent(self) -> None:
        """The page is on its way to a viewer: start the clock of the heavy parts' fallback, and bring the
        header's inventory age up to date (a preheated page may have been built minutes before)."""
        if self.drawn_signal is not None:
            self.drawn_signal.arm()
        if self.services is not None:
            self.header.set_cache(self.services.inventory.cache_info())

    # -- selection -----------------------------------------------------------------------------

    @property
    def filters(self) -> Filters:
        return self.filter_bar.filters

    def set_filters(self, filters: Filters) -> None:
        """Select ``filters`` (as a link would) and redraw."""
        self.filter_bar.set_filters(filters)
        self._selection_changed()

    def _filter_options(self, filters: Filters) -> dict[str, list[str]]:
        if self.services is None or not self.services.inventory.has_data:
            return {}
        return self.services.data_state.filter_options(filters)

    def _selection_changed(self) -> None:
        self._update_links()
        self.render()

    def view_settings(self) -> dict[str, str]:
        """Page settings that "Link to this view" carries besides the selection (none by default)."""
        return {}

    def _update_links(self) -> None:
        """Point the header links and "Link to this view" at the current selection."""
        self.header.set_selection(self.filters)
        href = html.escape(page_url(self.link, self.filters, self.view_settings()), quote=True)
        self.view_link.value = (
            f'<a href="{href}" target="_self" title="This page on this selection">Link to this view</a>'
        )

    # -- drawing -------------------------------------------------------------------------------

    def render(self) -> None:
        """Redraw the content for the current selection; a failure becomes a message, never a traceback."""
        with self._render_lock:
            try:
                if self.services is not None:
                    self.header.set_cache(self.services.inventory.cache_info())
                self._show()
            except Exception as exc:  # shown on the page by report(); the page stays usable
                log.exception("rendering %s failed", self.link.title)
                self.messages.report(exc, f"showing the {self.link.title.lower()} page")

    def _show(self) -> None:
        raise NotImplementedError

    @property
    def drawn(self) -> bool:
        """Whether the page may show its heavy parts: the browser has drawn the rest, or it is not progressive."""
        return self.drawn_signal is None or self.drawn_signal.fired

    @property
    def empty_text(self) -> str:
        """What the empty state says, or "" when the page shows data."""
        return self.empty_state.value if self.view == "empty" else ""

    def unavailable_reason(self) -> str | None:
        """Why the page has no data to show at all (no services, no inventory, empty buckets), else None."""
        if self.services is None:
            return "runtool could not start: the message below says why."
        if not self.services.inventory.has_data:
            if self.refreshing:
                return (
                    "No inventory yet: the buckets are being scanned now (progress in the header). "
                    "This page fills in when the scan ends."
                )
            if self.read_only:
                return (
                    "No inventory yet, and this server is read-only. Ask an operator to run `runtool refresh`, "
                    "then reload this page."
                )
            return "No inventory yet. Press Refresh to scan the buckets."
        if self.services.data_state.all_runs().empty:
            config = self.services.config
            action = "ask an operator to refresh the inventory" if self.read_only else "press Refresh"
            return (
                f"No runs in the buckets yet: `{config.raw_bucket}` and `{config.ml_bucket}` hold no recordings "
                f"that fit the layout. Upload recordings, then {action}."
            )
        return None

    def nothing_selected_text(self, filters: Filters) -> str:
        """The empty state of a selection without runs: why, and what to do."""
        deepest = max((i for i, level in enumerate(LEVELS) if getattr(filters, level)), default=0)
        level = LEVEL_LABELS[LEVELS[deepest]].lower()
        refresh = "" if self.read_only else " If recordings were uploaded since the last scan, press Refresh."
        return f"No runs under {filters.describe()}. Pick another {level}, or set it to All.{refresh}"

    # -- refresh -------------------------------------------------------------------------------

    @property
    def refreshing(self) -> bool:
        return self.refresh_task.running

    def refresh(self) -> None:
        """Rescan both buckets in a background thread; the page redraws when the scan ends."""
        if self.services is None or self.refresh_task.running:
            return
        inventory = self.services.inventory
        self._refresh_started = time.monotonic()
        self.header.show_progress(None)
        self.refresh_task.start(
            lambda cancel: inventory.refresh(progress=self.header.show_progress, cancel=cancel),
            self._refreshed,
            self._refresh_failed,
        )
        # The empty state of a page without inventory says that a scan is running.
        self.render()

    def cancel_refresh(self) -> None:
        self.refresh_task.cancel.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until a running refresh and its redraw are done (for scripts and tests)."""
        return self.refresh_task.join(timeout)

    def _refreshed(self, info: CacheInfo) -> None:
        self.header.show_idle(info)
        seconds = time.monotonic() - self._refresh_started
        self.messages.info(
            f"Inventory refreshed in {seconds:.1f} s: {format_count(info.objects)} objects in "
            f"{format_count(info.runs)} runs"
            + (f", {format_count(info.anomalies)} objects that do not fit the layout." if info.anomalies else ".")
        )
        self.filter_bar.refresh_options()
        self._selection_changed()

    def _refresh_failed(self, exc: Exception) -> None:
        info = self.services.inventory.cache_info() if self.services is not None else None
        self.header.show_idle(info)
        if isinstance(exc, RefreshCancelled):
            self.messages.info(str(exc))
        else:
            if not isinstance(exc, RuntoolError):
                log.error("inventory refresh failed unexpectedly", exc_info=exc)
            self.messages.report(exc, "refreshing the inventory")
        self.render()
