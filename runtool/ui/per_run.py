"""Page 2, per-run analysis: pick a run, see where it stands from cloud to analysis, and take the next step.

The page shows four status cards (cloud, local, extraction, analysis) and one button for the next step of
the pipeline, named by what it does. Downloads go plan → preview → execute *that* plan; extraction and
analysis follow; the analysis shows as KPI cards and four tabs of charts (:mod:`runtool.ui.analysis_charts`).
"Bring up to date" takes every remaining step in one job through the run pipeline
(:meth:`~runtool.services.pipeline.RunPipeline.bring_up_to_date`, as ``runtool analyze`` and the reports do).

Every step runs in one background job at a time (the page's job lifecycle, :meth:`runtool.ui.page.Page._run_job`),
so the kernel keeps answering the page: the run picker and the tabs stay usable while bags download. A job
reports progress into a bar with Cancel, ends with a one-line result, and turns failures into messages: an
expected one as its sentence, an unexpected one with its details one click away. In read-only mode the write
controls are absent and the page shows the state and any analysis already cached.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import html
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, TypeVar, get_args

import ipywidgets as widgets

from runtool.extract import ExtractionProgress, ExtractionStage, OutputError, RunMetadata
from runtool.models import LEVELS, NextAction, RunCoordinate, RunState, parse_timestamp
from runtool.services import ServiceContainer, TransferPlan, TransferProgress, TransferResult
from runtool.services.analytics import RunAnalysis
from runtool.services.conflicts import CONFLICT_LABELS, CONFLICT_MODES, ConflictMode
from runtool.services.extraction import BACKENDS, ExtractionCancelled, ExtractionResult
from runtool.services.pipeline import PipelineCancelled, PipelineProgress, PipelineStep, RunUpdate
from runtool.services.reports import ReportCancelled, ReportProgress, ReportResult, ReportStage
from runtool.ui.analysis_charts import AnalysisView
from runtool.ui.components import JobProgress, MessageArea, section_title
from runtool.ui.formatting import format_bytes, format_count, format_time
from runtool.ui.linked_run import level_words, skipped_levels
from runtool.ui.page import Page
from runtool.ui.query import PER_RUN
from runtool.ui.tables import Column, html_table, text_cell
from runtool.ui.theme import sync_style

__all__ = ["DownloadPanel", "JobProgress", "PerRunPage", "object_name"]

T = TypeVar("T")

BACKEND_LABELS: dict[str, tuple[str, str]] = {
    "local": ("In-process", "Read the bags in this server's Python process"),
    "docker": ("Docker", "Read the bags in a container built from runtool's Dockerfile"),
}
REPORT_LINK_LIMIT = 1_500_000
"""Reports up to this size travel inside their download link (base64 keeps the link under chromium's 2 MB URL
limit); a larger one is only named."""
REPORT_STAGES: tuple[ReportStage, ...] = get_args(ReportStage)
UPDATE_STEPS: dict[NextAction, tuple[PipelineStep, ...]] = {
    NextAction.DOWNLOAD: ("download", "extract", "analyze"),
    NextAction.EXTRACT: ("extract", "analyze"),
    NextAction.ANALYZE: ("analyze",),
}
"""The steps "Bring up to date" takes from each next step of a run (the order of the run pipeline)."""
NOTHING_TO_UPDATE = "This run has nothing to bring up to date."
STEP_WORDS: dict[PipelineStep, tuple[str, str]] = {
    "check": ("check", "checked"),
    "download": ("download", "downloaded"),
    "extract": ("extract", "extracted"),
    "analyze": ("analyse", "analysed"),
}


def object_name(name: str) -> str:
    """A bag's name as its object in the raw bucket has it (``_…_0.bag``), from a local file name
    (``rosbag_…_0.bag``) or the stem extraction records (``rosbag_…_0``).

    A download stores object ``_X.bag`` as ``rosbag_X.bag``; the page names every bag the way the user saw it
    first, in the bag picker.
    """
    name = name.removeprefix("rosbag") if name.startswith("rosbag_") else name
    return name if name.endswith(".bag") else f"{name}.bag"


def _badge(status_label: str, colour: str) -> str:
    return f'<span class="rt-badge" style="background:{colour}">{html.escape(status_label)}</span>'


def _card_html(title: str, lines: Sequence[str]) -> str:
    """A status card's markup; ``lines`` are ready-made HTML."""
    body = "".join(f"<div>{line}</div>" for line in lines)
    return f'<div class="rt-section-title">{html.escape(title)}</div>{body}'


def _plural(count: int, noun: str) -> str:
    return f"{format_count(count)} {noun}{'' if count == 1 else 's'}"


