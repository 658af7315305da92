"""The download manager's dataset fetch form: options, a live plan, and the Fetch button.

The page plans again (in the background) whenever an option or the selection changes, and shows the
plan here before anything is written: runs, samples, bytes (images and labels apart), and the
train/validation split by run. A first plan reads every label of the selection (thousands of requests at fleet
scale), so while it plans the form shows how many labels are read of how many (:meth:`DatasetForm.show_planning`).
Dates are typed as ``YYYY-MM-DD`` (:mod:`runtool.ui.date_fields`). The result says in words what happened to
each file: downloaded, copied from the labels planning read, already there and kept.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping

import ipywidgets as widgets

from runtool.services.conflicts import CONFLICT_LABELS, ConflictMode, conflict_help
from runtool.services.datasets import DatasetError, DatasetOptions, DatasetPlan, DatasetResult
from runtool.ui.components import JobProgress, MessageArea
from runtool.ui.date_fields import DateFieldError, iso_date_field, parse_iso_date
from runtool.ui.formatting import format_bytes, format_count, format_count_of

__all__ = ["DatasetForm"]

_CONFLICT_ORDER: tuple[ConflictMode, ...] = ("verify", "skip", "overwrite")
"""The dataset's default, verify, first."""


class DatasetForm:
    """Name and options of a dataset fetch, its live plan, Fetch, progress and result."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        wide = {"description_width": "initial"}
        self.name = widgets.Text(value="dataset", description="Dataset name", style=wide)
        self.since = iso_date_field("Runs since", "200px", "rt-dataset-since")
        self.until = iso_date_field("until", "150px", "rt-dataset-until")
        self.min_coverage = widgets.BoundedFloatText(
            value=0, min=0, max=100, step=5, description="Minimum run coverage %", style=wide,
            layout=widgets.Layout(width="240px"),
        )
        self.labelled_only = widgets.Checkbox(value=True, description="Labelled samples only", indent=False)
        self.classes = widgets.Text(placeholder="e.g. 0, 2 (empty: all)", description="Classes", style=wide)
        self.max_samples = widgets.BoundedIntText(
            value=0, min=0, max=10_000_000, description="Maximum samples (0: no limit)", style=wide,
            layout=widgets.Layout(width="300px"),
        )
        self.val_fraction = widgets.FloatSlider(
            value=0.2, min=0, max=1, step=0.05, description="Validation share (by run)", style=wide,
            readout_format=".0%", layout=widgets.Layout(width="380px"),
        )
        self.seed = widgets.IntText(value=0, description="Seed", style=wide, layout=widgets.Layout(width="160px"))
        self.conflict = widgets.Dropdown(
            options=[(CONFLICT_LABELS[mode][0], mode) for mode in _CONFLICT_ORDER],
            tooltip=conflict_help(_CONFLICT_ORDER),
            value="verify", description="Files already there", style=wide, layout=widgets.Layout(width="440px"),
        ).add_class("rt-dataset-conflict")
        self.plan_text = widgets.HTML().add_class("rt-dataset-plan")
        self.plan_progress = JobProgress()
        self.plan_progress.widget.add_class("rt-dataset-planning")
        self.fetch_button = widgets.Button(
            button_style="primary", disabled=True, layout=widgets.Layout(width="auto", align_self="flex-start")
        )
        self.fetch_button.add_class("rt-dataset-fetch")
        self.progress = JobProgress()
        self.result = widgets.HTML().add_class("rt-dataset-result")
        self.messages = MessageArea()
        self.messages.widget.add_class("rt-dataset-messages")
        self.plan: DatasetPlan | None = None
        for control in (self.name, self.since, self.until, self.min_coverage, self.labelled_only, self.classes,
                        self.max_samples, self.val_fraction, self.seed):
            control.observe(lambda _change: on_change(), names="value")
        row = widgets.Layout(flex_flow="row wrap", align_items="center")
        self.widget = widgets.VBox([
            widgets.HBox([self.name, self.since, self.until], layout=row),
            widgets.HBox([self.min_coverage, self.labelled_only, self.classes], layout=row),
            widgets.HBox([self.max_samples, self.val_fraction, self.seed], layout=row),
            self.plan_text,
            self.plan_progress.widget,
            widgets.HBox([self.fetch_button, self.conflict], layout=row),
            self.messages.widget,
            self.progress.widget,
            self.result,
        ]).add_class("rt-dataset-form")

    def options(self) -> DatasetOptions:
        """The options as entered.

        Raises:
            DatasetError: a class list that is not whole numbers, or options that contradict each other.
        """
        try:
            classes = tuple(int(part) for part in self.classes.value.replace(",", " ").split()) or None
        except ValueError as exc:
            text = self.classes.value
            raise DatasetError(f"Classes must be whole numbers separated by commas, not {text!r}.") from exc
        try:
            since, until = parse_iso_date(self.since.value, "Runs since"), parse_iso_date(self.until.value, "until")
        except DateFieldError as exc:
            raise DatasetError(str(exc)) from exc
        return DatasetOptions(
            since=since,
            until=until,
            min_coverage_pct=self.min_coverage.value or None,
            labelled_only=self.labelled_only.value,
            classes=classes,
            max_samples=self.max_samples.value or None,
            val_fraction=float(self.val_fraction.value),
            seed=int(self.seed.value),
        )

    def show_planning(self, done: int, total: int) -> None:
        """Labels read so far by the plan being made: ``plan_dataset_fetch``'s ``progress``; safe from any thread."""
        text = f"Planning: {format_count(done)} of {format_count_of(total, 'label')} read and checked"
        if not self.plan_progress.widget.children:
            self.plan_progress.start(text, cancellable=False)
        self.plan_progress.update(done / total if total else 1.0, text, force=done == total)

    def show_waiting(self, text: str) -> None:
        self.plan_progress.finish()
        self.plan = None
        self.fetch_button.disabled = True
        self.fetch_button.description = "Fetch"
        self.plan_text.value = f'<p class="rt-caption">{html.escape(text)}</p>'

    def show_plan(self, plan: DatasetPlan) -> None:
        """Runs, samples, bytes and the split, and a Fetch button naming what it will do."""
        self.plan_progress.finish()
        self.plan = plan
        images = sum(s.frame_size for s in plan.samples)
        labels = sum(s.label_size for s in plan.samples)
        lines = [
            f"<b>{html.escape(plan.describe())}</b>",
            f"Size: {format_bytes(images)} of images and {format_bytes(labels)} of labels. The labels were read "
            "while planning (to check them and filter by class), so fetching downloads only the images.",
            f"Train runs: {format_count(len(plan.runs_in('train')))}, validation runs: "
            f"{format_count(len(plan.runs_in('val')))}; "
            f"{format_count_of(plan.runs_excluded, 'run')} excluded by the options.",
            f"Into <code>{html.escape(str(plan.root))}</code>",
        ]
        lines += [f"Rejected label {html.escape(key)}: {html.escape(reason)}" for key, reason in plan.rejected[:5]]
        self.plan_text.value = "<br>".join(lines)
        self.fetch_button.description = (
            f"Fetch {format_count_of(len(plan.samples), 'sample')} ({format_bytes(plan.bytes)}) into {plan.name}"
        )
        self.fetch_button.disabled = not plan.samples

    def show_result(self, result: DatasetResult) -> None:
        """The one-line result; Fetch stays offered (run again, it fetches only what is missing)."""
        self.progress.finish()
        self.fetch_button.disabled = not result.plan.samples
        failures = "".join(f"<br>{html.escape(path)}: {html.escape(error)}" for path, error in result.failed[:5])
        self.result.value = f"<b>{html.escape(_headline(result))}</b><br>{html.escape(_details(result))}{failures}"

    def values(self) -> Mapping[str, object]:
        return {"name": self.name.value, **self.options().to_dict()}


