"""The frame shared by every page: services, selection from the URL, header, filter bar, messages, refresh, jobs.

A page subclass builds its own content widgets, hands them to :meth:`Page.frame`, implements
:meth:`Page._show` (draw the current selection) and :meth:`Page._show_empty` (say why there is nothing to draw),
and calls :meth:`Page.start`. A page with actions starts their background work through :meth:`Page._run_job`
after :meth:`Page._refused` has let it.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import ClassVar, TypeVar

import ipywidgets as widgets

from runtool.config import ConfigError
from runtool.errors import RuntoolError
from runtool.models import LEVELS, Filters
from runtool.services import CacheInfo, RefreshCancelled, ServiceContainer
from runtool.services.run_search import RunSearch
from runtool.ui.components import LEVEL_LABELS, FilterBar, JobProgress, MessageArea, PageHeader
from runtool.ui.drawn import DrawnSignal
from runtool.ui.formatting import format_count
from runtool.ui.linked_run import complete_link
from runtool.ui.query import PageLink, known_selection, page_url, query_parameters, read_selection
from runtool.ui.tasks import BackgroundTask, TaskBusyError
from runtool.ui.theme import STYLESHEET
from runtool.ui.tick_guard import TickGuard

__all__ = ["Page"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Page:
    """Header, filter bar, "Link to this view", content, messages, the inventory refresh and the job lifecycle.

    ``services`` defaults to :meth:`ServiceContainer.from_environment`; ``query`` defaults to Voila's
    ``$QUERY_STRING``. Neither a bad configuration nor a bad link raises: both become messages.

    ``progressive`` (for a page on its way to a browser, as :func:`runtool.ui.serving.open_page` builds it):
    the page first shows its light parts and a "drawing" note where its heavy parts go (charts, the inventory
    grid); once the browser has painted that (:class:`~runtool.ui.drawn.DrawnSignal`), it redraws with them.
    A page built without it (JupyterLab, scripts, tests) is complete at once: :attr:`drawn` is always true.
    """

    link: ClassVar[PageLink]
    css_class: ClassVar[str]
    job_cancellations: ClassVar[tuple[type[Exception], ...]] = ()
    """The errors a job raises when the user cancelled it: shown as information, not as errors."""
    body: widgets.VBox
    """The page's content under its filter bar: its view, or the empty state (each page builds it)."""

    def __init__(
        self, services: ServiceContainer | None = None, query: str | None = None, progressive: bool = False
    ) -> None:
        self.messages = MessageArea()
        self.drawn_signal = DrawnSignal(self.render) if progressive else None
        self.tick_guard = TickGuard()
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
        self.link_filters = self._completed(selection.filters)
        """The selection the page's link asks for (completed by :meth:`_completed`)."""
        self.filter_bar = FilterBar(self._filter_options, self.link_filters, RunSearch(self.services).search,
                                    self.link)
        self.filter_bar.on_change(lambda _filters: self._selection_changed())
        self.view_link = widgets.HTML().add_class("rt-view-link")
        self.refresh_task: BackgroundTask[CacheInfo] = BackgroundTask(f"refresh-{self.link.notebook}")
        # A job returns its own continuation, so one task type serves every kind of job (see _run_job).
        self.job_task: BackgroundTask[Callable[[], None]] = BackgroundTask(f"job-{self.link.notebook}")
        self._busy_notes: list[tuple[MessageArea, str]] = []
        """"Has to wait" notes shown while the running job runs (withdrawn when it ends)."""
        self.empty_state = widgets.HTML().add_class("rt-empty-state").add_class("rt-view-empty")
        self._empty_text = ""
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
            self.tick_guard,
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
        """Select ``filters`` and redraw."""
        self.filter_bar.set_filters(filters)
        self._selection_changed()

    def follow_link(self, filters: Filters) -> None:
        """Select what a link's ``filters`` name, as the page built for that link does (a preheated page given a
        link's selection after it was built)."""
        self.link_filters = self._completed(filters)
        self.set_filters(self.link_filters)

    def _completed(self, filters: Filters) -> Filters:
        """A link's ``filters`` as the page shows them, each change said in the banner: a level value that matches
        nothing in the inventory falls back to All with the levels below it (:func:`~runtool.ui.query.known_selection`);
        the levels a link skipped are filled in when one place (one run at its timestamp) matches, else the banner says
        why its run is not shown, or lists the places that match (:func:`~runtool.ui.linked_run.complete_link`)."""
        if self.services is not None and self.services.inventory.has_data:
            known = known_selection(filters, self.services.data_state.filter_options(filters))
            if known.error:
                self.messages.error(known.error)
            filters = known.filters
        completed, message = complete_link(self.services, filters)
        if message is not None:
            self.messages.add(message)
        return completed

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

    def _show_empty(self, text: str) -> None:
        """Show ``text`` (why there is nothing to draw) instead of the content; :attr:`view` becomes ``"empty"``."""
        raise NotImplementedError

    def _set_empty(self, text: str) -> None:
        """The content becomes the empty state saying ``text``, plain text shown escaped: it names a selection,
        whose values come from a link or a bucket's keys (a link's ``?cid=<img onerror=…>`` ran its script)."""
        self._empty_text = text
        self.empty_state.value = html.escape(text)
        self.body.children = [self.empty_state]
        self.view = "empty"

    def _available_services(self) -> ServiceContainer | None:
        """The services, when the page has data to draw; else None, and the empty state says why
        (:meth:`unavailable_reason`). A page's :meth:`_show` starts with it."""
        reason = self.unavailable_reason()
        if reason is not None or self.services is None:
            self._show_empty(reason or "")
            return None
        return self.services

    @property
    def drawn(self) -> bool:
        """Whether the page may show its heavy parts: the browser has drawn the rest, or it is not progressive."""
        return self.drawn_signal is None or self.drawn_signal.fired

    @property
    def empty_text(self) -> str:
        """What the empty state says, or "" when the page shows data."""
        return self._empty_text if self.view == "empty" else ""

    def unavailable_reason(self) -> str | None:
        """Why the page has no data to show at all (no services, no inventory, empty buckets), else None."""
        if self.services is None:
            return "runtool could not start: the message above says why."
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
        """Wait until a running refresh or job and its redraw are done (for scripts and tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        return self.refresh_task.join(remaining()) and self.job_task.join(remaining())

    def _refreshed(self, info: CacheInfo) -> None:
        self.header.show_idle(info)
        seconds = time.monotonic() - self._refresh_started
        self.messages.info(
            f"Inventory refreshed in {seconds:.1f} s: {format_count(info.objects)} objects of "
            f"{format_count(info.runs)} runs in the buckets"
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

    # -- jobs ----------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a job (the background work of an action) is running."""
        return self.job_task.running

    def _refused(self, doing: str, area: MessageArea | None = None) -> bool:
        """Whether ``doing`` cannot start now; if so, a message says why.

        Not on this server (read-only, or runtool could not start) is about the page: it goes to the top. The
        page's own precondition (:meth:`_job_refusal`) and another job still running go to ``area``, the messages
        beside the control the user pressed (the top of the page without one).
        """
        if self.services is None:
            self.messages.error(f"{doing} is not possible: runtool could not start (the message above says why).")
            return True
        if self.read_only:
            self.messages.error(f"{doing} is not possible here: this server is read-only.")
            return True
        target = area or self.messages
        reason = self._job_refusal(doing)
        if reason is not None:
            target.error(reason)
            return True
        if self.busy:
            self._busy_note(target, doing)
            return True
        return False

    def _busy_note(self, area: MessageArea, doing: str) -> None:
        """Say that ``doing`` has to wait for the running job; the note goes when that job ends."""
        text = self._busy_text(doing)
        area.warning(text)
        self._busy_notes.append((area, text))

    def _job_refusal(self, doing: str) -> str | None:
        """Why ``doing`` cannot start on what the page shows, as a sentence (None: it can); none by default."""
        return None

    @staticmethod
    def _busy_text(doing: str) -> str:
        return (f"{doing[:1].upper()}{doing[1:]} has to wait: another job is still running. "
                "Wait for it to end, or cancel it.")

    def _run_job(
        self,
        work: Callable[[threading.Event], T],
        done: Callable[[T], None],
        doing: str,
        *,
        area: MessageArea | None = None,
        progress: JobProgress | None = None,
        text: str = "",
        cancellable: bool = True,
        subject: str = "",
        failed: Callable[[Exception], None] | None = None,
        redraw: bool = True,
    ) -> None:
        """Run ``work(cancel)`` in the background, then ``done(result)``; the page stays usable meanwhile.

        Call it once :meth:`_refused` has let the job start; ``doing`` names the job in messages. ``area`` is the
        message area beside the control that started the job (the top of the page without one): it is cleared
        now, since what it said was about the previous attempt, and gets what goes wrong: a cancel
        (:attr:`job_cancellations`) as information, runtool's own errors as their sentence alone, anything else
        with the details a developer needs. ``progress`` shows ``text`` and a bar (Cancel when ``cancellable``)
        until the job ends, each line led by ``subject`` (what the job works on) when given. ``failed`` undoes
        what the page showed for a job that raised. ``done`` runs under the render lock, as it changes what a
        redraw reads; then :meth:`_job_ended` redraws, after a failure too (a failed job may have changed the
        state all the same). ``redraw=False`` is for work that changed nothing a redraw would show (a preview).
        """
        target = area or self.messages
        if area is not None:
            area.clear()

        def job(cancel: threading.Event) -> Callable[[], None]:
            result = work(cancel)
            return lambda: done(result)

        def finished(continuation: Callable[[], None]) -> None:
            if progress is not None:
                progress.finish()
            with self._render_lock:
                try:
                    continuation()
                except Exception as exc:  # shown on the page; the page is redrawn below all the same
                    self._report_job_error(target, exc, doing)
            self._job_ended(redraw)

        def error(exc: Exception) -> None:
            if progress is not None:
                progress.finish()
            if failed is not None:
                failed(exc)
            self._report_job_error(target, exc, doing)
            self._job_ended(redraw)

        # Busy first: a quick job may end, and redraw the controls enabled, before start() returns.
        self._show_busy()
        if progress is not None:
            progress.start(text, cancellable, subject)
        try:
            self.job_task.start(job, finished, error)
        except TaskBusyError:  # another thread started one since _refused looked
            self._busy_note(target, doing)

    def _report_job_error(self, area: MessageArea, exc: Exception, doing: str) -> None:
        """A cancel as information; runtool's own error (a typo, a missing file) as its sentence, with its own
        details if it has any; anything else with the details a developer needs, one click away."""
        if isinstance(exc, self.job_cancellations):
            area.info(str(exc))
        elif isinstance(exc, RuntoolError):
            # Its details (every failed item) one click away, except for a read-only viewer: they may name places on
            # the server.
            area.error(str(exc), None if self.read_only else exc.details)
        else:
            log.error("%s failed unexpectedly", doing, exc_info=exc)
            area.report(exc, doing[:1].lower() + doing[1:])

    def _show_busy(self) -> None:
        """Show that a job is starting (disable what may not run beside it); nothing by default."""

    def _job_ended(self, redraw: bool) -> None:
        """After a job and its continuation: withdraw the "has to wait" notes it caused (a double click left one
        beside the job's result) and draw the page again (with ``redraw``)."""
        notes, self._busy_notes = self._busy_notes, []
        for area, text in notes:
            area.withdraw(text)
        if redraw:
            self.render()

    def cancel_job(self) -> None:
        """Ask the running job to stop (it stops at its next check of the cancel flag)."""
        self.job_task.cancel.set()
