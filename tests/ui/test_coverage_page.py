"""The coverage page against a real fake-gcs-server holding the hand-made fleet of conftest.FLEET."""

from __future__ import annotations

import base64
import csv
import html
import io
import re
import threading
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtool.config import RuntoolConfig
from runtool.models import CoverageSettings, Filters
from runtool.services import ServiceContainer
from runtool.ui import CoveragePage
from runtool.ui.charts import LaserBoxBars
from runtool.ui.coverage import RunTable
from runtool.ui.labels import distinct_laser_box_names
from runtool.ui.query import run_url
from runtool.ui.theme import COVERAGE_NONE

from .conftest import ANOMALIES, EXPECTED_SAMPLES, FLEET, LB01, UNDER_LABELLED_PCT, RunSpec
from .widget_tree import with_class

LB01_QUERY = "cid=c1&regionid=r1&fieldid=f1&twid=t1&lbid=lb01"
T1_QUERY = "cid=c1&regionid=r1&fieldid=f1&twid=t1"


def csv_rows(link_html: str) -> list[list[str]]:
    """The rows of the CSV a download link carries in its data: URI."""
    payload = re.search(r'href="data:text/csv;charset=utf-8;base64,([^"]+)"', link_html)
    assert payload, link_html
    return list(csv.reader(io.StringIO(base64.b64decode(payload.group(1)).decode("utf-8"))))


def run_coverage(spec: RunSpec, expected: float) -> float | None:
    return min(100.0, 100.0 * spec.labels / (spec.bags * expected)) if spec.bags else None


def aggregated_kpis(runs: Iterable[RunSpec], expected: float = EXPECTED_SAMPLES) -> dict[str, str]:
    """The aggregated view's KPIs worked out from what was uploaded, without runtool's code."""
    runs = list(runs)
    by_day: dict[date, list[RunSpec]] = defaultdict(list)
    for spec in runs:
        by_day[spec.coordinate.start_time.date()].append(spec)
    daily = []
    for specs in by_day.values():
        bags = sum(s.bags for s in specs)
        if bags:
            daily.append(min(100.0, 100.0 * sum(s.labels for s in specs if s.bags) / (bags * expected)))
    under = [s for s in runs if s.bags and (run_coverage(s, expected) or 0.0) < UNDER_LABELLED_PCT]
    return {
        "Active days": str(len(by_day)),
        "Laser boxes": str(len({s.lb for s in runs})),
        "Bags": f"{sum(s.bags for s in runs):,}",
        "Labelled samples": f"{sum(s.labels for s in runs):,}",
        "Avg daily coverage": f"{sum(daily) / len(daily):.1f} %",
        "Under-labelled runs": str(len(under)),
    }


def test_the_whole_fleet_shows_the_aggregated_view_with_the_uploaded_totals(services: ServiceContainer) -> None:
    page = CoveragePage(services, query="")
    assert page.view == "aggregated"
    assert page.kpis == aggregated_kpis(FLEET)
    # By hand: days 08-01..08-06 at E=4: 100, 75, 37.5, 100, (ML only), 0 → 62.5.
    assert page.kpis["Avg daily coverage"] == "62.5 %"
    assert page.kpi_cards.captions["Active days"] == "of 6 calendar days"


def test_a_laser_box_shows_its_timeline_kpis(services: ServiceContainer) -> None:
    page = CoveragePage(services, query=LB01_QUERY)
    assert page.view == "single"
    # lb01: bags 2+3+1+0, labels 8+3+3+2, frames 10+3+4+2; coverage 100, 25, 75 and one ML-only run.
    assert page.kpis == {
        "Runs": "4",
        "Bags": "6",
        "Labelled samples": "16",
        "Overall coverage": "58.3 %",  # 14 labels of runs with bags / (6 bags · 4)
        "Average coverage": "66.7 %",  # (100 + 25 + 75) / 3
        "Under-labelled runs": "2",
        "ML-only runs": "1",
    }
    assert page.kpi_cards.captions["Labelled samples"] == "19 frames"
    assert page.single is not None
    assert list(page.single.timeline.coverage.y) == [100.0, 25.0, 75.0]


def test_runs_days_apart_are_not_joined_by_lines(services: ServiceContainer) -> None:
    """lb01 records on 08-01, twice on 08-03 and on 08-05: only the two runs of 08-03 share a line."""
    page = CoveragePage(services, query=LB01_QUERY)
    assert page.single is not None
    bags = page.single.timeline.bags
    np.testing.assert_array_equal(bags.y, [2.0, np.nan, 3.0, 1.0, np.nan, 0.0])
    starts = [np.datetime64(t, "ms") for t in ("2025-08-01T08:00", "2025-08-03T09:30", "2025-08-03T14:00",
                                                "2025-08-05T10:00")]
    assert [x for x, y in zip(bags.x, bags.y, strict=True) if not np.isnan(y)] == starts
    # Every run is a dot of its own (a line's marker at a NaN break would be drawn in the plot's corner).
    assert list(page.single.timeline.bag_dots.x) == starts
    assert list(page.single.timeline.bag_dots.y) == [2.0, 3.0, 1.0, 0.0]
    samples = page.single.timeline.samples.y
    np.testing.assert_array_equal(samples[0], [8.0, np.nan, 3.0, 3.0, np.nan, 2.0])  # labels
    np.testing.assert_array_equal(samples[1], [10.0, np.nan, 3.0, 4.0, np.nan, 2.0])  # frames


