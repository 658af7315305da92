"""The per-run page driven from Python over the demo fleet's real ROS1 bags: preview → download → extract → analyse.

The demo fleet's buckets are shared by the whole session and only read here; every test downloads into
its own local roots under ``tmp_path``. Expected values come from the services and are formatted here
independently, so a page that shows other numbers than the services fails.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from runtool.config import RuntoolConfig
from runtool.formatting import format_bytes, format_time
from runtool.models import RunCoordinate
from runtool.services import ServiceContainer
from runtool.storage import local_raw_dir, processed_dir
from runtool.ui import PerRunPage
from runtool.ui.analysis_charts import TAB_TITLES, downsample, width_histogram
from runtool.ui.components import MessageArea
from runtool.ui.query import selection_query
from tests.conftest import SeededFleet

from .widget_tree import descendants, with_class

WAIT_S = 120.0


def private_config(fleet: SeededFleet, root: Path) -> RuntoolConfig:
    """The demo fleet's buckets with local roots and cache of this test's own."""
    return fleet.config.with_overrides(
        data_dir=root, raw_root=root / "raw", processed_root=root / "processed", ml_root=root / "ML",
        cache_dir=root / "cache",
    )


@pytest.fixture
def services(demo_fleet: SeededFleet, tmp_path: Path) -> ServiceContainer:
    container = ServiceContainer(private_config(demo_fleet, tmp_path / "data"))
    container.inventory.refresh()
    return container


def pick_run(services: ServiceContainer, bags: int = 3) -> RunCoordinate:
    """The first demo run (in coordinate order) with ``bags`` real bags in the raw bucket."""
    runs = services.data_state.all_runs()
    chosen = runs[runs["raw_bags"] == bags].sort_values(["cid", "regionid", "fieldid", "twid", "lbid", "timestamp"])
    row = chosen.iloc[0]
    return RunCoordinate(*(str(row[c]) for c in ("cid", "regionid", "fieldid", "twid", "lbid", "timestamp")))


def open_page(services: ServiceContainer, coord: RunCoordinate) -> PerRunPage:
    page = PerRunPage(services, query=selection_query(coord.to_filters()))
    assert page.view == "run" and page.coordinate == coord
    return page


def message_areas(page: PerRunPage) -> list[MessageArea]:
    """The top of the page, then the areas beside the action row, the Download and the Extract panel."""
    return [page.messages, page.action_messages, page.download_messages, page.extract_messages]


def run_idle(page: PerRunPage) -> None:
    assert page.wait_idle(WAIT_S), "the page's job did not finish"
    errors = [m.text for area in message_areas(page) for m in area.messages if m.level == "error"]
    assert not errors, errors


def cards(page: PerRunPage) -> dict[str, str]:
    return {name: card.value for name, card in page.card_widgets.items()}


def expected_kpis(kpis: dict[str, float | int | None]) -> dict[str, str]:
    """The KPI cards' values, formatted here from the service's numbers."""

    def one(value: float | int | None, fmt: str, suffix: str = "") -> str:
        return "–" if value is None else f"{value:{fmt}}{suffix}"

    def rate(stream: str, name: str) -> str:
        """A stream without messages has no rate: the card says so in words, not "–" or 0."""
        return f"no {name} stream" if not kpis[f"{stream}_messages"] else one(kpis[f"{stream}_median_fps"], ".1f",
                                                                                " FPS")

    return {
        "Frame rate": rate("frames", "frame"),
        "Detection rate": rate("detections", "detection"),
        "Tracking rate": rate("tracking", "tracking"),
        "Frame time below 25 FPS": one(
            None if kpis["frames_share_below_target"] is None else 100 * kpis["frames_share_below_target"], ".1f", " %"
        ),
        "Dropped frames": one(kpis["frames_dropped_frames"], ","),
        "Detection latency p50": one(kpis["detection_latency_p50_ms"], ".1f", " ms"),
        "Tracking latency p50": one(kpis["tracking_latency_p50_ms"], ".1f", " ms"),
        "Detections per frame": one(kpis["mean_detections_per_frame"], ",.1f"),
        "Tracks per minute": one(kpis["tracks_per_minute"], ",.1f"),
        "Mean track density": one(kpis["mean_track_density"], ",.2f"),
        "Failed bags": one(kpis["failed_bags"], ","),
    }


def download_and_extract(services: ServiceContainer, coord: RunCoordinate) -> None:
    """Bring a run to "extracted" through the services (for tests about what comes after)."""
    result = services.transfers.execute(services.transfers.plan_raw_download(coord))
    assert result.ok
    services.extraction.extract(coord)


# -- picking a run ---------------------------------------------------------------------------------


def test_a_run_nobody_labelled_says_no_samples_yet_as_the_download_manager_does(services: ServiceContainer) -> None:
    runs = services.data_state.all_runs()
    unlabelled = runs[(runs["ml_labels"] == 0) & (runs["ml_frames"] == 0) & (runs["raw_bags"] > 0)]
    row = unlabelled.sort_values(["cid", "regionid", "fieldid", "twid", "lbid", "timestamp"]).iloc[0]
    page = open_page(services, RunCoordinate(*(str(row[c]) for c in ("cid", "regionid", "fieldid", "twid", "lbid",
                                                                      "timestamp"))))
    ml = cards(page)["local"].split("ML:")[1]
    assert ">no samples yet</span>" in ml and ">missing</span>" not in ml  # grey, not the dark-red "missing"


def test_a_link_opens_its_run_with_four_status_cards_and_the_download_step(services: ServiceContainer) -> None:
    coord = pick_run(services)
    page = open_page(services, coord)
    lb = coord.to_filters().replace(timestamp=None)
    assert [value for _, value in page.run_picker.options] == services.data_state.available_timestamps(lb)
    assert page.run_picker.value == coord.timestamp
    state = services.data_state.get_complete_run_state(coord)
    shown = cards(page)
    assert f"Raw: 3 bags, {format_bytes(state.cloud_raw.total_size)}" in shown["cloud"]
    assert "Raw: 0 bags" in shown["local"] and ">not downloaded</span>" in shown["local"]
    assert "not extracted" in shown["extraction"] and "not analysed" in shown["analysis"]
    assert page.next_action_text == "Preview download of 3 bags"
    for css in ("rt-run-picker", "rt-next-action", "rt-download-preview", "rt-download-bags"):
        assert len(with_class(page.widget, css)) == 1, css
    assert len(with_class(page.widget, "rt-status-card")) == 4
    assert [w for w in with_class(page.widget, "rt-status-card") if "rt-card-cloud" in w._dom_classes]
    # Every bag is offered and chosen; the conflict mode starts at "skip".
    assert page.download is not None
    assert list(page.download.bags.value) == sorted(state.cloud_raw.bag_sizes, key=lambda n: int(n[-5]))
    assert page.download.conflict.value == "skip"


def test_picking_another_run_drops_the_previewed_plan(services: ServiceContainer) -> None:
    coord = pick_run(services)
    page = open_page(services, coord)
    page.preview_download()
    run_idle(page)
    assert page.plan is not None
    other = next(ts for _, ts in page.run_picker.options if ts != coord.timestamp)
    page.run_picker.value = other
    assert page.filters.timestamp == other and page.plan is None
    assert page.next_action_text.startswith("Preview download of")


# -- the whole pipeline ----------------------------------------------------------------------------


def test_preview_download_extract_and_analyse_a_run(services: ServiceContainer) -> None:
    coord = pick_run(services)
    page = open_page(services, coord)
    assert page.next_action is not None and page.download is not None
    order = list(page.run_view.children)
    assert order.index(page.download_section) < order.index(page.analysis_area)  # the work to do comes first

    page.next_action.click()  # "Preview download of 3 bags"
    run_idle(page)
    plan = page.plan
    assert plan is not None and plan.coordinate == coord
    assert plan.describe() == services.transfers.plan_raw_download(coord).describe()
    assert page.next_action_text == plan.describe() == page.download.execute_button.description
    assert plan.describe().startswith("Download 3 bags, ")
    # Bags are named as their objects are, in the picker and in the preview alike.
    for file in plan.files:
        assert file.key.rsplit("/", 1)[-1] in page.download.preview.value
    assert "rosbag_" not in page.download.preview.value
    assert with_class(page.widget, "rt-download-execute")

    page.download.execute_button.click()
    run_idle(page)
    target = local_raw_dir(services.config.raw_root, coord)
    landed = {path.name: path.stat().st_size for path in target.glob("rosbag_*.bag")}
    assert sorted(landed.values()) == sorted(file.size for file in plan.files)
    assert page.result_text.startswith("3 files, ") and page.result_text.endswith("0 skipped, 0 failed")
    assert ">synced</span>" in cards(page)["local"]
    assert page.plan is None and page.next_action_text == "Extract 3 bags"

    page.start_extract("local")
    run_idle(page)
    assert page.result_text.startswith("Extracted 3 bags (0 failed) in ")
    assert "extracted" in cards(page)["extraction"] and "3 bags read, 0 failed" in cards(page)["extraction"]
    assert page.next_action_text == "Analyse"
    assert page.kpis == {}

    page.next_action.click()  # "Analyse"
    run_idle(page)
    analysis = services.analytics.analyze_run(coord)
    assert analysis.from_cache
    assert page.kpis == expected_kpis(analysis.kpis)
    assert page.next_action_text == "Complete" and page.next_action.disabled
    order = list(page.run_view.children)
    # Complete: the analysis first, the download and extraction controls folded below it.
    assert page.download_section not in order and page.work_folded in order
    assert order.index(page.analysis_area) < order.index(page.work_folded)
    assert page.work_folded.selected_index is None
    assert page.download_section in page.work_folded.children[0].children
    (tabs,) = with_class(page.widget, "rt-analysis-tabs")
    assert isinstance(tabs, widgets.Tab) and tabs.titles == TAB_TITLES
    assert with_class(page.widget, "rt-analysis-kpis")
    assert page.analysis.no_data_parts == []
    assert "analysed" in cards(page)["analysis"] and "not analysed" not in cards(page)["analysis"]
    # The plotted rate is the service's series, the one its KPIs summarise, over seconds since the run start.
    frames = page.analysis.fps.over_time["frames"]
    np.testing.assert_allclose(frames.lines[0].y, np.minimum(analysis.frames["rate_fps"], 60.0), equal_nan=True)
    np.testing.assert_allclose(frames.lines[0].x, analysis.frames["time_s"])
    assert frames.x_axis.label == "Seconds since the run start"
    # Two boundaries between the three bags, each at the first stamp of its bag in any stream.
    assert len(frames.boundaries.x) == 2 and all(0 < line[0] == line[1] for line in frames.boundaries.x)
    median = analysis.kpis["frames_median_fps"]
    assert page.analysis.fps.distribution["frames"].mean.label.text == [f"median {median:.1f}"]
    assert frames.reference.label.text == ["target 25 FPS"]

    # A new page on the analysed run shows the cached analysis straight away.
    again = open_page(services, coord)
    assert again.analysis_result is not None and again.analysis_result.from_cache
    assert again.kpis == expected_kpis(analysis.kpis)
    assert again.next_action_text == "Complete"


def job_texts(page: PerRunPage, on_text: Callable[[str], None] | None = None) -> list[str]:
    """Every progress line the page's job shows from now on (``on_text`` hears each as it is shown), without the
    run that leads each line (the user may pick another run while the job runs); a line that does not name the
    run shown now comes back marked "NOT LED BY THE RUN"."""
    texts: list[str] = []
    assert page.coordinate is not None
    subject = f"{page.coordinate.lbid} · {format_time(page.coordinate.start_time)}: "

    def shown(change: Mapping[str, object]) -> None:
        text = html.unescape(str(change["new"]))
        text = text.removeprefix(subject) if text.startswith(subject) or not text else f"NOT LED BY THE RUN: {text}"
        texts.append(text)
        if on_text is not None:
            on_text(text)

    page.job.text.observe(shown, names="value")
    return texts


def update_button(page: PerRunPage) -> widgets.Button:
    assert page.update_button is not None
    (button,) = with_class(page.widget, "rt-bring-up-to-date")
    assert button is page.update_button
    return button


def test_bring_up_to_date_takes_a_cloud_only_run_to_its_analysis_in_one_click(services: ServiceContainer) -> None:
    coord = pick_run(services)
    page = open_page(services, coord)
    button = update_button(page)
    assert button.layout.display is None and not button.disabled
    size = format_bytes(services.data_state.get_complete_run_state(coord).cloud_raw.total_size)
    assert button.description == f"Bring up to date: download 3 bags ({size}), extract, analyse"
    assert page.next_action_text == "Preview download of 3 bags"  # the single steps stay
    texts = job_texts(page)

    button.click()
    run_idle(page)

    analysis = services.analytics.analyze_run(coord)
    assert analysis.from_cache  # the page's job computed and cached it
    assert page.kpis == expected_kpis(analysis.kpis)
    assert page.next_action_text == "Complete" and button.layout.display == "none"
    assert ">synced</span>" in cards(page)["local"] and "3 bags read, 0 failed" in cards(page)["extraction"]
    assert "not analysed" not in cards(page)["analysis"]
    assert page.result_text.startswith("Up to date in ")
    assert page.result_text.endswith(" s: downloaded, extracted and analysed")
    # Progress lines from the pipeline, step by step, the download in bags and bytes.
    assert texts[0] == "Bringing the run up to date: download, extract and analyse…"
    for line in ("Step 1 of 3: Checking the run's state",
                 f"Step 1 of 3: Downloading: 3 of 3 bags done, {size} of {size}",
                 "Step 2 of 3: Extracting: 3 of 3 bags done", "Step 3 of 3: Analysing"):
        assert line in texts, (line, texts)
    order = list(page.run_view.children)
    assert order.index(page.analysis_area) < order.index(page.work_folded) and page.download_section not in order


def test_cancel_while_bringing_up_to_date_keeps_the_bags_and_says_cancelled(services: ServiceContainer) -> None:
    """Cancel pressed as the extraction starts: the downloaded bags stay, no extraction output appears, and the
    page offers the remaining steps."""
    coord = pick_run(services)
    page = open_page(services, coord)

    def cancel_at_the_extraction(text: str) -> None:
        if text.startswith("Step 2 of 3: Extracting"):
            page.job.cancel_button.click()

    job_texts(page, cancel_at_the_extraction)
    update_button(page).click()
    run_idle(page)

    assert not page.busy
    assert page.messages.messages == []  # the update was started beside its button, and says so there
    (note,) = [m.text for m in page.action_messages.messages if m.level == "info"]
    assert note == (f"Bringing {coord} up to date was cancelled during the extraction; the downloaded bags and any "
                    "previous extraction are kept, nothing half written.")
    state = services.data_state.get_complete_run_state(coord)
    assert state.local_raw.bag_count == 3 and state.missing_bags == () and state.differing_bags == ()
    assert ">synced</span>" in cards(page)["local"] and "not extracted" in cards(page)["extraction"]
    output = processed_dir(services.config.processed_root, coord)
    assert not output.exists() and not list(output.parent.glob("*"))
    assert page.kpis == {} and page.next_action_text == "Extract 3 bags"
    assert update_button(page).description == "Bring up to date: extract, analyse"
    assert not update_button(page).disabled and not page.next_action.disabled  # type: ignore[union-attr]


def test_the_bring_up_to_date_tooltip_is_a_whole_sentence_in_every_state(services: ServiceContainer) -> None:
    page = open_page(services, pick_run(services))
    assert update_button(page).tooltip == (
        "Download, extract and analyse this run in one go, with progress and Cancel.")
    runs = services.data_state.all_runs()
    row = runs[(runs["raw_bags"] == 0) & (runs["ml_labels"] > 0)].iloc[0]
    page.set_filters(RunCoordinate(*(str(row[c]) for c in ("cid", "regionid", "fieldid", "twid", "lbid",
                                                            "timestamp"))).to_filters())
    # Nothing to do (an ML-only run): the button is hidden, and its tooltip says why rather than " in one go, …".
    assert update_button(page).layout.display == "none"
    assert update_button(page).tooltip == "This run has nothing to bring up to date."


def page_with_a_blocked_raw_root(demo_fleet: SeededFleet, tmp_path: Path) -> PerRunPage:
    """A run's page whose raw root is a file: every download into it fails."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the raw root should be", encoding="utf-8")
    services = ServiceContainer(private_config(demo_fleet, tmp_path / "data").with_overrides(raw_root=blocked))
    services.inventory.refresh()
    return open_page(services, pick_run(services))


