"""Preview and execution of one transfer operation over many runs, as the download manager shows it.

:class:`BulkPanel` draws a :class:`BulkPlan` (a line per run and the totals, runs left out with their
reason; each run named as briefly as the plan's runs allow and linked to its per-run page, the full
coordinate on hover), the Execute button named after what it will do, a progress bar per run and one overall while it
runs, and the summary of the :class:`BulkResult`. It holds no services: the page plans and executes.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Iterable

import ipywidgets as widgets

from runtool.models import RunCoordinate
from runtool.services import TransferProgress
from runtool.services.conflicts import CONFLICT_LABELS, CONFLICT_MODES, ConflictMode, conflict_help
from runtool.services.transfers import BulkPlan, BulkResult, TransferPlan, TransferResult
from runtool.ui.components import JobProgress
from runtool.ui.formatting import format_bytes, format_count, format_count_of, format_time
from runtool.ui.labels import distinct_laser_box_names
from runtool.ui.query import run_url
from runtool.ui.tables import Cell, Column, html_table, link, text_cell

__all__ = ["BulkPanel"]



def _lb_key(coordinate: RunCoordinate) -> str:
    return "/".join(coordinate.to_path_tuple()[:-1])


class _RunNames:
    """Names for the runs of one plan: the laser box as briefly as those runs allow, and the start time.

    Two fields with an ``LB_0001`` give ``field_115 · LB_0001 · 2025-09-12 09:13``, not two equal names.
    """

    def __init__(self, coordinates: Iterable[RunCoordinate]) -> None:
        self._boxes = distinct_laser_box_names(sorted({_lb_key(c) for c in coordinates}))

    def name(self, coordinate: RunCoordinate) -> str:
        return f"{self._boxes.get(_lb_key(coordinate), coordinate.lbid)} · {format_time(coordinate.start_time)}"

    def cell(self, coordinate: RunCoordinate) -> Cell:
        """The name as a link to the run's per-run page, the full coordinate on hover."""
        return link(run_url(coordinate), self.name(coordinate), title=coordinate.to_path_str())


def _bar(fraction: float) -> str:
    percent = round(100 * min(1.0, max(0.0, fraction)))
    return (
        f'<div class="rt-run-bar" title="{percent} %"><div style="width:{percent}%"></div></div>'
        f'<span class="rt-caption"> {percent} %</span>'
    )


