"""The pieces every page is framed with: header, filter bar, section titles, KPI cards and the message area.

They know nothing about storage: the filter bar asks a callable for its options, the header is told
the cache age and the refresh progress. That keeps them reusable by every page and testable alone.
"""

from __future__ import annotations

import html
import logging
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import ipywidgets as widgets

from runtool.errors import RuntoolError
from runtool.models import LEVELS, Filters, RunCoordinate
from runtool.services import CacheInfo, RefreshProgress
from runtool.ui.formatting import format_age, format_count, format_count_of, format_time, format_typed
from runtool.ui.query import PAGES, PER_RUN, PageLink, page_url, run_url

if TYPE_CHECKING:
    from runtool.services.run_search import RunSearchResult, SearchHit

__all__ = [
    "ALL",
    "LEVEL_LABELS",
    "NO_DATA",
    "CheckChoices",
    "FilterBar",
    "JobProgress",
    "Kpi",
    "KpiCards",
    "Message",
    "MessageArea",
    "PageHeader",
    "close_tree",
    "section_title",
    "settings_row",
]

LEVEL_LABELS: dict[str, str] = {
    "cid": "Client",
    "regionid": "Region",
    "fieldid": "Field",
    "twid": "TW",
    "lbid": "Laser box",
}
ALL = ""
"""The dropdown value meaning "All" (a level value is never empty, so this cannot collide)."""
NO_DATA = "no data"
"""The label of a level that has nothing under the levels above it."""

log = logging.getLogger(__name__)


def close_tree(widget: widgets.Widget) -> None:
    """Close a widget and everything inside it, so replaced widgets do not pile up in kernel and browser."""
    if isinstance(widget, widgets.Box):
        for child in widget.children:
            close_tree(child)
    widget.close()


def section_title(title: str = "") -> widgets.HTML:
    """A section's title, as every page heads its parts; ``title`` is text (a title set later through ``.value``
    is markup, escaped by whoever sets it)."""
    return widgets.HTML(html.escape(title)).add_class("rt-section-title")


def settings_row(fields: Sequence[widgets.Widget], note: widgets.HTML) -> widgets.VBox:
    """A page's settings: ``fields`` on one row (wrapping on a narrow page), and under them ``note``, what the page
    says about what was typed, on the page's whole width (beside the fields, it got what the row left over and was
    squeezed into a narrow column)."""
    row = widgets.HBox(list(fields), layout=widgets.Layout(flex_flow="row wrap", align_items="center"))
    return widgets.VBox([row, note]).add_class("rt-settings")


# -- header ------------------------------------------------------------------------------------


