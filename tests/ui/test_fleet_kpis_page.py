"""The fleet KPI page driven from Python over the demo fleet, with a few runs analysed through the real services.

Runs get extraction outputs written by the analytics tests' helper (as tests/services/test_kpis.py does) and are
analysed by AnalyticsService, so the KPI table, the chart and the regression flags all come from real caches.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from runtool.models import Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.storage import processed_dir
from runtool.ui import FleetKpiPage
from runtool.ui.fleet_charts import OTHERS_COLOUR, DistributionChart, KpiSeries, KpiTrendChart, split_series
from runtool.ui.fleet_kpis import KPI_CHOICES, _not_drawn
from runtool.ui.query import run_url, selection_query
from tests.conftest import SeededFleet
from tests.services.test_analytics import write_extraction
from tests.ui.test_per_run_page import private_config

from .widget_tree import with_class

WAIT_S = 120.0


def laser_box_runs(services: ServiceContainer, count: int = 4) -> list[RunCoordinate]:
    """The runs of the first laser box (in coordinate order) with at least ``count`` runs with raw bags."""
    runs = services.data_state.all_runs()
    runs = runs[runs["raw_bags"] > 0].sort_values(["cid", "regionid", "fieldid", "twid", "lbid", "timestamp"])
    for _, group in runs.groupby(["cid", "regionid", "fieldid", "twid", "lbid"], sort=False):
        if len(group) >= count:
            return [RunCoordinate(*(str(row[c]) for c in ("cid", "regionid", "fieldid", "twid", "lbid", "timestamp")))
                    for _, row in group.iterrows()]
    raise AssertionError(f"no laser box of the demo fleet has {count} runs")


def extract(services: ServiceContainer, coord: RunCoordinate, latency_s: float = 0.0, broken: bool = False) -> None:
    """Extraction outputs for ``coord``; ``latency_s`` delays every detection; ``broken`` makes them unreadable."""
    folder = processed_dir(services.config.processed_root, coord)
    write_extraction(folder)
    if latency_s:
        detections = pd.read_csv(folder / "detections.csv")
        detections["header_timestamp_s"] += latency_s
        detections.to_csv(folder / "detections.csv", index=False)
    if broken:
        (folder / "frames.csv").write_text("not,the,columns\n1,2,3\n", encoding="utf-8")
    services.local.refresh_run(coord)


@pytest.fixture
def services(demo_fleet: SeededFleet, tmp_path: Path) -> ServiceContainer:
    container = ServiceContainer(private_config(demo_fleet, tmp_path / "data"))
    container.inventory.refresh()
    return container


@pytest.fixture
def analysed(services: ServiceContainer) -> list[RunCoordinate]:
    """One laser box's runs: three steady, the fourth with detections 50 ms later (a latency regression)."""
    runs = laser_box_runs(services)[:4]
    for index, coord in enumerate(runs):
        extract(services, coord, latency_s=0.05 if index == 3 else 0.0)
        services.analytics.analyze_run(coord)
    return runs


def lb_filters(coord: RunCoordinate) -> Filters:
    return coord.to_filters().replace(timestamp=None)


def open_page(services: ServiceContainer, filters: Filters, read_only: bool = False) -> FleetKpiPage:
    if read_only:
        services = ServiceContainer(services.config, read_only=True)
    return FleetKpiPage(services, query=selection_query(filters))


