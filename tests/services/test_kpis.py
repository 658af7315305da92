"""KpiService: the KPI table read from real analysis caches (written by AnalyticsService), and the regression rule."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from runtool.models import Filters, RunCoordinate
from runtool.services import ServiceContainer
from runtool.services import kpis as kpis_module
from runtool.services.kpis import KpiError, KpiService, RegressionRule, _flag_regressions
from runtool.services.local_state import ANALYSIS_MARKER
from runtool.storage import processed_dir
from tests.conftest import make_config
from tests.services.test_analytics import write_extraction

BOX = "acme/north/field_7/TW_1/LB_0001"
RUNS = [RunCoordinate.parse(f"{BOX}/2025_08_{day}T08:00:00Z") for day in (25, 26, 27)]
OTHER = RunCoordinate.parse("acme/north/field_7/TW_1/LB_0002/2025_08_25T09:00:00Z")


@pytest.fixture
def services(tmp_path: Path) -> ServiceContainer:
    """Four extracted runs on disk (no bucket): the first two of LB_0001 analysed, the others not."""
    container = ServiceContainer(make_config(tmp_path))
    for coord in (*RUNS, OTHER):
        write_extraction(processed_dir(container.config.processed_root, coord))
    container.local.scan()
    for coord in RUNS[:2]:
        container.analytics.analyze_run(coord)
    return container


def test_the_table_has_the_kpis_of_analyze_json_for_each_analysed_run(services: ServiceContainer) -> None:
    table = services.kpis.table(Filters(lbid="LB_0001"))

    assert table.not_analysed == 1
    records = table.records()
    assert [(r["lbid"], r["timestamp"]) for r in records] == [("LB_0001", c.timestamp) for c in RUNS[:2]]
    for record, coord in zip(records, RUNS[:2], strict=True):
        expected = services.analytics.analyze_run(coord).to_dict()  # what `runtool analyze --json` prints
        assert {name: record[name] for name in expected["kpis"]} == expected["kpis"]
        assert set(table.kpi_names) == set(expected["kpis"])
        assert record["start_time"] == coord.start_time.isoformat()
        assert record["regressed"] is False and record["regressions"] == []


def test_a_selection_with_no_analysed_runs_counts_them(services: ServiceContainer) -> None:
    table = services.kpis.table(Filters(lbid="LB_0002"))
    assert table.rows.empty and table.records() == [] and table.not_analysed == 1


def test_dates_select_by_utc_start_day(services: ServiceContainer) -> None:
    table = services.kpis.table(since=date(2025, 8, 26), until=date(2025, 8, 27))
    assert [r["timestamp"] for r in table.records()] == [RUNS[1].timestamp]
    assert table.not_analysed == 1  # RUNS[2]; OTHER started on the 25th
    with pytest.raises(KpiError, match="since 2025-08-27 is after until 2025-08-26"):
        services.kpis.table(since=date(2025, 8, 27), until=date(2025, 8, 26))


def test_an_older_cache_version_counts_as_not_analysed(services: ServiceContainer) -> None:
    assert len(services.kpis.table().rows) == 2
    marker = processed_dir(services.config.processed_root, RUNS[0]) / ANALYSIS_MARKER
    document = json.loads(marker.read_text(encoding="utf-8"))
    marker.write_text(json.dumps({**document, "version": 1}), encoding="utf-8")

    table = services.kpis.table(refresh=True)

    assert [r["timestamp"] for r in table.records()] == [RUNS[1].timestamp]
    assert table.not_analysed == 3


def test_a_new_analysis_shows_and_the_index_is_reused_by_a_new_process(services: ServiceContainer) -> None:
    assert len(services.kpis.table().rows) == 2
    services.analytics.analyze_run(RUNS[2])  # bumps the local state's version: the next query re-checks
    assert len(services.kpis.table().rows) == 3
    assert services.kpis.index_path.is_file()
    reader = ServiceContainer(services.config, read_only=True)
    assert reader.kpis.table().records() == services.kpis.table().records()


def test_a_new_process_reuses_the_saved_flags_while_no_cache_changed(
    services: ServiceContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = RegressionRule(window=1, min_previous=1, relative_margin=0.0)
    writer = KpiService(services.config, services.data_state, rule=rule)
    assert len(writer.table().rows) == 2  # the index and the flags for this rule are saved
    reader_data = ServiceContainer(services.config, read_only=True).data_state

    def recomputed(*args: object) -> pd.DataFrame:
        raise AssertionError("the saved flags should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(kpis_module, "_flag_regressions", recomputed)
        assert KpiService(services.config, reader_data, rule=rule).table().records() == writer.table().records()
    # Another rule does not take the flags saved for the first one.
    other = KpiService(services.config, reader_data, read_only=True).table()
    assert other.records() == services.kpis.table().records()


def test_a_sweep_reads_no_unchanged_cache_when_some_runs_have_none(
    services: ServiceContainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RUNS[2] and OTHER have no kpis.json: their rows must not make the others' stamps compare unequal.
    assert len(services.kpis.table().rows) == 2

    def read(*args: object) -> dict[str, object]:
        raise AssertionError("an unchanged cache was read again")

    monkeypatch.setattr(KpiService, "_read_entry", read)
    assert len(services.kpis.table(refresh=True).rows) == 2
    assert len(ServiceContainer(services.config, read_only=True).kpis.table().rows) == 2


def test_a_cache_rewritten_after_the_index_was_saved_is_read_again_and_flagged(services: ServiceContainer) -> None:
    rule = RegressionRule(window=1, min_previous=1, relative_margin=0.0)
    assert not KpiService(services.config, services.data_state, rule=rule).table().rows["regressed"].any()
    marker = processed_dir(services.config.processed_root, RUNS[1]) / ANALYSIS_MARKER
    document = json.loads(marker.read_text(encoding="utf-8"))
    worse = document["kpis"]["detection_latency_p95_ms"] + 1_000.125
    document["kpis"]["detection_latency_p95_ms"] = worse
    marker.write_text(json.dumps(document), encoding="utf-8")  # the run, version and fingerprint still match

    reader = KpiService(services.config, ServiceContainer(services.config, read_only=True).data_state, rule=rule)
    rows = reader.table().rows

    assert list(rows["detection_latency_p95_ms"]) == [pytest.approx(worse - 1_000.125), pytest.approx(worse)]
    assert list(rows["regressed"]) == [False, True]
    assert any(reason.startswith("detection_latency_p95_ms") for reason in rows["regressions"].iloc[1])


@pytest.mark.parametrize("bad", ["abc", [1, 2], True, {"x": 1}, float("inf"), float("nan"), 10**30])
def test_a_cache_with_a_kpi_that_is_not_a_number_counts_as_not_analysed(
    services: ServiceContainer, caplog: pytest.LogCaptureFixture, bad: object
) -> None:
    assert len(services.kpis.table().rows) == 2
    marker = processed_dir(services.config.processed_root, RUNS[1]) / ANALYSIS_MARKER
    document = json.loads(marker.read_text(encoding="utf-8"))
    document["kpis"]["detection_latency_p95_ms"] = bad
    marker.write_text(json.dumps(document), encoding="utf-8")  # Infinity and NaN as Python's json writes them

    with caplog.at_level(logging.WARNING, logger="runtool.services.kpis"):
        table = services.kpis.table(refresh=True)
    fresh = ServiceContainer(services.config, read_only=True).kpis.table()

    assert [r["timestamp"] for r in table.records()] == [RUNS[0].timestamp] == [
        r["timestamp"] for r in fresh.records()]
    assert table.not_analysed == fresh.not_analysed == 3
    assert f"The analysis cache of run {RUNS[1]} is unreadable (KPI \"detection_latency_p95_ms\" is " in caplog.text
    assert "it counts as not analysed" in caplog.text
    # Analysing it again repairs it (the analysis reader refuses it the same way), and the table takes it back.
    assert not services.analytics.analyze_run(RUNS[1]).from_cache
    assert len(services.kpis.table(refresh=True).rows) == 2


def test_a_kpi_named_like_a_column_of_the_table_counts_as_not_analysed(services: ServiceContainer) -> None:
    marker = processed_dir(services.config.processed_root, RUNS[1]) / ANALYSIS_MARKER
    document = json.loads(marker.read_text(encoding="utf-8"))
    document["kpis"]["cid"] = 1
    marker.write_text(json.dumps(document), encoding="utf-8")
    table = services.kpis.table(refresh=True)
    assert [(r["cid"], r["timestamp"]) for r in table.records()] == [("acme", RUNS[0].timestamp)]


def test_records_write_null_for_a_kpi_that_is_not_finite() -> None:
    rows = frame({"LB_1": [1.0, float("inf"), float("-inf"), float("nan")]})
    rows = rows.assign(cid="c", regionid="r", fieldid="f", twid="t", timestamp="ts", analysed_at=None)
    table = kpis_module.KpiTable(_flag_regressions(rows, ["detection_latency_p95_ms"], RegressionRule()),
                                 ("detection_latency_p95_ms",), 0)
    assert [r["detection_latency_p95_ms"] for r in table.records()] == [1.0, None, None, None]
    json.dumps(table.records(), allow_nan=False)


def test_a_deleted_cache_leaves_the_table_of_a_new_process(services: ServiceContainer) -> None:
    assert len(services.kpis.table().rows) == 2
    (processed_dir(services.config.processed_root, RUNS[0]) / ANALYSIS_MARKER).unlink()

    table = ServiceContainer(services.config, read_only=True).kpis.table()

    assert [r["timestamp"] for r in table.records()] == [RUNS[1].timestamp]


def frame(lb_values: dict[str, list[float]], kpi: str = "detection_latency_p95_ms") -> pd.DataFrame:
    """Runs of each laser box on consecutive days with ``kpi`` as given; the other KPI is steady."""
    rows = []
    for lb, values in lb_values.items():
        for day, value in enumerate(values, start=1):
            rows.append({"lb_key": f"c/r/f/t/{lb}", "lbid": lb, "start_time": datetime(2025, 8, day, tzinfo=UTC),
                         "detection_latency_p95_ms": 10.0, "detections_median_fps": 30.0, kpi: value})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=3)  # the rule must sort by itself


def test_a_run_worse_than_its_laser_box_median_of_previous_runs_is_flagged_with_its_reason() -> None:
    kpis = ["detection_latency_p95_ms", "detections_median_fps"]
    # LB_A: previous medians 10 → margin max(10 % of 10, 1 ms) = 1 ms: 20 is flagged, 10.9 is not.
    # LB_B: only two previous runs when 50 comes: no baseline yet (min_previous 3), so no flag.
    flagged = _flag_regressions(frame({"LB_A": [10, 10, 10, 10.9, 20], "LB_B": [10, 10, 50]}), kpis, RegressionRule())

    marked = flagged[flagged["regressed"]]
    assert list(zip(marked["lbid"], marked["detection_latency_p95_ms"], strict=True)) == [("LB_A", 20.0)]
    (reason,) = marked["regressions"].iloc[0]
    assert reason == ("detection_latency_p95_ms 20 is worse than 10, the median of LB_A's previous 4 runs, "
                      "by more than 1")
    assert list(flagged["lbid"]) == ["LB_A"] * 5 + ["LB_B"] * 3


def test_rates_regress_downwards_and_the_window_limits_the_history() -> None:
    # window 2: the baseline of the last run is the median of 40 and 40 (not of 20, 20, 40, 40).
    table = frame({"LB_A": [20, 20, 40, 40, 35]}, kpi="detections_median_fps")
    flagged = _flag_regressions(table, ["detections_median_fps"], RegressionRule(window=2, min_previous=2))
    assert list(flagged["regressed"]) == [False, False, False, False, True]
    assert np.isclose(flagged["detections_median_fps"].iloc[-1], 35)


def test_a_bad_rule_is_refused() -> None:
    with pytest.raises(KpiError):
        RegressionRule(window=2, min_previous=3)
    with pytest.raises(KpiError):
        RegressionRule(relative_margin=float("nan"))
