"""Page 4, fleet KPIs: one perception KPI per analysed run over time, one series per laser box.

The rows come from :meth:`~runtool.services.kpis.KpiService.table` (read from the analysis caches, never
computed here), regressions flagged per laser box with their reason. Two runs are compared side by side;
runs of the selection that are not analysed yet are counted and, unless the server is read-only, analysed
in bulk by :meth:`~runtool.services.pipeline.RunPipeline.update_many` in the background.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Literal

import ipywidgets as widgets
import numpy as np
import pandas as pd

from runtool.analysis.perception import Stream
from runtool.models import Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.services.kpis import REGRESSION_KPIS, KpiError, KpiTable
from runtool.services.pipeline import PipelineOutcome, PipelinePlan, PipelineResult
from runtool.ui.components import JobProgress, Kpi, KpiCards, MessageArea, section_title, settings_row
from runtool.ui.date_fields import DateFieldError, date_field_message, iso_date_field, parse_iso_date
from runtool.ui.fleet_charts import (
    DISTRIBUTION_COLOURS,
    OTHERS_COLOUR,
    SERIES_COLOURS,
    DistributionChart,
    KpiSeries,
    KpiTrendChart,
    split_series,
)
from runtool.ui.formatting import format_count, format_time
from runtool.ui.labels import distinct_laser_box_names
from runtool.ui.linked_run import LinkedRunNote, linked_run, marked
from runtool.ui.page import Page
from runtool.ui.query import FLEET_KPIS, run_url
from runtool.ui.tables import Cell, Column, html_table, link, text_cell

__all__ = ["KPI_CHOICES", "FleetKpiPage", "KpiChoice"]

Unit = Literal["fps", "share", "count", "ms", "ratio"]


@dataclass(frozen=True)
class KpiChoice:
    """A KPI the picker offers: its name in the KPI table, how the page calls it, and its unit."""

    name: str
    label: str
    unit: Unit

    def chart_value(self, value: float) -> float:
        """The value on the chart's axis (shares as percentages)."""
        return 100.0 * value if self.unit == "share" else value

    def format(self, value: object) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        number = float(value)  # type: ignore[arg-type]
        if self.unit == "fps":
            return f"{number:.1f} FPS"
        if self.unit == "share":
            return f"{100 * number:.1f} %"
        if self.unit == "ms":
            return f"{number:.1f} ms"
        if self.unit == "count":
            return format_count(number)
        return f"{number:,.2f}"

    def format_delta(self, delta: float) -> str:
        """The difference of two values; of two shares in percentage points ("+3.7 pp": "+3.7 %" read as a relative
        change, for 0.1 % against 3.8 %)."""
        if math.isnan(delta):
            return "–"
        sign = "+" if delta > 0 else "−" if delta < 0 else "±"
        return sign + (f"{100 * abs(delta):.1f} pp" if self.unit == "share" else self.format(abs(delta)))

    @property
    def axis_label(self) -> str:
        """The value axis's title: the unit, or what a count or a ratio counts ("failed bags", "tracks per minute"; the
        axis of a ratio had no title at all, one of a count only "count")."""
        return {"fps": "FPS", "share": "% of time", "ms": "ms"}.get(self.unit, self.label.lower())


KPI_CHOICES: tuple[KpiChoice, ...] = (
    KpiChoice("detections_p5_fps", "Detection rate p5", "fps"),
    KpiChoice("frames_p5_fps", "Frame rate p5", "fps"),
    KpiChoice("tracking_p5_fps", "Tracking rate p5", "fps"),
    KpiChoice("detections_share_below_target", "Detection time below target", "share"),
    KpiChoice("frames_share_below_target", "Frame time below target", "share"),
    KpiChoice("tracking_share_below_target", "Tracking time below target", "share"),
    KpiChoice("frames_dropped_frames", "Dropped camera frames", "count"),
    KpiChoice("detections_dropped_frames", "Frames without detections", "count"),
    KpiChoice("tracking_dropped_frames", "Frames without tracking", "count"),
    KpiChoice("detection_latency_p95_ms", "Detection latency p95", "ms"),
    KpiChoice("detection_latency_p99_ms", "Detection latency p99", "ms"),
    KpiChoice("tracking_latency_p95_ms", "Tracking latency p95", "ms"),
    KpiChoice("tracking_latency_p99_ms", "Tracking latency p99", "ms"),
    KpiChoice("mean_detections_per_frame", "Detections per frame", "ratio"),
    KpiChoice("tracks_per_minute", "Tracks per minute", "ratio"),
    KpiChoice("failed_bags", "Failed bags", "count"),
)
"""What the KPI picker offers, in its order; the names are those of ``runtool analyze --json``."""
_CHOICES = {choice.name: choice for choice in KPI_CHOICES}
_STREAM_NAMES = {"detections": "Detection", "frames": "Frame", "tracking": "Tracking"}
_NO_STREAM = {"detections": "no detection stream", "tracking": "no tracking stream", "frames": "no frame stream"}


