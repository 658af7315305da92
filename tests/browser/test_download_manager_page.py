"""The download manager (03_download_manager.ipynb) in a real chromium: filter, tick rows, preview, execute.

Like the per-run test, this module serves the demo fleet's buckets from its own ``runtool serve`` with a
private data folder, so its downloads do not change what other tests read. Expected values come from a
ServiceContainer on the same config.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image
from playwright.sync_api import expect

from runtool.formatting import format_count, format_time
from runtool.models import Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.services.datasets import DatasetOptions
from runtool.storage import local_raw_dir
from runtool.ui.inventory_grid import COLUMNS, InventoryGrid, inventory_rows
from runtool.ui.labels import distinct_laser_box_names
from runtool.ui.query import run_url, selection_query
from tests.browser.conftest import VoilaServer, poll, screenshot
from tests.browser.test_per_run_page import assert_no_traceback

pytestmark = pytest.mark.browser

PAGE = "03_download_manager.ipynb"
PER_RUN = "02_per_run_analysis.ipynb"
WAIT_S = 60.0
HEADER_PX = 20
ROW_PX = 24
"""The grid's column header and row heights (ipydatagrid's base_column_header_size, our base_row_size)."""


def settled_box(locator: Any) -> dict[str, float]:
    """``locator``'s bounding box once the page has laid it out again (unchanged over 0.2 s): a box read at once
    after the window changed size may be the old layout's, and a click there lands on a row instead of a header."""
    boxes = [locator.bounding_box()]

    def settled() -> bool:
        time.sleep(0.2)
        boxes.append(locator.bounding_box())
        return boxes[-1] is not None and boxes[-1] == boxes[-2]

    poll(settled, WAIT_S, interval=0, what="the grid laid out at the new window size")
    box: dict[str, float] = boxes[-1]
    return box


def start_column_x(overview: pd.DataFrame) -> float:
    """The middle of the "Start (UTC)" column, after the "Laser box" column (as wide as its longest name)."""
    names = distinct_laser_box_names(overview["lb_key"].astype(str).unique().tolist())
    widths = InventoryGrid.widths(inventory_rows(overview, "raw", names))
    return widths["Laser box"] + widths["Start (UTC)"] / 2


def busiest_laser_box(services: ServiceContainer) -> Filters:
    """The laser box with the most runs whose bags are in the cloud and not on disk."""
    runs = services.data_state.runs()
    waiting = runs[runs["raw_sync"] == "cloud_only"]
    lb_key = waiting["lb_key"].value_counts().index[0]
    return Filters(**dict(zip(("cid", "regionid", "fieldid", "twid", "lbid"), str(lb_key).split("/"), strict=True)))


def click_row(page: Any, row: int, modifiers: list[str] | None = None) -> None:
    """Click the ``row``-th row shown in the grid (its canvas has no DOM rows)."""
    box = page.locator(".rt-inventory-grid").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 60, box["y"] + HEADER_PX + ROW_PX * row + ROW_PX / 2)
    for key in modifiers or []:
        page.keyboard.down(key)
    page.mouse.click(box["x"] + 60, box["y"] + HEADER_PX + ROW_PX * row + ROW_PX / 2)
    for key in modifiers or []:
        page.keyboard.up(key)


