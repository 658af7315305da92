"""Page 1, temporal coverage: what the fleet recorded, and where labelling lags behind.

A specific laser box gives the single-laser-box view (a per-run timeline and the under-labelled runs);
"All" laser boxes gives the aggregated view (per-day totals on a calendar, per-laser-box breakdown and
the fleet calendar heatmap). Both recompute when the expected samples per bag or the under-labelled
threshold change.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

import ipywidgets as widgets

from runtool.models import (
    AggregatedTemporalData,
    CoveragePoint,
    CoverageSettings,
    CoverageStatistics,
    Filters,
    LaserBoxStats,
    RunCoordinate,
    TemporalData,
)
from runtool.services import DataStateService, ServiceContainer
from runtool.ui.charts import CoverageTimeline, DailyCoverageChart, LaserBoxBars
from runtool.ui.components import Kpi, KpiCards, section_title, settings_row
from runtool.ui.coverage_calendar import FleetCalendar, laser_box_filters
from runtool.ui.formatting import (
    format_bytes,
    format_count,
    format_decimal,
    format_pct,
    format_time,
    format_typed,
)
from runtool.ui.labels import distinct_laser_box_names
from runtool.ui.linked_run import LinkedRunNote, linked_run, marked
from runtool.ui.page import Page
from runtool.ui.query import COVERAGE, page_url, run_url
from runtool.ui.tables import Cell, Column, badge, coverage_cell, csv_link, csv_text, html_table, link, text_cell
from runtool.ui.theme import COVERAGE_NONE, COVERAGE_RED, StatusStyle

__all__ = ["AggregatedView", "CoveragePage", "RunTable", "SingleLaserBoxView"]

ML_ONLY = StatusStyle("ML only", COVERAGE_NONE)
UNDER_LABELLED = StatusStyle("under-labelled", COVERAGE_RED)


def _run_cell(point: CoveragePoint) -> Cell:
    """The run's start time, linking to the per-run page on that run (full coordinate on hover)."""
    return link(run_url(point.coordinate), format_time(point.start_time), point.coordinate.to_path_str())


def _worst_first(point: CoveragePoint) -> tuple[bool, float, datetime]:
    """Lowest coverage first; runs without coverage (no raw bags) last; then by start."""
    return point.coverage_pct is None, point.coverage_pct or 0.0, point.start_time