class BulkPanel:
    """Conflict mode, plan preview, Execute, per-run and overall progress, Cancel, and the summary."""

    INTERVAL_S = 0.3
    PREVIEW_LIMIT = 200

    def __init__(self, name: str) -> None:
        self.conflict = widgets.Dropdown(
            options=[(CONFLICT_LABELS[mode][0], mode) for mode in CONFLICT_MODES],
            tooltip=conflict_help(),
            value="skip",
            description="Existing files",
            style={"description_width": "initial"},
            layout=widgets.Layout(width="420px"),
        )
        self.preview = widgets.HTML().add_class("rt-bulk-preview").add_class(f"rt-{name}-preview")
        self.execute_button = widgets.Button(
            button_style="primary", layout=widgets.Layout(width="auto", align_self="flex-start")
        )
        self.execute_button.add_class("rt-execute").add_class(f"rt-{name}-execute")
        self.progress = JobProgress()
        self.run_bars = widgets.HTML().add_class("rt-run-progress")
        self.result = widgets.HTML().add_class("rt-bulk-result").add_class(f"rt-{name}-result")
        self.plan: BulkPlan | None = None
        self.widget = widgets.VBox([self.preview, self.progress.widget, self.run_bars, self.result])
        self._lock = threading.Lock()
        self._runs: list[TransferPlan] = []
        self._names = _RunNames(())
        self._done: dict[int, int] = {}
        self._last = 0.0

    @property
    def conflict_mode(self) -> ConflictMode:
        return self.conflict.value

    # -- preview -----------------------------------------------------------------------------------

    def show_plan(self, plan: BulkPlan | None, note: str = "") -> None:
        """The per-run lines and totals of ``plan`` and an Execute button naming what it does.

        A file whose copy at the destination differs is replaced (:mod:`runtool.services.conflicts`): the run's
        line and the totals count it as "replaced", so a wrong local copy never reads as "nothing to download".
        """
        self.plan = plan
        self.result.value = ""
        self.run_bars.value = ""
        if plan is None:
            self.preview.value = f'<p class="rt-caption">{html.escape(note)}</p>' if note else ""
            self._set_children(with_execute=False)
            return
        self._names = names = _RunNames([*(p.coordinate for p in plan.plans), *(c for c, _ in plan.left_out)])
        rows = [
            [
                names.cell(p.coordinate),
                text_cell(format_count(len(p.to_transfer))),
                text_cell(format_bytes(p.bytes_to_transfer)),
                text_cell(format_count(len(p.skipped))),
                text_cell(p.describe()),
            ]
            for p in plan.plans
        ]
        rows += [[names.cell(c), text_cell("–"), text_cell("–"), text_cell("–"), text_cell(f"left out: {r}")]
                 for c, r in plan.left_out]
        table = html_table(
            [Column("Run"), Column("Files", True), Column("Size", True), Column("Skipped", True), Column("What")],
            rows,
            limit=self.PREVIEW_LIMIT,
        )
        totals = (
            f"<p><b>{html.escape(plan.describe())}</b> — {format_count_of(len(plan.plans), 'run')} planned, "
            f"{format_count_of(sum(len(p.skipped) for p in plan.plans), 'file')} skipped. "
            '<span class="rt-caption">A run\'s name opens it on the per-run page.</span></p>'
        )
        self.preview.value = totals + table
        todo = plan.files_to_transfer
        self.execute_button.description = plan.describe() if todo else "Nothing to transfer"
        self.execute_button.disabled = todo == 0
        self._set_children(with_execute=True)

    def _set_children(self, with_execute: bool) -> None:
        head = [self.preview, *([self.execute_button] if with_execute else [])]
        self.widget.children = [*head, self.progress.widget, self.run_bars, self.result]

    # -- execution ---------------------------------------------------------------------------------

    def start(self, plan: BulkPlan) -> None:
        """Switch to progress: one bar per run with files to transfer, one overall bar, Cancel."""
        with self._lock:
            self._runs = [p for p in plan.plans if p.to_transfer]
            self._done = {i: 0 for i in range(len(self._runs))}
            self._last = 0.0
        self.execute_button.disabled = True
        self.progress.start(f"Starting: {plan.describe()}", cancellable=True)
        self._draw_bars()

    def update(self, index: int, _total: int, event: TransferProgress) -> None:
        """Progress of run ``index`` (of the runs with files to transfer); safe from any thread."""
        with self._lock:
            if index in self._done:
                self._done[index] = event.bytes_done
            now = time.monotonic()
            if now - self._last < self.INTERVAL_S:
                return
            self._last = now
        total = sum(p.bytes_to_transfer for p in self._runs) or 1
        done = sum(self._done.values())
        self.progress.update(done / total, f"{format_bytes(done)} of {format_bytes(total)}", force=True)
        self._draw_bars()

    def _draw_bars(self) -> None:
        rows = []
        for index, plan in enumerate(self._runs[: self.PREVIEW_LIMIT]):
            size = plan.bytes_to_transfer or 1
            rows.append([self._names.cell(plan.coordinate), Cell(_bar(self._done.get(index, 0) / size))])
        self.run_bars.value = html_table([Column("Run"), Column("Progress")], rows) if rows else ""

    def finish(self, result: BulkResult) -> None:
        """The summary line and a line per run that did not end well."""
        self.progress.finish()
        self.run_bars.value = ""
        rows = [
            [self._names.cell(r.plan.coordinate), text_cell(_result_words(r)), text_cell(_first_error(r))]
            for r in result.results
            if not r.ok
        ]
        rows += [[self._names.cell(c), text_cell("not started"), text_cell("")] for c in result.not_started]
        problems = html_table([Column("Run"), Column("Result"), Column("First error")], rows) if rows else ""
        self.result.value = f"<p><b>{html.escape(_summary(result))}</b></p>{problems}"
        self.plan = None
        self.preview.value = ""
        self._set_children(with_execute=False)

    def failed(self, text: str) -> None:
        self.progress.finish()
        self.run_bars.value = ""
        self.result.value = f"<p><b>{html.escape(text)}</b></p>"


def _summary(result: BulkResult) -> str:
    """:meth:`BulkResult.summary` in words for one reader: ``1 run complete``, zero counts of rare cases left out."""
    done = sum(1 for r in result.results if r.ok)
    failed = sum(1 for r in result.results if not r.ok)
    nothing = sum(1 for p in result.plan.plans if not p.to_transfer)
    parts = [f"{format_count_of(done, 'run')} complete", f"{format_count(failed)} with failures",
             f"{format_count(len(result.not_started))} not started"]
    if nothing:
        parts.append(f"{format_count(nothing)} with nothing to transfer")
    if result.plan.left_out:
        parts.append(f"{format_count(len(result.plan.left_out))} left out")
    size = sum(r.bytes for r in result.results)
    return (
        ", ".join(parts) + f" — {format_count_of(result.count('transferred'), 'file')}, {format_bytes(size)} in "
        f"{result.seconds:.1f} s, {format_count(result.count('skipped'))} skipped, "
        f"{format_count(result.count('failed'))} failed"
        + (f", cancelled: {format_count_of(result.files_not_transferred, 'file')} not transferred"
           if result.files_not_transferred else "")
    )


def _result_words(result: TransferResult) -> str:
    if result.cancelled:
        return "cancelled: " + result.summary()
    return result.summary()


def _first_error(result: TransferResult) -> str:
    return next((o.error or "" for o in result.outcomes if o.status == "failed"), "")