def test_filter_tick_preview_and_execute_turn_runs_synced(page: Any, server: VoilaServer,
                                                          services: ServiceContainer) -> None:
    filters = busiest_laser_box(services)
    overview = services.data_state.state_overview(filters)
    waiting = inventory_rows(overview, "raw", {})
    waiting = waiting[waiting["sync"] == "cloud_only"]
    assert len(waiting) >= 2, "the demo fleet has a laser box with two runs to download"

    page.goto(server.url(PAGE, selection_query(filters)))
    page.wait_for_selector(".rt-page-download-manager", state="visible")
    expect(page.locator(".rt-view-table")).to_be_visible(timeout=WAIT_S * 1000)
    expect(page.locator(".rt-inventory-grid canvas").first).to_be_visible()
    expect(page.locator(".rt-kpi-value").first).to_have_text(str(len(overview)))
    assert_no_traceback(page)
    screenshot(page, "download-manager-start")

    # Filter to the runs not downloaded: the grid and the status line follow.
    page.locator(".rt-status-filter button", has_text="Not downloaded").click()
    counts = page.locator(".rt-status-counts")
    # The counts, then what the Issues column lists on this side.
    expect(counts).to_have_text(re.compile(rf"^Shown: not downloaded {len(waiting)} · Issues: of the raw bags"))
    expect(page.locator(".rt-selection-line")).to_contain_text(f"{len(waiting)} runs shown; none selected")

    # Tick the two newest runs (the grid lists newest first), one click after the other as a user would. The grid
    # stays where it was: the links to the selected runs above it appeared with the first row and pushed it 28 px
    # down, so a quick second click landed on the first row and Ctrl toggled it off ("1 of 4", then "none selected").
    grid_top = page.locator(".rt-inventory-grid").bounding_box()["y"]
    click_row(page, 0)
    click_row(page, 1, ["Control"])
    expect(page.locator(".rt-selection-line")).to_have_text(f"2 of {len(waiting)} runs selected")
    expect(page.locator(".rt-run-links a")).to_have_count(2)
    assert page.locator(".rt-inventory-grid").bounding_box()["y"] == grid_top
    download = page.locator("button.rt-preview-download")
    expect(download).to_have_text("Preview download (2 of 2 runs)")
    screenshot(page, "download-manager-selected")

    chosen = list(waiting.index[:2])
    bulk = services.transfers.plan_bulk("raw_download", [RunCoordinate.parse(c) for c in chosen])
    download.click()
    execute = page.locator("button.rt-transfer-execute")
    expect(execute).to_have_text(bulk.describe(), timeout=WAIT_S * 1000)
    preview_rows = page.locator(".rt-transfer-preview tbody tr")
    expect(preview_rows).to_have_count(2)
    # Each preview line opens its run on the per-run page; the full coordinate is on hover.
    first = preview_rows.first.locator("a")
    expect(first).to_have_attribute("href", run_url(RunCoordinate.parse(chosen[0])))
    expect(first).to_have_attribute("title", chosen[0])
    screenshot(page, "download-manager-preview")

    execute.click()
    result = page.locator(".rt-transfer-result")
    expect(result).to_contain_text("2 runs complete, 0 with failures, 0 not started", timeout=WAIT_S * 1000)
    expect(result).to_contain_text(f"{format_count(bulk.files_to_transfer)} files")
    # The table redrew itself: the two runs left the "Not downloaded" view and show as synced under All.
    expect(counts).to_have_text(re.compile(rf"^Shown: not downloaded {len(waiting) - 2} · "))
    page.locator(".rt-status-filter button", has_text="All").click()
    expect(counts).to_contain_text(re.compile(r"synced 2\b"))
    for path in chosen:
        folder = local_raw_dir(services.config.raw_root, RunCoordinate.parse(path))
        assert sorted(p.name for p in folder.glob("rosbag_*.bag"))
    assert_no_traceback(page)
    screenshot(page, "download-manager-done")

    # ML samples: which files to move is two checkboxes on the form's line, both ticked, their labels whole.
    page.locator(".rt-family button", has_text="ML samples").click()
    expect(counts).to_contain_text("Issues: of the ML samples")
    kinds = page.locator(".rt-ml-kinds input[type=checkbox]")
    expect(kinds).to_have_count(2)
    assert [kinds.nth(i).is_checked() for i in range(2)] == [True, True]
    expect(page.locator(".rt-ml-kinds")).to_contain_text("Frames")
    cut = page.eval_on_selector_all(".rt-ml-kinds label, .rt-ml-kinds .widget-label-basic",
                                    "labels => labels.filter(l => l.scrollWidth > l.clientWidth + 1).length")
    assert cut == 0
    screenshot(page, "download-manager-ml-samples")


def test_read_only_is_the_inventory_view_alone(page: Any, config_path: Path, services: ServiceContainer) -> None:
    reader = VoilaServer(config_path, read_only=True)
    try:
        page.goto(reader.url(PAGE, selection_query(busiest_laser_box(services))))
        expect(page.locator(".rt-view-table")).to_be_visible(timeout=WAIT_S * 1000)
        expect(page.locator(".rt-inventory-grid canvas").first).to_be_visible()
        for css in ("rt-action-tabs", "rt-preview-download", "rt-preview-upload", "rt-execute", "rt-dataset-fetch",
                    "rt-select-all", "rt-clear-selection"):
            expect(page.locator(f".{css}")).to_have_count(0)
        assert_no_traceback(page)
        screenshot(page, "download-manager-read-only")
    finally:
        reader.stop()