class RunTable:
    """Every run of a laser box, worst coverage first, a page of rows at a time, with a filter and a CSV link.

    Each start time opens the run on the per-run page; the CSV holds every run the filter keeps (all pages).
    """

    PAGE_ROWS = 25
    FILTERS = ("all", "under-labelled", "ML only")

    def __init__(self) -> None:
        self.page = 0
        self.title = section_title()
        self.filter = widgets.ToggleButtons(options=[("All runs", "all")], value="all",
                                            style={"button_width": "auto"}).add_class("rt-run-filter")
        self.filter.observe(lambda _: self._filter_changed(), names="value")
        self.table = widgets.HTML().add_class("rt-runs")
        self.previous = widgets.Button(description="◀ Worse", layout=widgets.Layout(width="auto"))
        self.next = widgets.Button(description="Better ▶", layout=widgets.Layout(width="auto"))
        self.range = widgets.HTML().add_class("rt-caption")
        self.previous.on_click(lambda _: self.show_page(self.page - 1))
        self.next.on_click(lambda _: self.show_page(self.page + 1))
        self.pager = widgets.HBox().add_class("rt-pager")
        self.csv = widgets.HTML().add_class("rt-csv")
        self.widget = widgets.VBox([self.title, self.filter, self.table, self.pager, self.csv])
        self._points: list[CoveragePoint] = []
        self._shown: list[CoveragePoint] = []
        self._threshold = 80.0
        self._linked: RunCoordinate | None = None
        self._quiet = False

    def show(self, points: Sequence[CoveragePoint], threshold: float, linked: RunCoordinate | None = None) -> None:
        """List ``points``; the run ``linked`` (a link's) is marked, on the page of the table that holds it."""
        self._points, self._threshold, self._linked = sorted(points, key=_worst_first), threshold, linked
        counts = {"all": len(points), "under-labelled": sum(p.under_labelled for p in points),
                  "ML only": sum(p.ml_only for p in points)}
        labels = {"all": "All runs", "under-labelled": "Under-labelled", "ML only": "ML only"}
        kept = self.filter.value if counts.get(self.filter.value) else "all"
        self._quiet = True
        try:
            self.filter.options = [(f"{labels[name]} ({format_count(counts[name])})", name)
                                   for name in self.FILTERS if name == "all" or counts[name]]
            self.filter.value = kept
        finally:
            self._quiet = False
        self._filter_changed()
        shown = [p.coordinate for p in self._shown]
        if linked in shown:
            self.show_page(shown.index(linked) // self.PAGE_ROWS)

    def _filter_changed(self) -> None:
        if self._quiet:
            return
        chosen = self.filter.value
        self._shown = [p for p in self._points
                       if chosen == "all" or (p.under_labelled if chosen == "under-labelled" else p.ml_only)]
        what = {"all": "Runs", "under-labelled": "Under-labelled runs", "ML only": "ML-only runs"}[chosen]
        self.title.value = html.escape(f"{what} ({format_count(len(self._shown))}), worst coverage first")
        self.csv.value = csv_link(self.csv_text(), "coverage_runs.csv", "Download these runs as CSV")
        self.show_page(0)

    @property
    def pages(self) -> int:
        return max(1, math.ceil(len(self._shown) / self.PAGE_ROWS))

    def show_page(self, page: int) -> None:
        """Show page ``page`` (0 = the worst runs), clipped to the pages there are."""
        self.page = min(max(page, 0), self.pages - 1)
        first = self.page * self.PAGE_ROWS
        rows = self._shown[first: first + self.PAGE_ROWS]
        self.table.value = html_table(
            [Column("Start (UTC)"), Column("Bags", True), Column("Labels", True), Column("Frames", True),
             Column("Coverage", True), Column("Flag")],
            ([marked(_run_cell(p)) if p.coordinate == self._linked else _run_cell(p),
              text_cell(format_count(p.raw_bags)), text_cell(format_count(p.ml_labels)),
              text_cell(format_count(p.ml_frames)), coverage_cell(p.coverage_pct, self._threshold),
              badge(ML_ONLY) if p.ml_only else badge(UNDER_LABELLED) if p.under_labelled else text_cell("")]
             for p in rows),
        )
        if len(self._shown) <= self.PAGE_ROWS:
            self.pager.children = []
            return
        self.range.value = html.escape(
            f"Runs {format_count(first + 1)}–{format_count(first + len(rows))} of {format_count(len(self._shown))}"
            f" · page {self.page + 1} of {self.pages}")
        self.previous.disabled = self.page == 0
        self.next.disabled = self.page >= self.pages - 1
        self.pager.children = [self.previous, self.range, self.next]

    def csv_text(self) -> str:
        return csv_text(
            ["run", "start_utc", "raw_bags", "ml_labels", "ml_frames", "coverage_pct", "flag"],
            ([p.coordinate.to_path_str(), format_time(p.start_time), p.raw_bags, p.ml_labels, p.ml_frames,
              None if p.coverage_pct is None else round(p.coverage_pct, 3),
              "ML only" if p.ml_only else "under-labelled" if p.under_labelled else ""]
             for p in self._shown),
        )


class SingleLaserBoxView:
    """One laser box: the per-run timeline and every run, worst coverage first."""

    def __init__(self) -> None:
        self.timeline = CoverageTimeline()
        self.runs = RunTable()
        self.widget = widgets.VBox([self.timeline.widget, self.runs.widget]).add_class("rt-view-single")

    def show(self, data: TemporalData, linked: RunCoordinate | None = None) -> None:
        """Show the runs of ``data``; ``linked`` (the run a link names) is ringed in the chart, marked in the table."""
        self.timeline.show(data, linked)
        self.runs.show(data.points, data.settings.under_labelled_pct, linked)


class AggregatedView:
    """All laser boxes of a selection: per-day totals, per-laser-box breakdown, fleet calendar."""

    def __init__(self) -> None:
        self.daily = DailyCoverageChart()
        self.bars = LaserBoxBars()
        self.table = widgets.HTML().add_class("rt-lb-table")
        self.table_csv = widgets.HTML().add_class("rt-csv")
        self.calendar = FleetCalendar()
        self.calendar_caption = widgets.HTML().add_class("rt-caption")
        self.widget = widgets.VBox(
            [
                self.daily.widget,
                section_title("Laser box breakdown"),
                self.bars.widget,
                self.table,
                self.table_csv,
                section_title("Fleet calendar"),
                self.calendar_caption,
                self.calendar.widget,
            ]
        ).add_class("rt-view-aggregated")

    def show(self, data: AggregatedTemporalData, stats: Sequence[LaserBoxStats],
             settings_query: Mapping[str, str] | None = None) -> None:
        """``settings_query`` (E, threshold when changed) travels in the links to one laser box."""
        keys = [s.lb_key for s in stats]
        names = distinct_laser_box_names(keys)
        threshold = data.settings.under_labelled_pct
        self.daily.show(data)
        self.bars.show(stats, [names[s.lb_key] for s in stats], threshold)
        self.calendar.show(data, names, settings_query)
        self.calendar_caption.value = (
            "One row per laser box, one column per day (UTC). A coloured cell is a day the laser box recorded: "
            "hover it for the full coordinate and its numbers; click it to open the run (or, on a day with "
            "several runs, the laser box)."
        )
        self.table.value = html_table(
            [Column("Laser box"), Column("Runs", True), Column("Bags", True), Column("Labels", True),
             Column("Coverage", True), Column("Active days", True), Column("Bags/day", True),
             Column("Labels/day", True)],
            (
                [link(page_url(COVERAGE, laser_box_filters(s.lb_key), settings_query), names[s.lb_key], s.lb_key),
                 text_cell(format_count(s.runs)),
                 text_cell(format_count(s.total_bags)), text_cell(format_count(s.total_labels)),
                 coverage_cell(s.coverage_pct, threshold), text_cell(format_count(s.active_days)),
                 text_cell(format_decimal(s.avg_bags_per_day)), text_cell(format_decimal(s.avg_labels_per_day))]
                for s in stats
            ),
        )
        self.table_csv.value = csv_link(self.csv_text(stats), "coverage_laser_boxes.csv",
                                        "Download the laser box breakdown as CSV")

    @staticmethod
    def csv_text(stats: Sequence[LaserBoxStats]) -> str:
        return csv_text(
            ["laser_box", "runs", "raw_bags", "ml_labels", "ml_frames", "coverage_pct", "active_days",
             "bags_per_day", "labels_per_day"],
            ([s.lb_key, s.runs, s.total_bags, s.total_labels, s.total_frames,
              None if s.coverage_pct is None else round(s.coverage_pct, 3), s.active_days,
              None if s.avg_bags_per_day is None else round(s.avg_bags_per_day, 3),
              None if s.avg_labels_per_day is None else round(s.avg_labels_per_day, 3)]
             for s in stats),
        )


_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)
"""A number as a person types it: digits, a point, an exponent."""


