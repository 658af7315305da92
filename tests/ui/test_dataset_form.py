"""The dataset form's planning progress: a bar and a line while labels are read, gone once the plan (or why there
is none) is shown."""

from __future__ import annotations

import threading

from runtool.ui.dataset_form import DatasetForm


def test_planning_progress_shows_labels_read_of_all_and_goes_when_planning_ends() -> None:
    form = DatasetForm(lambda: None)
    assert form.plan_progress.widget.children == ()
    form.show_planning(0, 14_253)
    assert form.plan_progress.widget.children  # the bar and its line, no Cancel (planning is not a job)
    assert form.plan_progress.cancel_button not in form.plan_progress.widget.children
    assert "0 of 14,253 labels read" in form.plan_progress.text.value and form.plan_progress.bar.value == 0
    form.show_planning(14_253, 14_253)  # the last call is always drawn, however soon it follows the one before
    assert "14,253 of 14,253 labels read" in form.plan_progress.text.value
    assert form.plan_progress.bar.value == form.plan_progress.STEPS
    form.show_waiting("Pick a selection")
    assert form.plan_progress.widget.children == ()


def test_planning_progress_from_a_worker_thread() -> None:
    form = DatasetForm(lambda: None)
    worker = threading.Thread(target=lambda: [form.show_planning(done, 3) for done in range(4)])
    worker.start()
    worker.join()
    assert "3 of 3 labels read" in form.plan_progress.text.value
    assert form.plan_progress.bar.value == form.plan_progress.STEPS


def test_no_labels_to_read_is_shown_as_done() -> None:
    form = DatasetForm(lambda: None)
    form.show_planning(0, 0)
    assert "0 of 0 labels read" in form.plan_progress.text.value
    assert form.plan_progress.bar.value == form.plan_progress.STEPS
