"""Page 3, download manager: every selected run's raw or ML state, and operations over many runs.

The inventory table (an ipydatagrid: sortable by a header click, filterable, selectable rows) shows the
selection for the raw or the ML side with a status filter; the totals sit above it, a CSV of the rows shown
below it. A click on a run's start time opens it on the per-run page; the selected runs' links to that page sit
beside the selection line. Below it, three tabs:
transfer the selected runs (or every run shown when none is ticked) with preview → execute, upload a
labelling export by its id, and fetch a training dataset with a live plan. Work runs in the background with
per-run and overall progress and Cancel; the table redraws itself afterwards. What an action reports (a
typo'd export id, a busy page) appears in its own tab, as a sentence, and goes when the tab changes.
Read-only servers show the table alone.
"""

from __future__ import annotations

import dataclasses
import html
import threading
from collections.abc import Mapping, Sequence
from typing import Literal

import ipywidgets as widgets
import pandas as pd

from runtool.errors import RuntoolError
from runtool.models import RunCoordinate
from runtool.services import ServiceContainer, TransferProgress
from runtool.services.datasets import DatasetPlan, DatasetResult
from runtool.services.local_state import ExportTrackingError
from runtool.services.transfers import BulkPlan, BulkResult
from runtool.ui.bulk_panel import BulkPanel
from runtool.ui.components import CheckChoices, Kpi, KpiCards, MessageArea, section_title
from runtool.ui.dataset_form import DatasetForm
from runtool.ui.formatting import format_bytes, format_count, format_count_of
from runtool.ui.inventory_grid import (
    COLUMNS,
    ISSUES_MEANING,
    STATUS_FILTERS,
    STATUS_STYLES,
    Family,
    InventoryGrid,
    filter_rows,
    inventory_rows,
)
from runtool.ui.labels import distinct_laser_box_names
from runtool.ui.linked_run import linked_run
from runtool.ui.opener import PageOpener
from runtool.ui.page import Page
from runtool.ui.query import DOWNLOAD_MANAGER, run_url
from runtool.ui.tables import badge, csv_link, link
from runtool.ui.tasks import BackgroundTask

__all__ = ["DownloadManagerPage"]

Direction = Literal["download", "upload"]
SIDES: dict[Family, str] = {"raw": "raw bags", "ml": "ML samples"}
"""What each side's rows are about, in a sentence."""
CLOUD_COUNTS = ("raw_bags", "ml_bags", "ml_frames", "ml_labels")
"""A run with none of these in the buckets is only on this disk."""
LINKED_RUNS = 5
"""Up to this many selected runs get a link to the per-run page beside the selection line."""
NO_EXPORTS = ("No labelling export is tracked on this server yet: there is no ML/raw/.export_tracking.json in its "
              "ML folder, so there is no export to upload.")