def _read_setting(text: str, low: float, high: float) -> tuple[float | None, str]:
    """The number ``text`` holds when it is one from ``low`` to ``high``; else None and why not ("is empty",
    "is not a number", "is outside 1–1000"), to follow what was typed in a sentence."""
    if not text.strip():
        return None, "is empty"
    if not _PLAIN_NUMBER.fullmatch(text.strip()):  # float() also takes 1_000, ٣٠, nan and inf
        return None, "is not a number"
    value = float(text) + 0.0  # -0 is 0
    if not low <= value <= high:  # 1e400 (infinity) too
        return None, f"is outside {low:g}–{high:g}"
    return value, ""


def _setting_field(value: float, description: str, css_class: str) -> widgets.Text:
    """A text field for a number: a number field's browser side puts back the last number without telling the
    kernel when what was typed is none (``1e``, ``--5``, an empty field), so the page could not say so."""
    return widgets.Text(value=f"{value:g}", description=description, continuous_update=False,
                        style={"description_width": "initial"},
                        layout=widgets.Layout(width="230px")).add_class(css_class)


class CoveragePage(Page):
    """The temporal coverage page. ``page.widget`` is what the notebook displays.

    Readable state for scripts and tests: :attr:`view` (``"single"``, ``"aggregated"`` or ``"empty"``),
    :attr:`kpis` (label → shown text) and :attr:`empty_text`.
    """

    link = COVERAGE
    css_class = "rt-page-coverage"
    ANOMALY_LIMIT = 200
    EXPECTED_PARAMETER = "expected_samples"
    THRESHOLD_PARAMETER = "under_labelled_pct"
    SETTINGS: ClassVar[dict[str, tuple[str, tuple[float, float]]]] = {
        EXPECTED_PARAMETER: ("expected samples per bag", (1.0, 1000.0)),
        THRESHOLD_PARAMETER: ("under-labelled threshold", (0.0, 100.0)),
    }
    """Link parameter → (what it is, (lowest, highest) allowed)."""
    NOT_FOUND = "it is not in the inventory (refresh it, or check the link), so its laser box is shown without it"

    def __init__(
        self, services: ServiceContainer | None = None, query: str | None = None, progressive: bool = False
    ) -> None:
        super().__init__(services, query, progressive)
        defaults = self.services.coverage_settings if self.services is not None else CoverageSettings()
        # Checked here, not by bounded number fields: a bounded field silently turns 0 into 1.
        self.expected_samples = _setting_field(defaults.expected_samples_per_bag, "Expected samples/bag",
                                               "rt-expected-samples")
        self.under_labelled_pct = _setting_field(defaults.under_labelled_pct, "Under-labelled below %",
                                                 "rt-under-labelled-pct")
        self._used = {self.EXPECTED_PARAMETER: defaults.expected_samples_per_bag,
                      self.THRESHOLD_PARAMETER: defaults.under_labelled_pct}
        """Link parameter → the value the page uses (the field's text may be one it refused)."""
        self.linked_note = LinkedRunNote()
        self.settings_note = widgets.HTML().add_class("rt-settings-note")
        self._settings_quiet = False
        self._apply_link_settings()
        for control in (self.expected_samples, self.under_labelled_pct):
            control.observe(self._setting_changed, names="value")
        self.caption = widgets.HTML().add_class("rt-caption")
        self.kpi_cards = KpiCards()
        self.body = widgets.VBox([self.empty_state])
        self.single: SingleLaserBoxView | None = None
        self.aggregated: AggregatedView | None = None
        self.anomaly_table = widgets.HTML()
        self.anomalies = widgets.Accordion(children=[self.anomaly_table], titles=("Anomalies",))
        self.anomalies.selected_index = None
        self.anomalies.add_class("rt-anomalies")
        settings = settings_row([self.expected_samples, self.under_labelled_pct], self.settings_note)
        self.frame([self.linked_note.widget, settings, self.caption, self.kpi_cards.widget, self.body, self.anomalies])
        self.start()

    def _apply_link_settings(self) -> None:
        """Take E and the threshold from the link, so a shared link reproduces the view."""
        for name, control in self._setting_fields():
            what, (low, high) = self.SETTINGS[name]
            text = self.link_parameters.get(name)
            if not text:  # absent or blank: the default, as a blank level is All
                continue
            value, why = _read_setting(text, low, high)
            if value is None:
                self.messages.error(f"The link's {what} '{format_typed(text)}' {why}, so {self._used[name]:g} is used.")
                continue
            self._used[name] = value
            control.value = f"{value:g}"

    def _setting_fields(self) -> tuple[tuple[str, widgets.Text], ...]:
        return ((self.EXPECTED_PARAMETER, self.expected_samples), (self.THRESHOLD_PARAMETER, self.under_labelled_pct))

    def _setting_changed(self, change: Mapping[str, Any]) -> None:
        """Recompute for a number in range; otherwise say beside the field what was typed and what is used, and put
        the used value back in the field."""
        if self._settings_quiet:
            return
        name = next(name for name, control in self._setting_fields() if control is change["owner"])
        what, (low, high) = self.SETTINGS[name]
        text, used = str(change["new"]), self._used[name]
        value, why = _read_setting(text, low, high)
        if value is None:
            with self._quiet_settings():
                change["owner"].value = f"{used:g}"
            typed = f"'{format_typed(text)}'" if text.strip() else "The field"
            self.settings_note.value = html.escape(f"{typed} {why}, so the {what} stays {used:g}.")
            return
        self.settings_note.value = ""
        if value != used:
            self._used[name] = value
            self._selection_changed()

    @contextlib.contextmanager
    def _quiet_settings(self) -> Iterator[None]:
        """Put a refused value back without a redraw (the page still shows the kept value)."""
        self._settings_quiet = True
        try:
            yield
        finally:
            self._settings_quiet = False

    def view_settings(self) -> dict[str, str]:
        """E and the threshold, when they differ from the configuration."""
        defaults = self.services.coverage_settings if self.services is not None else CoverageSettings()
        settings = self.settings
        carried = {}
        if settings.expected_samples_per_bag != defaults.expected_samples_per_bag:
            carried[self.EXPECTED_PARAMETER] = f"{settings.expected_samples_per_bag:g}"
        if settings.under_labelled_pct != defaults.under_labelled_pct:
            carried[self.THRESHOLD_PARAMETER] = f"{settings.under_labelled_pct:g}"
        return carried

    # -- readable state and controls ------------------------------------------------------------

    @property
    def kpis(self) -> dict[str, str]:
        """The KPI cards shown: label → value text."""
        return self.kpi_cards.values

    @property
    def settings(self) -> CoverageSettings:
        return CoverageSettings(self._used[self.EXPECTED_PARAMETER], self._used[self.THRESHOLD_PARAMETER])

    def set_expected_samples(self, expected: float) -> None:
        """Change E (expected labelled samples per bag) as if typed; everything recomputes."""
        self.expected_samples.value = f"{expected:g}"

    def set_under_labelled_pct(self, pct: float) -> None:
        self.under_labelled_pct.value = f"{pct:g}"

    # -- drawing ---------------------------------------------------------------------------------

    def _show(self) -> None:
        self._show_anomalies()
        services = self._available_services()
        if services is None:
            return
        self.linked_note.show(None, "")
        # The coverage views are per laser box; a run a link names is marked in its laser box's view.
        filters = dataclasses.replace(self.filters, timestamp=None)
        settings = self.settings
        stats = services.data_state.coverage_statistics(filters, settings)
        if stats.total_runs == 0:
            self._show_empty(self.nothing_selected_text(filters))
            self.linked_note.show(linked_run(self.filters), self.NOT_FOUND)
            return
        if filters.lbid is not None:
            self._show_single(services.data_state, filters, settings, stats)
        else:
            self._show_aggregated(services.data_state, filters, settings, stats)

    def _show_empty(self, text: str) -> None:
        self.caption.value = ""
        self.kpi_cards.show([])
        self._set_empty(text)

    def _describe(self, filters: Filters, settings: CoverageSettings) -> str:
        return (
            f"{html.escape(filters.describe())} · {settings.expected_samples_per_bag:g} expected samples per bag · "
            f"under-labelled below {settings.under_labelled_pct:g} %"
        )

    def _show_single(
        self, data_state: DataStateService, filters: Filters, settings: CoverageSettings, stats: CoverageStatistics
    ) -> None:
        data = data_state.temporal_coverage(filters, settings)
        caption = self._describe(filters, settings)
        boxes = {p.coordinate.to_path_str().rsplit("/", 1)[0] for p in data.points}
        if len(boxes) > 1:
            name = html.escape(filters.lbid or "")
            caption += (
                f" · <b>{len(boxes)} laser boxes are called {name}; their runs are combined. "
                "Pick the levels above to see one.</b>"
            )
        self.caption.value = caption
        self.kpi_cards.show(
            [
                Kpi("Runs", format_count(stats.total_runs), f"{format_count(stats.runs_with_bags)} with raw bags"),
                Kpi("Bags", format_count(stats.total_bags),
                    f"{format_decimal(stats.average_bags_per_run)} per run"),
                Kpi("Labelled samples", format_count(stats.total_labels), f"{format_count(stats.total_frames)} frames"),
                Kpi("Overall coverage", format_pct(stats.overall_coverage_pct),
                    f"of {format_count(stats.expected_samples)} expected samples"),
                Kpi("Average coverage", format_pct(stats.average_coverage_pct), "mean over runs with bags"),
                Kpi("Under-labelled runs", format_count(len(stats.under_labelled)),
                    f"below {settings.under_labelled_pct:g} %"),
                Kpi("ML-only runs", format_count(stats.ml_only_runs), "labels without raw bags"),
            ]
        )
        self.view = "single"
        linked = linked_run(self.filters)
        found = linked in {p.coordinate for p in data.points}
        self.linked_note.show(linked, "ringed in blue in the coverage chart, its row marked “in the link” in the run "
                                      "table" if found else self.NOT_FOUND)
        if not self.drawn:
            self.body.children = [self.drawing_note]
            return
        if self.single is None:
            self.single = SingleLaserBoxView()
        self.single.show(data, linked if found else None)
        self.body.children = [self.single.widget]

    def _show_aggregated(
        self, data_state: DataStateService, filters: Filters, settings: CoverageSettings, stats: CoverageStatistics
    ) -> None:
        aggregated = data_state.aggregated_coverage(filters, settings)
        boxes = data_state.laser_box_stats(filters, settings)
        daily = [d.coverage_pct for d in aggregated.days if d.coverage_pct is not None]
        self.caption.value = self._describe(filters, settings) + " · all laser boxes"
        self.kpi_cards.show(
            [
                Kpi("Active days", format_count(aggregated.active_days),
                    f"of {format_count(len(aggregated.days))} calendar days"),
                Kpi("Laser boxes", format_count(len(boxes)), f"{format_count(stats.total_runs)} runs"),
                Kpi("Bags", format_count(stats.total_bags),
                    f"{format_decimal(stats.total_bags / aggregated.active_days)} per active day"
                    if aggregated.active_days else ""),
                Kpi("Labelled samples", format_count(stats.total_labels), f"{format_count(stats.total_frames)} frames"),
                Kpi("Avg daily coverage", format_pct(sum(daily) / len(daily) if daily else None),
                    "mean over days with bags"),
                Kpi("Under-labelled runs", format_count(len(stats.under_labelled)),
                    f"below {settings.under_labelled_pct:g} %"),
            ]
        )
        self.view = "aggregated"
        if not self.drawn:
            self.body.children = [self.drawing_note]
            return
        if self.aggregated is None:
            self.aggregated = AggregatedView()
        self.aggregated.show(aggregated, boxes, self.view_settings())
        self.body.children = [self.aggregated.widget]

    def _show_anomalies(self) -> None:
        everywhere = 0
        if self.services is None:
            found = 0
            self.anomaly_table.value = ""
        else:
            filters = dataclasses.replace(self.filters, timestamp=None)
            table = self.services.data_state.anomalies(filters)
            found = len(table)
            everywhere = len(self.services.data_state.anomalies()) if filters != Filters() else found
            self.anomaly_table.value = (
                html_table(
                    [Column("Where"), Column("Key"), Column("Size", True), Column("Reason")],
                    (
                        [text_cell(row.source), text_cell(row.key), text_cell(format_bytes(row.size)),
                         text_cell(row.reason)]
                        for row in table.itertuples(index=False)
                    ),
                    limit=self.ANOMALY_LIMIT,
                )
                + csv_link(csv_text(["where", "key", "size_bytes", "reason"], table.itertuples(index=False)),
                           "coverage_anomalies.csv", f"Download all {format_count(found)} as CSV")
                if found
                else '<div class="rt-caption">Every object fits the bucket layout.</div>'
            )
        where = f" under {self.filters.describe()}, {format_count(everywhere)} in all" if everywhere != found else ""
        self.anomalies.titles = (f"Anomalies: objects that do not fit the layout ({format_count(found)}{where})",)
