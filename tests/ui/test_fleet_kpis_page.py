"""The fleet KPI page driven from Python over the demo fleet, with a few runs analysed through the real services.

Runs get extraction outputs written by the analytics tests' helper (as tests/services/test_kpis.py does) and are
analysed by AnalyticsService, so the KPI table, the chart and the regression flags all come from real caches.
"""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from runtool.models import Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.storage import processed_dir
from runtool.ui import FleetKpiPage
from runtool.ui.fleet_kpis import KPI_CHOICES
from runtool.ui.query import selection_query
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
        for key, (time, value) in expected.items():
            assert drawn[key][0] == time and np.isclose(drawn[key][1], value), (choice.name, key)
    assert [series.label for series in page.chart.shown] == [f"{analysed[0].lbid} (4)"]
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