def test_the_dataset_tab_plans_live_and_fetches(page: Any, server: VoilaServer, services: ServiceContainer) -> None:
    filters = busiest_laser_box(services)
    plan = services.datasets.plan_dataset_fetch("browser", filters, DatasetOptions())
    assert plan.samples, "the demo fleet's busiest laser box has labelled samples"
    page.goto(server.url(PAGE, selection_query(filters)))
    expect(page.locator(".rt-view-table")).to_be_visible(timeout=WAIT_S * 1000)
    page.locator(".rt-action-tabs .lm-TabBar-tab", has_text="Fetch a dataset").click()
    name = page.locator(".rt-dataset-form input[type=text]").first
    name.fill("browser")
    name.press("Enter")
    fetch = page.locator("button.rt-dataset-fetch")
    expect(page.locator(".rt-dataset-plan")).to_contain_text(f"{format_count(len(plan.samples))} samples from",
                                                              timeout=WAIT_S * 1000)
    expect(fetch).to_have_text(re.compile(rf"^Fetch {format_count(len(plan.samples))} samples .* into browser$"))
    screenshot(page, "download-manager-dataset-plan")
    fetch.click()
    result = page.locator(".rt-dataset-result")
    n = format_count(len(plan.samples))
    expect(result).to_contain_text(f"browser holds {n} samples", timeout=WAIT_S * 1000)
    expect(result).to_contain_text(f"{n} labels copied from the labels read while planning")
    root = services.config.ml_root / "trainings" / "browser"
    assert len(list(root.glob("images/*/*"))) == len(plan.samples)
    assert_no_traceback(page)
    screenshot(page, "download-manager-dataset-fetched")


def test_a_header_click_sorts_without_selecting_and_the_csv_is_the_table_shown(
    page: Any, server: VoilaServer, services: ServiceContainer
) -> None:
    overview = services.data_state.state_overview(Filters())
    page.set_viewport_size({"width": 1280, "height": 800})  # a laptop's window
    page.goto(server.url(PAGE))
    expect(page.locator(".rt-inventory-grid canvas").first).to_be_visible(timeout=WAIT_S * 1000)
    line = page.locator(".rt-selection-line")
    expect(line).to_contain_text(f"{format_count(len(overview))} runs shown; none selected")
    # Every column fits the window, a 1280 px wide one too: none is cut at the grid's edge (the last was, mid-word,
    # without a "…"; below 1400 px the grid scrolled sideways), and the cards above keep one row.
    expect(page.locator(".rt-inventory-grid .lm-DataGrid-scrollBar[data-orientation=horizontal]")).to_be_hidden()
    tops = {round(card.bounding_box()["y"]) for card in page.locator(".rt-kpi").all()}
    assert len(tops) == 1, tops
    screenshot(page, "download-manager-all-1280")
    page.set_viewport_size({"width": 1400, "height": 1000})
    box = settled_box(page.locator(".rt-inventory-grid"))
    start_x = box["x"] + start_column_x(overview)
    page.mouse.click(start_x, box["y"] + HEADER_PX / 2)  # oldest first
    csv_link = page.locator("a.rt-csv")
    expect(csv_link).to_have_text(f"Download these {format_count(len(overview))} runs as CSV")
    starts = sorted(overview["start_time"].dt.strftime("%Y-%m-%d %H:%M"))

    def downloaded(order: list[str]) -> pd.DataFrame:
        """The CSV once it lists the runs in ``order`` (the grid reports its new order a moment after sorting)."""
        def attempt() -> list[pd.DataFrame]:
            with page.expect_download() as download:
                csv_link.click()
            table = pd.read_csv(download.value.path())
            return [table] if list(table["Start (UTC)"]) == order else []

        return poll(attempt, WAIT_S, interval=1.0, what="the CSV in the order the grid shows")[0]

    # The grid sorted (the CSV follows the order shown) and nothing was selected by the click.
    table = downloaded(starts)
    assert list(table.columns) == [*(c.replace(" size", " bytes") for c in COLUMNS), "Run"]
    assert set(table["Run"]) == set(inventory_rows(overview, "raw", {}).index)
    expect(line).to_contain_text("none selected")
    box = settled_box(page.locator(".rt-inventory-grid"))  # the CSV link's click may have scrolled the page
    page.mouse.click(box["x"] + start_column_x(overview), box["y"] + HEADER_PX / 2)  # newest first
    page.wait_for_timeout(1000)
    expect(line).to_contain_text("none selected")
    second = RunCoordinate.parse(downloaded(starts[::-1])["Run"].iloc[1])
    # A row click still selects, and offers the run's per-run page.
    click_row(page, 0)
    expect(line).to_have_text(f"1 of {format_count(len(overview))} runs selected")
    expect(page.locator(".rt-run-links a")).to_have_count(1)
    assert_no_traceback(page)
    screenshot(page, "download-manager-sorted-one-selected")
    # One click on a start time opens that run (the second row: the sort, not the data order, decides which).
    box = page.locator(".rt-inventory-grid").bounding_box()  # moved down: the selected run's link is above it
    assert box is not None
    page.mouse.click(box["x"] + start_column_x(overview), box["y"] + HEADER_PX + ROW_PX * 1.5)
    page.wait_for_url(lambda url: f"/{PER_RUN}?" in url, wait_until="commit", timeout=WAIT_S * 1000)
    assert page.url.endswith(f"/{run_url(second)}"), (page.url, run_url(second))
    expect(page.locator(".rt-page-per-run .rt-view-run")).to_be_visible(timeout=WAIT_S * 1000)
    expect(page.locator(".rt-run-picker select option:checked")).to_have_text(
        format_time(second.start_time))