def test_a_line_between_runs_is_said_to_join_one_days_runs(services: ServiceContainer) -> None:
    """A short line between two dots read as an error bar: the chart says what a line is, where one is drawn."""
    page = CoveragePage(services, query=LB01_QUERY)  # two runs on 08-03: one line
    assert page.single is not None
    timeline = page.single.timeline
    children = list(timeline.widget.children)
    assert children.index(timeline.lines_note) < children.index(timeline.figures[0])
    assert "a line joins the runs of one UTC day" in timeline.lines_note.value
    page.set_filters(Filters(cid="c1", regionid="r1", fieldid="f1", twid="t1", lbid="lb02"))  # 08-02, 08-06
    assert page.single.timeline is timeline and timeline.lines_note.value == ""


def test_a_click_on_a_runs_point_links_to_the_run_under_its_panel(services: ServiceContainer) -> None:
    page = CoveragePage(services, query=LB01_QUERY)
    assert page.single is not None
    timeline = page.single.timeline
    assert timeline.clicked in timeline.widget.children and "Click a point to open its run" in timeline.clicked.value
    runs = {spec.timestamp: spec.coordinate for spec in FLEET if spec.lb == LB01}

    # bqplot sends {"event": "element_click", "data": {"index": i, ...}}; the ML-only run is a cross at 0 %.
    timeline._clicked(timeline.ml_only, {"event": "element_click", "data": {"index": 0, "x": 0, "y": 0}})
    ml_only = runs["2025_08_05T10:00:00Z"]
    assert timeline.clicked_run == ml_only
    assert timeline.opener.opened == [run_url(ml_only)]  # the browser is sent to the run's page
    assert f'href="{html.escape(run_url(ml_only), quote=True)}"' in timeline.clicked.value
    assert "Open lb01 · 2025-08-05 10:00 on the per-run page" in timeline.clicked.value
    children = list(timeline.widget.children)
    assert children.index(timeline.clicked) == children.index(timeline.figures[2]) + 1  # right under the panel

    timeline._hovered(timeline.coverage, {"event": "hover", "data": {"index": 1}})
    assert "lb01 · 2025-08-03 09:30" in timeline.hover.value and "coverage 25.0 %" in timeline.hover.value
    assert timeline.coverage.tooltip is timeline.hover
    timeline._clicked(timeline.bag_dots, {"event": "element_click", "data": {"index": 1}})
    assert timeline.clicked_run == runs["2025_08_03T09:30:00Z"]
    children = list(timeline.widget.children)
    assert children.index(timeline.clicked) == children.index(timeline.figures[0]) + 1
    timeline._clicked(timeline.coverage, {"event": "element_click", "data": {"index": 2}})
    assert timeline.clicked_run == runs["2025_08_03T14:00:00Z"]  # the third run with bags (75 %)
    timeline._clicked(timeline.coverage, {"event": "element_click", "data": {"index": 9}})  # stale: ignored
    assert timeline.clicked_run == runs["2025_08_03T14:00:00Z"]

    page.set_filters(Filters(cid="c1", regionid="r1", fieldid="f1", twid="t1", lbid="lb02"))
    assert page.single.timeline is timeline and timeline.clicked_run is None  # another laser box: link gone
    assert "Click a point to open its run" in timeline.clicked.value


def test_a_days_coverage_point_says_its_day_on_hover(services: ServiceContainer) -> None:
    page = CoveragePage(services, query=T1_QUERY)
    assert page.aggregated is not None
    daily = page.aggregated.daily
    daily._hovered(daily.coverage, {"event": "hover", "data": {"index": 0}})
    assert daily.coverage.tooltip.value.startswith("<b>2025-08-01</b><br>")
    assert "coverage" in daily.coverage.tooltip.value


def test_a_zero_percent_point_is_drawn_whole(services: ServiceContainer) -> None:
    page = CoveragePage(services, query="cid=c1&regionid=r1&fieldid=f1&twid=t1&lbid=lb02")
    assert page.single is not None
    assert list(page.single.timeline.coverage.y) == [75.0, 0.0]
    scale = page.single.timeline.coverage.scales["y"]
    assert scale.min < 0 and scale.max > 100 and not scale.allow_padding