class PageHeader:
    """Title, links to the three pages (carrying the selection), cache age and Refresh.

    While a refresh runs, a progress bar and a Cancel button take the Refresh button's place. In
    read-only mode the refresh controls are absent, not disabled.
    """

    PROGRESS_INTERVAL_S = 0.2
    """Progress arrives from many listing threads at once; the bar is redrawn at most this often."""

    def __init__(self, current: PageLink, read_only: bool) -> None:
        self.current = current
        self.read_only = read_only
        self.nav = widgets.HTML().add_class("rt-nav")
        self.cache_age = widgets.HTML().add_class("rt-cache-age")
        self.refresh_button: widgets.Button | None = None
        self.cancel_button: widgets.Button | None = None
        self.progress_bar: widgets.IntProgress | None = None
        self.progress_text = widgets.HTML().add_class("rt-refresh-progress-text")
        self.refresh_area = widgets.HBox().add_class("rt-refresh-area")
        self._on_refresh: list[Callable[[], None]] = []
        self._on_cancel: list[Callable[[], None]] = []
        self._progress_lock = threading.Lock()
        self._last_progress = 0.0
        if not read_only:
            self.refresh_button = widgets.Button(
                description="Refresh", tooltip="Rescan both buckets", button_style="primary"
            ).add_class("rt-refresh")
            self.refresh_button.on_click(lambda _: self._fire(self._on_refresh))
            self.cancel_button = widgets.Button(description="Cancel", tooltip="Stop the scan").add_class(
                "rt-refresh-cancel"
            )
            self.cancel_button.on_click(lambda _: self._fire(self._on_cancel))
            self.progress_bar = widgets.IntProgress(value=0, min=0, max=1, bar_style="info").add_class(
                "rt-refresh-progress"
            )
            self.refresh_area.children = (self.refresh_button,)
        title = widgets.HTML('<span class="rt-title">runtool</span>')
        utc = widgets.HTML('<span class="rt-caption">times in UTC</span>')
        # The time zone, cache age and Refresh stay together at the right: on a narrow window the header wraps
        # between the page links and them (margin-left auto keeps them right on their own line too).
        status = widgets.HBox([utc, self.cache_age, self.refresh_area],
                              layout=widgets.Layout(align_items="center", margin="0 0 0 auto"))
        self.widget = widgets.HBox(
            [title, self.nav, status.add_class("rt-header-status")],
            layout=widgets.Layout(width="100%", align_items="center", flex_flow="row wrap"),
        ).add_class("rt-header")
        self.set_selection(Filters())
        self.set_cache(None)

    def on_refresh(self, callback: Callable[[], None]) -> None:
        self._on_refresh.append(callback)

    def on_cancel(self, callback: Callable[[], None]) -> None:
        self._on_cancel.append(callback)

    @staticmethod
    def _fire(callbacks: list[Callable[[], None]]) -> None:
        for callback in callbacks:
            callback()

    def set_selection(self, filters: Filters) -> None:
        """Point the page links at ``filters``, so switching pages keeps the selection."""
        parts = []
        for page in PAGES:
            if page == self.current:
                parts.append(f'<span class="rt-nav-current">{html.escape(page.title)}</span>')
            else:
                href = html.escape(page_url(page, filters), quote=True)
                parts.append(f'<a href="{href}" target="_self">{html.escape(page.title)}</a>')
        self.nav.value = " | ".join(parts)

    def set_cache(self, info: CacheInfo | None) -> None:
        if info is None or info.scanned_at is None:
            self.cache_age.value = "no inventory yet"
        else:
            self.cache_age.value = f"cache {format_age(info.age_seconds)} old"

    @property
    def refreshing(self) -> bool:
        return self.progress_bar is not None and self.progress_bar in self.refresh_area.children

    def show_progress(self, progress: RefreshProgress | None) -> None:
        """Show the progress bar in place of the button (safe to call from any thread, throttled)."""
        if self.progress_bar is None or self.cancel_button is None:
            return
        with self._progress_lock:
            now = time.monotonic()
            starting = not self.refreshing
            throttled = progress is not None and progress.stage == "listing"
            if not starting and throttled and now - self._last_progress < self.PROGRESS_INTERVAL_S:
                return
            self._last_progress = now
            if starting:
                self.progress_bar.value = 0
                self.progress_text.value = "Starting the scan…"
                self.refresh_area.children = (self.progress_bar, self.progress_text, self.cancel_button)
            if progress is None:
                return
            if progress.shards_total:
                self.progress_bar.max = progress.shards_total
                self.progress_bar.value = min(progress.shards_done, progress.shards_total)
                shards = f" {progress.shards_done}/{progress.shards_total} parts,"
            else:
                shards = ""
            self.progress_text.value = f"Scanning:{shards} {format_count(progress.objects)} objects"

    def show_idle(self, info: CacheInfo | None) -> None:
        """Put the Refresh button back and show the cache age."""
        with self._progress_lock:
            if self.refresh_button is not None:
                self.refresh_area.children = (self.refresh_button,)
        self.set_cache(info)


# -- filter bar --------------------------------------------------------------------------------