def test_the_chart_draws_the_tables_rows_for_the_picked_kpi(services: ServiceContainer,
                                                            analysed: list[RunCoordinate]) -> None:
    page = open_page(services, Filters(cid=analysed[0].cid))
    assert page.view == "chart"
    assert page.table is not None
    rows = page.table.rows
    assert sorted(f"{lb}/{ts}" for lb, ts in zip(rows["lb_key"], rows["timestamp"], strict=True)) == sorted(
        c.to_path_str() for c in analysed)

    for choice in KPI_CHOICES:
        page.pick_kpi(choice.name)
        assert page.chart is not None
        drawn = {key: (time, value) for series in page.chart.shown
                 for key, time, value in zip(series.keys, series.times, series.values, strict=True)}
        expected = {
            f"{lb}/{ts}": (np.datetime64(start.tz_convert(None), "ms"), choice.chart_value(float(value)))
            for lb, ts, start, value in zip(rows["lb_key"], rows["timestamp"], rows["start_time"], rows[choice.name],
                                            strict=True)
            if not pd.isna(value)
        }
        assert drawn.keys() == expected.keys(), choice.name
        assert page.chart.value_axis.label, choice.name  # every axis says what its numbers are
        for key, (time, value) in expected.items():
            assert drawn[key][0] == time and np.isclose(drawn[key][1], value), (choice.name, key)
    assert page.chart is not None
    # A ratio's or a count's axis says what is counted (a ratio's had no title, a count's only "count").
    for name, label in (("mean_detections_per_frame", "detections per frame"), ("failed_bags", "failed bags"),
                        ("detection_latency_p95_ms", "ms")):
        page.pick_kpi(name)
        assert page.chart.value_axis.label == label, name
    assert [series.label for series in page.chart.shown] == [analysed[0].lbid]
    assert "4 runs" in page.chart.legend.value
    assert page.kpis["Analysed runs"] == "4"


def test_the_regressed_run_is_ringed_with_its_reason_and_in_the_table(services: ServiceContainer,
                                                                     analysed: list[RunCoordinate]) -> None:
    page = open_page(services, lb_filters(analysed[0]))
    page.pick_kpi("detection_latency_p95_ms")

    assert page.chart is not None
    assert page.chart.regressed_keys == (analysed[3].to_path_str(),)
    (hover,) = page.chart.regressed.names
    assert "detection_latency_p95_ms" in hover and "is worse than" in hover
    assert "regressed on this KPI" in page.runs_table.value
    assert page.kpis["Regressed runs"] == "1"

    page.pick_kpi("tracks_per_minute")
    assert page.chart.regressed_keys == ()
    assert "not checked for regressions" in page.chart_note.value


def test_not_analysed_runs_are_counted_and_read_only_has_no_button(services: ServiceContainer,
                                                                   analysed: list[RunCoordinate]) -> None:
    filters = Filters(cid=analysed[0].cid)
    expected = services.kpis.table(filters).not_analysed
    assert expected > 0

    page = open_page(services, filters)
    assert page.analyse_button is not None and page.analyse_button in page.analysis_row.children
    assert page.analyse_button.description == f"Analyse {expected:,} runs"
    assert page.kpis["Analysed runs"] == "4"

    reader = open_page(services, filters, read_only=True)
    assert reader.analyse_button is None
    assert not with_class(reader.widget, "rt-analyse-runs")
    assert f"{expected:,} runs of this selection are not analysed yet" in reader.analysis_note.value
    assert reader.view == "chart"


def test_a_selection_without_analysed_runs_says_so_and_offers_analysis(services: ServiceContainer,
                                                                      analysed: list[RunCoordinate]) -> None:
    runs = services.data_state.all_runs()
    row = runs[(runs["raw_bags"] > 0) & (runs["lbid"] != analysed[0].lbid)].iloc[0]
    filters = Filters(cid=row["cid"], regionid=row["regionid"], fieldid=row["fieldid"], twid=row["twid"],
                      lbid=row["lbid"])
    count = services.kpis.table(filters).not_analysed
    assert count > 0

    page = open_page(services, filters)
    assert page.view == "empty"
    assert "is analysed yet" in page.empty_text and f"Analyse {count} run" in page.empty_text
    assert page.analyse_button is not None and page.analyse_button.description.startswith(f"Analyse {count} run")

    reader = open_page(services, filters, read_only=True)
    assert reader.view == "empty" and "read-only" in reader.empty_text and reader.analyse_button is None