def test_every_run_is_listed_worst_first_and_links_to_the_run(services: ServiceContainer) -> None:
    page = CoveragePage(services, query=LB01_QUERY)
    assert page.single is not None
    runs = page.single.runs
    table = runs.table.value
    # 25 %, 75 %, 100 % (a fully labelled run can be clicked too), then the ML-only run without coverage.
    order = [table.index(t) for t in ("2025-08-03 09:30", "2025-08-03 14:00", "2025-08-01 08:00", "2025-08-05 10:00")]
    assert order == sorted(order)
    for timestamp in ("2025_08_03T09:30:00Z", "2025_08_01T08:00:00Z"):
        assert (
            'href="02_per_run_analysis.ipynb?cid=c1&amp;regionid=r1&amp;fieldid=f1&amp;twid=t1&amp;lbid=lb01'
            f'&amp;timestamp={timestamp}"'
        ) in table
    assert 'title="c1/r1/f1/t1/lb01/2025_08_01T08:00:00Z"' in table
    assert "25.0 %" in table and "100.0 %" in table and "ML only" in table
    assert runs.title.value == "Runs (4), worst coverage first"
    assert [label for label, _ in runs.filter.options] == ["All runs (4)", "Under-labelled (2)", "ML only (1)"]
    runs.filter.value = "under-labelled"
    assert runs.title.value == "Under-labelled runs (2), worst coverage first"
    assert "2025-08-01 08:00" not in runs.table.value and "2025-08-03 14:00" in runs.table.value
    runs.filter.value = "ML only"
    assert "2025-08-05 10:00" in runs.table.value and "2025-08-03 09:30" not in runs.table.value


def test_the_run_table_pages_at_fleet_scale(services: ServiceContainer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RunTable, "PAGE_ROWS", 3)
    page = CoveragePage(services, query=LB01_QUERY)
    assert page.single is not None
    runs = page.single.runs
    assert runs.pages == 2 and runs.pager.children
    assert "Runs 1–3 of 4 · page 1 of 2" in runs.range.value and runs.previous.disabled
    assert "2025-08-05 10:00" not in runs.table.value
    runs.next.click()
    assert runs.page == 1 and runs.next.disabled
    assert "2025-08-05 10:00" in runs.table.value and "2025-08-03 09:30" not in runs.table.value
    # The CSV has every run the filter keeps, not only the page shown.
    assert csv_rows(runs.csv.value)[1:] == [
        ["c1/r1/f1/t1/lb01/2025_08_03T09:30:00Z", "2025-08-03 09:30", "3", "3", "3", "25.0", "under-labelled"],
        ["c1/r1/f1/t1/lb01/2025_08_03T14:00:00Z", "2025-08-03 14:00", "1", "3", "4", "75.0", "under-labelled"],
        ["c1/r1/f1/t1/lb01/2025_08_01T08:00:00Z", "2025-08-01 08:00", "2", "8", "10", "100.0", ""],
        ["c1/r1/f1/t1/lb01/2025_08_05T10:00:00Z", "2025-08-05 10:00", "0", "2", "2", "", "ML only"],
    ]


def test_changing_expected_samples_or_threshold_recomputes(services: ServiceContainer) -> None:
    page = CoveragePage(services, query=LB01_QUERY)
    assert page.settings.expected_samples_per_bag == EXPECTED_SAMPLES
    page.set_expected_samples(8)
    # At E = 8: runs 8/16 = 50 %, 3/24 = 12.5 %, 3/8 = 37.5 %; overall 14/48.
    assert page.kpis["Overall coverage"] == "29.2 %"
    assert page.kpis["Average coverage"] == "33.3 %"
    assert page.kpis["Under-labelled runs"] == "3"
    page.set_under_labelled_pct(20)
    assert page.kpis["Under-labelled runs"] == "1"
    assert "under-labelled below 20 %" in page.caption.value


def test_the_view_link_carries_changed_settings_and_reproduces_them(services: ServiceContainer) -> None:
    page = CoveragePage(services, query=LB01_QUERY)
    assert "expected_samples" not in page.view_link.value
    page.set_expected_samples(8)
    page.set_under_labelled_pct(20)
    assert "&amp;expected_samples=8&amp;under_labelled_pct=20" in page.view_link.value
    shared = CoveragePage(services, query=f"{LB01_QUERY}&expected_samples=8&under_labelled_pct=20")
    assert shared.settings == page.settings
    assert shared.kpis == page.kpis


def test_bad_settings_in_a_link_are_reported_and_ignored(services: ServiceContainer) -> None:
    page = CoveragePage(services, query=f"{LB01_QUERY}&expected_samples=lots&under_labelled_pct=120")
    assert page.settings.expected_samples_per_bag == EXPECTED_SAMPLES
    assert page.settings.under_labelled_pct == UNDER_LABELLED_PCT
    texts = [m.text for m in page.messages.messages if m.level == "error"]
    assert "The link's expected samples per bag 'lots' is not a number, so 4 is used." in texts
    assert "The link's under-labelled threshold '120' is outside 0–100, so 80 is used." in texts
    assert page.view == "single"