class FilterBar:
    """Five cascading dropdowns, Client to Laser box, with "All" at every level, and a run search box.

    Changing a level resets every level below it (and the run timestamp); a level with nothing under
    the levels above is disabled and says "no data". A value that is selected but unknown (gone since a
    refresh, say; a link's is dropped by the page) stays selected and is marked, so the page can say why it shows
    nothing.

    Given ``search`` (text → :class:`~runtool.services.run_search.RunSearchResult`), a search box finds runs
    from a typed or pasted part of their coordinate and lists the matches as buttons. Picking a run selects
    it, timestamp included: the per-run page shows it, the other pages show its laser box and link to the
    run on the per-run page. Picking a level set (a field, a laser box) sets the levels down to it. A text
    that is a whole coordinate (a pasted path, key or link) opens its run at once; Enter picks the first match.
    """

    SEARCH_PLACEHOLDER = "Find a run: paste or type its coordinate"

    def __init__(
        self,
        options: Callable[[Filters], Mapping[str, Sequence[str]]],
        filters: Filters | None = None,
        search: Callable[[str], RunSearchResult] | None = None,
        page: PageLink | None = None,
    ) -> None:
        self._options = options
        self._filters = filters or Filters()
        self._listeners: list[Callable[[Filters], None]] = []
        self._quiet = False
        self.dropdowns: dict[str, widgets.Dropdown] = {}
        for level in LEVELS:
            dropdown = widgets.Dropdown(
                description=LEVEL_LABELS[level],
                options=[("All", ALL)],
                value=ALL,
                style={"description_width": "initial"},
                layout=widgets.Layout(width="auto", min_width="150px", max_width="260px"),
            ).add_class(f"rt-filter-{level}")
            dropdown.observe(self._changed(level), names="value")
            self.dropdowns[level] = dropdown
        self._search = search
        self._page = page
        self._result: RunSearchResult | None = None
        self._hit_buttons: list[widgets.Button] = []
        self.search_box: widgets.Text | None = None
        self.search_status = widgets.HTML().add_class("rt-run-search-status")
        self.search_more = widgets.HTML().add_class("rt-run-search-more")
        self.search_results = widgets.VBox(layout=widgets.Layout(align_items="flex-start"))
        self.search_results.add_class("rt-run-search-results")
        row: list[widgets.Widget] = list(self.dropdowns.values())
        if search is not None:
            self.search_box = widgets.Text(
                placeholder=self.SEARCH_PLACEHOLDER,
                tooltip=self._search_tooltip(),
                continuous_update=True,
                layout=widgets.Layout(width="320px"),
            ).add_class("rt-run-search")
            self.search_box.observe(self._search_typed, names="value")
            # Enter arrives as the Text view's "submit" message (on_submit, its only other door, is deprecated).
            self.search_box.on_msg(self._search_message)
            row += [self.search_box, self.search_status]
        levels = widgets.HBox(row, layout=widgets.Layout(flex_flow="row wrap", align_items="center"))
        self.widget = widgets.VBox([levels, self.search_results])
        self.widget.add_class("rt-filter-bar")
        self.refresh_options()

    @property
    def filters(self) -> Filters:
        return self._filters

    def on_change(self, callback: Callable[[Filters], None]) -> None:
        """Call ``callback(filters)`` after the user changes a level."""
        self._listeners.append(callback)

    def set_filters(self, filters: Filters) -> None:
        """Show ``filters`` (a programmatic change: listeners are not called)."""
        self._filters = filters
        self.refresh_options()

    def select(self, level: str, value: str | None) -> None:
        """Change one level as the user would (resets the levels below, calls the listeners)."""
        self.dropdowns[level].value = value or ALL

    def refresh_options(self) -> None:
        """Rebuild every dropdown's options from the current data (after a refresh, say)."""
        available = self._options(self._filters)
        with self._quietly():
            for level, dropdown in self.dropdowns.items():
                values = list(available.get(level, ()))
                current = getattr(self._filters, level)
                choices: list[tuple[str, str]] = [(value, value) for value in values]
                if current is not None and current not in values:
                    choices.append((f"{current} ({NO_DATA})", current))
                if not choices:
                    dropdown.options = [(NO_DATA, ALL)]
                    dropdown.value = ALL
                    dropdown.disabled = True
                    continue
                dropdown.options = [("All", ALL), *choices]
                dropdown.value = current or ALL
                dropdown.disabled = False

    @contextmanager
    def _quietly(self) -> Iterator[None]:
        """Suppress the observers while options are rebuilt (rebuilding fires value changes)."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False

    def _changed(self, level: str) -> Callable[[dict[str, object]], None]:
        def observer(change: dict[str, object]) -> None:
            if self._quiet:
                return
            value = str(change["new"] or "") or None
            # What the search box said about its last pick no longer describes the selection.
            self.search_status.value = ""
            self._list_hits(None)
            self._select(self._filters.replace(**{level: value}))

        return observer

    def _select(self, filters: Filters) -> None:
        self._filters = filters
        self.refresh_options()
        for callback in self._listeners:
            callback(self._filters)

    # -- run search ------------------------------------------------------------------------------

    @property
    def search_text(self) -> str:
        """What the search box says about the last search (no match, refused, what was opened), as text."""
        return html.unescape(re.sub(r"<[^>]+>", "", self.search_status.value))

    @property
    def search_hits(self) -> tuple[SearchHit, ...]:
        """The matches listed under the box (none once one is picked)."""
        return self._result.hits if self._result is not None and self.search_results.children else ()

    def search(self, text: str) -> None:
        """Type ``text`` into the search box, as a user would."""
        if self.search_box is None:
            raise RuntimeError("this filter bar has no search box")
        self.search_box.value = text

    def pick(self, hit: SearchHit) -> None:
        """Open a match as a click on its button does: a run is selected, a level set sets the levels down to it."""
        self._list_hits(None)
        if hit.filters != self._filters:
            self._select(hit.filters)
        self.search_status.value = self._opened_text(hit)

    def _search_tooltip(self) -> str:
        opens = (
            "A run opens on this page."
            if self._page == PER_RUN
            else "A run selects its laser box here, with a link to the run on the per-run page."
        )
        return (
            "A full coordinate (client/region/field/TW/laser box/time), a bucket key or path of a bag, a page link, "
            f"or part of one (LB_0011, field_115/TW_001, 2025-09-12 09:13). Pick a match below: {opens} "
            "A client, field or laser box sets the filters down to it. Enter picks the first match."
        )

    def _search_typed(self, change: Mapping[str, object]) -> None:
        text = str(change["new"])
        result = self._run_search(text)
        if result is None:
            return
        self._result = result
        if result.exact is not None and result.exact.is_run:
            self.pick(result.exact)
        elif not text.strip():
            self.search_status.value = ""
            self._list_hits(None)
        elif not result.hits:
            self.search_status.value = f"No run matches “{html.escape(format_typed(text))}”."
            self._list_hits(None)
        else:
            self.search_status.value = ""
            self._list_hits(result)

    def _run_search(self, text: str) -> RunSearchResult | None:
        """The search's result, or None after saying next to the box why there is none."""
        assert self._search is not None
        try:
            return self._search(text)
        except RuntoolError as exc:  # a refused text or no inventory: the error is the sentence to show
            message = html.escape(str(exc))
        except Exception as exc:  # a bug: said next to the box, logged with its traceback for a developer
            log.exception("run search for %r failed", text)
            message = f"The search failed unexpectedly ({html.escape(type(exc).__name__)}). Try other text."
        self._result = None
        self._list_hits(None)
        self.search_status.value = f'<span class="rt-run-search-error">{message}</span>'
        return None

    def _search_message(self, _widget: Any, content: Mapping[str, object], _buffers: object) -> None:
        if content.get("event") != "submit" or self._result is None:
            return
        hit = self._result.exact or (self._result.hits[0] if self._result.hits else None)
        if hit is not None:
            self.pick(hit)

    def _list_hits(self, result: RunSearchResult | None) -> None:
        """Show ``result``'s matches as buttons (reused from search to search), and how many more there are."""
        if result is None or not result.hits:
            self.search_results.children = ()
            return
        while len(self._hit_buttons) < len(result.hits):
            button = widgets.Button(layout=widgets.Layout(width="auto", max_width="100%"))
            button.add_class("rt-run-search-hit")
            button.on_click(self._hit_clicked(len(self._hit_buttons)))
            self._hit_buttons.append(button)
        for button, hit in zip(self._hit_buttons, result.hits, strict=False):
            button.description = self._hit_label(hit)
            button.tooltip = ("Open run " if hit.is_run else "Select ") + hit.path
        self.search_more.value = self._more_text(result)
        more = (self.search_more,) if self.search_more.value else ()
        self.search_results.children = (*self._hit_buttons[: len(result.hits)], *more)

    def _hit_clicked(self, position: int) -> Callable[[widgets.Button], None]:
        def clicked(_button: widgets.Button) -> None:
            hits = self.search_hits
            if position < len(hits):
                self.pick(hits[position])

        return clicked

    @staticmethod
    def _hit_label(hit: SearchHit) -> str:
        if hit.is_run:
            coordinate = RunCoordinate.from_filters(hit.filters)
            laser_box = "/".join(coordinate.to_path_tuple()[:-1])
            return f"Run {laser_box} · {format_time(coordinate.start_time)}"
        return f"{LEVEL_LABELS[hit.level]} {hit.path} · {format_count_of(hit.runs, 'run')}"

    @staticmethod
    def _more_text(result: RunSearchResult) -> str:
        more = []
        if result.more_runs > 0:
            more.append(format_count_of(result.more_runs, "more run"))
        if result.more_sets > 0:
            more.append(f"{format_count(result.more_sets)} more clients, fields or laser boxes")
        return f"…and {' and '.join(more)}: type more of the coordinate to narrow the list." if more else ""

    def _opened_text(self, hit: SearchHit) -> str:
        if not hit.is_run:
            label = LEVEL_LABELS[hit.level]
            return html.escape(f"Showing {label if label.isupper() else label.lower()} {hit.path}.")
        coordinate = RunCoordinate.from_filters(hit.filters)
        shown = html.escape(f"Run {coordinate.lbid} · {format_time(coordinate.start_time)}")
        if self._page == PER_RUN:
            return f"{shown} is shown."
        href = html.escape(run_url(coordinate), quote=True)
        return (
            f'{shown}: its laser box is selected. <a href="{href}" target="_self" class="rt-run-search-open" '
            f'title="{html.escape(coordinate.to_path_str(), quote=True)}">Open the run on the per-run page</a>'
        )


