"""The per-run page (02_per_run_analysis.ipynb) in a real chromium: download → extract → analyse a demo run.

The shared ``voila`` server's local roots are read by other tests, so this module serves the demo fleet's
buckets from its own ``runtool serve`` with a config whose data folder is private: the downloads and the
extraction land there. Expected values come from a ServiceContainer on the same config.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from runtool.formatting import format_bytes, format_time
from runtool.models import RunCoordinate, parse_timestamp
from runtool.services import ServiceContainer
from runtool.storage import local_raw_dir
from runtool.ui.analysis_charts import TAB_TITLES
from runtool.ui.query import selection_query
from tests.browser.conftest import Contexts, VoilaServer, crowded_axis_titles, overlapping_texts, screenshot
from tests.browser.test_reports_served import assert_report_opens
from tests.ui.test_per_run_page import download_and_extract, drop_tracking, expected_kpis, pick_run

pytestmark = pytest.mark.browser

PER_RUN = "02_per_run_analysis.ipynb"
WAIT_S = 60.0
"""How long a job (download, extraction, analysis of a few small bags) and its redraw may take."""


@pytest.fixture
def page(contexts: Contexts) -> Any:
    """A tab at the size the issue was seen at (1440×900)."""
    return contexts.new_page(viewport={"width": 1440, "height": 900})


def assert_tab_titles_whole(page: Any) -> None:
    """No tab title is cut off (an ellipsis: its text wider than its box)."""
    cut = page.eval_on_selector_all(
        ".rt-analysis-tabs .lm-TabBar-tabLabel",
        "labels => labels.filter(l => l.scrollWidth > l.clientWidth + 1).map(l => l.innerText)",
    )
    assert cut == []


def assert_labels_inside_their_charts(page: Any, panel: Any) -> None:
    """Every reference label (μ=, median, Mean:, target) of the panel's charts lies inside its chart's svg."""
    outside = panel.evaluate(
        """panel => [...panel.querySelectorAll('.bqplot.figure')].flatMap(figure => {
            const svg = figure.querySelector('svg').getBoundingClientRect();
            return [...figure.querySelectorAll('svg text')]
                .filter(t => /^(μ=|median |Mean: |target )/.test(t.textContent))
                .filter(t => { const r = t.getBoundingClientRect();
                               return r.left < svg.left - 0.5 || r.right > svg.right + 0.5; })
                .map(t => t.textContent);
        })"""
    )
    assert outside == []


def hover_every_chart(page: Any, panel: Any) -> None:
    """Moves the mouse across the plot area of every chart of the panel and over a few points of each scatter."""
    for figure in panel.locator(".bqplot.figure").all():
        figure.scroll_into_view_if_needed()
        box = figure.bounding_box()
        assert box is not None
        for step in range(1, 8):
            page.mouse.move(box["x"] + box["width"] * step / 8, box["y"] + box["height"] / 2)
        dots = figure.locator("path.dot")
        for index in range(0, dots.count(), max(1, dots.count() // 3)):
            dot = dots.nth(index).bounding_box()
            if dot is not None:
                page.mouse.move(dot["x"] + dot["width"] / 2, dot["y"] + dot["height"] / 2)
                page.wait_for_timeout(100)


def read_kpis(page: Any) -> dict[str, str]:
    """Label → value of every analysis KPI card shown."""
    return dict(
        page.eval_on_selector_all(
            ".rt-analysis-kpis .rt-kpi",
            """cards => cards.map(card => [
                (card.querySelector('.rt-kpi-label')?.innerText ?? '').trim(),
                (card.querySelector('.rt-kpi-value')?.innerText ?? '').trim(),
            ])""",
        )
    )


def assert_kpis(page: Any, expected: dict[str, str]) -> None:
    deadline = time.monotonic() + WAIT_S
    shown = read_kpis(page)
    while shown != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        shown = read_kpis(page)
    assert shown == expected


def assert_no_traceback(page: Any) -> None:
    content = page.content()
    assert "Traceback" not in content
    assert 'data-mime-type="application/vnd.jupyter.stderr"' not in content
    expect(page.locator(".rt-message-error")).to_have_count(0)


def open_run(page: Any, server: VoilaServer, coord: RunCoordinate) -> None:
    page.goto(server.url(PER_RUN, selection_query(coord.to_filters())))
    page.wait_for_selector(".rt-page-per-run", state="visible")
    expect(page.locator(".rt-view-run")).to_be_visible(timeout=WAIT_S * 1000)


def test_download_extract_and_analyse_a_run_by_clicking(page: Any, server: VoilaServer,
                                                        services: ServiceContainer) -> None:
    coord = pick_run(services)
    state = services.data_state.get_complete_run_state(coord)
    next_action = page.locator("button.rt-next-action")
    result = page.locator(".rt-result")
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))

    open_run(page, server, coord)
    expect(page.locator(".rt-run-picker select")).to_have_value(format_time(coord.start_time))
    expect(page.locator(".rt-status-card")).to_have_count(4)
    expect(page.locator(".rt-card-cloud")).to_contain_text(
        f"Raw: 3 bags, {format_bytes(state.cloud_raw.total_size)}")
    expect(page.locator(".rt-card-local")).to_contain_text("not downloaded")
    expect(next_action).to_have_text("Preview download of 3 bags")
    # Report waits for the data, naming the button that gets it, which names what it downloads.
    expect(page.locator("button.rt-report")).to_be_disabled()
    expect(page.locator(".rt-report-note")).to_have_text(
        "The report needs the run downloaded and extracted: bring it up to date first.")
    expect(page.locator("button.rt-bring-up-to-date")).to_have_text(
        f"Bring up to date: download 3 bags ({format_bytes(state.cloud_raw.total_size)}), extract, analyse")
    assert_no_traceback(page)
    screenshot(page, "per-run-start")

    # Preview: the plan the service would make, and an Execute button named after it.
    plan = services.transfers.plan_raw_download(coord)
    next_action.click()
    execute = page.locator("button.rt-download-execute")
    expect(execute).to_have_text(plan.describe(), timeout=WAIT_S * 1000)
    expect(next_action).to_have_text(plan.describe())
    expect(page.locator(".rt-preview-table tbody tr")).to_have_count(3)
    screenshot(page, "per-run-preview")

    execute.click()
    expect(next_action).to_have_text("Extract 3 bags", timeout=WAIT_S * 1000)
    expect(result).to_contain_text("3 files, ")
    expect(result).to_contain_text("0 skipped, 0 failed")
    expect(page.locator(".rt-card-local")).to_contain_text("synced")
    landed = sorted(p.stat().st_size for p in local_raw_dir(services.config.raw_root, coord).glob("rosbag_*.bag"))
    assert landed == sorted(file.size for file in plan.files)
    screenshot(page, "per-run-downloaded")

    page.locator(".rt-extract-backend button", has_text="In-process").click()
    next_action.click()
    expect(next_action).to_have_text("Analyse", timeout=WAIT_S * 1000)
    expect(result).to_contain_text("Extracted 3 bags (0 failed)")
    expect(page.locator(".rt-card-extraction")).to_contain_text("3 bags read, 0 failed")
    screenshot(page, "per-run-extracted")

    next_action.click()
    expect(next_action).to_have_text("Complete", timeout=WAIT_S * 1000)
    tabs = page.locator(".rt-analysis-tabs")
    expect(tabs).to_be_visible(timeout=WAIT_S * 1000)  # its 23 charts are built when the first analysis comes
    assert_kpis(page, expected_kpis(services.analytics.analyze_run(coord).kpis))
    titles = tabs.locator(".lm-TabBar-tab")
    expect(titles).to_have_text(list(TAB_TITLES))
    assert_tab_titles_whole(page)
    expect(page.locator(".rt-no-data")).to_have_count(0)
    assert_no_traceback(page)
    screenshot(page, "per-run-analysed")
    # Each tab draws its figures (legacy grid: 3×3, 2×3, 2×2, 2×2), with the means and targets written out.
    # Hovering over every chart raises no error (a bqplot field tooltip that cannot be drawn logs "Could not create
    # a view" and shows "Click to show javascript error." in its place).
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    for index, (name, figures, label) in enumerate((("fps", 9, "target 25 FPS"), ("detections", 6, "μ="),
                                                    ("latency", 4, "Mean: "), ("tracks", 4, "μ="))):
        titles.nth(index).click()
        panel = page.locator(f".rt-tab-{name}")
        expect(panel).to_be_visible()
        expect(panel.locator(".bqplot.figure")).to_have_count(figures)
        expect(panel.locator("svg text", has_text=label).first).to_be_visible()
        assert_labels_inside_their_charts(page, panel)
        hover_every_chart(page, panel)
        if name == "tracks":  # the last point hovered is a track of the scatter: its tooltip shows its values
            expect(page.locator(".bqplot_tooltip_div", has_text="AvgConf")).to_contain_text(
                re.compile(r"AvgConf\s*[0-9.]+\s*Span\s*\d+\s*Density\s*[0-9.]+"))
        expect(page.get_by_text("Click to show javascript error.")).to_have_count(0)
        screenshot(page, f"per-run-tab-{name}")
    assert errors == []

    page.locator("button.rt-report").click()
    expect(page.locator("a.rt-open-report")).to_have_text("Open report", timeout=WAIT_S * 1000)
    expect(result).to_contain_text("Report rendered in ")
    assert_no_traceback(page)
    screenshot(page, "per-run-report")
    assert_report_opens(page, services.reports.existing(coord), coord)


def test_a_complete_run_draws_every_analysis_tab_without_a_console_error(page: Any, server: VoilaServer,
                                                                        services: ServiceContainer) -> None:
    """Charts laid out inside a hidden tab got negative sizes (bqplot: "<rect> attribute width: A negative value
    is not valid", 84 errors on opening a complete run); each tab's charts are drawn when it is first shown."""
    coord = pick_run(services, bags=2)
    download_and_extract(services, coord)
    services.analytics.analyze_run(coord)
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    open_run(page, server, coord)
    titles = page.locator(".rt-analysis-tabs .lm-TabBar-tab")
    expect(titles).to_have_text(list(TAB_TITLES), timeout=WAIT_S * 1000)
    for index, (name, figures) in enumerate((("fps", 9), ("detections", 6), ("latency", 4), ("tracks", 4))):
        titles.nth(index).click()
        panel = page.locator(f".rt-tab-{name}")
        expect(panel.locator(".bqplot.figure")).to_have_count(figures)
        expect(panel.locator(".bqplot.figure svg .axis .tick text").first).to_be_visible()
        assert errors == []
        # Laid out while hidden, a histogram's mean label was placed past its chart's edge as well.
        assert_labels_inside_their_charts(page, panel)
        # Axis titles clear of their tick labels and inside their chart; no two tick labels over each other (at
        # bqplot's default title offsets "bag time (s)" touched the tick labels it names).
        page.wait_for_timeout(500)
        assert crowded_axis_titles(page, f".rt-tab-{name} .axis") == [], name
        assert overlapping_texts(page, f".rt-tab-{name} .axis") == [], name
    titles.nth(0).click()
    page.wait_for_timeout(1000)  # a figure lays itself out again 300 ms after its size changed
    # A value written on a chart keeps a white edge: "target 25 FPS" sits on the rate line it labels.
    target = page.locator(".rt-tab-fps svg text", has_text="target 25 FPS").first
    assert target.evaluate("t => [getComputedStyle(t).paintOrder, getComputedStyle(t).stroke]") == [
        "stroke", "rgb(255, 255, 255)"]
    assert_no_traceback(page)
    assert errors == []
    screenshot(page, "per-run-complete-tabs")
    # The download and extraction controls are folded below the analysis, one click away.
    preview = page.locator("button.rt-download-preview")
    expect(preview).to_be_hidden()
    page.get_by_text("Download and extract again").click()
    expect(preview).to_be_visible()
    expect(page.locator("button.rt-extract")).to_be_visible()
    assert errors == []


def test_read_only_shows_the_cached_analysis_and_no_write_controls(
    page: Any, services: ServiceContainer, config_path: Path
) -> None:
    coord = pick_run(services, bags=2)
    services.transfers.execute(services.transfers.plan_raw_download(coord))
    services.extraction.extract(coord)
    kpis = services.analytics.analyze_run(coord).kpis
    report = services.reports.render(coord).html
    reader = VoilaServer(config_path, read_only=True)
    try:
        open_run(page, reader, coord)
        expect(page.locator(".rt-analysis-tabs")).to_be_visible(timeout=WAIT_S * 1000)
        assert_kpis(page, expected_kpis(kpis))
        expect(page.locator(".rt-next-step")).to_have_text(
            "The run is complete: downloaded, extracted and analysed.")
        for css in ("rt-next-action", "rt-download-preview", "rt-download-execute", "rt-extract", "rt-report",
                    "rt-cancel", "rt-refresh"):
            expect(page.locator(f".{css}")).to_have_count(0)
        # No button at all outside the charts (bqplot's own toolbar buttons aside).
        assert page.eval_on_selector_all(
            ".rt-page-per-run button", "buttons => buttons.filter(b => !b.closest('.bqplot')).length") == 0
        assert_no_traceback(page)
        # A reader cannot render a report, but opens the one rendered before.
        expect(page.locator("a.rt-open-report")).to_have_text("Open report")
        screenshot(page, "per-run-read-only")
        assert_report_opens(page, report, coord)
    finally:
        reader.stop()


def test_a_run_without_tracking_shows_no_data_sentences(page: Any, server: VoilaServer,
                                                        services: ServiceContainer) -> None:
    runs = services.data_state.all_runs()
    coord = pick_run(services, bags=int(runs["raw_bags"][runs["raw_bags"] > 0].max()))
    download_and_extract(services, coord)
    drop_tracking(services, coord)
    services.analytics.analyze_run(coord)
    open_run(page, server, coord)
    expect(page.locator(".rt-analysis-tabs")).to_be_visible(timeout=WAIT_S * 1000)
    expect(page.locator(".rt-tab-fps .rt-no-data")).to_have_text("No tracking data in this run")
    expect(page.locator(".rt-tab-fps .bqplot.figure")).to_have_count(6)
    page.locator(".rt-analysis-tabs .lm-TabBar-tab", has_text="Track lifecycles").click()
    expect(page.locator(".rt-tab-tracks .rt-no-data")).to_have_text("No tracking data in this run")
    expect(page.locator(".rt-tab-tracks .bqplot.figure")).to_have_count(0)
    assert_no_traceback(page)
    screenshot(page, "per-run-no-tracking")


def test_a_bad_bag_an_ml_only_run_and_a_bad_run_time_say_what_to_do(page: Any, server: VoilaServer,
                                                                   services: ServiceContainer) -> None:
    runs = services.data_state.all_runs()
    coord = pick_run(services, bags=int(runs["raw_bags"][runs["raw_bags"] > 0].min()))
    services.transfers.execute(services.transfers.plan_raw_download(coord))
    bad = sorted(local_raw_dir(services.config.raw_root, coord).glob("rosbag_*.bag"))[0]
    bad.write_bytes(b"cut short")
    services.local.refresh_run(coord)
    open_run(page, server, coord)
    expect(page.locator("button.rt-next-action")).to_have_text("Preview re-download of 1 bag (size differs)")
    expect(page.locator(".rt-download-conflict button.mod-active")).to_have_text("Keep if same checksum")
    cut = page.eval_on_selector_all(".rt-download-conflict button",
                                    "buttons => buttons.filter(b => b.scrollWidth > b.clientWidth + 1).length")
    assert cut == 0
    assert_no_traceback(page)
    screenshot(page, "per-run-bag-size-differs")

    ml_only = runs[(runs["raw_bags"] == 0) & (runs["ml_labels"] > 0)].iloc[0]
    ml_coord = RunCoordinate(*(str(ml_only[c]) for c in ("cid", "regionid", "fieldid", "twid", "lbid", "timestamp")))
    open_run(page, server, ml_coord)
    expect(page.locator("button.rt-report")).to_be_disabled()
    expect(page.locator(".rt-report-note")).to_have_text(
        "No report: this run has ML samples but no raw bags, so there is nothing to analyse.")
    screenshot(page, "per-run-ml-only")

    page.goto(server.url(PER_RUN, selection_query(coord.to_filters().replace(timestamp=None)) + "&timestamp=noon"))
    error = page.locator(".rt-message-error")
    expect(error).to_contain_text("The run time in the link could not be used (bad timestamp 'noon'")
    expect(page.locator(".rt-view-run")).to_be_visible(timeout=WAIT_S * 1000)
    expect(page.locator(".rt-run-count")).to_contain_text(f"for {coord.lbid} in {coord.fieldid}")
    assert error.bounding_box()["y"] < 900
    screenshot(page, "per-run-bad-run-time")


def test_above_a_laser_box_the_run_picker_is_disabled_and_says_why(page: Any, server: VoilaServer,
                                                                    services: ServiceContainer) -> None:
    coord = pick_run(services)
    page.goto(server.url(PER_RUN, selection_query(coord.to_filters().replace(lbid=None, timestamp=None))))
    expect(page.locator(".rt-view-empty")).to_be_visible(timeout=WAIT_S * 1000)
    picker = page.locator(".rt-run-picker select")
    expect(picker).to_be_disabled()
    expect(picker.locator("option:checked")).to_have_text("Pick a laser box first")
    screenshot(page, "per-run-no-laser-box")
    page.locator(".rt-filter-lbid select").select_option(coord.lbid)
    expect(picker).to_be_enabled(timeout=WAIT_S * 1000)
    newest = services.data_state.available_timestamps(coord.to_filters().replace(timestamp=None))[0]
    expect(picker.locator("option:checked")).to_have_text(format_time(parse_timestamp(newest)))
