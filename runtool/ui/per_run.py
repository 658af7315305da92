"""Page 2, per-run analysis (first slice): pick a run and see where it stands, cloud to analysis.

The actions (download, extract, analyse) arrive in a later slice; this page already names the next one.
"""

from __future__ import annotations

import dataclasses
import html

import ipywidgets as widgets

from runtool.models import LEVELS, NextAction, RunCoordinate, RunState, parse_timestamp
from runtool.services import ServiceContainer
from runtool.ui.formatting import format_bytes, format_count, format_time
from runtool.ui.page import Page
from runtool.ui.query import PER_RUN
from runtool.ui.theme import sync_style

__all__ = ["PerRunPage"]


def _card(title: str, lines: list[str], css: str) -> widgets.HTML:
    body = "".join(f"<div>{line}</div>" for line in lines)
    return widgets.HTML(f'<div class="rt-section-title">{html.escape(title)}</div>{body}').add_class(
        "rt-status-card"
    ).add_class(css)


def _badge(status_label: str, colour: str) -> str:
    return f'<span class="rt-badge" style="background:{colour}">{html.escape(status_label)}</span>'


class PerRunPage(Page):
    """One run's cloud, local, extraction and analysis state, and its next step."""

    link = PER_RUN
    css_class = "rt-page-per-run"

    def __init__(self, services: ServiceContainer | None = None, query: str | None = None) -> None:
        super().__init__(services, query)
        self.run_picker = widgets.Dropdown(
            description="Run (UTC)", options=[], style={"description_width": "initial"},
            layout=widgets.Layout(width="320px"),
        ).add_class("rt-run-picker")
        self.run_picker.observe(self._run_picked, names="value")
        self.cards = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap")).add_class("rt-run-cards")
        self.next_action = widgets.HTML().add_class("rt-next-action")
        self.issues = widgets.HTML().add_class("rt-run-issues")
        self.run_view = widgets.VBox([self.cards, self.next_action, self.issues]).add_class("rt-view-run")
        self.body = widgets.VBox([self.empty_state])
        self.run_state: RunState | None = None
        self._picking = False
        self.frame([self.run_picker, self.body])
        self.start()

    def select_run(self, timestamp: str) -> None:
        """Show the run of the selected laser box that started at ``timestamp``."""
        self.set_filters(self.filters.replace(timestamp=timestamp))

    def _run_picked(self, change: dict[str, object]) -> None:
        if not self._picking and change["new"]:
            self.select_run(str(change["new"]))

    def _show(self) -> None:
        self.run_state = None
        reason = self.unavailable_reason()
        if reason is not None or self.services is None:
            self._show_empty(reason or "")
            return
        lb_filters = dataclasses.replace(self.filters, timestamp=None)
        if any(getattr(lb_filters, level) is None for level in LEVELS):
            self._show_empty("Pick a client, region, field, TW and laser box to list its runs.")
            return
        timestamps = self.services.data_state.available_timestamps(lb_filters)
        if not timestamps:
            self._show_empty(self.nothing_selected_text(lb_filters))
            return
        wanted = self.filters.timestamp
        chosen = wanted if wanted in timestamps else timestamps[0]
        self._set_picker(timestamps, chosen)
        if chosen != wanted:
            self.filter_bar.set_filters(self.filters.replace(timestamp=chosen))
            self._update_links()
            if wanted is not None:
                self.messages.warning(f"The run {wanted} is not under this laser box; showing the newest run.")
        coordinate = RunCoordinate.from_filters(self.filters)
        self.run_state = self.services.data_state.get_complete_run_state(coordinate)
        self._show_state(self.run_state)

    def _set_picker(self, timestamps: list[str], chosen: str | None) -> None:
        self._picking = True
        try:
            self.run_picker.options = [(format_time(parse_timestamp(ts)), ts) for ts in timestamps]
            self.run_picker.value = chosen
            self.run_picker.disabled = not timestamps
        finally:
            self._picking = False

    def _show_empty(self, text: str) -> None:
        self._set_picker([], None)
        self.empty_state.value = text
        self.body.children = [self.empty_state]
        self.view = "empty"

    def _show_state(self, state: RunState) -> None:
        raw_sync, ml_sync = sync_style(state.raw_sync, "raw"), sync_style(state.ml_sync, "ml")
        cloud_raw, cloud_ml = state.cloud_raw, state.cloud_ml
        local_raw, local_ml = state.local_raw, state.local_ml
        extraction = state.extraction
        self.cards.children = [
            _card("Cloud", [
                f"Raw: {format_count(cloud_raw.bag_count)} bags, {format_bytes(cloud_raw.total_size)}",
                f"ML: {format_count(cloud_ml.label_count)} labels, {format_count(cloud_ml.frame_count)} frames, "
                f"{format_bytes(cloud_ml.total_bytes)}",
            ], "rt-card-cloud"),
            _card("Local", [
                f"Raw: {format_count(local_raw.bag_count)} bags, {format_bytes(local_raw.total_size)} "
                + _badge(raw_sync.label, raw_sync.colour),
                f"ML: {format_count(local_ml.label_count)} labels, {format_count(local_ml.frame_count)} frames, "
                f"{format_bytes(local_ml.total_bytes)} " + _badge(ml_sync.label, ml_sync.colour),
            ], "rt-card-local"),
            _card("Extraction", [
                "extracted" if extraction.extracted
                else "not extracted: missing " + html.escape(", ".join(extraction.missing)),
            ], "rt-card-extraction"),
            _card("Analysis", ["analysed" if extraction.analyzed else "not analysed"], "rt-card-analysis"),
        ]
        action = state.next_action
        self.next_action.value = (
            "<b>Next: nothing, the run is complete</b>" if action is NextAction.COMPLETE
            else f"<b>Next: {html.escape(action.value)}</b>"
        )
        self.issues.value = (
            "<ul>" + "".join(f"<li>{html.escape(issue)}</li>" for issue in state.issues) + "</ul>"
            if state.issues else ""
        )
        self.body.children = [self.run_view]
        self.view = "run"