# -- choices ---------------------------------------------------------------------------------


class CheckChoices:
    """A label and one checkbox per choice on one line; ``value`` is the tuple of the checked choices' values."""

    def __init__(self, label: str, choices: Sequence[tuple[str, str]], css: str) -> None:
        self.boxes = {
            value: widgets.Checkbox(value=True, description=text, indent=False,
                                    layout=widgets.Layout(width="auto", margin="0 0 0 12px"))
            for text, value in choices
        }
        self.widget = widgets.HBox([widgets.HTML(f"{html.escape(label)}:"), *self.boxes.values()],
                                   layout=widgets.Layout(align_items="center")).add_class(css)

    @property
    def value(self) -> tuple[str, ...]:
        return tuple(value for value, box in self.boxes.items() if box.value)

    @value.setter
    def value(self, chosen: Sequence[str]) -> None:
        for value, box in self.boxes.items():
            box.value = value in chosen


# -- KPI cards ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kpi:
    """One card: a big number, its label and a small caption."""

    label: str
    value: str
    caption: str = ""


class KpiCards:
    """A row of 3–6 KPI cards; the cards are updated in place when the count stays the same."""

    def __init__(self) -> None:
        self.widget = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap")).add_class("rt-kpis")
        self._cards: list[tuple[widgets.HTML, widgets.HTML, widgets.HTML]] = []
        self._shown: tuple[Kpi, ...] = ()

    @property
    def values(self) -> dict[str, str]:
        """Label → shown value text."""
        return {kpi.label: kpi.value for kpi in self._shown}

    @property
    def captions(self) -> dict[str, str]:
        return {kpi.label: kpi.caption for kpi in self._shown}

    def show(self, kpis: Sequence[Kpi]) -> None:
        if len(kpis) != len(self._cards):
            for box in self.widget.children:
                close_tree(box)
            self._cards = [
                (
                    widgets.HTML().add_class("rt-kpi-value"),
                    widgets.HTML().add_class("rt-kpi-label"),
                    widgets.HTML().add_class("rt-kpi-caption"),
                )
                for _ in kpis
            ]
            self.widget.children = [widgets.VBox(list(parts)).add_class("rt-kpi") for parts in self._cards]
        for (value, label, caption), kpi in zip(self._cards, kpis, strict=True):
            value.value = html.escape(kpi.value)
            label.value = html.escape(kpi.label)
            caption.value = html.escape(kpi.caption)
        self._shown = tuple(kpis)