def test_bulk_analysis_goes_on_past_a_failing_run_and_shows_it(services: ServiceContainer) -> None:
    runs = laser_box_runs(services)[:3]
    extract(services, runs[0])
    extract(services, runs[1], broken=True)
    extract(services, runs[2])
    services.analytics.analyze_run(runs[0])
    filters = lb_filters(runs[0])
    # Only the three extracted runs: the others of the laser box would be downloaded and extracted first.
    days = sorted(c.start_time.date() for c in runs)
    page = open_page(services, filters)
    page.set_dates(days[0], days[-1])
    assert page.table is not None
    not_analysed = page.table.not_analysed
    assert not_analysed >= 2

    page.start_analysis()
    assert page.wait_idle(WAIT_S)

    result = page.analysis_result.value
    assert "failed" in result and runs[1].lbid in result and "Run that failed" in result
    assert page.table is not None
    keys = {f"{lb}/{ts}" for lb, ts in zip(page.table.rows["lb_key"], page.table.rows["timestamp"], strict=True)}
    assert runs[2].to_path_str() in keys and runs[1].to_path_str() not in keys
    assert page.table.not_analysed >= 1
    assert not [m for m in page.messages.messages if m.level == "error"]


def test_compare_two_runs_and_export_csv(services: ServiceContainer, analysed: list[RunCoordinate]) -> None:
    page = open_page(services, lb_filters(analysed[0]))
    assert page.chart is not None
    mark = page.chart.series_marks[0]
    page.chart._clicked(mark, {"event": "element_click", "data": {"index": 3, "x": 0, "y": 0}})  # as bqplot sends it
    assert page.selected_run == page.chart.shown[0].keys[3]
    page.chart._hovered(mark, {"event": "hover", "data": {"index": 3}})
    assert analysed[3].lbid in mark.tooltip.value
    page.select_run(analysed[3].to_path_str())
    assert f'href="02_per_run_analysis.ipynb?{selection_query(analysed[3].to_filters())}"'.replace(
        "&", "&amp;") in page.clicked.value

    page.compare(analysed[0].to_path_str(), analysed[3].to_path_str())
    assert "Detection latency p95" in page.compare_table.value and "worse" in page.compare_table.value
    assert len(page.distributions.children) == 2

    href = page.csv_link.value.split('href="', 1)[1].split('"', 1)[0]
    csv = base64.b64decode(unquote(href.split("base64,", 1)[1])).decode()
    frame = pd.read_csv(pd.io.common.StringIO(csv))
    assert len(frame) == 4 and "detection_latency_p95_ms" in frame.columns


def test_a_difference_of_shares_is_in_percentage_points() -> None:
    share = next(choice for choice in KPI_CHOICES if choice.unit == "share")
    assert (share.format(0.001), share.format(0.038)) == ("0.1 %", "3.8 %")
    assert (share.format_delta(0.037), share.format_delta(-0.037), share.format_delta(0.0)) == (
        "+3.7 pp", "−3.7 pp", "±0.0 pp")
    latency = next(choice for choice in KPI_CHOICES if choice.unit == "ms")
    assert latency.format_delta(7.1) == "+7.1 ms"


# -- fleet scale -------------------------------------------------------------------------------------------


def first_runs(services: ServiceContainer, boxes: int) -> list[RunCoordinate]:
    """The first run with raw bags of each of ``boxes`` laser boxes (in coordinate order)."""
    runs = services.data_state.all_runs()
    runs = runs[runs["raw_bags"] > 0].sort_values(["cid", "regionid", "fieldid", "twid", "lbid", "timestamp"])
    firsts = runs.groupby(["cid", "regionid", "fieldid", "twid", "lbid"], sort=False).head(1).head(boxes)
    assert len(firsts) == boxes, f"the demo fleet has fewer than {boxes} laser boxes with raw bags"
    return [RunCoordinate(*(str(row[c]) for c in ("cid", "regionid", "fieldid", "twid", "lbid", "timestamp")))
            for _, row in firsts.iterrows()]


def analyse(services: ServiceContainer, runs: list[RunCoordinate]) -> None:
    for coord in runs:
        extract(services, coord)
        services.analytics.analyze_run(coord)