def test_an_unknown_export_id_is_a_sentence_in_its_tab(page: Any, server: VoilaServer) -> None:
    page.goto(server.url(PAGE))
    expect(page.locator(".rt-view-table")).to_be_visible(timeout=WAIT_S * 1000)
    page.locator(".rt-action-tabs .lm-TabBar-tab", has_text="Upload an export").click()
    page.locator(".rt-export-id input").fill("exp_nope")
    page.locator("button.rt-preview-export").click()
    # This server tracks no export at all: the sentence says so, without a server path or a traceback.
    message = page.locator(".rt-export-messages .rt-message-error")
    expect(message).to_contain_text("No labelling export is tracked on this server yet", timeout=WAIT_S * 1000)
    expect(message).not_to_contain_text("/tmp/")
    expect(message.locator(".rt-message-details")).to_have_count(0)
    expect(page.locator(".rt-page > .rt-messages .rt-message")).to_have_count(0)
    assert "Traceback" not in page.content()
    screenshot(page, "download-manager-export-unknown-id")
    page.locator(".rt-action-tabs .lm-TabBar-tab", has_text="Transfer runs").click()
    expect(page.locator(".rt-export-messages .rt-message")).to_have_count(0)


_SHOW_WIDEST = """s => {
    const text = document.createElement("canvas").getContext("2d");
    text.font = getComputedStyle(s).font;
    const width = (option) => text.measureText(option.text).width;
    const widest = [...s.options].reduce((a, b) => width(b) > width(a) ? b : a);
    s.value = widest.value;
    return widest.text;
}"""
"""Show a dropdown's widest choice (the one its width is made for), without choosing it: no event reaches the kernel."""


def text_to_arrow_px(png: bytes) -> int:
    """The blank columns between a drawn dropdown's text and its arrow (the rightmost run of inked columns).

    Any pixel darker than the white background inks its column; the element's border (2 px each side) is left out.
    """
    image = Image.open(io.BytesIO(png)).convert("L")
    width, height = image.size
    pixels = image.load()
    inked = [x for x in range(2, width - 2) if any(pixels[x, y] < 250 for y in range(2, height - 2))]
    arrow = inked[-1]
    while arrow - 1 in inked:
        arrow -= 1
    text = [x for x in inked if x < arrow]
    assert text, "the dropdown shows a text left of its arrow"
    return arrow - text[-1] - 1


def test_dropdown_texts_keep_clear_of_their_arrows(page: Any, server: VoilaServer, services: ServiceContainer) -> None:
    """The filter bar's dropdowns are as wide as their longest choice: that choice ran into the arrow (review)."""
    page.goto(server.url(PAGE, selection_query(busiest_laser_box(services))))
    expect(page.locator(".rt-view-table")).to_be_visible(timeout=WAIT_S * 1000)
    page.locator(".rt-action-tabs .lm-TabBar-tab", has_text="Fetch a dataset").click()
    # The dataset's plan arrives after the tab shows and moves the conflict mode down: a screenshot taken during that
    # move caught the rows beside it instead (a 1 px "gap" in CI).
    expect(page.locator(".rt-dataset-plan")).to_contain_text("samples from", timeout=WAIT_S * 1000)
    selects = [s for s in page.locator(".rt-page .widget-dropdown select").all() if s.is_visible()]
    assert len(selects) >= 6  # the five filters and the dataset's conflict mode
    gaps = {}
    for select in selects:
        longest = select.evaluate(_SHOW_WIDEST)
        select.scroll_into_view_if_needed()
        gaps[longest] = text_to_arrow_px(page.screenshot(clip=settled_box(select)))
    screenshot(page, "download-manager-dropdowns")
    assert min(gaps.values()) >= 8, gaps