# -- messages ----------------------------------------------------------------------------------

Level = Literal["info", "warning", "error"]


@dataclass(frozen=True)
class Message:
    level: Level
    text: str
    details: str | None = None


class MessageArea:
    """Info, warning and error lines, newest first, each dismissible.

    Errors are sentences a stakeholder can act on; the traceback sits one click away in a collapsed
    "Details" section, never in the default view.
    """

    LIMIT = 20
    """Older messages are dropped beyond this many."""

    def __init__(self) -> None:
        self.widget = widgets.VBox().add_class("rt-messages")
        self._entries: list[tuple[Message, widgets.VBox]] = []
        self._lock = threading.Lock()

    @property
    def messages(self) -> list[Message]:
        """Newest first."""
        return [message for message, _ in self._entries]

    def info(self, text: str) -> None:
        self.add(Message("info", text))

    def warning(self, text: str) -> None:
        self.add(Message("warning", text))

    def error(self, text: str, details: str | None = None) -> None:
        self.add(Message("error", text, details))

    def report(self, exc: BaseException, doing: str) -> None:
        """Show an exception: runtool's own errors are already sentences; anything else is a bug."""
        details = "".join(traceback.format_exception(exc))
        if isinstance(exc, RuntoolError):
            text = str(exc)
        else:
            text = (
                f"Something unexpected went wrong while {doing} ({type(exc).__name__}: {exc}). "
                "Reload the page to try again; the details below help a developer."
            )
        self.error(text, details)

    def add(self, message: Message) -> None:
        label = {"info": "Info", "warning": "Warning", "error": "Error"}[message.level]
        text = widgets.HTML(f"<b>{label}:</b> {html.escape(message.text)}", layout=widgets.Layout(flex="1 1 auto"))
        dismiss = widgets.Button(description="×", tooltip="Dismiss", layout=widgets.Layout(width="32px"))
        dismiss.add_class("rt-message-dismiss")
        parts: list[widgets.Widget] = [widgets.HBox([text, dismiss], layout=widgets.Layout(align_items="center"))]
        if message.details:
            details = widgets.Accordion(
                children=[widgets.HTML(f"<pre>{html.escape(message.details)}</pre>")], titles=("Details",)
            )
            details.selected_index = None
            parts.append(details.add_class("rt-message-details"))
        entry = widgets.VBox(parts).add_class("rt-message").add_class(f"rt-message-{message.level}")
        dismiss.on_click(lambda _: self._dismiss(entry))
        with self._lock:
            self._entries.insert(0, (message, entry))
            dropped = self._entries[self.LIMIT :]
            del self._entries[self.LIMIT :]
            self.widget.children = [box for _, box in self._entries]
        for _, box in dropped:
            close_tree(box)

    def clear(self) -> None:
        with self._lock:
            entries, self._entries = self._entries, []
            self.widget.children = []
        for _, box in entries:
            close_tree(box)

    def withdraw(self, text: str) -> None:
        """Remove the messages saying ``text`` (one that stopped being true)."""
        with self._lock:
            gone = [box for message, box in self._entries if message.text == text]
            self._entries = [(m, box) for m, box in self._entries if m.text != text]
            self.widget.children = [box for _, box in self._entries]
        for box in gone:
            close_tree(box)

    def _dismiss(self, entry: widgets.VBox) -> None:
        with self._lock:
            self._entries = [(m, box) for m, box in self._entries if box is not entry]
            self.widget.children = [box for _, box in self._entries]
        close_tree(entry)