def test_a_link_value_that_is_not_a_number_is_said_to_be_none(services: ServiceContainer) -> None:
    """float() reads 'NaN' and 'inf': the link said "nan is outside 1–1000" as if NaN were a number."""
    page = CoveragePage(services, query=f"{LB01_QUERY}&expected_samples=NaN&under_labelled_pct=inf")
    assert page.settings == CoverageSettings(EXPECTED_SAMPLES, UNDER_LABELLED_PCT)
    assert {m.text for m in page.messages.messages if m.level == "error"} == {
        "The link's expected samples per bag 'NaN' is not a number, so 4 is used.",
        "The link's under-labelled threshold 'inf' is not a number, so 80 is used.",
    }


def test_clearing_the_laser_box_switches_to_the_aggregated_view(services: ServiceContainer) -> None:
    page = CoveragePage(services, query=LB01_QUERY)
    page.filter_bar.select("lbid", None)
    assert page.filters == Filters(cid="c1", regionid="r1", fieldid="f1", twid="t1")
    assert page.view == "aggregated"
    assert page.kpis == aggregated_kpis(s for s in FLEET if s.lb.startswith("c1/r1/f1/t1/"))
    page.set_filters(Filters(cid="c1", regionid="r1", fieldid="f1", twid="t1", lbid="lb02"))
    assert page.view == "single" and page.kpis["Runs"] == "2"


def test_the_calendar_keeps_days_without_runs_as_gaps(services: ServiceContainer) -> None:
    page = CoveragePage(services, query=T1_QUERY)
    assert page.aggregated is not None
    daily = page.aggregated.daily
    days = [np.datetime64(f"2025-08-0{d}", "ms") for d in range(1, 7)]
    assert list(daily.bags.x) == days
    assert list(daily.bags.y) == [2.0, 2.0, 4.0, 0.0, 0.0, 1.0]  # 08-04 and 08-05 have no bags
    calendar = page.aggregated.calendar.table.value
    rows = re.findall(r"<tr><th class=\"rt-cal-name\">.*?</tr>", calendar, re.S)
    assert [re.search(r">([^<]+)</a></th>", row).group(1) for row in rows] == ["lb01", "lb02"]  # type: ignore[union-attr]
    # One cell per calendar day; blank (no link) where the laser box recorded nothing; grey on lb01's ML-only day.
    cells = [re.findall(r"<td.*?</td>", row, re.S) for row in rows]
    assert [[bool(re.search(r"<a ", cell)) for cell in row] for row in cells] == [
        [True, False, True, False, True, False], [False, True, False, False, False, True]]
    assert f"background:{COVERAGE_NONE}" in cells[0][4] and "ML only (no raw bags)" in cells[0][4]


def test_calendar_cells_open_the_run_or_the_laser_box_and_say_so_on_hover(services: ServiceContainer) -> None:
    page = CoveragePage(services, query=T1_QUERY)
    assert page.aggregated is not None
    calendar = page.aggregated.calendar.table.value
    lb01 = "cid=c1&amp;regionid=r1&amp;fieldid=f1&amp;twid=t1&amp;lbid=lb01"
    # 08-01: one run, so the cell opens it on the per-run page; 08-03: two runs, so the laser box.
    assert f'href="02_per_run_analysis.ipynb?{lb01}&amp;timestamp=2025_08_01T08:00:00Z"' in calendar
    assert f'href="01_temporal_coverage.ipynb?{lb01}" target="_self" title="lb01 · 2025-08-03' in calendar
    assert "c1/r1/f1/t1/lb01\n2 runs, 4 bags, 6 labels, coverage 37.5 %\nClick to open this laser box" in calendar
    assert "ML only" in page.aggregated.calendar.legend.value and "80 %" in page.aggregated.calendar.legend.value
    assert csv_rows(page.aggregated.calendar.csv.value)[:3] == [
        ["laser_box", "day", "runs", "raw_bags", "ml_labels", "coverage_pct", "run"],
        ["c1/r1/f1/t1/lb01", "2025-08-01", "1", "2", "8", "100.0", "c1/r1/f1/t1/lb01/2025_08_01T08:00:00Z"],
        ["c1/r1/f1/t1/lb01", "2025-08-03", "2", "4", "6", "37.5", ""],
    ]


def test_changed_settings_travel_in_the_links_to_a_laser_box(services: ServiceContainer) -> None:
    page = CoveragePage(services, query=T1_QUERY)
    page.set_expected_samples(8)
    assert page.aggregated is not None
    href = f"01_temporal_coverage.ipynb?{T1_QUERY.replace('&', '&amp;')}&amp;lbid=lb02&amp;expected_samples=8"
    assert f'href="{href}"' in page.aggregated.table.value
    assert f'href="{href}"' in page.aggregated.calendar.table.value


