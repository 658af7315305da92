"""The download manager page against the real emulator: table, status filter, bulk transfers, export, dataset."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import time

import pandas as pd
import pytest

from runtool.config import RuntoolConfig
from runtool.formatting import format_bytes
from runtool.models import Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.storage import local_ml_dir, local_raw_dir, make_client, ml_file_key
from runtool.ui import DownloadManagerPage
from runtool.ui.bulk_panel import _RunNames
from runtool.ui.inventory_grid import COLUMNS, STATUS_FILTERS
from runtool.ui.query import run_url, selection_query

from .conftest import FLEET, seed
from .widget_tree import with_class

WITH_BAGS = [s for s in FLEET if s.bags]
WITH_ML = [s for s in FLEET if s.labels or s.frames]


def _statuses(page: DownloadManagerPage) -> dict[str, str]:
    return dict(zip(page.rows.index, page.rows["Status"], strict=True))


def test_the_table_shows_each_runs_state_for_the_side_chosen(services: ServiceContainer) -> None:
    page = DownloadManagerPage(services, query="cid=c1")
    assert page.view == "table" and len(page.grid.rows) == len(FLEET)
    # Totals over the selection (nothing is on disk yet).
    assert page.kpis["Runs"] == str(len(FLEET))
    assert page.kpis["Bags cloud / local"] == f"{sum(s.bags for s in FLEET)} / 0"
    assert page.kpis["Samples cloud / local"] == f"{sum(s.labels for s in FLEET)} / 0"
    statuses = _statuses(page)
    ml_only = next(s for s in FLEET if not s.bags).coordinate.to_path_str()
    assert statuses[ml_only] == "missing"
    assert sum(v == "not downloaded" for v in statuses.values()) == len(WITH_BAGS)
    assert "ML only: samples without raw bags" in page.rows.loc[ml_only, "Issues"]
    # Newest first, and the grid holds the same rows.
    assert list(page.rows["Start (UTC)"]) == sorted(page.rows["Start (UTC)"], reverse=True)
    assert len(page.grid.grid.data) == len(FLEET)
    assert page.status_filter.options == STATUS_FILTERS["raw"]
    # Laser boxes named by what tells them apart (not c1/r1/f1/…), the full coordinate in the Run column.
    assert set(page.rows["Laser box"]) == {"lb01", "lb02", "lb03"}
    assert list(page.rows["Run"]) == list(page.rows.index)
    listed = list(page.rows.index[page.rows["Issues"] != ""])
    assert ml_only in listed
    assert page.kpis["Issues"] == str(len(listed))  # the card counts the runs whose Issues column lists something
    # Each side's Issues column lists that side's problems only: here the raw bags' (the ML side's frames without
    # labels are on its own tab), and the caption under the table says so.
    all_labelled, under = (FLEET[0].coordinate.to_path_str(), FLEET[1].coordinate.to_path_str())
    assert page.rows.loc[under, "Issues"] == "Under-labelled: 25.0 % < 80 %"
    assert page.rows.loc[all_labelled, "Issues"] == ""
    assert "Issues: of the raw bags" in page.status_counts.value

    assert under in listed and all_labelled not in listed
    page.status_filter.value = "Issues"
    assert list(page.rows.index) == listed  # and the Issues filter keeps the same runs
    assert "status=Issues" in page.view_link.value

    page.family.value = "ml"
    assert page.status_filter.options == STATUS_FILTERS["ml"] and page.status_filter.value == "All"
    # A run nobody labelled yet is not an issue on the ML side: grey "no samples yet", not "missing".
    unlabelled = next(s for s in FLEET if not s.labels and not s.frames).coordinate.to_path_str()
    assert _statuses(page)[unlabelled] == "no samples yet"
    assert page.rows.loc[all_labelled, "Issues"] == "2 frames without labels"
    assert page.rows.loc[under, "Issues"] == page.rows.loc[ml_only, "Issues"] == ""
    assert not page.rows["Issues"].str.contains("Under-labelled|ML only|Bag").any()
    assert "Issues: of the ML samples" in page.status_counts.value
    listed = list(page.rows.index[page.rows["Issues"] != ""])
    assert all_labelled in listed and under not in listed  # frames without labels; under-labelled is raw's
    assert page.kpis["Issues"] == str(len(listed))
    page.status_filter.value = "Issues"
    assert list(page.rows.index) == listed
    page.status_filter.value = "All"
    page.status_filter.value = "Not downloaded"
    assert len(page.rows) == len(WITH_ML)
    assert set(page.rows["Status"]) == {"not downloaded"}
    assert "family=ml" in page.view_link.value
    # The link brings the same view back.
    again = DownloadManagerPage(services, query="cid=c1&family=ml&status=Not+downloaded")
    assert list(again.rows.index) == list(page.rows.index)


@pytest.mark.parametrize(
    ("query", "family", "said"),
    [
        ("family=xyz&status=bogus", "raw", ["The link's family 'xyz' is not raw or ml, so the raw bags are shown.",
                                           "The link's status filter 'bogus' is not one of the raw bags' (All, "
                                           "Not downloaded, Local only, Issues), so All is shown."]),
        # A filter of the other side: ML samples are never "local only", they are "not uploaded".
        ("family=ml&status=Local+only", "ml", ["The link's status filter 'Local only' is not one of the ML samples' "
                                               "(All, Not downloaded, Not uploaded, Issues), so All is shown."]),
    ],
)
def test_a_bad_side_or_status_in_the_link_is_said_in_the_banner(services: ServiceContainer, query: str,
                                                                 family: str, said: list[str]) -> None:
    """The page showed the raw bags under All without a word (hostile review at the medium preset)."""
    page = DownloadManagerPage(services, query=f"cid=c1&{query}")
    assert (page.family.value, page.status_filter.value, page.view) == (family, "All", "table")
    assert [(m.level, m.text) for m in page.messages.messages] == [("error", text) for text in said[::-1]]  # newest 1st
    # The page's own link carries what is shown, not what the bad link said.
    assert "xyz" not in page.view_link.value and "status=" not in page.view_link.value


def test_the_download_manager_says_why_a_selection_is_empty(services: ServiceContainer) -> None:
    page = DownloadManagerPage(services, query="")
    page.set_filters(Filters(cid="c1", regionid="elsewhere"))
    assert page.view == "empty"
    assert page.empty_text.startswith("No runs under c1 → elsewhere → All. Pick another region")


def test_selected_runs_are_previewed_downloaded_and_turn_synced(services: ServiceContainer) -> None:
    page = DownloadManagerPage(services, query="cid=c1&regionid=r1&fieldid=f1&twid=t1&lbid=lb01")
    page.status_filter.value = "Not downloaded"
    chosen = list(page.rows.index[:2])
    page.grid.select_runs(chosen)
    assert page.grid.selected_runs() == chosen
    assert "2 of" in page.selection_line.value
    assert page.download_button.description == "Preview download (2 of 2 runs)"
    # Each selected run is a link away from its per-run page.
    links = [html.unescape(href) for href in re.findall(r'href="([^"]+)"', page.run_links.value)]
    assert links == [run_url(RunCoordinate.parse(c)) for c in chosen]
    page.preview("download")
    assert page.wait_idle(60)
    plan = page.transfer_panel.plan
    assert plan is not None and [p.coordinate.to_path_str() for p in plan.plans] == chosen
    bags = sum(s.bags for s in FLEET if s.coordinate.to_path_str() in chosen)
    assert plan.files_to_transfer == bags
    assert page.transfer_panel.execute_button.description.startswith(f"Download {bags} files")
    assert page.grid.selected_runs() == chosen  # a preview changes nothing, so the rows stay ticked
    preview = page.transfer_panel.preview.value
    assert preview.count("02_per_run_analysis.ipynb?") == 2 and "lb01 · 2025-" in preview

    page.execute(page.transfer_panel)
    assert page.wait_idle(60)
    assert "2 runs complete, 0 with failures" in page.transfer_panel.result.value
    # The table redrew itself: the two runs left the "Not downloaded" view, and are synced under "All".
    assert not set(chosen) & set(page.rows.index)
    page.status_filter.value = "All"
    statuses = _statuses(page)
    assert [statuses[c] for c in chosen] == ["synced", "synced"]
    assert sum(v == "synced" for v in statuses.values()) == 2

    # A raw preview is not offered for execution once the ML side is shown.
    page.preview("download")
    assert page.wait_idle(60) and page.transfer_panel.plan is not None
    page.family.value = "ml"
    assert page.transfer_panel.plan is None and page.transfer_panel.result.value == ""
    assert page.transfer_panel.execute_button not in page.transfer_panel.widget.children


@pytest.mark.parametrize("read_only", [False, True])
def test_the_grid_help_stays_put_and_the_selection_line_is_short(services: ServiceContainer, read_only: bool) -> None:
    """The help sentence sat in the selection line: at 1024 px that line wrapped onto two until the first row was
    selected, then shrank, and the grid jumped up under the mouse (review at the medium preset)."""
    page = DownloadManagerPage(ServiceContainer(services.config, read_only=True) if read_only else services,
                               query="cid=c1")
    assert page.read_only is read_only
    help_text = page.grid_help.value
    assert "Click a start time" in help_text and page.grid_help in page.table_view.children
    assert ("a row to select it" in help_text) is not read_only
    lines = [page.selection_line.value]
    if not read_only:
        page.grid.select_all()
        lines.append(page.selection_line.value)
        assert "selected" in lines[-1]
    assert all("Click" not in line and len(line) < 90 for line in lines), lines
    assert page.grid_help.value == help_text


def test_a_link_to_one_run_selects_that_run_so_an_operation_covers_it_alone(services: ServiceContainer) -> None:
    """From the per-run page the header link keeps the run; the page showed its whole laser box with none selected,
    so "Preview download" covered every run of it (review at the medium preset)."""
    run = WITH_BAGS[0].coordinate
    page = DownloadManagerPage(services, query=run_url(run).partition("?")[2])
    assert page.grid.selected_runs() == [run.to_path_str()]
    assert len(page.grid.rows) > 1  # its laser box has other runs: none of them is selected
    assert "1 of" in page.selection_line.value
    page.preview("download")
    assert page.wait_idle(60)
    plan = page.transfer_panel.plan
    assert plan is not None and [p.coordinate for p in plan.plans] == [run]


@pytest.mark.parametrize("levels", [0, 4])
def test_a_link_to_a_time_no_run_matches_is_one_sentence_and_selects_nothing(services: ServiceContainer,
                                                                            levels: int) -> None:
    """A link naming a run's time but not every level, that no run matches: the banner says so in one sentence (the
    page raised "coordinate is missing cid, …" with a traceback under "Details", twice; hostile review)."""
    run = WITH_BAGS[0].coordinate
    filters = Filters(**dict(list(run.to_filters().to_dict().items())[:levels]), timestamp="2020_01_01T00:00:00Z")
    page = DownloadManagerPage(services, query=selection_query(filters))
    assert [(m.level, m.details) for m in page.messages.messages] == [("error", None)]
    assert "so the run is not shown" in page.messages.messages[0].text
    assert page.grid.selected_runs() == [] and len(page.grid.rows) > 1


def test_with_no_row_selected_an_operation_covers_every_run_shown(services: ServiceContainer) -> None:
    page = DownloadManagerPage(services, query="cid=c1&status=Not+downloaded")
    assert page.grid.selected_runs() == []
    assert "none selected" in page.selection_line.value
    page.preview("download")
    assert page.wait_idle(60)
    plan = page.transfer_panel.plan
    assert plan is not None
    assert {p.coordinate.to_path_str() for p in plan.plans} == {s.coordinate.to_path_str() for s in WITH_BAGS}
    page.grid.select_all()
    assert len(page.grid.selected_runs()) == len(WITH_BAGS)
    page.grid.clear()
    assert page.grid.selected_runs() == []


@pytest.fixture
def writable(fresh_config: RuntoolConfig) -> ServiceContainer:
    """Services over private buckets holding FLEET (tests may upload into them)."""
    config = fresh_config.with_overrides(expected_samples_per_bag=4.0)
    seed(make_client(emulator_host=config.emulator_host), config.raw_bucket, config.ml_bucket, FLEET)
    container = ServiceContainer(config)
    container.inventory.refresh()
    return container


LOCAL_RUN = RunCoordinate.parse("c1/r1/f1/t1/lb01/2025_09_01T08:00:00Z")


def _label_locally(config: RuntoolConfig, run: RunCoordinate, count: int = 3) -> None:
    labels = local_ml_dir(config.ml_root, run) / "rosbag_2025-09-01-08-00-00_0" / "labels"
    labels.mkdir(parents=True)
    for n in range(count):
        (labels / f"1756713600.{n:09d}.txt").write_text(f"{n} 0.5 0.5 0.1 0.1\n")


def test_ml_samples_only_on_disk_are_uploaded_from_the_page(writable: ServiceContainer) -> None:
    _label_locally(writable.config, LOCAL_RUN)
    writable.local.scan()
    page = DownloadManagerPage(writable, query="cid=c1&family=ml&status=Not+uploaded")
    assert list(page.rows.index) == [LOCAL_RUN.to_path_str()]
    page.kinds.value = ("frames",)  # the run has labels only: nothing to upload
    page.preview("upload")
    assert page.wait_idle(60)
    assert page.transfer_panel.plan is not None and page.transfer_panel.plan.files_to_transfer == 0
    page.kinds.value = ("frames", "labels")
    assert page.upload_button.description == "Preview upload (1 of 1 run)"
    assert page.download_button.disabled
    page.preview("upload")
    assert page.wait_idle(60)
    assert page.transfer_panel.plan is not None and page.transfer_panel.plan.files_to_transfer == 3
    page.execute(page.transfer_panel)
    assert page.wait_idle(60)
    keys = {b.name for b in make_client(emulator_host=writable.config.emulator_host)
            .list_blobs(writable.config.ml_bucket, prefix=f"raw/{LOCAL_RUN.to_path_str()}/")}
    assert keys == {ml_file_key(LOCAL_RUN, "_2025-09-01-08-00-00_0", "labels", f"1756713600.{n:09d}.txt")
                    for n in range(3)}
    # The upload rescanned the run: it is no longer "not uploaded", and shows synced under All.
    assert page.rows.empty
    page.status_filter.value = "All"
    assert _statuses(page)[LOCAL_RUN.to_path_str()] == "synced"


def _write_tracking(config: RuntoolConfig, document: object) -> None:
    path = config.ml_root / "raw" / ".export_tracking.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document if isinstance(document, str) else json.dumps(document))


def test_an_export_is_uploaded_by_its_id(writable: ServiceContainer) -> None:
    _label_locally(writable.config, LOCAL_RUN, count=2)
    _write_tracking(writable.config, {"exp_3": {"coordinates": ["c1/r1/f1/t1/lb01"], "samples": 2}})
    writable.local.scan()
    page = DownloadManagerPage(writable, query="cid=c1")
    assert page.tabs is not None
    page.tabs.selected_index = 1
    assert page.export_id.options == ("exp_3",)

    page.preview_export("exp_9")
    assert page.wait_idle(30)
    assert page.export_panel.plan is None
    # An expected error: a sentence in the tab, no traceback, nothing in the page's banner.
    [message] = page.export_messages.messages
    assert message.text.startswith("Unknown export id 'exp_9'") and message.details is None
    assert not page.messages.messages
    page.tabs.selected_index = 0
    assert not page.export_messages.messages
    page.tabs.selected_index = 1

    page.preview_export("exp_3")
    assert page.wait_idle(30)
    plan = page.export_panel.plan
    assert plan is not None and [p.coordinate for p in plan.plans] == [LOCAL_RUN] and plan.files_to_transfer == 2
    page.execute(page.export_panel)
    assert page.wait_idle(60)
    assert "1 run complete, 0 with failures" in page.export_panel.result.value

    _write_tracking(writable.config, "{broken")
    page.load_export_ids()
    assert page.export_id.options == ()
    assert "not valid JSON" in page.export_messages.messages[0].text


def test_the_dataset_form_shows_a_live_plan_then_fetches(services: ServiceContainer) -> None:
    page = DownloadManagerPage(services, query="cid=c1")
    assert page.tabs is not None
    page.dataset.name.value = "weeds"
    page.dataset.classes.value = "zero"
    page.plan_dataset()
    assert "Classes must be whole numbers" in page.dataset.plan_text.value
    assert page.dataset.fetch_button.disabled

    page.dataset.classes.value = ""
    page.dataset.val_fraction.value = 0.5
    shown: list[tuple[int, int]] = []  # the form's progress line while the labels are read
    show_planning = page.dataset.show_planning
    page.dataset.show_planning = lambda done, total: (shown.append((done, total)), show_planning(done, total))
    page.plan_dataset()
    assert page.wait_idle(60)
    plan = page.dataset.plan
    assert plan is not None and len(plan.samples) == sum(min(s.labels, s.frames) for s in FLEET)
    labels = sum(1 for s in plan.samples if s.label_key is not None)
    assert shown and shown[-1] == (labels, labels)
    assert not plan.runs_in("train") & plan.runs_in("val")
    assert f"Fetch {len(plan.samples)} samples" in page.dataset.fetch_button.description

    page.fetch_dataset()
    assert page.wait_idle(60)
    root = services.config.ml_root / "trainings" / "weeds"
    images = sorted(p.name for p in root.glob("images/*/*"))
    assert len(images) == len(plan.samples)
    n = len(plan.samples)  # a frame downloaded and a label from the plan's cache each
    result = html.unescape(page.dataset.result.value)
    assert "Done in" in result and f"weeds holds {n} samples" in result
    assert f"{n} files downloaded" in result and f"{n} labels copied from the labels read while planning" in result
    assert "kept" not in result  # nothing was there before
    assert json.loads((root / "manifest.json").read_text())["samples"]


def test_the_live_plan_follows_option_changes_by_itself(services: ServiceContainer) -> None:
    page = DownloadManagerPage(services, query="cid=c1")
    assert page.tabs is not None
    page.tabs.selected_index = 2
    page.dataset.max_samples.value = 2
    deadline = time.monotonic() + 30
    while (page.dataset.plan is None or len(page.dataset.plan.samples) != 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert page.dataset.plan is not None and len(page.dataset.plan.samples) == 2


def test_a_read_only_page_is_the_inventory_view_alone(fleet_config: RuntoolConfig) -> None:
    services = ServiceContainer(fleet_config.with_overrides(read_only=True))
    ServiceContainer(fleet_config).inventory.refresh()
    page = DownloadManagerPage(services, query="cid=c1")
    assert page.view == "table" and len(page.rows) == len(FLEET)
    assert page.tabs is None
    assert not with_class(page.widget, "rt-action-tabs") and not with_class(page.widget, "rt-execute")
    assert not with_class(page.widget, "rt-select-all") and "operations" not in page.selection_line.value
    page.preview("download")
    assert "read-only" in page.messages.messages[0].text


def test_a_run_on_disk_and_a_different_copy_in_the_cloud_is_a_mismatch(services: ServiceContainer) -> None:
    spec = WITH_BAGS[0]
    folder = local_raw_dir(services.config.raw_root, spec.coordinate)
    folder.mkdir(parents=True)
    (folder / "rosbag_2025-08-01-08-00-00_0.bag").write_bytes(b"different")
    services.local.scan()
    page = DownloadManagerPage(services, query="cid=c1&status=Issues")
    assert spec.coordinate.to_path_str() in page.rows.index
    assert page.rows.loc[spec.coordinate.to_path_str(), "Status"] == "mismatch"
    assert "Bag" in page.rows.loc[spec.coordinate.to_path_str(), "Issues"]


def test_a_header_click_sorts_and_keeps_the_selection(services: ServiceContainer) -> None:
    page = DownloadManagerPage(services, query="cid=c1")
    grid = page.grid
    chosen = list(page.rows.index[:1])
    grid.select_runs(chosen)
    # A click on the Status header: the grid reports it, then selects the whole column (= every row).
    grid._cell_clicked({"region": "column-header", "column": "Status"})
    grid.grid.selections = [{"r1": 0, "c1": 0, "r2": len(page.rows) - 1, "c2": len(COLUMNS) - 1}]
    assert grid.selected_runs() == chosen
    assert grid.sort == ("Status", False)
    assert grid.grid._transforms == [{"type": "sort", "column": "Status", "desc": False}]
    grid._cell_clicked({"region": "column-header", "column": "Status"})
    assert grid.sort == ("Status", True)
    # Select all shown still selects every row.
    page.select_all_button.click()
    assert len(grid.selected_runs()) == len(page.rows)


def test_a_click_on_a_start_time_opens_that_run_and_other_cells_do_not(services: ServiceContainer) -> None:
    page = DownloadManagerPage(services, query="cid=c1")
    assert page.opener is not None and page.opener in page.table_view.children
    page.grid._cell_clicked({"region": "body", "column": "Status", "row": 0})
    page.grid._cell_clicked({"region": "column-header", "column": "Start (UTC)", "row": 0})
    assert page.opener.opened == []
    # The clicked row is the one shown there: the grid sorted oldest first shows the last data row at the top.
    page.grid._cell_clicked({"region": "column-header", "column": "Start (UTC)", "row": 0})
    page.grid.grid._visible_rows = list(range(len(page.rows)))[::-1]
    page.grid._cell_clicked({"region": "body", "column": "Start (UTC)", "row": 0})
    assert page.opener.opened == [run_url(RunCoordinate.parse(page.rows.index[-1]))]


def test_text_columns_fit_their_longest_text_and_the_grid_fits_the_window(services: ServiceContainer) -> None:
    page = DownloadManagerPage(services, query="cid=c1")
    grid = page.grid
    widths = grid.grid.column_widths
    longest = int(page.rows["Issues"].str.len().max())
    assert widths["Issues"] >= longest * 7
    assert list(widths) == list(grid.grid.data.columns) == list(COLUMNS)  # the full coordinate is in the CSV only
    # An issue too long for the room the other columns leave ends in "…" rather than pushing the columns past the
    # window's edge (where the last one was cut in the middle of a word).
    rows = page.rows.copy()
    rows["Laser box"] = "field_115 · LB_0001"
    rows["Issues"] = "x" * 500
    grid.show(rows)
    widths = grid.grid.column_widths
    assert sum(widths.values()) == grid.FIT_PX and widths["Laser box"] >= len("field_115 · LB_0001") * 7
    # A laser box name too long for what the Issues column leaves ends in "…" too: the columns still fit.
    rows["Laser box"] = "client_001 · region_north · field_115 · TW_001 · LB_0001"
    grid.show(rows)
    widths = grid.grid.column_widths
    assert sum(widths.values()) == grid.FIT_PX and widths["Issues"] == grid.FITTED["Issues"][0]
    # A short table is as tall as its rows, header and scroll bar: no row hides under the scroll bar.
    grid.show(rows.iloc[:2])
    assert grid.grid.layout.height == f"{grid.CHROME_PX + 2 * grid.ROW_PX}px"


def test_the_table_downloads_as_csv_as_shown(services: ServiceContainer) -> None:
    page = DownloadManagerPage(services, query="cid=c1&status=Not+downloaded")
    href = re.search(r'href="data:text/csv;charset=utf-8;base64,([^"]+)"', page.csv_link.value)
    assert href is not None and f"Download these {len(page.rows)} runs as CSV" in page.csv_link.value
    table = pd.read_csv(io.StringIO(base64.b64decode(href.group(1)).decode("utf-8")))
    assert list(table["Run"]) == list(page.rows.index)
    assert list(table["Status"]) == ["not downloaded"] * len(page.rows)
    assert "Cloud bytes" in table.columns
    # Beyond the limit a button builds it, so redrawing a big selection stays cheap.
    page.EMBED_CSV_LIMIT = 1
    page.status_filter.value = "All"
    assert list(page.csv_row.children) == [page.csv_button]
    assert page.csv_button.description == f"Prepare a CSV of these {len(page.rows)} runs"
    page.csv_button.click()
    assert list(page.csv_row.children) == [page.csv_link] and f"{len(page.rows)} runs as CSV" in page.csv_link.value


def test_one_selected_run_shows_its_issues_whole(services: ServiceContainer) -> None:
    """The grid ends an issue too long for its column in "…"; a row clicked shows it whole above the grid."""
    page = DownloadManagerPage(services, query="cid=c1")
    under = FLEET[1].coordinate.to_path_str()
    page.grid.select_runs([under])
    assert "Under-labelled: 25.0 % &lt; 80 %" in page.run_links.value
    page.grid.select_runs([under, FLEET[0].coordinate.to_path_str()])
    assert "Under-labelled" not in page.run_links.value  # which run's would it be?


def test_a_run_only_on_disk_says_so(services: ServiceContainer) -> None:
    folder = local_raw_dir(services.config.raw_root, LOCAL_RUN)
    folder.mkdir(parents=True)
    (folder / "rosbag_2025-09-01-08-00-00_0.bag").write_bytes(b"local")
    services.local.scan()
    # The Runs card counts it, and says how that agrees with the runs a refresh reports (those in the buckets): the
    # medium preset showed 420 runs here and "418 runs" after a refresh, without a word on the 2 only on disk.
    in_buckets = services.inventory.cache_info().runs
    page = DownloadManagerPage(services, query="cid=c1")
    assert page.kpis["Runs"] == str(len(FLEET) + 1) and in_buckets == len(FLEET)
    assert page.kpi_cards.captions["Runs"] == f"{in_buckets} in the buckets, 1 only on disk"
    assert page.selection_line.value.startswith(f"{len(FLEET) + 1} runs shown")
    page = DownloadManagerPage(services, query="cid=c1&status=Local+only")
    assert list(page.rows.index) == [LOCAL_RUN.to_path_str()]
    assert page.rows["Issues"].iloc[0] == "Only on this disk: 1 bags, none in the raw bucket"


def test_bulk_previews_name_runs_apart_when_laser_box_ids_repeat() -> None:
    a = RunCoordinate.parse("c1/r1/f1/t1/LB_0001/2025_09_12T09:13:00Z")
    b = RunCoordinate.parse("c1/r1/f2/t1/LB_0001/2025_09_12T09:13:00Z")
    names = _RunNames([a, b])
    assert names.name(a) == "f1 · LB_0001 · 2025-09-12 09:13" and names.name(b) == "f2 · LB_0001 · 2025-09-12 09:13"
    assert _RunNames([a]).name(a) == "LB_0001 · 2025-09-12 09:13"
    assert f'title="{a.to_path_str()}"' in names.cell(a).html


def test_dataset_dates_are_typed_as_iso(services: ServiceContainer) -> None:
    page = DownloadManagerPage(services, query="cid=c1")
    page.dataset.since.value = "08/01/2025"
    page.plan_dataset()
    assert "must be a date written YYYY-MM-DD" in html.unescape(page.dataset.plan_text.value)
    page.dataset.since.value = "2025-08-04"
    assert page.dataset.options().since is not None and page.dataset.options().since.isoformat() == "2025-08-04"


def test_a_server_without_exports_says_so_without_its_paths(services: ServiceContainer) -> None:
    page = DownloadManagerPage(services, query="cid=c1")
    assert page.tabs is not None
    page.tabs.selected_index = 1
    [message] = page.export_messages.messages
    assert message.level == "info" and message.text.startswith("No labelling export is tracked on this server yet")
    page.preview_export("exp_1")
    assert page.wait_idle(30)
    [message] = page.export_messages.messages
    assert message.level == "error" and str(services.config.ml_root) not in message.text and message.details is None


def test_keep_if_same_size_replaces_local_bags_whose_size_differs(services: ServiceContainer) -> None:
    """A truncated local bag is not the cloud's bag: "Keep if same size" downloads it again and the preview says so."""
    spec = next(s for s in WITH_BAGS if s.bags >= 2)
    page = DownloadManagerPage(services, query="cid=c1")
    page.preview("download", [spec.coordinate])
    assert page.wait_idle(60)
    page.execute(page.transfer_panel)
    assert page.wait_idle(60)
    folder = local_raw_dir(services.config.raw_root, spec.coordinate)
    bags = sorted(folder.glob("*.bag"))
    content = bags[0].read_bytes()
    with bags[0].open("r+b") as handle:  # an interrupted copy made outside runtool
        handle.truncate(len(content) // 2)
    untouched = bags[1].stat().st_mtime_ns
    services.local.refresh_run(spec.coordinate)

    assert page.transfer_panel.conflict_mode == "skip"  # the default
    page.preview("download", [spec.coordinate])
    assert page.wait_idle(60)
    preview = html.unescape(page.transfer_panel.preview.value)
    assert "Nothing to download" not in preview and "whose size differs" not in preview
    assert page.transfer_panel.execute_button.description.startswith("Download 1 file, ")
    assert page.transfer_panel.execute_button.description.endswith(" over 1 run (1 replaced)")
    assert f"Download 1 bag, {format_bytes(len(content))} (1 replaced, {spec.bags - 1} skipped)" in preview
    plan = page.transfer_panel.plan
    assert plan is not None and plan.files_to_transfer == plan.files_replaced == 1
    [replaced] = plan.plans[0].replaced
    assert replaced.path == bags[0] and replaced.reason.startswith("replaced: size differs (local ")
    page.execute(page.transfer_panel)
    assert page.wait_idle(60)
    assert bags[0].read_bytes() == content and bags[1].stat().st_mtime_ns == untouched


@pytest.mark.parametrize("progressive", [False, True])
def test_the_preview_buttons_say_what_they_preview_before_a_row_is_selected(services: ServiceContainer,
                                                                            progressive: bool) -> None:
    """The operations were built after the selection line had been written: until a row was clicked, "Preview
    download" and "Preview upload" were two bare icons (issue 10, medium preset, "All")."""
    page = DownloadManagerPage(services, progressive=progressive)
    if progressive:
        assert page.drawn_signal is not None
        page.drawn_signal._message(page.drawn_signal, {"event": "drawn"}, [])
    runs = len(page.rows)
    assert page.download_button.description.startswith("Preview download (")
    assert page.download_button.description.endswith(f" of {runs} runs)")
    assert page.upload_button.description.startswith("Preview upload (")