def _listed(words: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(words) if len(words) < 3 else f"{', '.join(words[:-1])} and {words[-1]}"


class DownloadPanel:
    """Which bags to download and how to treat existing files; the preview of the plan and its Execute button.

    Changing the bags or the conflict mode makes the shown preview stale, so the panel calls
    ``on_change`` and the page drops the plan: Execute always runs exactly what was previewed.
    """

    MAX_ROWS = 8

    def __init__(self, on_change: Callable[[], None]) -> None:
        self.bags = widgets.SelectMultiple(
            description="Bags", rows=self.MAX_ROWS, style={"description_width": "initial"},
            layout=widgets.Layout(width="420px"),
        ).add_class("rt-download-bags")
        self.conflict = widgets.ToggleButtons(
            options=[(CONFLICT_LABELS[mode][0], mode) for mode in CONFLICT_MODES],
            tooltips=[CONFLICT_LABELS[mode][1] for mode in CONFLICT_MODES],
            value="skip",
            style={"button_width": "auto"},  # each label whole, however long its words
        ).add_class("rt-download-conflict")
        self.preview_button = widgets.Button(
            description="Preview", tooltip="List what the download would do, without downloading",
        ).add_class("rt-download-preview")
        self.preview = widgets.HTML().add_class("rt-preview")
        self.execute_button = widgets.Button(button_style="primary", layout=widgets.Layout(width="auto"))
        self.execute_button.add_class("rt-download-execute")
        # In a row of its own, so the button keeps the width of its name instead of the panel's.
        self.execute_row = widgets.HBox([self.execute_button])
        self.controls = widgets.VBox([self.conflict, self.preview_button])
        self.widget = widgets.VBox([
            widgets.HBox([self.bags, self.controls], layout=widgets.Layout(flex_flow="row wrap")),
            self.preview,
        ]).add_class("rt-download")
        self._on_change = on_change
        self._quiet = False
        self.bags.observe(self._changed, names="value")
        self.conflict.observe(self._changed, names="value")

    def _changed(self, _change: Mapping[str, object]) -> None:
        if not self._quiet:
            self._on_change()

    def set_bags(self, sizes: Mapping[str, int], conflict: ConflictMode = "skip") -> None:
        """Offer the run's cloud bags (name → bytes), all chosen, and start at ``conflict``."""
        self._quiet = True
        try:
            self.bags.options = [(f"{name} · {format_bytes(size)}", name) for name, size in sizes.items()]
            self.bags.rows = max(2, min(self.MAX_ROWS, len(sizes)))
            self.bags.value = tuple(sizes)
            self.conflict.value = conflict
        finally:
            self._quiet = False

    @property
    def chosen_bags(self) -> list[str] | None:
        """The chosen bag names, or None when every bag is chosen."""
        chosen = list(self.bags.value)
        return None if len(chosen) == len(self.bags.options) else chosen

    @property
    def conflict_mode(self) -> ConflictMode:
        mode: ConflictMode = self.conflict.value
        return mode

    def show_plan(self, plan: TransferPlan | None, note: str = "") -> None:
        """Show a plan's files, bytes and skipped files with their reasons, and Execute named after it."""
        if plan is None:
            self.preview.value = f'<div class="rt-caption">{html.escape(note)}</div>' if note else ""
            self.widget.children = self.widget.children[:2]
            return
        skipped = plan.skipped
        summary = (
            f"{_plural(len(plan.to_transfer), 'file')}, {format_bytes(plan.bytes_to_transfer)} to download"
            f" · {_plural(len(skipped), 'file')} skipped · conflict mode: {CONFLICT_LABELS[plan.conflict][0].lower()}"
        )
        table = html_table(
            [Column("Bag"), Column("Size", True), Column("Action"), Column("Why")],
            (
                [text_cell(file.key.rsplit("/", 1)[-1]), text_cell(format_bytes(file.size)),
                 text_cell("download" if file.action == "transfer" else "skip"), text_cell(file.reason)]
                for file in plan.files
            ),
            css_class="rt-preview-table",
            limit=100,
        )
        self.preview.value = f'<div class="rt-preview-summary">{html.escape(summary)}</div>{table}'
        self.execute_button.description = plan.describe()
        self.execute_button.disabled = not plan.to_transfer
        self.widget.children = (*self.widget.children[:2], self.execute_row)


class PerRunPage(Page):
    """One run: its pipeline state, the next step as a button, download/extract/analyse, and the analysis.

    Readable state for scripts and tests: :attr:`view` (``"run"`` or ``"empty"``), :attr:`run_state`,
    :attr:`plan`, :attr:`analysis_result`, :attr:`kpis`, :attr:`next_action_text`, :attr:`result_text`,
    :attr:`failed_bags_text`. Actions start background jobs; :meth:`wait_idle` waits for them.
    """

    link = PER_RUN
    css_class = "rt-page-per-run"
    job_cancellations: ClassVar[tuple[type[Exception], ...]] = (ExtractionCancelled, PipelineCancelled,
                                                                ReportCancelled)

    def __init__(
        self, services: ServiceContainer | None = None, query: str | None = None, progressive: bool = False
    ) -> None:
        super().__init__(services, query, progressive)
        self.run_picker = widgets.Dropdown(
            description="Run (UTC)", options=[], style={"description_width": "initial"},
            layout=widgets.Layout(width="320px"),
        ).add_class("rt-run-picker")
        self.run_picker.observe(self._run_picked, names="value")
        self.run_count = widgets.HTML().add_class("rt-caption").add_class("rt-run-count")
        self.card_widgets = {
            name: widgets.HTML().add_class("rt-status-card").add_class(f"rt-card-{name}")
            for name in ("cloud", "local", "extraction", "analysis")
        }
        self.cards = widgets.HBox(
            list(self.card_widgets.values()), layout=widgets.Layout(flex_flow="row wrap")
        ).add_class("rt-run-cards")
        self.issues = widgets.HTML().add_class("rt-run-issues")
        self.next_step = widgets.HTML().add_class("rt-next-step")
        self.job = JobProgress()
        self.job.cancel_button.on_click(lambda _: self.cancel_job())
        self.result_line = widgets.HTML().add_class("rt-result")
        # What an action says (a refusal, an error, a warning) goes beside its button: the action row's under the
        # job bar and result, the Download and Extract panels' under their own buttons. The top is for the page.
        self.action_messages = MessageArea()
        self.download_messages = MessageArea()
        self.extract_messages = MessageArea()
        self.failed_bags = widgets.HTML().add_class("rt-failed-bags")
        self.report_link = widgets.HTML().add_class("rt-report-link")
        self.report_note = widgets.HTML().add_class("rt-caption").add_class("rt-report-note")
        self.analysis: AnalysisView | None = None
        """Built when the first analysis is shown (23 charts: a page without one should not carry them)."""
        self.analysis_hint = widgets.HTML().add_class("rt-caption").add_class("rt-analysis-hint")
        self.analysis_area = widgets.VBox([self.analysis_hint])
        self.analysis_title = section_title("Analysis")

        self.next_action: widgets.Button | None = None
        self.update_button: widgets.Button | None = None
        """"Bring up to date": every remaining step in one job (absent in read-only mode)."""
        self.report_button: widgets.Button | None = None
        self.download: DownloadPanel | None = None
        self.backend: widgets.ToggleButtons | None = None
        self.extract_button: widgets.Button | None = None
        if not self.read_only:
            self._build_write_controls()

        self.action_row = widgets.HBox(
            [w for w in (self.next_action, self.update_button, self.next_step, self.report_button, self.report_note)
             if w is not None],
            layout=widgets.Layout(align_items="center", flex_flow="row wrap"),
        ).add_class("rt-actions")
        self.download_section = widgets.VBox(
            [section_title("Download"), self.download.widget, self.download_messages.widget]
            if self.download is not None else []
        )
        self.extract_section = widgets.VBox(
            [section_title("Extract"), widgets.HBox([widgets.HTML("Backend:"), self.backend, self.extract_button],
                                               layout=widgets.Layout(align_items="center")),
             self.extract_messages.widget]
            if self.backend is not None and self.extract_button is not None else []
        )
        # A complete run keeps its download and extraction controls folded away below the analysis.
        self.work_folded = widgets.Accordion([widgets.VBox()], selected_index=None).add_class("rt-work-folded")
        self.work_folded.set_title(0, "Download and extract again")
        self.run_view = widgets.VBox().add_class("rt-view-run")
        self.body = widgets.VBox([self.empty_state])

        self.coordinate: RunCoordinate | None = None
        self.run_state: RunState | None = None
        self.metadata: RunMetadata | None = None
        self.plan: TransferPlan | None = None
        self.analysis_result: RunAnalysis | None = None
        self.report_path: Path | None = None
        """The run's rendered report offered in :attr:`report_link` (None: the run has none)."""
        self._report_shown: tuple[object, ...] | None = None
        self._next_step_action: Callable[[], None] | None = None
        self._options_version = 0
        self._picking = False
        self.frame([
            widgets.HBox([self.run_picker, self.run_count], layout=widgets.Layout(align_items="center")),
            self.body,
        ])
        self.start()

    def _build_write_controls(self) -> None:
        self.next_action = widgets.Button(button_style="primary", layout=widgets.Layout(width="auto"))
        self.next_action.add_class("rt-next-action")
        self.next_action.on_click(lambda _: self._take_next_step())
        self.update_button = widgets.Button(icon="forward", layout=widgets.Layout(width="auto"))
        self.update_button.add_class("rt-bring-up-to-date")
        self.update_button.on_click(lambda _: self.bring_up_to_date())
        self.download = DownloadPanel(self._download_options_changed)
        self.download.preview_button.on_click(lambda _: self.preview_download())
        self.download.execute_button.on_click(lambda _: self.start_download())
        self.backend = widgets.ToggleButtons(
            options=[(BACKEND_LABELS[name][0], name) for name in BACKENDS],
            tooltips=[BACKEND_LABELS[name][1] for name in BACKENDS],
            value=BACKENDS[0],
            style={"button_width": "100px"},
        ).add_class("rt-extract-backend")
        self.extract_button = widgets.Button(layout=widgets.Layout(width="auto")).add_class("rt-extract")
        self.extract_button.on_click(lambda _: self.start_extract())
        self.report_button = widgets.Button(
            description="Report", icon="file-text",
            tooltip="Render this run's HTML report (analyses it first if needed)",
        ).add_class("rt-report")
        self.report_button.on_click(lambda _: self.render_report())

    # -- readable state --------------------------------------------------------------------------

    @property
    def kpis(self) -> dict[str, str]:
        """The analysis KPI cards shown: label → value text (empty without an analysis)."""
        if self.analysis is None or self.analysis_result is None:
            return {}
        return self.analysis.kpis

    @property
    def next_action_text(self) -> str:
        """What the next-action button says (in read-only mode: the next-step sentence)."""
        if self.next_action is not None:
            return str(self.next_action.description)
        return html.unescape(self.next_step.value)

    @property
    def result_text(self) -> str:
        """The one-line result of the last job on this run ("" before any)."""
        return html.unescape(self.result_line.value)

    @property
    def failed_bags_text(self) -> str:
        """The failed-bags section as shown (HTML; empty when every bag was read)."""
        return self.failed_bags.value

    # -- selection -------------------------------------------------------------------------------

    def select_run(self, timestamp: str) -> None:
        """Show the run of the selected laser box that started at ``timestamp``."""
        self.set_filters(self.filters.replace(timestamp=timestamp))

    def _run_picked(self, change: Mapping[str, object]) -> None:
        if not self._picking and change["new"]:
            self.select_run(str(change["new"]))

    # -- drawing ---------------------------------------------------------------------------------

    def _show(self) -> None:
        services = self._available_services()
        if services is None:
            return
        lb_filters = dataclasses.replace(self.filters, timestamp=None)
        missing = [level for level in LEVELS if getattr(lb_filters, level) is None]
        if missing:
            # Only the levels still to pick (with some picked, naming them all read as if nothing was); a link that
            # skipped levels above one it named (?lbid=LB_0001) is told which it gave.
            source = "link" if lb_filters == dataclasses.replace(self.link_filters, timestamp=None) else "selection"
            self._show_empty(f"{skipped_levels(lb_filters, source)}Pick a {level_words(missing)} to list the runs, "
                             "or type part of a run's coordinate in the search box.",
                             picker_hint="Pick a laser box first")
            return
        timestamps = services.data_state.available_timestamps(lb_filters)
        if not timestamps:
            self._show_empty(self.nothing_selected_text(lb_filters))
            return
        wanted = self.filters.timestamp
        chosen = wanted if wanted in timestamps else timestamps[0]
        self._set_picker(timestamps, chosen)
        self.run_count.value = (
            f"{_plural(len(timestamps), 'run')} for {html.escape(lb_filters.lbid or '')} "
            f"in {html.escape(lb_filters.fieldid or '')}"
        )
        if chosen != wanted:
            self.filter_bar.set_filters(self.filters.replace(timestamp=chosen))
            self._update_links()
            if wanted is not None:
                self.messages.warning(f"The run {wanted} is not under this laser box; showing the newest run.")
        coordinate = RunCoordinate.from_filters(self.filters)
        if coordinate != self.coordinate:
            self._switch_run(coordinate)
        state = services.data_state.get_complete_run_state(coordinate)
        self.run_state = state
        self.metadata = self._read_metadata(state)
        self.analysis_result = self._current_analysis(state)
        self._show_cards(state)
        self._show_failed_bags()
        self._show_actions(state)
        self._show_report(state)
        self._show_analysis(state)
        work = [self.download_section, self.extract_section]
        analysis = [self.analysis_title, self.analysis_area]
        # A run with nothing left to do reads its analysis first, its pipeline panels folded below; until then the
        # next piece of work comes first.
        complete = state.next_action is NextAction.COMPLETE and self.analysis_result is not None
        folded = self.work_folded.children[0]
        if not complete:
            folded.children = []
        elif not folded.children and not self.read_only:  # folded as the run becomes complete
            folded.children = work
            self.work_folded.selected_index = None
        if complete:
            parts = [*analysis, self.failed_bags, *([self.work_folded] if folded.children else [])]
        else:
            parts = [*work, self.failed_bags, *analysis]
        self.run_view.children = [
            self.cards, self.issues, self.action_row, self.job.widget, self.result_line, self.action_messages.widget,
            self.report_link, *parts,
        ]
        self.body.children = [self.run_view]
        self.view = "run"

    def _switch_run(self, coordinate: RunCoordinate) -> None:
        """Forget what belonged to the previous run: its plan, analysis, result line, action messages and report
        link."""
        self.coordinate = coordinate
        self.plan = None
        self.work_folded.selected_index = None
        self.analysis_result = None
        self.result_line.value = ""
        for area in (self.action_messages, self.download_messages, self.extract_messages):
            area.clear()
        if self.download is not None:
            self.download.show_plan(None)

    def _set_picker(self, timestamps: list[str], chosen: str | None, hint: str = "") -> None:
        """Offer ``timestamps`` with ``chosen`` picked; without any, the picker is disabled and says ``hint``
        (an empty select looked usable)."""
        self._picking = True
        try:
            self.run_picker.options = [(format_time(parse_timestamp(ts)), ts) for ts in timestamps] or [(hint, "")]
            self.run_picker.value = chosen or ""
            self.run_picker.disabled = not timestamps
        finally:
            self._picking = False

    def _show_empty(self, text: str, picker_hint: str = "No runs") -> None:
        self._set_picker([], None, picker_hint)
        self.coordinate = None
        self.run_count.value = ""
        self.run_state = None
        self._set_empty(text)

    def _read_metadata(self, state: RunState) -> RunMetadata | None:
        """The extraction's ``metadata.yaml`` (per-bag status and errors), or None when not extracted."""
        if not state.extraction.extracted or self.services is None:
            return None
        try:
            return self.services.extraction.metadata(state.coordinate)
        except OutputError as exc:
            self.messages.report(exc, "reading the extraction's metadata")
            return None

    def _show_cards(self, state: RunState) -> None:
        raw_sync, ml_sync = sync_style(state.raw_sync, "raw"), sync_style(state.ml_sync, "ml")
        cloud_raw, cloud_ml, local_raw, local_ml = state.cloud_raw, state.cloud_ml, state.local_raw, state.local_ml
        ml_cloud = (f"ML: {_plural(cloud_ml.label_count, 'label')}, {_plural(cloud_ml.frame_count, 'frame')}, "
                    f"{format_bytes(cloud_ml.total_bytes)}")
        self.card_widgets["cloud"].value = _card_html("Cloud", [
            f"Raw: {_plural(cloud_raw.bag_count, 'bag')}, {format_bytes(cloud_raw.total_size)}"
            if cloud_raw.exists else "Raw: no bags in the raw bucket",
            ml_cloud,
        ])
        self.card_widgets["local"].value = _card_html("Local", [
            f"Raw: {_plural(local_raw.bag_count, 'bag')}, {format_bytes(local_raw.total_size)} "
            + _badge(raw_sync.label, raw_sync.colour),
            f"ML: {_plural(local_ml.label_count, 'label')}, {_plural(local_ml.frame_count, 'frame')}, "
            f"{format_bytes(local_ml.total_bytes)} " + _badge(ml_sync.label, ml_sync.colour),
        ])
        extraction = state.extraction
        if extraction.extracted:
            lines = ["extracted"]
            if self.metadata is not None:
                failed = len(self.metadata.bags_failed)
                lines.append(f"{_plural(len(self.metadata.bags_ok), 'bag')} read, {format_count(failed)} failed"
                             + (" (listed below)" if failed else ""))
        elif extraction.present:
            lines = ["not extracted: incomplete, missing " + html.escape(", ".join(extraction.missing))]
        else:
            lines = ["not extracted"]
        self.card_widgets["extraction"].value = _card_html("Extraction", lines)
        if not extraction.analyzed:
            analysis_lines = ["not analysed"]
        elif self.analysis_result is not None:
            analysis_lines = ["analysed", f"{html.escape(format_time(self.analysis_result.analysed_at))} UTC"]
        else:
            analysis_lines = ["analysed, but out of date: the run was extracted again since"]
        self.card_widgets["analysis"].value = _card_html("Analysis", analysis_lines)
        self.issues.value = (
            "<ul>" + "".join(f"<li>{html.escape(issue)}</li>" for issue in state.issues) + "</ul>"
            if state.issues else ""
        )

    def _current_analysis(self, state: RunState) -> RunAnalysis | None:
        """The analysis to show: the one already shown for this run, else the cache if it is up to date.

        The cache is read directly, never recomputed: it is small (series, histograms and KPIs) and loads
        in a fraction of a second, while computing is a job the user starts.
        """
        if self.services is None or not state.extraction.analyzed:
            return None
        if self.analysis_result is not None and self.analysis_result.coordinate == state.coordinate:
            return self.analysis_result
        return self.services.analytics.load_cached(state.coordinate)

    def _show_failed_bags(self) -> None:
        failed = self.metadata.bags_failed if self.metadata is not None else ()
        if not failed:
            self.failed_bags.value = ""
            return
        self.failed_bags.value = (
            f'<div class="rt-section-title">Failed bags ({format_count(len(failed))}): not in the extraction '
            "or the analysis</div>"
            + html_table([Column("Bag"), Column("Error")],
                         ([text_cell(object_name(bag.name)), text_cell(bag.error or "no error recorded")]
                          for bag in failed))
        )

    def _show_actions(self, state: RunState) -> None:
        label, action = self._next_step_for(state)
        busy = self.busy
        if self.next_action is None:
            self.next_step.value = html.escape(label)
        else:
            self._next_step_action = action
            self.next_action.description = label
            self.next_action.disabled = action is None or busy
            complete = state.next_action is NextAction.COMPLETE and self.analysis_result is not None
            self.next_action.button_style = "success" if complete else "primary"
        if self.update_button is not None:
            steps = self._update_steps(state)
            self.update_button.layout.display = None if steps else "none"
            # The download named with its size: the one write this button makes without a preview.
            words = [self._download_words(state) if s == "download" else STEP_WORDS[s][0] for s in steps]
            self.update_button.description = f"Bring up to date: {', '.join(words)}"
            self.update_button.tooltip = (
                f"{_listed([STEP_WORDS[s][0] for s in steps]).capitalize()} this run in one go, with progress and "
                "Cancel." if steps else NOTHING_TO_UPDATE
            )
            self.update_button.disabled = busy
        if self.report_button is not None:
            reason = self._report_refusal(state)
            self.report_button.disabled = busy or reason is not None
            self.report_note.value = html.escape(reason or "")
        if self.download is not None:
            self.download_section.layout.display = None if state.cloud_raw.exists else "none"
            if self._download_bags_changed(state):
                self.download.set_bags(self._cloud_bags(state), "verify" if state.differing_bags else "skip")
            self.download.preview_button.disabled = busy
            self.download.execute_button.disabled = busy or self.plan is None or not self.plan.to_transfer
        if self.extract_button is not None:
            self.extract_section.layout.display = None if state.local_raw.exists else "none"
            verb = "Re-extract" if state.extraction.extracted else "Extract"
            self.extract_button.description = f"{verb} {_plural(state.local_raw.bag_count, 'bag')}"
            # A bag whose size differs from the bucket's would be extracted as it is: re-downloaded first.
            self.extract_button.disabled = busy or bool(state.differing_bags)
            self.extract_button.tooltip = ("A bag's size differs from the bucket's: download it again first"
                                           if state.differing_bags else "")

    def _next_step_for(self, state: RunState) -> tuple[str, Callable[[], None] | None]:
        """The next step's button text and what it does (None: nothing to do, or not possible)."""
        action = state.next_action
        if self.read_only:
            if action is NextAction.COMPLETE and self.analysis_result is not None:
                return "The run is complete: downloaded, extracted and analysed.", None
            step = "analyze" if action is NextAction.COMPLETE else action.value
            return f"Next step: {step} (not available here: this server is read-only).", None
        # What the button starts speaks beside it, not in the panel of the step.
        beside = self.action_messages
        preview = functools.partial(self.preview_download, area=beside)
        analyze = functools.partial(self.start_analyze, area=beside)
        if action is NextAction.DOWNLOAD:
            if not state.cloud_raw.exists:
                return "Nothing to download: the raw bucket has no bags for this run", None
            if self.plan is not None and self.plan.coordinate == state.coordinate:
                download = functools.partial(self.start_download, area=beside)
                return self.plan.describe(), download if self.plan.to_transfer else None
            if state.differing_bags:
                # Verify replaces the bags whose size differs; skip would keep them as they are.
                bad = _plural(len(state.differing_bags), "bag")
                return f"Preview re-download of {bad} (size differs)", functools.partial(preview, conflict="verify")
            if state.missing_bags:
                missing = _plural(len(state.missing_bags), "missing bag")
                return f"Preview download of {missing}", preview
            return f"Preview download of {_plural(state.cloud_raw.bag_count, 'bag')}", preview
        if action is NextAction.EXTRACT:
            return f"Extract {_plural(state.local_raw.bag_count, 'bag')}", functools.partial(self.start_extract,
                                                                                           area=beside)
        if action is NextAction.ANALYZE:
            return "Analyse", analyze
        if self.analysis_result is None:
            return "Analyse again (the analysis is out of date)", analyze
        return "Complete", None

    def _update_steps(self, state: RunState) -> tuple[PipelineStep, ...]:
        """The steps "Bring up to date" would take for ``state`` (none: nothing to do, or nothing it could do)."""
        if self._no_bags(state) is not None:
            return ()
        if state.next_action is NextAction.DOWNLOAD and not state.cloud_raw.exists:
            return ()
        return UPDATE_STEPS.get(state.next_action, ())

    @staticmethod
    def _download_words(state: RunState) -> str:
        """The bags "Bring up to date" downloads, with their size: the missing and differing ones of a partial
        local copy, else all (as the run pipeline plans it)."""
        names = set(state.missing_bags) | set(state.differing_bags) or set(state.cloud_raw.bag_sizes)
        size = sum(state.cloud_raw.bag_sizes.get(name, 0) for name in names)
        return f"download {_plural(len(names), 'bag')} ({format_bytes(size)})"

    def _report_refusal(self, state: RunState) -> str | None:
        """Why Report cannot start on ``state``, naming the next step (None: it can).

        A report shows an analysis. Rendering one used to download and extract on the way, without a preview or a
        Cancel; those long steps are "Bring up to date"'s, which names the download and can be cancelled. What is
        left to a report (an analysis at most, and the notebook) takes seconds.
        """
        no_bags = self._no_bags(state)
        if no_bags is not None:
            return f"No report: {no_bags}"
        if state.next_action is NextAction.DOWNLOAD:
            return "The report needs the run downloaded and extracted: bring it up to date first."
        if state.next_action is NextAction.EXTRACT:
            return "The report needs the run extracted: bring it up to date first."
        return None

    @staticmethod
    def _no_bags(state: RunState) -> str | None:
        """Why the run cannot be analysed or reported (None: it can), as the pipeline would refuse it."""
        if state.cloud_raw.exists or state.local_raw.exists or state.extraction.extracted:
            return None
        if state.cloud_ml.exists or state.local_ml.exists:
            return "this run has ML samples but no raw bags, so there is nothing to analyse."
        return "this run has no raw bags, so there is nothing to analyse."

    def _show_report(self, state: RunState) -> None:
        """Offer the run's rendered report, if it has one (read-only viewers too: reading it writes nothing).

        On `runtool serve` (``RUNTOOL_SERVED``) the server serves the reports: links open them in a new tab.
        Elsewhere (JupyterLab) no server does: the newest report travels inside a download link.
        """
        if self.services is None:
            return
        import os

        if os.environ.get("RUNTOOL_SERVED") == "1":
            self._show_served_reports(state.coordinate)
            return
        path = self.services.reports.existing(state.coordinate)
        try:
            stat = path.stat() if path is not None else None
        except OSError:
            stat = None
        if path is None or stat is None:
            self.report_path, self._report_shown, self.report_link.value = None, None, ""
            return
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key == self._report_shown:
            return
        self.report_path, self._report_shown = path, key
        when = format_time(datetime.fromtimestamp(stat.st_mtime, UTC))
        if stat.st_size > REPORT_LINK_LIMIT:
            self.report_link.value = html.escape(
                f"This run's report ({path.name}, {format_bytes(stat.st_size)}, rendered {when} UTC) is too large "
                "to download from the page; it is on the server, in the run's processed folder."
            )
            return
        try:
            content = path.read_bytes()
        except OSError as exc:
            self.report_link.value = html.escape(f"This run's report ({path.name}) cannot be read: {exc.strerror}.")
            return
        data = base64.b64encode(content).decode("ascii")
        # A download link: chromium opens no data: URL as a page, but saves it under the name given here.
        self.report_link.value = (
            f'<a href="data:text/html;base64,{data}" download="{html.escape(path.name, quote=True)}">'
            f"Download the report ({format_bytes(len(content))}, rendered {html.escape(when)} UTC)</a>"
            f'<span class="rt-caption"> · a self-contained HTML file: open it in any browser, offline too</span>'
        )

    def _show_served_reports(self, coord: RunCoordinate) -> None:
        """Links to the run's reports as the server serves them (``runtool/reports/``, relative to the page at
        ``{base_url}voila/render/<page>``, so a ``--base-url`` works), newest first, each opening in a new tab."""
        from urllib.parse import quote, urlencode

        assert self.services is not None
        reports = self.services.reports.listing(coord)
        key = tuple((report.relative, report.modified, report.size) for report in reports)
        if key == self._report_shown:
            return
        self.report_path, self._report_shown = (reports[0].path if reports else None), key
        if not reports:
            self.report_link.value = ""
            return
        served = "../../runtool/reports/"
        items = "".join(
            f'<li><a class="rt-open-report" href="{html.escape(served + quote(report.relative), quote=True)}" '
            f'target="_blank" rel="noopener">Open report</a><span class="rt-caption"> · rendered '
            f"{html.escape(format_time(report.modified))} UTC · {format_bytes(report.size)} · "
            f"{html.escape(report.path.name)}</span></li>"
            for report in reports
        )
        box = urlencode(dict(zip(LEVELS, coord.to_path_tuple(), strict=False)))
        self.report_link.value = (
            f'<ul class="rt-report-list">{items}</ul><a href="{html.escape(served, quote=True)}?'
            f'{html.escape(box, quote=True)}" target="_blank" rel="noopener">All reports of this laser box</a>'
        )

    def _take_next_step(self) -> None:
        if self._next_step_action is not None:
            self._next_step_action()

    @staticmethod
    def _cloud_bags(state: RunState) -> dict[str, int]:
        """The run's cloud bags in bag-index order (``_…_2.bag`` before ``_…_10.bag``)."""
        def index(name: str) -> tuple[int, str]:
            suffix = name.removesuffix(".bag").rsplit("_", 1)[-1]
            return (int(suffix) if suffix.isdigit() else -1, name)

        return {name: state.cloud_raw.bag_sizes[name] for name in sorted(state.cloud_raw.bag_sizes, key=index)}

    def _download_bags_changed(self, state: RunState) -> bool:
        assert self.download is not None
        return [value for _, value in self.download.bags.options] != list(self._cloud_bags(state))

    def _show_analysis(self, state: RunState) -> None:
        analysis = self.analysis_result
        if analysis is not None and not self.drawn:
            self.analysis_area.children = [self.drawing_note]
            return
        if analysis is not None:
            if self.analysis is None:
                self.analysis = AnalysisView()
            if self.analysis.shown is not analysis:
                self.analysis.show(analysis)
            self.analysis_area.children = [self.analysis.widget]
            return
        coord = state.coordinate.to_path_str()
        no_bags = self._no_bags(state)
        if no_bags is not None:
            text = f"No analysis: {no_bags}"
        elif not state.extraction.extracted:
            text = ("Not extracted yet, so there is nothing to analyse." if self.read_only
                    else "Download and extract the run to analyse it.")
        elif self.read_only:
            text = (f"This run has no up-to-date analysis, and this server is read-only. Ask an operator to run "
                    f"`runtool analyze {coord}`, then reload the page.")
        else:
            text = "The run is extracted: press Analyse to compute its metrics."
        self.analysis_hint.value = html.escape(text)
        self.analysis_area.children = [self.analysis_hint]

    # -- jobs ------------------------------------------------------------------------------------

    def _job_refusal(self, doing: str) -> str | None:
        if self.coordinate is None or self.view != "run":
            return f"{doing} needs a run: pick one first."
        return None

    def _beside(self, area: MessageArea | None) -> MessageArea:
        """Where an action's messages go: ``area``, beside the control that started it, while a run is shown;
        without a run (so without the control: a script called the action) the top of the page."""
        return area if area is not None and self.view == "run" else self.messages

    def _run_job_for_run(
        self,
        text: str,
        work: Callable[[threading.Event], T],
        done: Callable[[RunCoordinate, T], None],
        doing: str,
        area: MessageArea,
        cancellable: bool = True,
    ) -> None:
        """:meth:`~runtool.ui.page.Page._run_job` on the run shown, its progress in the job bar under the actions
        and its messages in ``area``.

        ``done`` gets the run the job was for besides the result: the user may have picked another meanwhile, so
        the job bar names the run.
        """
        coordinate = self.coordinate
        assert coordinate is not None  # checked by _refused
        self._run_job(work, functools.partial(done, coordinate), doing, area=area, progress=self.job, text=text,
                      cancellable=cancellable,
                      subject=f"{coordinate.lbid} · {format_time(coordinate.start_time)}")

    def _show_busy(self) -> None:
        """Disable the action buttons while a job runs (the redraw after the job enables them again)."""
        for button in (self.next_action, self.update_button, self.report_button, self.extract_button):
            if button is not None:
                button.disabled = True
        if self.download is not None:
            self.download.preview_button.disabled = True
            self.download.execute_button.disabled = True

    def _show_result(self, coordinate: RunCoordinate, line: str) -> None:
        """The job's one-line result; for a run no longer shown it goes to the messages instead."""
        if coordinate == self.coordinate:
            self.result_line.value = html.escape(line)
        else:
            self.messages.info(f"{coordinate}: {line}")

    # -- download --------------------------------------------------------------------------------

    def _download_options_changed(self) -> None:
        self._options_version += 1
        if self.plan is None:
            return
        self.plan = None
        if self.download is not None:
            self.download.show_plan(None, "The bags or the conflict mode changed: press Preview again.")
        if self.run_state is not None:
            self._show_actions(self.run_state)

    def preview_download(
        self, bags: Sequence[str] | None = None, conflict: ConflictMode | None = None, *,
        area: MessageArea | None = None,
    ) -> None:
        """Plan the download of ``bags`` (default: the chosen ones, all at first) in the background and show it.

        ``bags`` are cloud bag names (``_…_0.bag``); ``conflict`` is ``skip``, ``overwrite`` or ``verify``.
        ``area``: the messages beside the control that asked (default: the Download panel's, as for every action
        the area of its own panel).
        """
        area = self._beside(area or self.download_messages)
        if self._refused("Previewing a download", area) or self.download is None or self.services is None:
            return
        if bags is not None:
            offered = [value for _, value in self.download.bags.options]
            unknown = [name for name in bags if name not in offered]
            if unknown:
                area.error(f"This run has no bag named {', '.join(unknown)}; pick from the list.")
                return
            self.download.bags.value = tuple(bags)
        if conflict is not None:
            self.download.conflict.value = conflict
        chosen, mode = self.download.chosen_bags, self.download.conflict_mode
        version = self._options_version
        transfers = self.services.transfers
        coordinate = self.coordinate
        assert coordinate is not None

        def work(_cancel: threading.Event) -> TransferPlan:
            return transfers.plan_raw_download(coordinate, bags=chosen, conflict=mode)

        def done(job_coordinate: RunCoordinate, plan: TransferPlan) -> None:
            if job_coordinate != self.coordinate or version != self._options_version or self.download is None:
                return  # the run or the options changed while planning: this preview is stale
            self.plan = plan
            self.download.show_plan(plan)

        what = "all bags" if chosen is None else _plural(len(chosen), "bag")
        self._run_job_for_run(f"Listing {what} in the raw bucket…", work, done, "previewing the download", area,
                              cancellable=False)

    def start_download(self, *, area: MessageArea | None = None) -> None:
        """Execute the previewed plan in the background, with byte progress and Cancel."""
        area = self._beside(area or self.download_messages)
        if self._refused("Downloading", area) or self.services is None:
            return
        plan = self.plan
        if plan is None or plan.coordinate != self.coordinate:
            area.warning("Preview the download first: the Download button runs exactly the preview.")
            return
        if not plan.to_transfer:
            area.info(f"{plan.describe()}.")
            return
        transfers = self.services.transfers

        def progress(event: TransferProgress) -> None:
            fraction = event.bytes_done / event.bytes_total if event.bytes_total else 0.0
            self.job.update(
                fraction,
                f"{format_count(event.files_done)} of {_plural(event.files_total, 'bag')} · "
                f"{format_bytes(event.bytes_done)} of {format_bytes(event.bytes_total)} · "
                f"{object_name(event.current)}",
                force=event.files_done == event.files_total,
            )

        def work(cancel: threading.Event) -> TransferResult:
            return transfers.execute(plan, progress=progress, cancel=cancel)

        self._run_job_for_run(f"{plan.describe()}…", work, functools.partial(self._downloaded, area),
                              "downloading the run's bags", area)

    def _downloaded(self, area: MessageArea, coordinate: RunCoordinate, result: TransferResult) -> None:
        if coordinate == self.coordinate:
            self.plan = None
            if self.download is not None:
                self.download.show_plan(None)
        else:
            area = self.messages  # the run is no longer shown: the messages name it, at the top
        self._show_result(coordinate, result.summary())
        failures = [outcome for outcome in result.outcomes if outcome.status == "failed"]
        if failures:
            names = ", ".join(object_name(outcome.file.name) for outcome in failures[:5])
            more = f" and {format_count(len(failures) - 5)} more" if len(failures) > 5 else ""
            area.error(
                f"{_plural(len(failures), 'bag')} of {coordinate} could not be downloaded ({names}{more}). "
                "Bags that arrived are kept; preview and download again to fetch the rest.",
                "\n".join(f"{object_name(outcome.file.name)}: {outcome.error}" for outcome in failures),
            )
        if result.cancelled:
            area.info(
                f"The download of {coordinate} was cancelled. Complete bags are kept; download again to resume."
            )

    # -- extraction ------------------------------------------------------------------------------

    def start_extract(self, backend: str | None = None, *, area: MessageArea | None = None) -> None:
        """Extract the run's downloaded bags in the background (``backend``: ``local`` or ``docker``)."""
        area = self._beside(area or self.extract_messages)
        if self._refused("Extracting", area) or self.services is None or self.backend is None:
            return
        if backend is not None:
            if backend not in BACKENDS:
                area.error(f"There is no extraction backend {backend!r}; choose {' or '.join(BACKENDS)}.")
                return
            self.backend.value = backend
        chosen: str = self.backend.value
        extraction = self.services.extraction
        coordinate = self.coordinate
        assert coordinate is not None

        def progress(event: ExtractionProgress) -> None:
            total = max(event.bags_total, 1)
            if event.stage in (ExtractionStage.WRITING, ExtractionStage.DONE):
                self.job.update(1.0, "Writing the output files…", force=True)
                return
            within = event.messages / event.messages_total if event.messages_total else 0.0
            if event.stage in (ExtractionStage.BAG_DONE, ExtractionStage.BAG_FAILED):
                within = 0.0
            current = min(event.bags_done + 1, total)
            state = " failed" if event.stage is ExtractionStage.BAG_FAILED else ""
            self.job.update(
                (event.bags_done + within) / total,
                f"Bag {format_count(current)} of {format_count(total)}: {object_name(event.bag or '')}{state} · "
                f"{format_count(event.messages)} of {format_count(event.messages_total)} messages",
                force=event.stage is not ExtractionStage.READING,
            )

        def work(cancel: threading.Event) -> ExtractionResult:
            return extraction.extract(coordinate, backend=chosen, progress=progress, cancel=cancel)

        bags = self.run_state.local_raw.bag_count if self.run_state is not None else 0
        self._run_job_for_run(f"Extracting {_plural(bags, 'bag')} ({BACKEND_LABELS[chosen][0].lower()})…", work,
                              functools.partial(self._extracted, area), "extracting the run", area)

    def _extracted(self, area: MessageArea, coordinate: RunCoordinate, result: ExtractionResult) -> None:
        shown = coordinate == self.coordinate
        if shown:
            self.analysis_result = None
        self._show_result(
            coordinate,
            f"Extracted {_plural(len(result.bags_ok), 'bag')} ({format_count(len(result.bags_failed))} failed) in "
            f"{result.seconds:.1f} s — {format_count(result.frames)} frames, {format_count(result.detections)} "
            f"detection and {format_count(result.tracks)} tracking messages",
        )
        for warning in result.warnings:
            if shown:
                area.warning(warning)
            else:  # the run is no longer shown: at the top, named
                self.messages.warning(f"{coordinate}: {warning}")

    # -- analysis --------------------------------------------------------------------------------

    def start_analyze(self, *, area: MessageArea | None = None) -> None:
        """Compute the run's analysis in the background (or load it from the cache if it is up to date)."""
        area = self._beside(area or self.action_messages)
        if self._refused("Analysing", area) or self.services is None:
            return
        analytics = self.services.analytics
        coordinate = self.coordinate
        assert coordinate is not None
        started = time.monotonic()

        def work(_cancel: threading.Event) -> RunAnalysis:
            return analytics.analyze_run(coordinate)

        def done(job_coordinate: RunCoordinate, analysis: RunAnalysis) -> None:
            if job_coordinate == self.coordinate:
                self.analysis_result = analysis
            source = "from the cache" if analysis.from_cache else "computed"
            self._show_result(job_coordinate, f"Analysis {source} in {time.monotonic() - started:.1f} s")

        self._run_job_for_run("Analysing…", work, done, "analysing the run", area, cancellable=False)

    # -- all remaining steps ---------------------------------------------------------------------

    def bring_up_to_date(self) -> None:
        """Download what is missing, extract and analyse in one background job, with progress and Cancel.

        The run pipeline takes the steps (:meth:`~runtool.services.pipeline.RunPipeline.bring_up_to_date`);
        a cancel stops the download or extraction under way and keeps what the steps before it completed.
        """
        area = self._beside(self.action_messages)
        if self._refused("Bringing the run up to date", area) or self.services is None or self.run_state is None:
            return
        steps = self._update_steps(self.run_state)
        if not steps:
            area.info(NOTHING_TO_UPDATE)
            return
        pipeline = self.services.pipeline
        coordinate = self.coordinate
        assert coordinate is not None
        # The pipeline plans its own download: a previewed plan would be stale once it ran.
        self.plan = None
        if self.download is not None:
            self.download.show_plan(None)

        def progress(event: PipelineProgress) -> None:
            index = steps.index(event.step) if event.step in steps else 0
            fraction = event.fraction or 0.0
            self.job.update(
                (index + fraction) / len(steps),
                f"Step {index + 1} of {len(steps)}: {event.message}",
                force=event.fraction is None or fraction in (0.0, 1.0),
            )

        def work(cancel: threading.Event) -> RunUpdate:
            return pipeline.bring_up_to_date(coordinate, progress=progress, cancel=cancel)

        def done(job_coordinate: RunCoordinate, update: RunUpdate) -> None:
            if job_coordinate == self.coordinate:
                self.analysis_result = None  # the redraw reads the new analysis from its cache
            if update.steps:
                text = f"Up to date in {update.seconds:.1f} s: {_listed([STEP_WORDS[s][1] for s in update.steps])}"
            else:
                text = f"Already up to date: the analysis was read from its cache in {update.seconds:.1f} s"
            if update.failed_bags:
                text += f" ({_plural(len(update.failed_bags), 'bag')} could not be read, listed below)"
            self._show_result(job_coordinate, text)

        self._run_job_for_run(f"Bringing the run up to date: {_listed([STEP_WORDS[s][0] for s in steps])}…", work,
                              done, "bringing the run up to date", area)

    # -- report ----------------------------------------------------------------------------------

    def render_report(self) -> None:
        """Render the run's HTML report in the background (analysing it first if needed), then link to it; Cancel
        stops it before the notebook's next cell, and no file of it is written.

        A run still to download or extract is refused with the next step named (:meth:`_report_refusal`).
        """
        area = self._beside(self.action_messages)
        if self._refused("Rendering a report", area) or self.services is None or self.run_state is None:
            return
        reason = self._report_refusal(self.run_state)
        if reason is not None:
            area.error(reason)
            return
        reports = self.services.reports
        coordinate = self.coordinate
        assert coordinate is not None

        def progress(event: ReportProgress) -> None:
            step = REPORT_STAGES.index(event.stage)
            self.job.update(step / (len(REPORT_STAGES) - 1), event.message, force=True)

        def work(cancel: threading.Event) -> ReportResult:
            return reports.render(coordinate, progress=progress, cancel=cancel)

        def done(job_coordinate: RunCoordinate, result: ReportResult) -> None:
            # The link comes with the redraw after the job, from the report now on disk (_show_report).
            self._show_result(job_coordinate, f"Report rendered in {result.seconds:.1f} s: {result.html.name}")

        self._run_job_for_run("Rendering the report…", work, done, "rendering the report", area)