def test_the_laser_box_breakdown_lists_every_laser_box(services: ServiceContainer) -> None:
    page = CoveragePage(services, query="cid=c1")
    assert page.aggregated is not None
    table = page.aggregated.table.value
    # Named as the charts name them (what tells the boxes apart), the full coordinate on hover.
    for name in ("lb01", "lb02", "lb03"):
        assert f">{name}</a>" in table
    assert 'href="01_temporal_coverage.ipynb?cid=c1&amp;regionid=r1&amp;fieldid=f1&amp;twid=t1&amp;lbid=lb01"' in table
    assert list(page.aggregated.bars.bags.x) == ["lb01", "lb02", "lb03"]
    assert list(page.aggregated.bars.bags.y) == [6.0, 3.0, 1.0]
    assert not page.aggregated.bars.horizontal
    assert 'title="c1/r1/f1/t1/lb01"' in table
    assert csv_rows(page.aggregated.table_csv.value) == [
        ["laser_box", "runs", "raw_bags", "ml_labels", "ml_frames", "coverage_pct", "active_days", "bags_per_day",
         "labels_per_day"],
        ["c1/r1/f1/t1/lb01", "4", "6", "16", "19", "58.333", "2", "3.0", "7.0"],
        ["c1/r1/f1/t1/lb02", "2", "3", "6", "6", "50.0", "2", "1.5", "3.0"],
        ["c1/r1/f1/t2/lb03", "1", "1", "4", "4", "100.0", "1", "1.0", "4.0"],
    ]


def test_bars_lie_down_when_the_names_do_not_fit_and_hover_names_the_laser_box(services: ServiceContainer) -> None:
    bars = LaserBoxBars()
    stats = services.data_state.laser_box_stats(Filters(cid="c1"))
    bars.show(stats, ["lb01", "lb02", "lb03"], 80.0)
    assert not bars.horizontal and bars.bags.orientation == "vertical"
    bars.show(stats, [f"a_rather_long_field_name · lb0{i}" for i in (1, 2, 3)], 80.0)
    assert bars.horizontal and bars.bags.orientation == "horizontal" and bars.coverage.orientation == "horizontal"
    assert list(bars.bags.y) == [6.0, 3.0, 1.0]
    assert bars.figures[0].layout.height == "150px" or int(bars.figures[0].layout.height[:-2]) >= 150
    bars._hovered(bars.coverage, {"data": {"x": "a_rather_long_field_name · lb02", "y": 50.0}})
    assert "c1/r1/f1/t1/lb02" in bars.hover.value and "50.0 %" in bars.hover.value


@pytest.mark.parametrize(("keys", "names"), [
    (["c/r/f1/t1/lb01", "c/r/f1/t1/lb02"], ["lb01", "lb02"]),
    # A laser box id repeated in two fields: every name says its field (not only the repeated ones).
    (["c/r/f1/t1/lb01", "c/r/f2/t1/lb01", "c/r/f2/t1/lb02"], ["f1 · lb01", "f2 · lb01", "f2 · lb02"]),
    (["c/r/f1/t1/lb01", "c/r/f1/t2/lb01"], ["t1 · lb01", "t2 · lb01"]),
])
def test_chart_names_use_the_same_levels_for_every_laser_box(keys: list[str], names: list[str]) -> None:
    assert list(distinct_laser_box_names(keys).values()) == names


def test_a_selection_without_runs_says_why_and_what_to_do(services: ServiceContainer) -> None:
    page = CoveragePage(services, query="")
    page.set_filters(Filters(cid="nope"))  # a client gone since the last refresh, say
    assert page.view == "empty"
    assert page.empty_text.startswith("No runs under nope → All. Pick another client, or set it to All.")
    assert page.kpis == {}


def errors(page: CoveragePage) -> list[str]:
    return [m.text for m in page.messages.messages if m.level == "error"]


def test_a_link_level_the_inventory_lacks_is_named_at_the_top_and_its_levels_above_are_shown(
    services: ServiceContainer,
) -> None:
    """``?cid=c1&regionid=nope`` showed an empty page; the banner did not name the region that matched nothing."""
    page = CoveragePage(services, query="cid=c1&regionid=nope&fieldid=f1")
    assert errors(page) == [
        "The region 'nope' in the link matches nothing in the inventory under c1, so c1 → All is shown instead."]
    assert page.filters == Filters(cid="c1") and page.view == "aggregated"
    # A preheated page given the link after it was built says the same.
    ready = CoveragePage(services, query="")
    ready.follow_link(Filters(cid="c1", regionid="r1", fieldid="f1", twid="t1", lbid="lb99",
                              timestamp="2025_08_01T08:00:00Z"))
    assert errors(ready) == ["The laser box 'lb99' in the link matches nothing in the inventory under c1 → r1 → f1 → "
                             "t1, so c1 → r1 → f1 → t1 → All is shown instead."]
    assert ready.filters == Filters(cid="c1", regionid="r1", fieldid="f1", twid="t1")