def test_split_series_keeps_at_most_the_limit_with_the_most_runs() -> None:
    assert split_series({"a": 1, "b": 3, "c": 2}, 8) == (["b", "c", "a"], [])
    nine = {f"lb{i}": 1 for i in range(9)} | {"lb8": 5}
    own, rest = split_series(nine, 8)
    assert own[0] == "lb8" and len(own) == 8 and rest == ["lb7"]  # one more than the limit is "others" too
    own, rest = split_series({f"lb{i:02}": i % 3 for i in range(40)}, 8)
    assert len(own) == 8 and len(rest) == 32 and set(own).isdisjoint(rest)
    assert all(i % 3 == 2 for i in (int(key[2:]) for key in own))


def test_more_than_eight_laser_boxes_draw_eight_series_and_others(services: ServiceContainer) -> None:
    runs = first_runs(services, 11)
    second = laser_box_runs(services, 2)[1]  # one laser box with two runs: it comes first
    analyse(services, [*runs, second])

    page = open_page(services, Filters())
    assert page.chart is not None
    shown = page.chart.shown
    assert len(shown) == FleetKpiPage.SERIES_LIMIT + 1 == 9
    assert shown[0].keys == tuple(sorted(k for k in shown[0].keys)) and len(shown[0].keys) == 2
    others = shown[-1]
    assert others.label == "others: 3 laser boxes" and others.colour == OTHERS_COLOUR and len(others.keys) == 3
    assert len({series.colour for series in shown}) == 9  # no colour twice
    # The grey others are drawn first, under the laser boxes of their own colour (over them, they hid them at "All").
    drawn_marks = [mark for mark in page.chart.figure.marks if mark in page.chart.series_marks]
    assert list(drawn_marks[0].colors) == [OTHERS_COLOUR] and list(drawn_marks[0].labels) == [others.label]
    drawn = [key for series in shown for key in series.keys]
    assert sorted(drawn) == sorted(c.to_path_str() for c in {*runs, second})
    for key in others.keys:  # the others' full names are in their legend entry's hover text
        assert RunCoordinate.parse(key).to_path_str().rsplit("/", 1)[0] in others.title

    legend = page.chart.legend.value
    assert legend.count('class="rt-legend-item"') == 9
    assert "others: 3 laser boxes" in legend and "3 runs" in legend and "2 runs" in legend and "1 run<" in legend
    assert "the other 3 are grey" in page.chart_note.value

    single = open_page(services, lb_filters(runs[-1]))  # one of the others, on its own
    assert single.chart is not None and [s.label for s in single.chart.shown] == [runs[-1].lbid]
    assert "1 run<" in single.chart.legend.value and "others" not in single.chart.legend.value


def test_one_run_reads_in_the_singular(services: ServiceContainer) -> None:
    coord = first_runs(services, 1)[0]
    analyse(services, [coord])
    day = coord.start_time.date()
    page = open_page(services, coord.to_filters().replace(timestamp=None))
    page.set_dates(day, day)
    captions = page.kpi_cards.captions
    assert captions["Detection rate p5, median"] == "over 1 run"
    assert not any("1 runs" in text for text in captions.values())
    assert page.chart is not None and "1 run<" in page.chart.legend.value
    assert "(1 run, every KPI)" in page.csv_link.value