def test_a_failing_step_of_bring_up_to_date_shows_its_reason(demo_fleet: SeededFleet, tmp_path: Path) -> None:
    page = page_with_a_blocked_raw_root(demo_fleet, tmp_path)

    update_button(page).click()
    assert page.wait_idle(WAIT_S)

    assert page.messages.messages == []
    (error,) = page.action_messages.messages
    assert error.level == "error"
    assert error.text.startswith(f"The download of {page.coordinate} failed for 3 of 3 bags: ")
    assert "Not a directory" in error.text or "not-a-folder" in error.text
    # One bag and its reason in the sentence, every bag in the details (no traceback).
    assert error.text.endswith(" and 2 more.")
    assert error.details is not None and len(error.details.splitlines()) == 3 and "Traceback" not in error.details
    assert not page.busy and page.kpis == {} and "not extracted" in cards(page)["extraction"]
    assert page.next_action_text == "Preview download of 3 bags" and not update_button(page).disabled


def drop_tracking(services: ServiceContainer, coord: RunCoordinate) -> None:
    """Empty an extracted run's tracking tables, as a run recorded without the tracking topic has them."""
    folder = services.extraction.output_dir(coord)
    header = (folder / "tracking.csv").read_text(encoding="utf-8").splitlines()[0]
    (folder / "tracking.csv").write_text(header + "\n", encoding="utf-8")
    objects = pq.read_table(folder / "tracked_objects.parquet")
    pq.write_table(objects.slice(0, 0), folder / "tracked_objects.parquet")
    services.local.refresh_run(coord)