def test_a_link_level_with_a_percent_escape_that_is_not_text_is_refused(services: ServiceContainer) -> None:
    page = CoveragePage(services, query="lbid=%ff")
    assert errors(page) == ["The laser box in the link could not be used (lbid '%FF' has a percent-escape that is not "
                            "UTF-8 text), so all data is shown instead."]
    assert page.filters == Filters() and page.view == "aggregated"


def test_an_invalid_link_shows_an_error_and_all_data(services: ServiceContainer) -> None:
    page = CoveragePage(services, query="cid=a%2Fb")
    assert page.filters == Filters()
    assert page.view == "aggregated"
    assert page.messages.messages[0].level == "error"
    assert "could not be used" in page.messages.messages[0].text


def test_the_view_link_and_page_links_follow_the_selection(services: ServiceContainer) -> None:
    page = CoveragePage(services, query=T1_QUERY)
    assert f'href="01_temporal_coverage.ipynb?{T1_QUERY.replace("&", "&amp;")}"' in page.view_link.value
    page.filter_bar.select("lbid", "lb02")
    assert "lbid=lb02" in page.view_link.value
    assert "02_per_run_analysis.ipynb?cid=c1&amp;regionid=r1&amp;fieldid=f1&amp;twid=t1&amp;lbid=lb02" in (
        page.header.nav.value
    )


def test_anomalies_are_listed_with_their_reason(services: ServiceContainer) -> None:
    page = CoveragePage(services, query="")
    assert page.anomalies.titles == ("Anomalies: objects that do not fit the layout (2)",)
    assert page.anomalies.selected_index is None
    for key in (*ANOMALIES["raw"], *ANOMALIES["ml"]):
        assert key in page.anomaly_table.value
    assert "wrong depth" in page.anomaly_table.value


def test_anomalies_follow_the_selection(services: ServiceContainer) -> None:
    """``raw/c1/README.md`` is under c1 only; ``c1/r1/f1/t1/lb01/notes.txt`` under its laser box and above."""
    (deep,), (shallow,) = ANOMALIES["raw"], ANOMALIES["ml"]
    page = CoveragePage(services, query="cid=c1&regionid=r1&fieldid=f1&twid=t1&lbid=lb01")
    assert page.anomalies.titles == (
        "Anomalies: objects that do not fit the layout (1 under c1 → r1 → f1 → t1 → lb01, 2 in all)",)
    assert deep in page.anomaly_table.value and shallow not in page.anomaly_table.value
    page.set_filters(Filters(cid="c1"))
    assert page.anomalies.titles == ("Anomalies: objects that do not fit the layout (2)",)
    page.set_filters(Filters(cid="c1", regionid="r1", fieldid="f1", twid="t1", lbid="lb02"))
    assert page.anomalies.titles[0].startswith("Anomalies: objects that do not fit the layout (0 under")
    assert deep not in page.anomaly_table.value


def test_stable_dom_classes_for_browser_tests(services: ServiceContainer) -> None:
    page = CoveragePage(services, query="")
    for css in ("rt-page", "rt-header", "rt-refresh", "rt-filter-bar", "rt-view-link", "rt-kpis", "rt-kpi",
                "rt-kpi-value", "rt-kpi-label", "rt-expected-samples", "rt-under-labelled-pct",
                "rt-view-aggregated", "rt-daily", "rt-lb-bars", "rt-lb-table", "rt-heatmap", "rt-anomalies",
                "rt-messages", *(f"rt-filter-{level}" for level in ("cid", "regionid", "fieldid", "twid", "lbid"))):
        assert with_class(page.widget, css), css
    page.set_filters(Filters.from_mapping(dict(part.split("=") for part in LB01_QUERY.split("&"))))
    for css in ("rt-view-single", "rt-timeline", "rt-runs", "rt-run-filter", "rt-csv"):
        assert with_class(page.widget, css), css


def test_read_only_pages_have_no_refresh_and_never_scan(fleet_config: RuntoolConfig) -> None:
    services = ServiceContainer(fleet_config, read_only=True)
    page = CoveragePage(services, query="")
    assert with_class(page.widget, "rt-refresh") == []
    assert not page.refreshing
    assert page.view == "empty"
    assert "read-only" in page.empty_text and "runtool refresh" in page.empty_text
    ServiceContainer(fleet_config).inventory.refresh()
    page = CoveragePage(ServiceContainer(fleet_config, read_only=True), query="")
    assert page.view == "aggregated"
    assert with_class(page.widget, "rt-refresh") == []


