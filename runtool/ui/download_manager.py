"""Page 3, download manager (first slice): every selected run's cloud/local sync state and its issues.

Transfers (plan → preview → execute) arrive in a later slice.
"""

from __future__ import annotations

import dataclasses

import ipywidgets as widgets

from runtool.models import RunCoordinate
from runtool.services import ServiceContainer
from runtool.ui.components import Kpi, KpiCards
from runtool.ui.formatting import format_bytes, format_count, format_time
from runtool.ui.labels import laser_box_names
from runtool.ui.page import Page
from runtool.ui.query import DOWNLOAD_MANAGER, run_url
from runtool.ui.tables import Column, badge, html_table, link, text_cell
from runtool.ui.theme import sync_style

__all__ = ["DownloadManagerPage"]


class DownloadManagerPage(Page):
    """A table of the selected runs: raw and ML sync status (coloured, with words), counts, sizes, issues."""

    link = DOWNLOAD_MANAGER
    css_class = "rt-page-download-manager"
    ROW_LIMIT = 500

    def __init__(self, services: ServiceContainer | None = None, query: str | None = None) -> None:
        super().__init__(services, query)
        self.kpi_cards = KpiCards()
        self.table = widgets.HTML().add_class("rt-state-table")
        self.body = widgets.VBox([self.empty_state])
        self.frame([self.kpi_cards.widget, self.body])
        self.start()

    @property
    def kpis(self) -> dict[str, str]:
        return self.kpi_cards.values

    def _show(self) -> None:
        reason = self.unavailable_reason()
        if reason is not None or self.services is None:
            self._show_empty(reason or "")
            return
        filters = dataclasses.replace(self.filters, timestamp=None)
        runs = self.services.data_state.state_overview(filters)
        if runs.empty:
            self._show_empty(self.nothing_selected_text(filters))
            return
        self.kpi_cards.show([
            Kpi("Runs", format_count(len(runs))),
            Kpi("Raw not downloaded", format_count(int((runs["raw_sync"] == "cloud_only").sum())), "runs"),
            Kpi("Mismatches", format_count(int(((runs["raw_sync"] == "mismatch") | (runs["ml_sync"] == "mismatch"))
                                               .sum())), "runs whose cloud and local copies differ"),
            Kpi("Runs with issues", format_count(int((runs["issues"] != "").sum()))),
        ])
        names = laser_box_names(runs["lb_key"].unique().tolist(), filters)
        rows = []
        for row in runs.itertuples(index=False):
            coordinate = RunCoordinate(row.cid, row.regionid, row.fieldid, row.twid, row.lbid, row.timestamp)
            rows.append([
                link(run_url(coordinate), f"{names[row.lb_key]} · {format_time(row.start_time)}"),
                badge(sync_style(row.raw_sync, "raw")),
                badge(sync_style(row.ml_sync, "ml")),
                text_cell(f"{format_count(row.raw_bags)} / {format_count(row.local_bags)}"),
                text_cell(f"{format_count(row.ml_labels)} / {format_count(row.local_labels)}"),
                text_cell(format_bytes(row.raw_bytes)),
                text_cell(format_bytes(row.ml_bytes)),
                text_cell(row.issues),
            ])
        self.table.value = html_table(
            [Column("Run (UTC)"), Column("Raw"), Column("ML"), Column("Bags cloud / local", True),
             Column("Labels cloud / local", True), Column("Raw size", True), Column("ML size", True),
             Column("Issues")],
            rows,
            limit=self.ROW_LIMIT,
        )
        self.body.children = [self.table]
        self.view = "table"

    def _show_empty(self, text: str) -> None:
        self.kpi_cards.show([])
        self.empty_state.value = text
        self.body.children = [self.empty_state]
        self.view = "empty"