def test_the_runs_table_pages_and_names_regressions_by_kpi(services: ServiceContainer, analysed: list[RunCoordinate],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FleetKpiPage, "PAGE_ROWS", 3)
    page = open_page(services, lb_filters(analysed[0]))
    page.pick_kpi("detection_latency_p95_ms")
    assert page.runs_pages == 2 and page.runs_page == 0
    assert page.runs_table.value.count("<tr>") == 1 + 3
    assert page.runs_newer in page.runs_pager.children and page.runs_newer.disabled and not page.runs_older.disabled
    assert "Runs 1–3 of 4" in page.runs_range.value
    # newest first: the regressed run (the last) is on the first page, with its reason on this KPI by label
    cell = page.runs_table.value
    assert "regressed on this KPI" in cell and "Detection latency p95 " in cell
    assert "detection_latency_p95_ms" not in cell.split("title=")[0]
    assert "also Detection latency p99" in cell

    page.runs_older.click()
    assert page.runs_page == 1 and page.runs_table.value.count("<tr>") == 1 + 1 and page.runs_older.disabled
    assert "Runs 4–4 of 4" in page.runs_range.value
    page.pick_kpi("tracks_per_minute")  # same runs: the page stays
    assert page.runs_page == 1
    page.show_runs_page(99)
    assert page.runs_page == 1
    page.runs_newer.click()
    assert page.runs_page == 0

    page.pick_kpi("frames_p5_fps")  # the regressed run did not regress on this KPI: the others are named
    assert "regressed</span>" in page.runs_table.value and ">on Detection latency p95" in page.runs_table.value


def test_the_comparison_downloads_as_csv(services: ServiceContainer, analysed: list[RunCoordinate]) -> None:
    page = open_page(services, lb_filters(analysed[0]))
    page.compare(analysed[0].to_path_str(), analysed[3].to_path_str())
    href = page.compare_table.value.split('class="rt-csv-compare"', 1)[1].split('href="', 1)[1].split('"', 1)[0]
    csv = base64.b64decode(href.split("base64,", 1)[1]).decode()
    frame = pd.read_csv(pd.io.common.StringIO(csv))
    assert list(frame.columns) == ["run_a", "run_b", "kpi", "label", "a", "b", "b_minus_a", "b_is"]
    row = frame.set_index("kpi").loc["detection_latency_p95_ms"]
    assert row["b_is"] == "worse" and row["b_minus_a"] > 0
    assert row["run_b"] == analysed[3].to_path_str()


def test_analysis_messages_show_under_the_analyse_button(services: ServiceContainer,
                                                        analysed: list[RunCoordinate]) -> None:
    days = sorted(c.start_time.date() for c in analysed)
    page = open_page(services, lb_filters(analysed[0]))
    page.set_dates(days[0], days[-1])
    page.start_analysis()  # every run of these dates is analysed
    assert [m.text for m in page.analysis_messages.messages] == ["Every run of this selection is analysed already."]
    assert page.analysis_messages.widget in page.analysis_box.children
    assert not page.messages.messages


def test_distributions_start_at_zero_with_their_runs_named_outside_the_plot(services: ServiceContainer,
                                                                           analysed: list[RunCoordinate]) -> None:
    chart = DistributionChart("Detection rate", "FPS")
    chart.show(np.array([30.0, 30.0, 30.0, 29.0]), np.array([10.0, 30.0]), ("A", "B"))
    assert chart.y.min == 0 and not chart.y.allow_padding  # no share below 0 % on the axis
    assert 0.75 <= chart.y.max <= 1.0  # room above the highest bin (3 of 4 messages), never past 100 %
    assert not chart.lines.display_legend

    page = open_page(services, lb_filters(analysed[0]))
    page.compare(analysed[0].to_path_str(), analysed[3].to_path_str())
    legend = page.distributions_legend.value
    assert legend.index("A: ") < legend.index("B: ") and legend.count(analysed[0].lbid) == 2
    assert page.content is not None and page.distributions_legend in page.content.children


def test_dates_before_every_run_say_so(services: ServiceContainer, analysed: list[RunCoordinate]) -> None:
    """Not "none has raw bags" (the runs have them): no run of the selection started in those dates."""
    page = FleetKpiPage(services=services, query="until=1999-01-01")
    assert page.view == "empty"
    assert "none started in these dates" in page.empty_text and "raw bags" not in page.empty_text