def test_the_first_visit_scans_in_the_background_with_progress(
    fleet_config: RuntoolConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = ServiceContainer(fleet_config)
    release, threads = threading.Event(), []
    real_refresh = services.inventory.refresh

    def gated_refresh(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        assert release.wait(10)
        return real_refresh(*args, **kwargs)

    monkeypatch.setattr(services.inventory, "refresh", gated_refresh)
    page = CoveragePage(services, query="")
    # The constructor returned while the scan waits: the kernel's thread is free.
    assert page.refreshing and page.header.refreshing
    assert page.view == "empty" and "being scanned" in page.empty_text
    release.set()
    assert page.wait_idle(30)
    assert threads and threads[0] is not threading.main_thread()
    assert page.view == "aggregated"
    assert not page.header.refreshing
    assert page.header.cache_age.value == "cache <1 min old"
    assert re.fullmatch(
        r"Inventory refreshed in \d+\.\d s: 65 objects of 7 runs in the buckets, "
        r"2 objects that do not fit the layout\.",
        page.messages.messages[0].text,
    )


def test_the_refresh_button_rescans(services: ServiceContainer) -> None:
    page = CoveragePage(services, query="")
    assert page.header.refresh_button is not None
    page.header.refresh_button.click()
    assert page.wait_idle(30)
    assert page.messages.messages[0].text.startswith("Inventory refreshed in ")
    assert page.view == "aggregated"


def test_empty_buckets_say_there_are_no_runs_yet(empty_config: RuntoolConfig) -> None:
    page = CoveragePage(ServiceContainer(empty_config), query="")
    assert page.wait_idle(30)
    assert page.view == "empty"
    assert page.empty_text.startswith(
        f"No runs in the buckets yet: `{empty_config.raw_bucket}` and `{empty_config.ml_bucket}`"
    )
    assert page.empty_text.endswith("Upload recordings, then press Refresh.")


def test_a_failed_scan_is_an_error_sentence_with_details(fleet_config: RuntoolConfig, tmp_path: Path) -> None:
    config = fleet_config.with_overrides(raw_bucket="no-such-raw-bucket", cache_dir=tmp_path / "other-cache")
    page = CoveragePage(ServiceContainer(config), query="")
    assert page.wait_idle(30)
    message = page.messages.messages[0]
    assert message.level == "error"
    assert "`no-such-raw-bucket` was not found" in message.text
    assert message.details is not None
    assert page.view == "empty" and page.empty_text == "No inventory yet. Press Refresh to scan the buckets."


def test_a_bad_configuration_is_a_message_not_a_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNTOOL_CONFIG", str(tmp_path / "missing.toml"))
    page = CoveragePage(query="")
    assert page.services is None
    assert page.view == "empty"
    assert page.messages.messages[0].level == "error"
    assert "missing.toml does not exist" in page.messages.messages[0].text


def test_a_laser_box_name_shared_by_two_trailers_is_pointed_out(services: ServiceContainer) -> None:
    # lbid alone (no trailer chosen) combines every laser box of that name; only lb01 exists once here.
    page = CoveragePage(services, query="lbid=lb01")
    assert page.view == "single"
    assert "laser boxes are called" not in page.caption.value
    assert page.kpis["Runs"] == str(sum(1 for s in FLEET if s.lb == LB01))


def test_days_cover_the_whole_calendar(services: ServiceContainer) -> None:
    data = services.data_state.aggregated_coverage(Filters(), services.coverage_settings)
    first = min(s.coordinate.start_time.date() for s in FLEET)
    last = max(s.coordinate.start_time.date() for s in FLEET)
    assert [d.day for d in data.days] == [first + timedelta(days=n) for n in range((last - first).days + 1)]


@pytest.mark.parametrize(("field", "typed", "note"), [
    ("expected_samples", "0", "'0' is outside 1–1000, so the expected samples per bag stays 4."),
    ("under_labelled_pct", "150", "'150' is outside 0–100, so the under-labelled threshold stays 80."),
    ("under_labelled_pct", "nan", "'nan' is not a number, so the under-labelled threshold stays 80."),
    # A number field's browser side put these back without a word to the kernel: the page could not say so.
    ("expected_samples", "1e", "'1e' is not a number, so the expected samples per bag stays 4."),
    ("under_labelled_pct", "--5", "'--5' is not a number, so the under-labelled threshold stays 80."),
    ("expected_samples", "", "The field is empty, so the expected samples per bag stays 4."),
    ("expected_samples", "1e400", "'1e400' is outside 1–1000, so the expected samples per bag stays 4."),
    # float() reads these; the page used them while the field kept showing them as typed (hostile review).
    ("expected_samples", "1_000", "'1_000' is not a number, so the expected samples per bag stays 4."),
    ("expected_samples", "٣٠", "'٣٠' is not a number, so the expected samples per bag stays 4."),
    ("expected_samples", "9" * 400, f"'{'9' * 59}…' is outside 1–1000, so the expected samples per bag stays 4."),
])
def test_what_was_typed_and_what_is_used_is_said_beside_the_field(
    services: ServiceContainer, field: str, typed: str, note: str
) -> None:
    page = CoveragePage(services)
    control = getattr(page, field)
    before, kpis, settings = control.value, page.kpis, page.settings
    control.set_state({"value": typed})  # what the browser sends on Enter or when the field loses focus
    assert control.get_state()["value"] == before  # the value used is back in the field ...
    assert page.settings == settings and page.kpis == kpis
    assert html.unescape(page.settings_note.value) == note  # ... and the note beside it says what became of it
    control.set_state({"value": f" {float(before) + 1:g} "})
    assert page.settings_note.value == ""  # a number in range clears the note and is used
    assert page.view_settings() == {field: f"{float(before) + 1:g}"}


# -- a run in the link ---------------------------------------------------------------------------------------


def test_a_threshold_of_minus_zero_is_zero(services: ServiceContainer) -> None:
    """'-0' was used, and written "under-labelled below -0 %" (hostile review)."""
    page = CoveragePage(services)
    page.under_labelled_pct.set_state({"value": "-0"})
    assert page.settings.under_labelled_pct == 0 and page.view_settings() == {"under_labelled_pct": "0"}


def badges_in_the_link(table_html: str) -> list[str]:
    """The start times of the rows marked "in the link"."""
    return re.findall(r">([^<]+)</a> <span class=\"rt-badge rt-linked-badge\"[^>]*>in the link<", table_html)


def test_a_link_to_a_run_names_it_at_the_top_and_marks_it(
    services: ServiceContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-run page's link (or a run found by the search) opened here showed the laser box, no sign of the run."""
    monkeypatch.setattr(RunTable, "PAGE_ROWS", 2)  # the run, third worst of four, is on the second page
    run = next(spec for spec in FLEET if spec.lb == LB01 and spec.timestamp == "2025_08_01T08:00:00Z").coordinate
    page = CoveragePage(services, query=run_url(run).split("?", 1)[1])
    assert page.view == "single" and page.filters == run.to_filters()
    note = page.linked_note
    assert note.text.startswith("The link names run lb01 · 2025-08-01 08:00: ringed in blue in the coverage chart")
    assert f'href="{html.escape(run_url(run), quote=True)}"' in note.widget.value
    children = list(page.widget.children)
    assert children.index(page.messages.widget) < children.index(note.widget) < children.index(page.body)
    assert page.single is not None
    ring = page.single.timeline.linked_ring
    assert list(ring.x) == [np.datetime64("2025-08-01T08:00", "ms")] and list(ring.y) == [100.0]
    assert page.single.runs.page == 1 and badges_in_the_link(page.single.runs.table.value) == ["2025-08-01 08:00"]

    page.filter_bar.select("lbid", "lb02")  # another laser box: the link's run is no longer shown
    assert note.widget.value == "" and len(ring.x) == 0
    assert badges_in_the_link(page.single.runs.table.value) == []


def test_a_link_to_a_run_not_in_the_inventory_says_so(services: ServiceContainer) -> None:
    page = CoveragePage(services, query=f"{LB01_QUERY}&timestamp=2025_08_02T08:00:00Z")
    assert page.view == "single"
    assert "is not in the inventory" in page.linked_note.text
    assert page.single is not None and len(page.single.timeline.linked_ring.x) == 0


@pytest.mark.parametrize("timestamp", ["2025_08_06T07:00:00Z", "2025-08-06T07:00:00Z"])
def test_a_link_that_skips_levels_is_completed_when_one_run_matches(services: ServiceContainer, timestamp: str) -> None:
    """The run's time in either spelling (a link written by hand, or from a folder name) finds the stored run."""
    page = CoveragePage(services, query=f"lbid=lb02&timestamp={timestamp}")
    assert page.filters == Filters(cid="c1", regionid="r1", fieldid="f1", twid="t1", lbid="lb02",
                                   timestamp="2025_08_06T07:00:00Z")
    assert page.linked_note.text.startswith("The link names run lb02 · 2025-08-06 07:00")
    assert not [m for m in page.messages.messages if m.level == "error"]


def test_a_link_that_skips_levels_without_a_match_says_which_are_missing(services: ServiceContainer) -> None:
    page = CoveragePage(services, query="cid=c1&lbid=lb02&timestamp=2025_08_07T07:00:00Z")
    assert [m.text for m in page.messages.messages if m.level == "error"] == [
        "The link names a run started 2025-08-07 07:00 but not its region, field and TW, and no run of the "
        "inventory matches it, so the run is not shown. Type its laser box and time in the run search box above "
        "to find it."
    ]
    assert page.linked_note.widget.value == ""
