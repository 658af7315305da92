"""The job lifecycle every page with actions shares (:class:`runtool.ui.page.Page`): refusals, busy, errors, cancel.

Real pages over the hand-made fleet in the emulator. Where a test needs a job that waits for it (to be busy, to be
cancelled, to fail in a chosen way) it hands the page's own ``_run_job`` a small piece of work; everything around
that work (refusal, busy state, progress, messages, redraw) is the page's.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from runtool.config import RuntoolConfig
from runtool.errors import RuntoolError
from runtool.models import RunCoordinate
from runtool.services import ServiceContainer
from runtool.services.pipeline import PipelineCancelled
from runtool.ui import DownloadManagerPage, FleetKpiPage, PerRunPage
from runtool.ui.components import MessageArea

from .conftest import LB01

WAIT_S = 30.0
RUN = RunCoordinate.parse(f"{LB01}/2025_08_03T09:30:00Z")
RUN_QUERY = "cid=c1&regionid=r1&fieldid=f1&twid=t1&lbid=lb01&timestamp=2025_08_03T09:30:00Z"


class Gate:
    """Work for ``_run_job`` that runs until the test opens the gate (or the job is cancelled), then does ``then``."""

    def __init__(self, then: Exception | None = None) -> None:
        self.opened = threading.Event()
        self.started = threading.Event()
        self.then = then

    def work(self, cancel: threading.Event) -> str:
        self.started.set()
        while not self.opened.wait(0.01):
            if cancel.is_set():
                raise PipelineCancelled("Cancelled: the steps done so far are kept.", RUN, "download")
        if self.then is not None:
            raise self.then
        return "done"


def texts(area: MessageArea) -> list[tuple[str, str]]:
    return [(m.level, m.text) for m in area.messages]


@pytest.fixture
def read_only(fleet_config: RuntoolConfig) -> ServiceContainer:
    ServiceContainer(fleet_config).inventory.refresh()
    return ServiceContainer(fleet_config.with_overrides(read_only=True))


def test_a_read_only_page_refuses_every_action_at_the_top_and_starts_nothing(read_only: ServiceContainer) -> None:
    manager = DownloadManagerPage(read_only, query="cid=c1")
    manager.preview_export("export-1")
    per_run = PerRunPage(read_only, query=RUN_QUERY)
    per_run.start_analyze()
    for page, doing in ((manager, "Planning the export upload"), (per_run, "Analysing")):
        assert texts(page.messages)[0] == ("error", f"{doing} is not possible here: this server is read-only.")
        assert not page.busy and page.job_task.join(0)


def test_a_page_whose_configuration_failed_says_that_rather_than_read_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RUNTOOL_CONFIG", str(tmp_path / "missing.toml"))
    page = PerRunPage(query=RUN_QUERY)
    assert page.services is None
    page.start_analyze()
    assert texts(page.messages)[0] == (
        "error", "Analysing is not possible: runtool could not start (the message above says why).")
    assert "the message above says why" in page.empty_text and not page.busy


def test_while_a_job_runs_another_action_waits_and_says_so_beside_its_control(services: ServiceContainer) -> None:
    page = DownloadManagerPage(services, query="cid=c1")
    assert page.tabs is not None
    gate = Gate()
    page._run_job(gate.work, lambda _result: None, "Transferring", area=page.transfer_messages,
                  progress=page.transfer_panel.progress, text="Transferring…")
    try:
        assert gate.started.wait(WAIT_S) and page.busy
        page.preview_export("export-1")
        assert texts(page.export_messages) == [("warning", "Planning the export upload has to wait: another job is "
                                                           "still running. Wait for it to end, or cancel it.")]
        assert texts(page.messages) == [] and page.export_panel.plan is None
    finally:
        gate.opened.set()
    assert page.wait_idle(WAIT_S) and not page.busy
    assert page.transfer_panel.progress.widget.children == ()
    # The job that made it wait has ended: the note goes (a double click left it beside the job's result).
    assert texts(page.export_messages) == []
    page.preview_export("no-such-export")  # no longer busy: it plans, and its area forgets the wait
    assert page.wait_idle(WAIT_S)
    assert all("has to wait" not in text for _, text in texts(page.export_messages))


def test_the_fleet_analysis_waits_for_the_running_job_under_its_button(services: ServiceContainer) -> None:
    page = FleetKpiPage(services, query="cid=c1")
    gate = Gate()
    page._run_job(gate.work, lambda _result: None, "Working", progress=page.job, text="Working…")
    try:
        assert gate.started.wait(WAIT_S) and page.busy
        page.start_analysis()
        assert texts(page.analysis_messages) == [("warning", "Analysing the runs has to wait: another job is still "
                                                             "running. Wait for it to end, or cancel it.")]
    finally:
        gate.opened.set()
    assert page.wait_idle(WAIT_S) and not page.busy and page.job.widget.children == ()


def test_a_per_run_action_waits_for_the_running_job_beside_its_button_and_needs_a_run(
    services: ServiceContainer,
) -> None:
    page = PerRunPage(services, query=RUN_QUERY)
    gate = Gate()
    page._run_job_for_run("Downloading…", gate.work, lambda _coordinate, _result: None, "downloading",
                          page.download_messages)
    try:
        assert gate.started.wait(WAIT_S) and page.busy
        assert page.next_action is not None and page.next_action.disabled  # shown busy while it runs
        assert page.extract_button is not None and page.extract_button.disabled
        # A click that reached the kernel before the disabled button reached the browser (a double click).
        page.extract_button.click()
        page.next_action.click()
        assert texts(page.extract_messages) == [("warning", "Extracting has to wait: another job is still running. "
                                                            "Wait for it to end, or cancel it.")]
        assert texts(page.action_messages) == [("warning", "Previewing a download has to wait: another job is still "
                                                           "running. Wait for it to end, or cancel it.")]
        assert texts(page.messages) == [] and texts(page.download_messages) == []
    finally:
        gate.opened.set()
    assert page.wait_idle(WAIT_S) and not page.next_action.disabled
    assert texts(page.extract_messages) == [] and texts(page.action_messages) == []  # the wait is over

    box = PerRunPage(services, query="cid=c1")  # no laser box, so no run
    box.start_analyze()
    assert texts(box.messages)[0] == ("error", "Analysing needs a run: pick one first.")


@pytest.mark.parametrize(("raised", "level", "sentence", "details"), [
    (RuntoolError("Export 7 lists no run on this server."), "error", "Export 7 lists no run on this server.", False),
    (ValueError("boom"), "error", "Something unexpected went wrong while planning the export upload (ValueError: "
                                  "boom). Reload the page to try again; the details below help a developer.", True),
])
def test_an_error_in_a_job_lands_in_the_area_of_the_control_that_started_it(
    services: ServiceContainer, raised: Exception, level: str, sentence: str, details: bool
) -> None:
    page = DownloadManagerPage(services, query="cid=c1")
    page.export_messages.warning("said about the previous attempt")
    undone: list[Exception] = []
    gate = Gate(then=raised)
    gate.opened.set()
    page._run_job(gate.work, lambda _result: None, "Planning the export upload", area=page.export_messages,
                  failed=undone.append, redraw=False)
    assert page.wait_idle(WAIT_S)
    (message,) = page.export_messages.messages
    assert (message.level, message.text) == (level, sentence)
    assert (message.details is not None and "Traceback" in message.details) is details
    assert undone == [raised] and texts(page.messages) == [] and texts(page.transfer_messages) == []
    assert not page.busy


def test_an_error_in_a_done_step_is_shown_and_the_page_is_drawn_again(services: ServiceContainer) -> None:
    page = PerRunPage(services, query=RUN_QUERY)
    page.run_state = None  # the redraw after the job reads the state again

    def done(_coordinate: object, _result: str) -> None:
        raise RuntoolError("The run's folder went away while the job ran.")

    page._run_job_for_run("Working…", lambda _cancel: "result", done, "working", page.action_messages)
    assert page.wait_idle(WAIT_S)
    assert texts(page.action_messages) == [("error", "The run's folder went away while the job ran.")]
    assert page.run_state is not None and page.job.widget.children == ()


def test_cancel_stops_the_job_and_says_so_as_information(services: ServiceContainer) -> None:
    page = PerRunPage(services, query=RUN_QUERY)
    gate = Gate()
    page._run_job_for_run("Working…", gate.work, lambda _coordinate, _result: None, "working", page.action_messages)
    assert gate.started.wait(WAIT_S)
    assert page.job.cancel_button in page.job.widget.children
    page.job.cancel_button.click()
    assert page.wait_idle(WAIT_S) and not page.busy
    assert texts(page.action_messages) == [("info", "Cancelled: the steps done so far are kept.")]
    assert page.job.widget.children == () and page.coordinate == RUN