def _headline(result: DatasetResult) -> str:
    """Whether the folder now holds the dataset, and how long it took."""
    samples = format_count_of(len(result.plan.samples), "sample")
    if result.cancelled:
        return f"Cancelled after {result.seconds:.1f} s: the dataset folder is incomplete and its manifest not updated."
    if result.failed:
        failed = format_count_of(len(result.failed), "file")
        return f"{failed} could not be fetched; the other files of {samples} are in place."
    return f"Done in {result.seconds:.1f} s: {result.plan.name} holds {samples}."


def _details(result: DatasetResult) -> str:
    """What happened to each file, in words; the counts that are zero are left out."""
    parts = [
        (result.downloaded, f"{format_count_of(result.downloaded, 'file')} downloaded ({format_bytes(result.bytes)})"),
        (result.copied, f"{format_count_of(result.copied, 'label')} copied from the labels read while planning"),
        (result.written, f"{format_count_of(result.written, 'empty label')} written for unlabelled frames"),
        (result.kept, f"{format_count_of(result.kept, 'file')} already there with the right content, kept"),
        (result.removed, f"{format_count_of(result.removed, 'file')} no longer in the dataset, removed"),
        (len(result.failed), f"{format_count(len(result.failed))} failed"),
    ]
    said = [text for count, text in parts if count]
    return ("; ".join(said) or "nothing to do: every file was already there") + "."