def _not_drawn(kpi: str, rows: pd.DataFrame, missing: np.ndarray) -> list[str]:
    """Why the runs without a value of ``kpi`` are not drawn: the stream is absent (no message at all), or it is
    there but gave no value (a run shorter than the 1 s rate window has a detection stream but no rate)."""
    stream = kpi.split("_", 1)[0]
    counted = f"{stream}_messages"
    absent = missing & (rows[counted].fillna(0).to_numpy() == 0) if stream in _NO_STREAM and counted in rows \
        else np.zeros(len(missing), dtype=bool)
    notes = []
    for count, why in ((int(absent.sum()), f"{_NO_STREAM.get(stream, '')} for this KPI"),
                       (int((missing & ~absent).sum()), "no value for this KPI" + (
                           " (e.g. a run shorter than the 1 s rate window)" if stream in _NO_STREAM else ""))):
        if count:
            notes.append(f"{_count_of(count, 'run')} {'is' if count == 1 else 'are'} not drawn: {why}.")
    return notes
_NONE = ""
_STYLE = """<style>
/* A run's time and laser box keep one line each (at 760 px "field_175 · | LB_0004" broke). */
.rt-runs-table td:first-child, .rt-runs-table td:nth-child(2), .rt-compare td:first-child, .rt-runs-table th,
.rt-compare th { white-space: nowrap; }
.rt-kpi-legend { font-size: 13px; line-height: 18px; padding-left: 6px; }
.rt-legend-item { display: flex; align-items: baseline; gap: 4px; margin: 2px 0; cursor: default; }
.rt-legend-dot { flex: none; display: inline-block; width: 10px; height: 10px; border-radius: 50%; }
.rt-legend-ring { flex: none; display: inline-block; width: 9px; height: 9px; border: 2px solid; }
.rt-legend-label { overflow-wrap: anywhere; }
.rt-legend-count { flex: none; color: #666; font-size: 12px; }
.rt-runs-pager { gap: 8px; }
.rt-chart-tip { background: #fff; border: 1px solid #999; border-radius: 4px; padding: 4px 6px; max-width: 460px;
                font-size: 12px; line-height: 16px; white-space: pre-line; }
</style>"""


def _run_keys(rows: pd.DataFrame) -> list[str]:
    return [f"{lb}/{ts}" for lb, ts in zip(rows["lb_key"], rows["timestamp"], strict=True)]


def _utc(times: pd.Series) -> np.ndarray:
    return pd.to_datetime(times, utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ms]")