def test_dates_are_typed_as_iso_and_a_bad_one_is_said_next_to_the_field(services: ServiceContainer,
                                                                         analysed: list[RunCoordinate]) -> None:
    days = sorted(c.start_time.date() for c in analysed)
    page = FleetKpiPage(services=services, query=f"{selection_query(lb_filters(analysed[0]))}&since={days[-1]}")
    assert page.since.value == days[-1].isoformat() and page.since.placeholder == "YYYY-MM-DD"
    assert page.since_date == days[-1] and page.view_settings()["since"] == days[-1].isoformat()
    assert page.table is not None
    assert set(page.table.rows["start_time"].dt.date) == {days[-1]}

    page.since.value = days[-1].strftime("%m/%d/%Y")  # as an en-US date picker would write it
    assert "“From” must be a date written YYYY-MM-DD" in page.date_message.value
    assert "It is not used" in page.date_message.value
    assert page.since_date is None and "since" not in page.view_settings()
    assert not page.messages.messages  # next to the field, not in the banner; no traceback
    assert page.view == "chart" and page.table is not None and len(page.table.rows) == len(analysed)

    page.set_dates(days[0], days[0])
    assert page.date_message.value == ""
    assert page.view_settings() == {"since": days[0].isoformat(), "until": days[0].isoformat()}
    assert page.table is not None and set(page.table.rows["start_time"].dt.date) == {days[0]}


def test_a_links_bad_date_is_not_used_and_said_in_the_banner(services: ServiceContainer,
                                                             analysed: list[RunCoordinate]) -> None:
    page = FleetKpiPage(services=services, query=f"{selection_query(lb_filters(analysed[0]))}&until=01/01/1999")
    assert page.until.value == "" and page.until_date is None
    (message,) = page.messages.messages
    assert message.level == "error" and "'01/01/1999' is not a YYYY-MM-DD date" in message.text
    assert page.view == "chart"


def test_runs_not_drawn_say_whether_the_stream_is_absent_or_gave_no_value() -> None:
    """A run with no detection message has no detection stream; one with a few (shorter than the rate window) has a
    stream but no rate: the hostile review found both called "no detection stream"."""
    rows = pd.DataFrame({"detections_messages": [0, 1, 300, np.nan]})
    missing = np.array([True, True, False, True])
    assert _not_drawn("detections_p5_fps", rows, missing) == [
        "2 runs are not drawn: no detection stream for this KPI.",
        "1 run is not drawn: no value for this KPI (e.g. a run shorter than the 1 s rate window).",
    ]
    assert _not_drawn("failed_bags", rows.iloc[:0], np.array([], dtype=bool)) == []
    assert _not_drawn("failed_bags", rows, np.array([False, True, False, False])) == [
        "1 run is not drawn: no value for this KPI.",
    ]


def test_the_csv_is_the_runs_table_as_shown(services: ServiceContainer, analysed: list[RunCoordinate]) -> None:
    """Same runs in the same order as the table (newest first), each with its full coordinate."""
    page = open_page(services, Filters(cid=analysed[0].cid))
    shown = [unquote(href).split("?", 1)[1] for href in re.findall(r'<a href="([^"]+)"', page.runs_table.value)]
    assert len(shown) == len(analysed)
    href = page.csv_link.value.split('href="', 1)[1].split('"', 1)[0]
    frame = pd.read_csv(io.StringIO(base64.b64decode(href.split("base64,", 1)[1]).decode()))
    assert [selection_query(RunCoordinate.parse(run).to_filters()) for run in frame["run"]] == [
        html.unescape(query) for query in shown]
    assert sorted(frame["run"]) == sorted(c.to_path_str() for c in analysed)