def test_a_run_without_tracking_says_so_instead_of_empty_charts(services: ServiceContainer) -> None:
    coord = pick_run(services)
    download_and_extract(services, coord)
    drop_tracking(services, coord)

    page = open_page(services, coord)
    assert page.next_action_text == "Analyse"
    page.start_analyze()
    run_idle(page)
    assert page.analysis_result is not None and not page.analysis_result.has_tracking
    assert page.analysis.no_data_parts == ["No tracking data in this run"] * 4
    assert page.kpis["Tracking rate"] == "no tracking stream" and page.kpis["Frame rate"].endswith(" FPS")
    assert page.kpis == expected_kpis(services.analytics.analyze_run(coord).kpis)


def test_a_bag_that_cannot_be_read_is_listed_with_its_error(services: ServiceContainer) -> None:
    coord = pick_run(services)
    services.transfers.execute(services.transfers.plan_raw_download(coord))
    bags = sorted(local_raw_dir(services.config.raw_root, coord).glob("rosbag_*.bag"))
    bags[1].write_bytes(b"this is not a bag" * 100)
    services.local.refresh_run(coord)

    page = open_page(services, coord)
    page.start_extract()
    run_idle(page)
    assert page.result_text.startswith("Extracted 2 bags (1 failed) in ")
    assert "2 bags read, 1 failed (listed below)" in cards(page)["extraction"]
    failed = page.failed_bags_text
    assert bags[1].name.removeprefix("rosbag") in failed and "rosbag_" not in failed and "Failed bags (1)" in failed
    page.start_analyze()
    run_idle(page)
    assert page.kpis["Failed bags"] == "1"
    assert with_class(page.widget, "rt-failed-bags")