def _count_of(count: int, noun: str, plural: str | None = None) -> str:
    """``1 run``, ``2 runs``, ``1,204 runs``: a count and its noun, singular for one."""
    return f"{format_count(count)} {noun if count == 1 else plural or noun + 's'}"


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class FleetKpiPage(Page):
    """The fleet KPI page. ``page.widget`` is what the notebook displays.

    Readable state for scripts and tests: :attr:`view` (``"chart"`` or ``"empty"``), :attr:`table` (the
    :class:`~runtool.services.kpis.KpiTable` shown), :attr:`choice`, ``chart.shown`` (the series drawn),
    :attr:`selected_run`, :attr:`kpis` and :attr:`empty_text`.
    """

    link = FLEET_KPIS
    css_class = "rt-page-fleet-kpis"
    SERIES_LIMIT = 8
    """Laser boxes with a legend entry of their own; the others share one grey series."""
    OTHERS_LISTED = 20
    """Names of "others" listed when their legend entry is hovered."""
    PAGE_ROWS = 25
    """Runs per page of the runs table (newest first; the CSV has them all)."""
    COMPARE_LIMIT = 1000
    EMBED_CSV_LIMIT = 2000
    """Up to this many runs the CSV is embedded in the download link; beyond, it is built on request."""
    KPI_PARAMETER = "kpi"
    NOT_SHOWN = "it is not among the analysed runs shown (not analysed yet, or outside the dates)"

    def __init__(
        self, services: ServiceContainer | None = None, query: str | None = None, progressive: bool = False
    ) -> None:
        super().__init__(services, query, progressive)
        self.kpi_picker = widgets.Dropdown(
            options=[(choice.label, choice.name) for choice in KPI_CHOICES], value=KPI_CHOICES[0].name,
            description="KPI", style={"description_width": "initial"}, layout=widgets.Layout(width="320px"),
        ).add_class("rt-kpi-picker")
        self.since = iso_date_field("From", "180px", "rt-since")
        self.until = iso_date_field("to", "140px", "rt-until")
        self.date_message = widgets.HTML().add_class("rt-date-message")
        self.linked_note = LinkedRunNote()
        self._apply_link_settings()
        self.kpi_picker.observe(lambda _change: self._selection_changed(), names="value")
        for control in (self.since, self.until):
            control.observe(lambda _change: self._dates_changed(), names="value")
        self.caption = widgets.HTML().add_class("rt-caption")
        self.kpi_cards = KpiCards()
        self.table: KpiTable | None = None
        self.selected_run: str | None = None
        self._compare_labels: dict[str, str] = {}
        self._refresh_table = False
        # Not analysed yet: the count, the "Analyse N runs" button (absent when read-only), progress, result.
        self.analysis_note = widgets.HTML().add_class("rt-not-analysed")
        self.analyse_button: widgets.Button | None = None
        if not self.read_only:
            self.analyse_button = widgets.Button(button_style="primary", layout=widgets.Layout(width="auto"))
            self.analyse_button.add_class("rt-analyse-runs")
            self.analyse_button.on_click(lambda _: self.start_analysis())
        self.job = JobProgress()
        self.job.cancel_button.on_click(lambda _: self.cancel_analysis())
        self.analysis_result = widgets.HTML().add_class("rt-analysis-result")
        # What the bulk analysis says (refusals, errors) shows under its button, not in the banner far above.
        self.analysis_messages = MessageArea()
        self.analysis_row = widgets.HBox(layout=widgets.Layout(align_items="center", flex_flow="row wrap"))
        self.analysis_box = widgets.VBox([self.analysis_row, self.analysis_messages.widget, self.job.widget,
                                          self.analysis_result])
        self.analysis_box.add_class("rt-analysis-box")
        # The chart and what hangs off it; built on the first selection with data.
        self.chart: KpiTrendChart | None = None
        self.chart_note = widgets.HTML().add_class("rt-caption").add_class("rt-chart-note")
        self.clicked = widgets.HTML().add_class("rt-clicked-run")
        self.use_as_a = widgets.Button(description="Compare as A", layout=widgets.Layout(width="auto"))
        self.use_as_b = widgets.Button(description="Compare as B", layout=widgets.Layout(width="auto"))
        self.use_as_a.on_click(lambda _: self._compare_with("a"))
        self.use_as_b.on_click(lambda _: self._compare_with("b"))
        self.clicked_row = widgets.HBox(layout=widgets.Layout(align_items="center"))
        self.clicked_row.add_class("rt-clicked-row")
        self.compare_a = widgets.Dropdown(description="Run A", options=[("–", _NONE)], value=_NONE,
                                          layout=widgets.Layout(width="420px")).add_class("rt-compare-a")
        self.compare_b = widgets.Dropdown(description="Run B", options=[("–", _NONE)], value=_NONE,
                                          layout=widgets.Layout(width="420px")).add_class("rt-compare-b")
        for dropdown in (self.compare_a, self.compare_b):
            dropdown.style.description_width = "initial"  # the row starts at the page's edge, as the others do
            dropdown.observe(lambda _change: self._show_compare(), names="value")
        self.compare_table = widgets.HTML().add_class("rt-compare")
        self.compare_note = widgets.HTML().add_class("rt-caption").add_class("rt-compare-note")
        self.rate_distribution: DistributionChart | None = None
        self.latency_distribution: DistributionChart | None = None
        self.distributions = widgets.HBox(layout=widgets.Layout(width="100%")).add_class("rt-distributions")
        self.distributions_legend = widgets.HTML().add_class("rt-distributions-legend")
        self.runs_title = section_title()
        self.csv_link = widgets.HTML().add_class("rt-csv")
        self.csv_button = widgets.Button(description="Prepare CSV", layout=widgets.Layout(width="auto"))
        self.csv_button.on_click(lambda _: self._prepare_csv())
        self.csv_row = widgets.HBox(layout=widgets.Layout(align_items="center"))
        self.runs_table = widgets.HTML().add_class("rt-runs-table")
        self.runs_page = 0
        self._runs_keys: tuple[str, ...] = ()
        self._runs_order: list[int] = []
        self._runs_columns: list[Column] = []
        self._run_cells: Callable[[int], list[Cell]] = lambda _: []
        self.runs_newer = widgets.Button(description="‹ Newer", layout=widgets.Layout(width="auto"))
        self.runs_older = widgets.Button(description="Older ›", layout=widgets.Layout(width="auto"))
        self.runs_newer.add_class("rt-runs-newer")
        self.runs_older.add_class("rt-runs-older")
        self.runs_newer.on_click(lambda _: self.show_runs_page(self.runs_page - 1))
        self.runs_older.on_click(lambda _: self.show_runs_page(self.runs_page + 1))
        self.runs_range = widgets.HTML().add_class("rt-caption")
        self.runs_pager = widgets.HBox(layout=widgets.Layout(align_items="center")).add_class("rt-runs-pager")
        self.content: widgets.VBox | None = None
        self.body = widgets.VBox([self.empty_state])
        controls = settings_row([self.kpi_picker, self.since, self.until], self.date_message)
        self.frame([self.linked_note.widget, controls, self.caption, self.kpi_cards.widget, self.analysis_box,
                    self.body])
        self.start()

    # -- link settings ---------------------------------------------------------------------------

    def _apply_link_settings(self) -> None:
        """Take the KPI and the dates from the link, so a shared link reproduces the view."""
        kpi = self.link_parameters.get(self.KPI_PARAMETER)
        if kpi is not None:
            if kpi in _CHOICES:
                self.kpi_picker.value = kpi
            else:
                self.messages.error(f"The link's KPI {kpi!r} is not one this page shows, so "
                                    f"{_CHOICES[self.kpi_picker.value].label} is shown.")
        for name, control in (("since", self.since), ("until", self.until)):
            text = self.link_parameters.get(name)
            if not text:
                continue
            try:
                parse_iso_date(text, name)
            except DateFieldError:
                self.messages.error(f"The link's {name} date {text!r} is not a YYYY-MM-DD date, so it is not used.")
            else:
                control.value = text.strip()

    def view_settings(self) -> dict[str, str]:
        settings = {}
        if self.kpi_picker.value != KPI_CHOICES[0].name:
            settings[self.KPI_PARAMETER] = str(self.kpi_picker.value)
        for name, day in (("since", self.since_date), ("until", self.until_date)):
            if day is not None:
                settings[name] = day.isoformat()
        return settings

    @property
    def since_date(self) -> date | None:
        """The "From" date; ``None`` when empty or not a ``YYYY-MM-DD`` date (said next to the field)."""
        return _typed_date(self.since, "From")

    @property
    def until_date(self) -> date | None:
        """The "to" date; ``None`` when empty or not a ``YYYY-MM-DD`` date (said next to the field)."""
        return _typed_date(self.until, "to")

    def _dates_changed(self) -> None:
        errors = []
        for control, field in ((self.since, "From"), (self.until, "to")):
            try:
                parse_iso_date(control.value, field)
            except DateFieldError as exc:
                errors.append(date_field_message(exc, "It is not used until corrected."))
        self.date_message.value = "<br>".join(errors)
        self._selection_changed()

    # -- readable state and controls ---------------------------------------------------------------

    @property
    def choice(self) -> KpiChoice:
        return _CHOICES[self.kpi_picker.value]

    @property
    def kpis(self) -> dict[str, str]:
        return self.kpi_cards.values

    @property
    def selection(self) -> Filters:
        """The laser-box-or-above selection (a run timestamp from a link only matters to the run pages)."""
        return dataclasses.replace(self.filters, timestamp=None)

    def pick_kpi(self, name: str) -> None:
        self.kpi_picker.value = name

    def set_dates(self, since: date | None, until: date | None) -> None:
        with self.since.hold_trait_notifications(), self.until.hold_trait_notifications():
            self.since.value = since.isoformat() if since else ""
            self.until.value = until.isoformat() if until else ""

    def select_run(self, key: str) -> None:
        """What a click on a run's point does: show its "Open run" link and the compare buttons."""
        self.selected_run = key
        coord = RunCoordinate.parse(key)
        href = html.escape(run_url(coord), quote=True)
        self.clicked.value = (
            f'<b>{html.escape(coord.lbid)} · {html.escape(format_time(coord.start_time))}</b> '
            f'<span class="rt-caption">{html.escape(key)}</span> · '
            f'<a class="rt-open-run" href="{href}" target="_self">Open run</a>'
        )
        self.clicked_row.children = [self.clicked, self.use_as_a, self.use_as_b]

    def compare(self, a: str, b: str) -> None:
        """Compare the runs with keys ``a`` and ``b`` (both must be shown)."""
        self._ensure_option(a)
        self._ensure_option(b)
        with self.compare_a.hold_trait_notifications():
            self.compare_a.value = a
        self.compare_b.value = b
        self._show_compare()

    # -- drawing ---------------------------------------------------------------------------------

    def _show(self) -> None:
        services = self._available_services()
        if services is None:
            self._show_not_analysed(0)
            return
        filters = self.selection
        if services.data_state.runs(filters).empty:
            self._show_empty(self.nothing_selected_text(filters))
            self._show_not_analysed(0)
            return
        try:
            table = services.kpis.table(filters, self.since_date, self.until_date, refresh=self._refresh_table)
        except KpiError as exc:
            self._show_empty(f"{exc} Change the dates, or clear them to see every run.")
            self._show_not_analysed(0)
            return
        self._refresh_table = False
        self.table = table
        self._show_not_analysed(table.not_analysed)
        if table.rows.empty:
            self._show_empty(self._no_analysed_text(filters, table.not_analysed))
            return
        self._show_table(filters, table)

    def _describe(self, filters: Filters) -> str:
        since, until = self.since_date, self.until_date
        if since is None and until is None:
            dates = "all dates"
        else:
            dates = f"{since.isoformat() if since else 'the first run'} to {until.isoformat() if until else 'today'}"
        return f"{filters.describe()} · {dates}"

    def _no_analysed_text(self, filters: Filters, not_analysed: int) -> str:
        where = self._describe(filters)
        if not_analysed == 0 and not self._runs_in_dates(filters):
            return f"No run under {where}: none started in these dates. Widen the dates, or clear them."
        if not_analysed == 0:
            return (f"No run under {where} can be analysed: none has raw bags in the bucket or on disk "
                    "(labels only). Pick another selection or widen the dates.")
        runs = _count_of(not_analysed, "run")
        if self.read_only:
            return (f"None of the {runs} under {where} is analysed yet, and this server is read-only: it shows "
                    "only analyses already cached. Ask an operator to run `runtool analyze` on this selection "
                    "with --yes, then reload this page.")
        return (f"None of the {runs} under {where} is analysed yet. Press “Analyse {runs}” above to download, "
                "extract and analyse them in the background, or pick another selection.")

    def _runs_in_dates(self, filters: Filters) -> bool:
        """Whether any run of the selection (analysed or not, labels only included) started within the dates."""
        if self.services is None:
            return False
        days = self.services.data_state.runs(filters)["start_time"].dt.date
        since, until = self.since_date, self.until_date
        return bool(((days >= since) if since else days.notna()).mul((days <= until) if until else True).any())

    def _show_empty(self, text: str) -> None:
        self.linked_note.show(linked_run(self.filters), self.NOT_SHOWN)
        self.caption.value = ""
        self.kpi_cards.show([])
        self._set_empty(text)

    def _show_not_analysed(self, count: int) -> None:
        """The count of runs not analysed yet and, unless read-only or busy, the button that analyses them."""
        if count == 0:
            self.analysis_note.value = ""
            self.analysis_row.children = []
            return
        runs = _count_of(count, "run")
        verb = "is" if count == 1 else "are"
        if self.read_only:
            self.analysis_note.value = (
                f"{runs} of this selection {verb} not analysed yet; this server is read-only, so only cached "
                "analyses are shown."
            )
            self.analysis_row.children = [self.analysis_note]
            return
        assert self.analyse_button is not None
        self.analysis_note.value = f"{runs} of this selection {verb} not analysed yet."
        self.analyse_button.description = f"Analyse {runs}"
        self.analyse_button.tooltip = "Download what is missing, extract and analyse, in the background"
        self.analyse_button.disabled = self.busy
        self.analysis_row.children = [self.analysis_note, self.analyse_button]

    def _show_table(self, filters: Filters, table: KpiTable) -> None:
        rows = table.rows
        choice = self.choice
        keys = _run_keys(rows)
        values = rows[choice.name].astype("float64") if choice.name in rows else pd.Series(np.nan, index=rows.index)
        has_value = values.notna().to_numpy()
        on_kpi = [tuple(r for r in reasons if r.startswith(f"{choice.name} ")) for reasons in rows["regressions"]]
        boxes = int(rows["lb_key"].nunique())
        regressed = int(rows["regressed"].sum())
        self.caption.value = html.escape(self._describe(filters))
        shown = values[has_value]
        self.kpi_cards.show([
            Kpi("Analysed runs", format_count(len(rows)),
                f"{format_count(table.not_analysed)} not analysed yet" if table.not_analysed else "every run"),
            Kpi("Laser boxes", format_count(boxes), "with analysed runs"),
            Kpi(f"{choice.label}, median", choice.format(float(shown.median()) if len(shown) else None),
                f"over {_count_of(len(shown), 'run')}"),
            Kpi("Regressed runs", format_count(regressed),
                f"{format_count(sum(1 for r in on_kpi if r))} on this KPI"),
        ])
        self._draw_chart(rows, keys, values, has_value, on_kpi)
        self._draw_runs(table, keys, values, on_kpi)
        self._update_compare_options(rows, keys)
        if self.selected_run is not None and self.selected_run not in set(keys):
            self.selected_run = None
            self.clicked_row.children = []
        self._show_compare()
        if self.content is None:
            self.content = widgets.VBox([
                widgets.HTML(_STYLE),
                self.chart.widget if self.chart is not None else widgets.HTML(),
                self.chart_note,
                self.clicked_row,
                section_title("Compare two runs"),
                widgets.HBox([self.compare_a, self.compare_b], layout=widgets.Layout(flex_flow="row wrap")),
                self.compare_note,
                self.compare_table,
                self.distributions_legend,
                self.distributions,
                self.runs_title,
                self.csv_row,
                self.runs_table,
                self.runs_pager,
            ]).add_class("rt-view-chart")
        self.body.children = [self.content]
        self.view = "chart"

    def _draw_chart(self, rows: pd.DataFrame, keys: list[str], values: pd.Series, has_value: np.ndarray,
                    on_kpi: list[tuple[str, ...]]) -> None:
        choice = self.choice
        if self.chart is None:
            self.chart = KpiTrendChart(self.SERIES_LIMIT)
            self.chart.on_click(self.select_run)
        lb_keys = rows["lb_key"].to_numpy(dtype=object)
        counts = pd.Series(lb_keys[has_value]).value_counts()
        own, rest = split_series({str(key): int(count) for key, count in counts.items()}, self.SERIES_LIMIT)
        short = distinct_laser_box_names(list(counts.index))
        times = _utc(rows["start_time"])
        chart_values = np.array([choice.chart_value(v) for v in values.to_numpy(dtype="float64")])
        labels = [f"{lb} · {format_time(t)} · {choice.format(v)}"
                  for lb, t, v in zip(lb_keys, rows["start_time"], values, strict=True)]

        def series(label: str, mask: np.ndarray, colour: str, title: str) -> KpiSeries:
            index = np.flatnonzero(mask & has_value)
            return KpiSeries(label, tuple(keys[i] for i in index), times[index], chart_values[index],
                             tuple(labels[i] for i in index), colour, title)

        drawn = [series(short[lb], lb_keys == lb, SERIES_COLOURS[i], lb) for i, lb in enumerate(own)]
        if rest:
            listed = ", ".join(rest[: self.OTHERS_LISTED])
            more = f" and {format_count(len(rest) - self.OTHERS_LISTED)} more" if len(rest) > self.OTHERS_LISTED else ""
            drawn.append(series(f"others: {_count_of(len(rest), 'laser box', 'laser boxes')}",
                                np.isin(lb_keys, rest), OTHERS_COLOUR, listed + more))
        flagged = np.array([bool(r) for r in on_kpi])
        index = np.flatnonzero(flagged & has_value)
        ring = KpiSeries("regressed", tuple(keys[i] for i in index), times[index], chart_values[index],
                         tuple(f"{labels[i]}: {'; '.join(on_kpi[i])}" for i in index), "")
        linked = linked_run(self.filters)
        at = [i for i, key in enumerate(keys) if linked is not None and key == linked.to_path_str()]
        on_chart = np.array([i for i in at if has_value[i]], dtype=int)
        self.linked_note.show(linked, self.NOT_SHOWN if not at else (
            "ringed in blue in the chart, its row marked “in the link” in the runs table" if len(on_chart) else
            f"its row is marked “in the link” in the runs table; it has no {choice.label.lower()}, so it is not on "
            "the chart"))
        self.chart.show(f"{choice.label} per run", choice.axis_label, drawn, ring, whole_numbers=choice.unit == "count",
                        linked=KpiSeries("linked", tuple(keys[i] for i in on_chart), times[on_chart],
                                         chart_values[on_chart], (), ""))
        notes = ["Each point is one analysed run; click a point to open it or to compare it."]
        if rest:
            notes.append(f"The {self.SERIES_LIMIT} laser boxes with the most runs have their own colour; the "
                         f"other {format_count(len(rest))} are grey (“others”, hover it in the legend for their "
                         "names). Pick a region, field or TW above to see them apart.")
        if choice.name in REGRESSION_KPIS:
            notes.append("Red squares: runs worse than the median of their laser box's previous runs by more than "
                         "the margin (hover for why).")
        else:
            notes.append(f"{choice.label} is not checked for regressions.")
        notes += _not_drawn(choice.name, rows, ~has_value)
        if not has_value.any():
            notes.insert(0, f"<b>No run of this selection has a value for {html.escape(choice.label)}.</b> "
                            "Pick another KPI.")
        self.chart_note.value = " ".join(notes)

    def _draw_runs(self, table: KpiTable, keys: list[str], values: pd.Series, on_kpi: list[tuple[str, ...]]) -> None:
        rows = table.rows
        choice = self.choice
        names = distinct_laser_box_names(list(rows["lb_key"].unique()))
        order = np.argsort(-_utc(rows["start_time"]).astype("int64"), kind="stable")
        self.runs_title.value = f"Analysed runs ({format_count(len(rows))}), newest first"

        linked = linked_run(self.filters)
        linked_key = linked.to_path_str() if linked is not None else None

        def cells(i: int) -> list[Cell]:
            start = link(run_url(RunCoordinate.parse(keys[i])), format_time(rows["start_time"].iat[i]))
            return [marked(start) if keys[i] == linked_key else start,
                    text_cell(names[rows["lb_key"].iat[i]], rows["lb_key"].iat[i]),
                    text_cell(choice.format(values.iat[i])), _regression_cell(rows["regressions"].iat[i], on_kpi[i])]

        self._run_cells = cells
        self._runs_order = [int(i) for i in order]
        self._runs_columns = [Column("Start (UTC)"), Column("Laser box"), Column(choice.label, True),
                              Column("Regression")]
        if tuple(keys) != self._runs_keys:  # another selection or dates: back to the newest runs, or the link's run
            self._runs_keys = tuple(keys)
            position = [keys[i] for i in self._runs_order].index(linked_key) if linked_key in keys else 0
            self.runs_page = position // self.PAGE_ROWS
        self._draw_runs_page()
        if len(rows) <= self.EMBED_CSV_LIMIT:
            self.csv_link.value = self._csv_link(table, self._runs_order)
            self.csv_row.children = [self.csv_link]
        else:
            self.csv_link.value = ""
            self.csv_button.description = f"Prepare CSV of {_count_of(len(rows), 'run')}"
            self.csv_row.children = [self.csv_button, self.csv_link]

    @property
    def runs_pages(self) -> int:
        return max(1, math.ceil(len(self._runs_order) / self.PAGE_ROWS))

    def show_runs_page(self, page: int) -> None:
        """Show page ``page`` (0 = the newest runs) of the runs table, clipped to the pages there are."""
        self.runs_page = min(max(page, 0), self.runs_pages - 1)
        self._draw_runs_page()

    def _draw_runs_page(self) -> None:
        first = self.runs_page * self.PAGE_ROWS
        shown = self._runs_order[first: first + self.PAGE_ROWS]
        self.runs_table.value = html_table(self._runs_columns, (self._run_cells(i) for i in shown))
        total = len(self._runs_order)
        if total <= self.PAGE_ROWS:
            self.runs_pager.children = []
            return
        self.runs_range.value = (f"Runs {format_count(first + 1)}–{format_count(first + len(shown))} of "
                                 f"{format_count(total)} · page {self.runs_page + 1} of {self.runs_pages}")
        self.runs_newer.disabled = self.runs_page == 0
        self.runs_older.disabled = self.runs_page >= self.runs_pages - 1
        self.runs_pager.children = [self.runs_newer, self.runs_range, self.runs_older]

    def _prepare_csv(self) -> None:
        if self.table is not None:
            self.csv_link.value = self._csv_link(self.table, self._runs_order)

    @staticmethod
    def _csv_link(table: KpiTable, order: list[int]) -> str:
        """A download link carrying the whole table (every KPI) as CSV in a data: URI: works offline.

        The rows are in ``order``, the runs table's (newest first), each with its full coordinate in ``run``.
        """
        frame = pd.DataFrame.from_records(table.records()).iloc[order]
        keys = _run_keys(table.rows)
        frame.insert(0, "run", [keys[i] for i in order])
        frame["regressions"] = frame["regressions"].map("; ".join)
        return (_csv_anchor(frame, "fleet_kpis.csv", "Download CSV", "rt-csv-link")
                + f' <span class="rt-caption">({_count_of(len(frame), "run")}, every KPI)</span>')

    # -- comparing two runs ------------------------------------------------------------------------

    def _update_compare_options(self, rows: pd.DataFrame, keys: list[str]) -> None:
        names = distinct_laser_box_names(list(rows["lb_key"].unique()))
        order = np.argsort(-_utc(rows["start_time"]).astype("int64"), kind="stable")[: self.COMPARE_LIMIT]
        self._compare_labels = {
            key: f"{names[lb]} · {format_time(start)}"
            for key, lb, start in zip(keys, rows["lb_key"], rows["start_time"], strict=True)
        }
        options = [("–", _NONE), *((self._compare_labels[keys[i]], keys[i]) for i in order)]
        for dropdown in (self.compare_a, self.compare_b):
            current = dropdown.value if dropdown.value in self._compare_labels else _NONE
            listed = current == _NONE or current in {value for _, value in options}
            extra = [] if listed else [(self._compare_labels[current], current)]
            with dropdown.hold_trait_notifications():
                dropdown.options = [*options, *extra]
                dropdown.value = current

    def _ensure_option(self, key: str) -> None:
        labels = self._compare_labels
        for dropdown in (self.compare_a, self.compare_b):
            if key not in {value for _, value in dropdown.options}:
                dropdown.options = [*dropdown.options, (labels.get(key, key), key)]

    def _compare_with(self, side: Literal["a", "b"]) -> None:
        if self.selected_run is None:
            return
        self._ensure_option(self.selected_run)
        (self.compare_a if side == "a" else self.compare_b).value = self.selected_run

    @property
    def compared(self) -> tuple[str, str] | None:
        a, b = self.compare_a.value, self.compare_b.value
        return (a, b) if a and b else None

    def _show_compare(self) -> None:
        pair = self.compared
        table = self.table
        if pair is None or table is None:
            self.compare_note.value = ("Pick two runs (above, or with “Compare as A/B” after clicking a point) to see "
                                       "their KPIs side by side.")
            self.compare_table.value = ""
            self.distributions.children = []
            self.distributions_legend.value = ""
            return
        keys = _run_keys(table.rows)
        where = {key: i for i, key in enumerate(keys)}
        if pair[0] not in where or pair[1] not in where:
            self.compare_note.value = "One of the runs to compare is not in this selection any more; pick it again."
            self.compare_table.value = ""
            self.distributions.children = []
            self.distributions_legend.value = ""
            return
        a, b = (table.rows.iloc[where[key]] for key in pair)
        body = []
        records = []
        for choice in KPI_CHOICES:
            if choice.name not in table.rows:
                continue
            va, vb = a[choice.name], b[choice.name]
            delta = float(vb) - float(va) if not (_is_missing(va) or _is_missing(vb)) else math.nan
            body.append([text_cell(choice.label), text_cell(choice.format(va)), text_cell(choice.format(vb)),
                         text_cell(choice.format_delta(delta)), text_cell(_verdict(choice.name, delta))])
            records.append({"kpi": choice.name, "label": choice.label, "a": va, "b": vb, "b_minus_a": delta,
                            "b_is": _verdict(choice.name, delta)})
        label_a, label_b = (self._compare_labels.get(key, key) for key in pair)
        csv = pd.DataFrame.from_records(records)
        csv.insert(0, "run_b", pair[1])
        csv.insert(0, "run_a", pair[0])
        self.compare_table.value = html_table(
            [Column("KPI"), Column(f"A: {label_a}", True), Column(f"B: {label_b}", True), Column("B − A", True),
             Column("B is")],
            body,
        ) + _csv_anchor(csv, "fleet_kpis_compare.csv", "Download this comparison as CSV")
        self._show_distributions(pair, (label_a, label_b))

    def _show_distributions(self, pair: tuple[str, str], labels: tuple[str, str]) -> None:
        assert self.services is not None
        analyses = [self.services.analytics.load_cached(RunCoordinate.parse(key)) for key in pair]
        if any(analysis is None for analysis in analyses):
            self.compare_note.value = ("The per-message series of one of these runs are not in its analysis cache, "
                                       "so only the KPIs are compared.")
            self.distributions.children = []
            self.distributions_legend.value = ""
            return
        a, b = analyses
        assert a is not None and b is not None
        stream: Stream = "detections" if a.has_detections and b.has_detections else "frames"
        if self.rate_distribution is None or self.latency_distribution is None:
            self.rate_distribution = DistributionChart("", "FPS (windowed rate)")
            self.latency_distribution = DistributionChart("Detection latency", "ms (header − image stamp)")
        self.rate_distribution.figure.title = f"{'Detection' if stream == 'detections' else 'Frame'} rate"
        self.rate_distribution.show(_column(a.stream(stream), "rate_fps"), _column(b.stream(stream), "rate_fps"),
                                    labels)
        charts: list[widgets.Widget] = [self.rate_distribution.widget]
        note = "Distributions from the analysis caches, as the share of messages per bin."
        self.distributions_legend.value = "".join(
            f'<span class="rt-legend-item" style="display:inline-flex;margin-right:16px">'
            f'<span class="rt-legend-dot" style="background:{colour};border-radius:2px"></span>'
            f'{side}: {html.escape(label)}</span>'
            for side, colour, label in zip("AB", DISTRIBUTION_COLOURS, labels, strict=True)
        )
        if a.has_detections and b.has_detections:
            self.latency_distribution.show(_column(a.detections, "latency_ms"), _column(b.detections, "latency_ms"),
                                           labels)
            charts.append(self.latency_distribution.widget)
        else:
            note += " No latency distribution: one of the runs has no detection stream."
        for chart in charts:
            chart.layout.width = f"{100 // len(charts)}%"
        self.compare_note.value = note
        self.distributions.children = charts

    # -- bulk analysis -----------------------------------------------------------------------------

    def start_analysis(self) -> None:
        """Analyse the runs of the selection that are not analysed yet, in the background (not when read-only)."""
        doing = "Analysing the runs"
        if self._refused(doing, self.analysis_messages):
            return
        services = self.services
        assert services is not None
        try:
            plan = services.pipeline.plan(self.selection, self.since_date, self.until_date)
        except Exception as exc:  # shown on the page; the page stays usable
            self.analysis_messages.report(exc, "planning the analysis")
            return
        analysed = set(_run_keys(self.table.rows)) if self.table is not None else set()
        todo = PipelinePlan(tuple((c, a) for c, a in plan.runs if c.to_path_str() not in analysed), plan.left_out)
        if not todo.runs:
            self.analysis_messages.info("Every run of this selection is analysed already.")
            self.render()
            return
        total = len(todo.runs)
        self.analysis_result.value = ""

        def progress(done: int, total: int, outcome: PipelineOutcome) -> None:
            self.job.update(done / max(total, 1), f"{format_count(done)} of {_count_of(total, 'run')} done "
                            f"(last: {outcome.coordinate.lbid} {format_time(outcome.coordinate.start_time)}, "
                            f"{outcome.status})", force=True)

        def failed(_exc: Exception) -> None:
            self.analysis_result.value = ""
            self._refresh_table = True  # the runs analysed before the failure are in the cache

        self._run_job(
            lambda cancel: services.pipeline.update_many(todo, progress=progress, cancel=cancel),
            self._analysed, doing, area=self.analysis_messages, progress=self.job,
            text=f"Analysing {_count_of(total, 'run')}: downloading and extracting what is missing…", failed=failed,
        )

    def _show_busy(self) -> None:
        if self.analyse_button is not None:
            self.analyse_button.disabled = True

    def cancel_analysis(self) -> None:
        self.cancel_job()
        self.job.update(0.0, "Cancelling: the runs already started finish first…", force=True)

    def _analysed(self, result: PipelineResult) -> None:
        failed = result.with_status("failed")
        rows = [[link(run_url(o.coordinate), f"{o.coordinate.lbid} · {format_time(o.coordinate.start_time)}"),
                 text_cell(o.step or "–"), text_cell(o.error or "")] for o in failed]
        problems = (html_table([Column("Run that failed"), Column("Step"), Column("Reason")], rows)
                    if rows else "")
        self.analysis_result.value = f"<p><b>{html.escape(result.summary())}</b></p>{problems}"
        self._refresh_table = True