class DownloadManagerPage(Page):
    """Inventory table with totals; bulk transfers, export upload and dataset fetch (not when read-only)."""

    link = DOWNLOAD_MANAGER
    css_class = "rt-page-download-manager"
    PLAN_DELAY_S = 0.6
    EMBED_CSV_LIMIT = 2000
    """Up to this many rows shown the CSV link is ready at once; beyond, it is built when asked for (it travels
    to the browser inside the page)."""

    def __init__(
        self, services: ServiceContainer | None = None, query: str | None = None, progressive: bool = False
    ) -> None:
        super().__init__(services, query, progressive)
        family, status = self._link_view()
        self.family = widgets.ToggleButtons(
            options=[("Raw bags", "raw"), ("ML samples", "ml")], value=family, style={"button_width": "110px"},
        ).add_class("rt-family")
        self.status_filter = widgets.ToggleButtons(
            options=STATUS_FILTERS[family], value=status, style={"button_width": "auto"},
        ).add_class("rt-status-filter")
        self.kpi_cards = KpiCards()
        self.grid = InventoryGrid()
        self.grid.on_select(lambda _runs: self._selection_shown())
        self.grid.on_open(self.open_run)
        self.opener: PageOpener | None = None
        self._run_selected: str | None = None
        """The run of the selection (a link to one run, a run found by the search) last selected in the grid."""
        self.selection_line = widgets.HTML().add_class("rt-selection-line")
        self.status_counts = widgets.HTML().add_class("rt-status-counts")
        self.run_links = widgets.HTML().add_class("rt-run-links")
        self.select_all_button = widgets.Button(description="Select all shown", icon="check-square",
                                                layout=widgets.Layout(width="auto"))
        self.select_all_button.add_class("rt-select-all").on_click(lambda _: self.grid.select_all())
        self.clear_button = widgets.Button(description="Clear selection", icon="square",
                                           layout=widgets.Layout(width="auto"))
        self.clear_button.add_class("rt-clear-selection").on_click(lambda _: self.grid.clear())
        # Selecting only chooses what an operation covers; a read-only page has none, so no bulk selection either.
        buttons = [] if self.read_only else [self.select_all_button, self.clear_button]
        self.selection_row = widgets.HBox([self.selection_line, *buttons],
                                          layout=widgets.Layout(align_items="center", flex_flow="row wrap"))
        row = "read its issues whole" if self.read_only else "select it and read its issues whole (Shift/Ctrl: more)"
        self.grid_help = widgets.HTML(
            f"Click a start time to open its run on the per-run page, a header to sort, a row to {row}."
        ).add_class("rt-caption").add_class("rt-grid-help")
        self.csv_link = widgets.HTML().add_class("rt-csv-row")
        self.csv_button = widgets.Button(icon="table", layout=widgets.Layout(width="auto")).add_class("rt-prepare-csv")
        self.csv_button.on_click(lambda _: self._update_csv(prepare=True))
        self.csv_row = widgets.HBox(layout=widgets.Layout(align_items="center"))
        self.grid.on_view_change(self._update_csv)
        self.table_view = widgets.VBox().add_class("rt-view-table")
        self.body = widgets.VBox([self.empty_state])
        self.overview: pd.DataFrame | None = None
        self.rows = pd.DataFrame()
        self.side_rows = pd.DataFrame()
        self.plan_task: BackgroundTask[DatasetPlan] = BackgroundTask("dataset-plan")
        self._plan_timer: threading.Timer | None = None
        self._plan_wanted = False
        self.tabs: widgets.Tab | None = None
        # Messages about an action, shown in its tab (the page's own area is for the page and its link).
        self.transfer_messages = MessageArea()
        self.transfer_messages.widget.add_class("rt-transfer-messages")
        self.export_messages = MessageArea()
        self.export_messages.widget.add_class("rt-export-messages")
        content: list[widgets.Widget] = [
            self.kpi_cards.widget,
            widgets.HBox([self.family, self.status_filter], layout=widgets.Layout(flex_flow="row wrap")),
            self.body,
        ]
        # The operations (three tabs of forms, ~150 widget models) are built with the grid, once the browser has
        # drawn the rest; a read-only page has none.
        self.actions: widgets.Widget | None = None
        self.actions_slot = widgets.VBox()
        content.append(self.actions_slot)
        self.family.observe(self._family_changed, names="value")
        self.status_filter.observe(lambda _change: self._refilter(), names="value")
        self.frame(content)
        self.start()

    def _link_view(self) -> tuple[Family, str]:
        """The side and the status filter the link asks for; a value this page does not know is said at the top."""
        family: Family = "raw"
        given = self.link_parameters.get("family", family)
        if given == "ml":
            family = "ml"
        elif given != family:
            self.messages.error(f"The link's family {given!r} is not raw or ml, so the {SIDES[family]} are shown.")
        status = self.link_parameters.get("status", "All")
        if status not in STATUS_FILTERS[family]:
            self.messages.error(f"The link's status filter {status!r} is not one of the {SIDES[family]}' "
                                f"({', '.join(STATUS_FILTERS[family])}), so All is shown.")
            status = "All"
        return family, status

    def _build_actions(self) -> widgets.Widget:
        self.transfer_panel = BulkPanel("transfer")
        self.download_button = widgets.Button(icon="download", layout=widgets.Layout(width="auto"))
        self.download_button.add_class("rt-preview-download").on_click(lambda _: self.preview("download"))
        self.upload_button = widgets.Button(icon="upload", layout=widgets.Layout(width="auto"))
        self.upload_button.add_class("rt-preview-upload").on_click(lambda _: self.preview("upload"))
        self.kinds = CheckChoices("ML files", [("Frames", "frames"), ("Labels", "labels")], "rt-ml-kinds")
        self.kinds.widget.layout.display = "" if self.family.value == "ml" else "none"
        self.transfer_panel.execute_button.on_click(lambda _: self.execute(self.transfer_panel))
        self.transfer_panel.progress.cancel_button.on_click(lambda _: self.cancel_job())
        transfer_tab = widgets.VBox([
            widgets.HBox([self.download_button, self.upload_button, self.transfer_panel.conflict,
                          self.kinds.widget],
                         layout=widgets.Layout(flex_flow="row wrap", align_items="center")),
            self.transfer_messages.widget,
            self.transfer_panel.widget,
        ])

        self.export_panel = BulkPanel("export")
        self.export_id = widgets.Combobox(
            placeholder="export id", description="Export id", ensure_option=False,
            style={"description_width": "initial"},
        ).add_class("rt-export-id")
        self.export_button = widgets.Button(description="Preview upload", icon="upload").add_class("rt-preview-export")
        self.export_button.on_click(lambda _: self.preview_export())
        self.export_panel.execute_button.on_click(lambda _: self.execute(self.export_panel))
        self.export_panel.progress.cancel_button.on_click(lambda _: self.cancel_job())
        export_tab = widgets.VBox([
            widgets.HTML('<span class="rt-caption">Uploads every local ML run listed for a labelling export in '
                         "<code>ML/raw/.export_tracking.json</code>.</span>"),
            widgets.HBox([self.export_id, self.export_button, self.export_panel.conflict],
                         layout=widgets.Layout(flex_flow="row wrap", align_items="center")),
            self.export_messages.widget,
            self.export_panel.widget,
        ])

        self.dataset = DatasetForm(self._dataset_options_changed)
        self.dataset.fetch_button.on_click(lambda _: self.fetch_dataset())
        self.dataset.progress.cancel_button.on_click(lambda _: self.cancel_job())

        self.tabs = widgets.Tab(children=[transfer_tab, export_tab, self.dataset.widget]).add_class("rt-action-tabs")
        for index, title in enumerate(("Transfer runs", "Upload an export", "Fetch a dataset")):
            self.tabs.set_title(index, title)
        self.tabs.observe(self._tab_changed, names="selected_index")
        return widgets.VBox([section_title("Operations"), self.tabs])

    # -- readable state ------------------------------------------------------------------------

    @property
    def kpis(self) -> dict[str, str]:
        return self.kpi_cards.values

    def view_settings(self) -> dict[str, str]:
        settings = {"family": self.family.value} if self.family.value != "raw" else {}
        return settings | ({"status": self.status_filter.value} if self.status_filter.value != "All" else {})

    def scope(self) -> list[RunCoordinate]:
        """The runs an operation covers: the selected rows, or every row shown when none is selected."""
        paths = self.grid.selected_runs() or [str(p) for p in self.grid.rows.index]
        return [RunCoordinate.parse(path) for path in paths]

    # -- drawing -------------------------------------------------------------------------------

    def _show(self) -> None:
        try:
            self._show_table()
        finally:
            # After the grid: its widgets reach the browser before the ~200 of the operations (built once the first
            # screen is drawn), which had to be created before the grid could show (13.5 s against 6.4 s at the
            # medium preset, docs/performance.md).
            if self.actions is None and self.drawn and not self.read_only:
                self.actions = self._build_actions()
                self.actions_slot.children = [self.actions]
                if self.overview is not None:
                    self._selection_shown()  # the preview buttons' words (written before they existed)

    def _show_table(self) -> None:
        services = self._available_services()
        if services is None:
            return
        filters = dataclasses.replace(self.filters, timestamp=None)
        overview = services.data_state.state_overview(filters)
        if overview.empty:
            self._show_empty(self.nothing_selected_text(filters))
            return
        self.overview = overview
        self._build_rows()
        self._show_totals()
        self._refilter()
        if self.drawn and self.opener is None:
            self.opener = PageOpener()
        grid = [self.grid.grid, self.opener] if self.drawn and self.opener is not None else [self.drawing_note]
        self.table_view.children = [self.grid_help, self.selection_row, self.run_links, *grid, self.status_counts,
                                    self.csv_row]
        self.body.children = [self.table_view]
        self.view = "table"
        linked = linked_run(self.filters)  # None for a time without every level (a link no run matched)
        run = linked.to_path_str() if linked is not None else None
        if self.drawn and run != self._run_selected:
            # A link to one run (a page's header link from the per-run page) selects it: with none selected, an
            # operation would cover the whole laser box.
            self._run_selected = run
            if run is not None:
                self.grid.select_runs([run])
        if self.tabs is not None and self.tabs.selected_index == 2:
            self._dataset_options_changed()

    def _show_totals(self) -> None:
        runs = self.overview
        assert runs is not None
        family = self.family.value
        cloud, local = ("raw_bytes", "local_raw_bytes") if family == "raw" else ("ml_bytes", "local_ml_bytes")
        issues = self.side_rows["Issues"] != ""  # what the Issues column lists and the Issues filter keeps
        side = SIDES[family]
        caption = f"runs with an issue of their {side}"
        # A refresh counts the runs in the buckets; the table also lists those only on this disk.
        in_buckets = int(runs[list(CLOUD_COUNTS)].to_numpy().any(axis=1).sum())
        on_disk = len(runs) - in_buckets
        self.kpi_cards.show([
            Kpi("Runs", format_count(len(runs)),
                f"{format_count(in_buckets)} in the buckets, {format_count(on_disk)} only on disk" if on_disk
                else "all in the buckets"),
            Kpi("Bags cloud / local", f"{format_count(int(runs['raw_bags'].sum()))} / "
                f"{format_count(int(runs['local_bags'].sum()))}"),
            Kpi("Samples cloud / local", f"{format_count(int(runs['ml_labels'].sum()))} / "
                f"{format_count(int(runs['local_labels'].sum()))}", "labels"),
            Kpi("Size cloud / local",
                f"{format_bytes(int(runs[cloud].sum()))} / {format_bytes(int(runs[local].sum()))}", side),
            Kpi("Issues", format_count(int(issues.sum())), caption),
        ])

    def _build_rows(self) -> None:
        """The display rows of the side shown, for every run of the selection (the status filter picks from them)."""
        assert self.overview is not None
        names = distinct_laser_box_names(self.overview["lb_key"].astype(str).unique().tolist())
        self.side_rows = inventory_rows(self.overview, self.family.value, names)

    def _refilter(self) -> None:
        """Show the rows the status filter keeps (no service call, no rows rebuilt)."""
        if self.overview is None:
            return
        self.rows = filter_rows(self.side_rows, self.status_filter.value, self.family.value)
        self.grid.show(self.rows)
        self.status_counts.value = _status_counts(self.rows, self.status_filter.value, self.family.value)
        self._update_csv()
        self._update_links()
        self._selection_shown()

    def _family_changed(self, _change: Mapping[str, object]) -> None:
        if self.tabs is not None:
            self.kinds.widget.layout.display = "" if self.family.value == "ml" else "none"
            if not self.busy:  # a preview (or result) of the other side's files would read as this side's
                self.transfer_panel.show_plan(None)
        if self.overview is not None:
            self._build_rows()
            self._show_totals()
        was_all = self.status_filter.value == "All"
        with self.status_filter.hold_trait_notifications():
            self.status_filter.options = STATUS_FILTERS[self.family.value]
            self.status_filter.value = "All"
        if was_all:  # otherwise the status filter's own change redrew the rows
            self._refilter()

    def _selection_shown(self) -> None:
        selected = self.grid.selected_runs()
        chosen = len(selected)
        shown = len(self.grid.rows)
        # One short line either way, so the grid below stays put when the first row is selected.
        none = "shown" if self.read_only else "shown; none selected, so operations cover all of them"
        self.selection_line.value = (
            f"<b>{format_count(chosen)} of {format_count_of(shown, 'run')} selected</b>" if chosen else
            f"{format_count_of(shown, 'run')} {none}."
        )
        self.run_links.value = self._run_links(selected)
        if self.tabs is None:
            return
        directions: tuple[tuple[widgets.Button, Direction], ...] = (
            (self.download_button, "download"), (self.upload_button, "upload"),
        )
        for button, direction in directions:
            fitting = self._fitting(direction)
            scope = chosen or shown
            verb = "Preview download" if direction == "download" else "Preview upload"
            button.description = f"{verb} ({format_count(fitting)} of {format_count_of(scope, 'run')})"
            button.disabled = fitting == 0 or self.busy

    def open_run(self, path: str) -> None:
        """Send the browser to ``path``'s run on the per-run page (its start time in the grid was clicked)."""
        if self.opener is not None:
            self.opener.go(run_url(RunCoordinate.parse(path)))

    def _run_links(self, selected: Sequence[str]) -> str:
        """Links to the per-run page for the first selected runs (named as in the table, full coordinate on hover)."""
        if not selected:
            return ""
        links = [
            link(run_url(RunCoordinate.parse(path)),
                 f"{self.rows.at[path, 'Laser box']} · {self.rows.at[path, 'Start (UTC)']}", title=path).html
            for path in selected[:LINKED_RUNS]
            if path in self.rows.index
        ]
        more = f" and {format_count(len(selected) - LINKED_RUNS)} more" if len(selected) > LINKED_RUNS else ""
        # The grid's Issues column ends a long text in "…": one selected run's is written out here whole.
        one = selected[0] if len(selected) == 1 and selected[0] in self.rows.index else None
        issues = str(self.rows.at[one, "Issues"]) if one is not None else ""
        whole = f' <span class="rt-run-issues">· {html.escape(issues)}</span>' if issues else ""
        return f'<span class="rt-caption">Open on the per-run page:</span> {", ".join(links)}{more}{whole}'

    def _update_csv(self, prepare: bool = False) -> None:
        """A link downloading the rows as shown (status filter, the grid's sort) with full coordinates.

        Beyond :attr:`EMBED_CSV_LIMIT` rows a button builds it (``prepare``), so redrawing stays cheap.
        """
        if self.overview is None or self.rows.empty:
            self.csv_row.children = []
            return
        if len(self.rows) > self.EMBED_CSV_LIMIT and not prepare:
            self.csv_button.description = f"Prepare a CSV of these {format_count_of(len(self.rows), 'run')}"
            self.csv_row.children = [self.csv_button]
            return
        visible = self.grid._visible()
        rows = self.rows.iloc[[i for i in visible if i < len(self.rows)]] if len(visible) else self.rows
        table = rows[[*COLUMNS, "Run"]].rename(columns={"Cloud size": "Cloud bytes", "Local size": "Local bytes"})
        side = self.family.value
        status = self.status_filter.value.lower().replace(" ", "_")
        name = f"runs_{side}" + (f"_{status}" if status != "all" else "") + ".csv"
        self.csv_link.value = csv_link(table.to_csv(index=False), name,
                                       f"Download these {format_count_of(len(rows), 'run')} as CSV")
        self.csv_row.children = [self.csv_link]

    def _fitting(self, direction: Direction) -> int:
        """How many runs of the scope have something to move in ``direction`` and are not in sync."""
        chosen = self.grid.selected_runs()
        rows = self.rows.loc[chosen] if chosen else self.rows
        return int(rows[f"can_{direction}"].sum()) if len(rows) else 0

    def _show_empty(self, text: str) -> None:
        self.overview = None
        self.kpi_cards.show([])
        self._set_empty(text)

    # -- jobs ----------------------------------------------------------------------------------

    def _job_ended(self, redraw: bool) -> None:
        """Redraw after work that changed the runs' state; after a preview, only the selection line and the preview
        buttons (a redraw of the table would drop the rows selected)."""
        super()._job_ended(redraw)
        if not redraw:
            self._selection_shown()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for a refresh, a running operation and a dataset plan (for scripts and tests)."""
        return super().wait_idle(timeout) and self.plan_task.join(timeout)

    # -- transfers -----------------------------------------------------------------------------

    def preview(self, direction: Direction, coords: Sequence[RunCoordinate] | None = None) -> None:
        """Plan ``direction`` for the scope (or ``coords``), per run, and show it with Execute."""
        doing = f"Planning the {direction}"
        if self._refused(doing, self.transfer_messages):
            return
        assert self.services is not None
        operation = f"{self.family.value}_{direction}"
        runs = list(coords) if coords is not None else self.scope()
        options: dict[str, object] = {"conflict": self.transfer_panel.conflict_mode}
        if self.family.value == "ml":
            if not self.kinds.value:
                self.transfer_messages.warning("Choose frames, labels or both before planning an ML transfer.")
                return
            options["kinds"] = tuple(self.kinds.value)
        transfers = self.services.transfers
        self.transfer_panel.show_plan(None, f"Planning {format_count_of(len(runs), 'run')}…")

        def work(_cancel: threading.Event) -> BulkPlan:
            return transfers.plan_bulk(operation, runs, **options)

        self._run_job(work, self.transfer_panel.show_plan, doing, area=self.transfer_messages,
                      failed=lambda _exc: self.transfer_panel.show_plan(None), redraw=False)

    def preview_export(self, export_id: str | None = None) -> None:
        """Plan the upload of every local ML run of a labelling export."""
        doing = "Planning the export upload"
        if self._refused(doing, self.export_messages):
            return
        assert self.services is not None
        chosen = (export_id or self.export_id.value).strip()
        if not chosen:
            self.export_messages.clear()
            self.export_messages.warning("Type or pick an export id first.")
            return
        conflict = self.export_panel.conflict_mode
        transfers = self.services.transfers
        self.export_panel.show_plan(None, f"Planning export {chosen}…")

        def work(_cancel: threading.Event) -> BulkPlan:
            try:
                return transfers.plan_export_upload(chosen, conflict=conflict)
            except ExportTrackingError as exc:
                if isinstance(exc.__cause__, FileNotFoundError):
                    raise ExportTrackingError(NO_EXPORTS) from exc
                raise

        self._run_job(work, self.export_panel.show_plan, doing, area=self.export_messages,
                      failed=lambda _exc: self.export_panel.show_plan(None), redraw=False)

    def execute(self, panel: BulkPanel) -> None:
        """Execute the plan ``panel`` previewed, with per-run and overall progress and Cancel."""
        plan = panel.plan
        doing = "Transferring"
        area = self.export_messages if panel is getattr(self, "export_panel", None) else self.transfer_messages
        if plan is None or self._refused(doing, area):
            return
        assert self.services is not None
        transfers = self.services.transfers
        panel.start(plan)

        def work(cancel: threading.Event) -> BulkResult:
            return transfers.execute_bulk(plan, progress=panel.update, cancel=cancel)

        self._run_job(work, panel.finish, doing, area=area,
                      failed=lambda _exc: panel.failed("The transfer stopped (the message above says why)."))

    # -- export ids ----------------------------------------------------------------------------

    def _tab_changed(self, change: Mapping[str, object]) -> None:
        # What a tab said was about an action there; it would only confuse beside another tab.
        for area in (self.transfer_messages, self.export_messages, self.dataset.messages):
            area.clear()
        if change["new"] == 1:
            self.load_export_ids()
        elif change["new"] == 2:
            self._dataset_options_changed()

    def load_export_ids(self) -> None:
        """Offer the export ids of the tracking file; a missing or broken file becomes a message."""
        if self.services is None:
            return
        try:
            self.export_id.options = tuple(self.services.local.export_tracking())
        except RuntoolError as exc:
            self.export_id.options = ()
            self.export_messages.clear()
            if isinstance(exc.__cause__, FileNotFoundError):  # no export yet: nothing is wrong
                self.export_messages.info(NO_EXPORTS)
            else:
                self.export_messages.error(str(exc))

    # -- datasets ------------------------------------------------------------------------------

    def _dataset_options_changed(self) -> None:
        """Plan again shortly after the last change (typing does not start a plan per key)."""
        if self.tabs is None:
            return
        if self._plan_timer is not None:
            self._plan_timer.cancel()
        self.dataset.show_waiting("Planning…")
        self._plan_timer = threading.Timer(self.PLAN_DELAY_S, self.plan_dataset)
        self._plan_timer.daemon = True
        self._plan_timer.start()

    def plan_dataset(self) -> None:
        """Plan the dataset for the current selection and options, in the background; shown in the form."""
        if self.services is None or self.tabs is None:
            return
        try:
            options = self.dataset.options()
        except RuntoolError as exc:
            self.dataset.show_waiting(str(exc))
            return
        if self.plan_task.running:
            self._plan_wanted = True
            return
        self._plan_wanted = False
        datasets = self.services.datasets
        name = self.dataset.name.value.strip()
        filters = dataclasses.replace(self.filters, timestamp=None)

        def done(plan: DatasetPlan) -> None:
            self.dataset.show_plan(plan)
            if self._plan_wanted:
                self.plan_dataset()

        def failed(exc: Exception) -> None:
            self.dataset.show_waiting(str(exc) if isinstance(exc, RuntoolError) else f"Planning failed: {exc}")
            if self._plan_wanted:
                self.plan_dataset()

        self.plan_task.start(
            lambda _cancel: datasets.plan_dataset_fetch(name, filters, options, progress=self.dataset.show_planning),
            done, failed)

    def fetch_dataset(self) -> None:
        """Execute the dataset plan shown, with progress and Cancel."""
        plan = self.dataset.plan
        doing = "Fetching the dataset"
        if plan is None or self._refused(doing, self.dataset.messages):
            return
        assert self.services is not None
        datasets = self.services.datasets
        form = self.dataset
        form.fetch_button.disabled = True
        form.result.value = ""

        def progress(event: TransferProgress) -> None:
            total = event.bytes_total or 1
            form.progress.update(event.bytes_done / total, f"{format_bytes(event.bytes_done)} of {format_bytes(total)}")

        def failed(_exc: Exception) -> None:
            form.fetch_button.disabled = False

        conflict = form.conflict.value

        def work(cancel: threading.Event) -> DatasetResult:
            return datasets.execute(plan, progress=progress, cancel=cancel, conflict=conflict)

        # The runs' sync state did not change: no redraw.
        self._run_job(work, form.show_result, doing, area=form.messages, progress=form.progress,
                      text=f"Fetching {format_count_of(len(plan.samples), 'sample')}…", failed=failed, redraw=False)


def _status_counts(rows: pd.DataFrame, status_filter: str, family: Family) -> str:
    """How many rows shown have each status, as coloured badges with their words; what the Issues column lists."""
    if rows.empty:
        return f"No run of this selection is “{status_filter}”."
    counts = rows["Status"].value_counts()
    return "Shown: " + " ".join(
        f"{badge(style).html} {format_count(int(counts[style.label]))}"
        for style in STATUS_STYLES
        if style.label in counts
    ) + f" · {html.escape(ISSUES_MEANING[family])}"