class JobProgress:
    """The running job's progress: a bar, a line of text and Cancel; empty while no job runs.

    Progress arrives from worker threads many times a second; the widgets are redrawn at most every
    :attr:`INTERVAL_S`, except for the first and the forced updates (a new stage).
    """

    INTERVAL_S = 0.2
    STEPS = 1000

    def __init__(self) -> None:
        self.bar = widgets.IntProgress(min=0, max=self.STEPS, layout=widgets.Layout(width="320px"))
        self.bar.add_class("rt-progress")
        self.text = widgets.HTML().add_class("rt-progress-text")
        self.cancel_button = widgets.Button(description="Cancel", tooltip="Stop this job").add_class("rt-cancel")
        self.widget = widgets.HBox(layout=widgets.Layout(align_items="center")).add_class("rt-job")
        self._lock = threading.Lock()
        self._last = 0.0
        self._subject = ""

    def start(self, text: str, cancellable: bool, subject: str = "") -> None:
        """Show a new job; ``subject`` (what it works on, e.g. a run) leads every line of its text."""
        with self._lock:
            self._subject = subject
            self.bar.value = 0
            self.text.value = self._line(text)
            self._last = time.monotonic()
            self.widget.children = (self.bar, self.text, *((self.cancel_button,) if cancellable else ()))

    def update(self, fraction: float, text: str, force: bool = False) -> None:
        """Show ``fraction`` (0–1) done and ``text``; safe from any thread."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < self.INTERVAL_S:
                return
            self._last = now
            self.bar.value = round(min(1.0, max(0.0, fraction)) * self.STEPS)
            self.text.value = self._line(text)

    def _line(self, text: str) -> str:
        return html.escape(f"{self._subject}: {text}" if self._subject else text)

    def finish(self) -> None:
        with self._lock:
            self.widget.children = ()