def test_the_report_waits_for_the_run_to_be_brought_up_to_date_then_renders_in_the_background(
    services: ServiceContainer,
) -> None:
    coord = pick_run(services, bags=2)
    page = open_page(services, coord)
    assert page.report_button is not None and with_class(page.widget, "rt-report")
    # Not downloaded: Report would download and extract without a preview or a Cancel. It waits, naming the button
    # that takes those steps, which names what it downloads and has Cancel.
    waits = "The report needs the run downloaded and extracted: bring it up to date first."
    assert page.report_button.disabled and page.report_note.value == waits
    size = format_bytes(services.data_state.get_complete_run_state(coord).cloud_raw.total_size)
    assert update_button(page).description == f"Bring up to date: download 2 bags ({size}), extract, analyse"
    page.render_report()  # as a script would
    assert not page.busy and [(m.level, m.text) for m in page.action_messages.messages] == [("error", waits)]
    assert not local_raw_dir(services.config.raw_root, coord).exists()

    update_button(page).click()
    run_idle(page)
    assert not page.report_button.disabled and page.report_note.value == ""
    page.report_button.click()
    assert page.busy and page.report_button.disabled
    run_idle(page)
    path = page.report_path
    assert path is not None and path.is_file() and path.suffix == ".html"
    assert page.result_text.startswith("Report rendered in ") and page.result_text.endswith(f" s: {path.name}")
    link = page.report_link.value
    assert 'href="data:text/html;base64,' in link and f'download="{path.name}"' in link
    assert str(path.parent) not in link  # no server path: the link is the report
    # A reader who cannot render reports still opens the one rendered before.
    reader = open_page(ServiceContainer(services.config, read_only=True), coord)
    assert reader.report_path == path and reader.report_link.value == link