def _typed_date(field: widgets.Text, name: str) -> date | None:
    try:
        return parse_iso_date(field.value, name)
    except DateFieldError:  # said next to the field by _dates_changed; the page runs without this limit
        return None


def _csv_anchor(frame: pd.DataFrame, filename: str, text: str, css_class: str = "rt-csv-compare") -> str:
    """A link that downloads ``frame`` as CSV from a data: URI (no server round trip, works offline)."""
    payload = base64.b64encode(frame.to_csv(index=False).encode("utf-8")).decode("ascii")
    return (f'<a class="{css_class}" download="{filename}" href="data:text/csv;charset=utf-8;base64,{payload}">'
            f'{html.escape(text)}</a>')


def _kpi_label(name: str) -> str:
    if name in _CHOICES:
        return _CHOICES[name].label
    stream, _, rest = name.partition("_")
    if rest == "median_fps" and stream in _STREAM_NAMES:
        return f"{_STREAM_NAMES[stream]} rate median"
    return name


def _readable_reason(reason: str) -> str:
    """A regression reason with the KPI's label in place of its column name."""
    name, _, rest = reason.partition(" ")
    return f"{_kpi_label(name)} {rest}"


def _regression_cell(reasons: tuple[str, ...], on_kpi: tuple[str, ...]) -> Cell:
    """The reasons on the KPI shown in full; the other KPIs a run regressed on by name (all reasons on hover).

    A run can regress on a dozen KPIs at once; every reason in full made one run a paragraph.
    """
    if not reasons:
        return Cell("")
    title = html.escape("\n".join(_readable_reason(r) for r in reasons), quote=True)
    others = list(dict.fromkeys(_kpi_label(r.partition(" ")[0]) for r in reasons if r not in on_kpi))
    text = "; ".join(_readable_reason(r) for r in on_kpi)
    if others:
        text += f"{' · also' if on_kpi else 'on'} {', '.join(others)}"
    return Cell(f'<span class="rt-badge" style="background:#d62728" title="{title}">'
                f'regressed{" on this KPI" if on_kpi else ""}</span> '
                f'<span class="rt-caption" title="{title}">{html.escape(text)}</span>')


def _column(table: pd.DataFrame, column: str) -> np.ndarray:
    if table.empty or column not in table:
        return np.empty(0, dtype="float64")
    return table[column].to_numpy(dtype="float64", na_value=np.nan)


def _verdict(name: str, delta: float) -> str:
    """Whether B is better or worse than A on a KPI with a direction (the regression rule's)."""
    if math.isnan(delta) or name not in REGRESSION_KPIS:
        return "–"
    if delta == 0:
        return "same"
    better = REGRESSION_KPIS[name][0]
    return "better" if (delta > 0) == (better == "higher") else "worse"