def test_a_link_to_a_run_names_it_at_the_top_and_marks_it(services: ServiceContainer, analysed: list[RunCoordinate],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-run page's link opened here showed the laser box with no sign of the run."""
    monkeypatch.setattr(FleetKpiPage, "PAGE_ROWS", 2)  # newest first: the second oldest run is on the second page
    run = analysed[1]
    page = FleetKpiPage(services, query=selection_query(run.to_filters()))
    assert page.view == "chart"
    note = page.linked_note
    assert note.text.startswith(f"The link names run {run.lbid} · {run.start_time:%Y-%m-%d %H:%M}: ringed in blue")
    assert f'href="{html.escape(run_url(run), quote=True)}"' in note.widget.value
    children = list(page.widget.children)
    assert children.index(page.messages.widget) < children.index(note.widget) < children.index(page.body)
    assert page.chart is not None
    drawn = {key: (time, value) for series in page.chart.shown
             for key, time, value in zip(series.keys, series.times, series.values, strict=True)}
    assert list(zip(page.chart.linked_ring.x, page.chart.linked_ring.y, strict=True)) == [drawn[run.to_path_str()]]
    assert page.runs_page == 1
    marked = re.findall(r'href="([^"]+)"[^>]*>[^<]+</a> <span class="rt-badge rt-linked-badge"', page.runs_table.value)
    assert [html.unescape(href) for href in marked] == [run_url(run)]

    page.filter_bar.select("lbid", None)  # the run is no longer selected: no note, no ring
    assert note.widget.value == "" and len(page.chart.linked_ring.x) == 0


def test_a_link_with_only_a_runs_time_opens_that_run(services: ServiceContainer, analysed: list[RunCoordinate]) -> None:
    """A link that skips levels lost its run without a word, though the run search found it."""
    run = analysed[2]
    page = FleetKpiPage(services, query=f"timestamp={run.timestamp}")
    assert page.filters == run.to_filters()
    assert "ringed in blue" in page.linked_note.text


def test_a_link_to_a_run_not_analysed_says_it_is_not_shown(services: ServiceContainer,
                                                           analysed: list[RunCoordinate]) -> None:
    run = next(c for c in first_runs(services, 2) if c not in analysed)
    page = FleetKpiPage(services, query=selection_query(run.to_filters()))
    assert "it is not among the analysed runs shown" in page.linked_note.text


def _series(label: str, points: list[tuple[str, float]], colour: str = "#1f77b4") -> KpiSeries:
    keys = tuple(f"c/r/f/t/{label}/{moment}" for moment, _ in points)
    times = np.array([np.datetime64(moment.replace("Z", ""), "ms") for moment, _ in points], dtype="datetime64[ms]")
    return KpiSeries(label, keys, times, np.array([value for _, value in points]),
                     tuple(f"{label} · {moment} · {value}" for moment, value in points), colour)


def test_regressed_runs_at_one_spot_are_one_square_that_counts_and_names_them() -> None:
    """At "All" three laser boxes regressed on one day at about the same value: their squares were drawn over each
    other, one square for three runs (27 regressed, 18 squares on the medium fleet)."""
    day = [("2025-07-06T10:03:00Z", 122.0), ("2025-07-06T10:04:00Z", 122.6), ("2025-07-06T10:05:00Z", 121.8)]
    apart = [("2025-07-06T10:03:00Z", 98.0), ("2025-08-20T09:00:00Z", 120.0)]
    runs = _series("a", [*day, *apart])
    chart = KpiTrendChart(8)
    chart.show("Detection latency p95 per run", "ms", [runs], _series("a", [*day, *apart]))
    assert len(chart.regressed.x) == 3  # the three of one spot, and the two apart from it
    assert list(chart.regressed_counts.text) == ["3"]
    grouped = next(str(name) for name in chart.regressed.names if "3 runs" in str(name))
    assert all(f"a · {moment}" in grouped for moment, _ in day)
    # The legend still counts runs, not squares.
    assert "5 runs" in chart.legend.value


def test_at_fleet_scale_the_points_are_smaller_and_see_through() -> None:
    many = [(f"2025-07-{1 + i % 28:02d}T{i % 24:02d}:00:00Z", float(i % 50)) for i in range(400)]
    chart = KpiTrendChart(8)
    chart.show("t", "ms", [_series("a", many[:10]), _series("others", many[10:], OTHERS_COLOUR)],
               _series("regressed", []))
    few = KpiTrendChart(8)
    few.show("t", "ms", [_series("a", many[:10])], _series("regressed", []))
    assert chart.series_marks[0].default_size < few.series_marks[0].default_size
    assert chart.series_marks[0].opacities[0] < 1.0