def test_cancel_stops_the_report_and_writes_no_file_of_it(services: ServiceContainer) -> None:
    coord = pick_run(services, bags=2)
    download_and_extract(services, coord)
    page = open_page(services, coord)
    assert page.report_button is not None and not page.report_button.disabled

    def cancel_in_the_notebook(text: str) -> None:
        if text.startswith("Executing "):
            assert page.job.cancel_button in page.job.widget.children
            page.job.cancel_button.click()

    texts = job_texts(page, cancel_in_the_notebook)
    page.report_button.click()
    run_idle(page)

    assert any(text.startswith("Executing ") for text in texts), texts
    assert [(m.level, m.text) for m in page.action_messages.messages] == [
        ("info", f"The report of {coord} was cancelled; no report was written.")]
    assert page.result_text == "" and page.report_path is None and page.report_link.value == ""
    folder = services.reports.default_dir(coord)
    assert not folder.exists() or list(folder.iterdir()) == []
    assert not page.busy and not page.report_button.disabled


def test_a_served_page_links_to_the_served_reports_read_only_too(
    services: ServiceContainer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from runtool.services.reports import REPORT_DIR, report_stem

    coord = pick_run(services)
    monkeypatch.setenv("RUNTOOL_SERVED", "1")
    assert open_page(services, coord).report_link.value == ""
    folder = services.config.processed_root.joinpath(*coord.to_path_tuple(), REPORT_DIR)
    folder.mkdir(parents=True)
    (folder / f"{report_stem(coord)}.html").write_text("<title>report</title>", encoding="utf-8")
    reader = open_page(ServiceContainer(services.config, read_only=True), coord)
    assert reader.report_button is None
    link = reader.report_link.value
    href = f"../../runtool/reports/{coord.to_path_str().replace(':', '%3A')}/{REPORT_DIR}/{report_stem(coord)}.html"
    assert f'href="{href}" target="_blank" rel="noopener">Open report</a>' in link
    assert "data:" not in link and str(folder) not in link
    assert reader.report_path == folder / f"{report_stem(coord)}.html"


def test_a_run_without_raw_bags_offers_no_report_and_says_why(services: ServiceContainer) -> None:
    runs = services.data_state.all_runs()
    row = runs[(runs["raw_bags"] == 0) & (runs["ml_labels"] > 0)].iloc[0]
    coord = RunCoordinate(*(str(row[c]) for c in ("cid", "regionid", "fieldid", "twid", "lbid", "timestamp")))
    page = open_page(services, coord)
    assert page.report_button is not None and page.report_button.disabled
    assert page.report_note.value == (
        "No report: this run has ML samples but no raw bags, so there is nothing to analyse.")
    assert page.report_link.value == ""
    assert page.analysis_hint.value == (
        "No analysis: this run has ML samples but no raw bags, so there is nothing to analyse.")


def test_a_local_bag_of_the_wrong_size_is_downloaded_again_not_extracted(services: ServiceContainer) -> None:
    coord = pick_run(services)
    services.transfers.execute(services.transfers.plan_raw_download(coord))
    bags = sorted(local_raw_dir(services.config.raw_root, coord).glob("rosbag_*.bag"))
    size = bags[1].stat().st_size
    bags[1].write_bytes(b"cut short")
    services.local.refresh_run(coord)

    page = open_page(services, coord)
    assert page.next_action_text == "Preview re-download of 1 bag (size differs)"
    assert page.download is not None and page.download.conflict.value == "verify"
    assert page.extract_button is not None and page.extract_button.disabled  # not extracted as it is
    assert "size differs" in page.extract_button.tooltip
    assert update_button(page).description == (
        f"Bring up to date: download 1 bag ({format_bytes(size)}), extract, analyse")
    assert page.next_action is not None
    page.next_action.click()
    run_idle(page)
    assert page.plan is not None and page.plan.conflict == "verify"
    assert [file.path for file in page.plan.to_transfer] == [bags[1]]
    assert page.next_action_text == page.plan.describe()
    page.next_action.click()
    run_idle(page)
    assert bags[1].stat().st_size == size
    assert ">synced</span>" in cards(page)["local"] and page.next_action_text == "Extract 3 bags"
    assert not page.extract_button.disabled


# -- read-only and errors --------------------------------------------------------------------------


def test_read_only_shows_state_and_the_cached_analysis_without_any_button(
    demo_fleet: SeededFleet, tmp_path: Path
) -> None:
    config = private_config(demo_fleet, tmp_path / "data")
    writer = ServiceContainer(config)
    writer.inventory.refresh()
    analysed, extracted = pick_run(writer, bags=3), pick_run(writer, bags=2)
    for coord in (analysed, extracted):
        download_and_extract(writer, coord)
    kpis = writer.analytics.analyze_run(analysed).kpis

    reader = ServiceContainer(config, read_only=True)
    page = open_page(reader, analysed)
    assert page.kpis == expected_kpis(kpis)
    assert [w for w in descendants(page.widget) if isinstance(w, widgets.Button)] == []
    for css in ("rt-next-action", "rt-bring-up-to-date", "rt-download-preview", "rt-download-execute", "rt-extract",
                "rt-report", "rt-cancel"):
        assert not with_class(page.widget, css), css
    assert page.next_action_text == "The run is complete: downloaded, extracted and analysed."

    page.set_filters(extracted.to_filters())
    assert page.coordinate == extracted and page.kpis == {}
    assert "read-only" in page.analysis_hint.value and "runtool analyze" in page.analysis_hint.value
    assert page.next_action_text == "Next step: analyze (not available here: this server is read-only)."
    page.start_extract()
    assert page.messages.messages[0].text == "Extracting is not possible here: this server is read-only."
    page.bring_up_to_date()
    assert page.messages.messages[0].text == ("Bringing the run up to date is not possible here: this server is "
                                              "read-only.")


def test_download_failures_become_a_message_with_details(demo_fleet: SeededFleet, tmp_path: Path) -> None:
    page = page_with_a_blocked_raw_root(demo_fleet, tmp_path)
    assert page.download is not None
    page.start_download()  # as a script would: the button is not offered before a preview
    assert page.download_messages.messages[0].text.startswith("Preview the download first")
    page.preview_download(bags=["no-such-bag.bag"])
    assert page.download_messages.messages[0].text == "This run has no bag named no-such-bag.bag; pick from the list."
    page.download.preview_button.click()
    assert page.wait_idle(WAIT_S)
    page.download.execute_button.click()
    assert page.wait_idle(WAIT_S)
    assert page.result_text.endswith("3 failed") and page.messages.messages == []
    error = page.download_messages.messages[0]
    assert error.level == "error"
    assert error.text.startswith(f"3 bags of {page.coordinate} could not be downloaded (")
    assert error.details is not None and error.details.count(": ") >= 3


def test_an_extraction_error_is_a_short_sentence_with_every_bag_in_its_details(services: ServiceContainer) -> None:
    coord = pick_run(services, bags=3)
    services.transfers.execute(services.transfers.plan_raw_download(coord))
    bags = sorted(local_raw_dir(services.config.raw_root, coord).glob("rosbag_*.bag"))
    bags[0].write_bytes(b"")  # rosbags names an empty file by its path
    for bag in bags[1:]:
        bag.write_bytes(b"\0" * 64)
    services.local.refresh_run(coord)
    page = open_page(services, coord)
    page.start_extract()
    assert page.wait_idle(WAIT_S)
    assert page.messages.messages == []
    (error,) = page.extract_messages.messages
    # One sentence: how many of how many, the first bag and its reason, how many more; no traceback, no paths.
    assert error.level == "error"
    assert error.text.startswith(f"None of the 3 bags of {coord} could be read, so the previous output is kept: "
                                 f"{bags[0].stem} (The bag could not be opened: ")
    assert error.text.endswith(f"{bags[0].name!r} seems to be empty) and 2 more.")
    assert bags[1].stem not in error.text and str(services.config.raw_root) not in error.text
    # Every bag with its reason one click away, still without the server's paths.
    assert error.details is not None
    assert [line.split(": ", 1)[0] for line in error.details.splitlines()] == [bag.stem for bag in bags]
    assert str(services.config.raw_root) not in error.details
    assert page.next_action_text == "Preview re-download of 3 bags (size differs)" and not page.busy


# -- chart helpers ---------------------------------------------------------------------------------


def test_downsampling_keeps_every_buckets_extremes() -> None:
    values = np.full(100_000, 30.0)
    values[12_345] = 2.0
    values[77_777] = 59.0
    values[50_000:50_100] = float("nan")
    index, reduced = downsample(values, 5_000)
    assert len(index) <= 5_000 and list(index) == sorted(index)
    assert 12_345 in index and 77_777 in index
    assert np.nanmin(reduced) == 2.0 and np.nanmax(reduced) == 59.0
    assert np.isnan(reduced).any(), "the gap stays a gap"
    short_index, short = downsample(values[:10], 5_000)
    assert list(short_index) == list(range(10)) and list(short) == list(values[:10])


def test_fixed_width_histograms_include_negative_values_and_widen_when_needed() -> None:
    latency = width_histogram(pd.Series([-25.0, -1.0, 3.0, 14.0]), 10.0)
    assert list(latency.edges) == [-30.0, -20.0, -10.0, 0.0, 10.0, 20.0]
    assert list(latency.counts) == [1, 0, 1, 1, 1]
    wide = width_histogram(pd.Series([0.0, 10_000.0]), 5.0, start=0.0)
    assert len(wide.counts) <= 200 and wide.total == 2
