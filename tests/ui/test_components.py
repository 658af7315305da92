"""The shared page pieces on their own: filter bar cascade, KPI cards, messages, header, background task."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import ipywidgets as widgets
import pytest

from runtool.errors import RuntoolError
from runtool.models import LEVELS, Filters
from runtool.services import CacheInfo, RefreshProgress
from runtool.ui.components import ALL, NO_DATA, FilterBar, Kpi, KpiCards, MessageArea, PageHeader
from runtool.ui.query import COVERAGE
from runtool.ui.tasks import BackgroundTask, TaskBusyError

from .widget_tree import with_class

# cid → regionid → fieldid → twid → laser boxes; tw "t9" has no laser box (a level with nothing under it).
TREE: dict[str, dict[str, dict[str, dict[str, list[str]]]]] = {
    "c1": {"r1": {"f1": {"t1": ["lb1", "lb2"]}}, "r2": {"f2": {"t2": ["lb3"]}}},
    "c2": {"r3": {"f3": {"t3": ["lb4"], "t9": []}}},
}


def tree_options(filters: Filters) -> Mapping[str, list[str]]:
    """What DataStateService.filter_options answers, over TREE: per level, the values under the set levels."""
    rows = [
        (cid, region, field, tw, lb)
        for cid, regions in TREE.items()
        for region, fields in regions.items()
        for field, tws in fields.items()
        for tw, lbs in tws.items()
        for lb in (lbs or [None])
    ]
    options: dict[str, list[str]] = {}
    for depth, level in enumerate(LEVELS):
        options[level] = sorted({row[depth] for row in rows if row[depth] is not None})
        value = getattr(filters, level)
        if value is not None:
            rows = [row for row in rows if row[depth] == value]
    return options


def option_values(bar: FilterBar, level: str) -> list[str]:
    return [value for _, value in bar.dropdowns[level].options]


def test_every_level_starts_at_all_with_every_value() -> None:
    bar = FilterBar(tree_options)
    assert bar.filters == Filters()
    assert option_values(bar, "cid") == [ALL, "c1", "c2"]
    assert option_values(bar, "regionid") == [ALL, "r1", "r2", "r3"]
    assert all(d.value == ALL and not d.disabled for d in bar.dropdowns.values())
    assert bar.dropdowns["cid"].options[0] == ("All", ALL)


def test_choosing_a_level_narrows_the_levels_below_and_emits_the_filters() -> None:
    bar = FilterBar(tree_options)
    emitted: list[Filters] = []
    bar.on_change(emitted.append)
    bar.select("cid", "c1")
    assert emitted == [Filters(cid="c1")]
    assert option_values(bar, "regionid") == [ALL, "r1", "r2"]
    assert option_values(bar, "lbid") == [ALL, "lb1", "lb2", "lb3"]


def test_changing_a_level_resets_every_level_below() -> None:
    bar = FilterBar(tree_options, Filters(cid="c1", regionid="r1", fieldid="f1", twid="t1", lbid="lb2"))
    emitted: list[Filters] = []
    bar.on_change(emitted.append)
    bar.select("regionid", "r2")
    assert emitted == [Filters(cid="c1", regionid="r2")]
    assert [bar.dropdowns[level].value for level in LEVELS] == ["c1", "r2", ALL, ALL, ALL]
    bar.select("cid", None)
    assert emitted[-1] == Filters()


def test_a_level_with_nothing_under_it_is_disabled_and_says_no_data() -> None:
    bar = FilterBar(tree_options, Filters(cid="c2", regionid="r3", fieldid="f3", twid="t9"))
    lbid = bar.dropdowns["lbid"]
    assert lbid.disabled
    assert list(lbid.options) == [(NO_DATA, ALL)]
    assert not bar.dropdowns["twid"].disabled


def test_an_unknown_value_from_a_link_stays_selected_and_is_marked() -> None:
    bar = FilterBar(tree_options)
    emitted: list[Filters] = []
    bar.on_change(emitted.append)
    bar.set_filters(Filters(cid="gone"))
    assert emitted == []
    assert bar.dropdowns["cid"].value == "gone"
    assert ("gone (no data)", "gone") in bar.dropdowns["cid"].options
    assert bar.dropdowns["regionid"].disabled


def test_kpi_cards_show_label_value_and_caption_and_are_updated_in_place() -> None:
    cards = KpiCards()
    cards.show([Kpi("Runs", "4", "3 with raw bags"), Kpi("Bags", "6"), Kpi("Coverage", "58.3 %")])
    assert cards.values == {"Runs": "4", "Bags": "6", "Coverage": "58.3 %"}
    assert cards.captions["Runs"] == "3 with raw bags"
    assert len(with_class(cards.widget, "rt-kpi")) == 3
    first = cards.widget.children[0]
    cards.show([Kpi("Runs", "5"), Kpi("Bags", "7"), Kpi("Coverage", "60.0 %")])
    assert cards.widget.children[0] is first
    assert with_class(cards.widget, "rt-kpi-value")[0].value == "5"
    cards.show([])
    assert cards.values == {} and cards.widget.children == ()


def test_messages_are_newest_first_and_dismissible() -> None:
    area = MessageArea()
    area.info("first")
    area.warning("second")
    assert [m.text for m in area.messages] == ["second", "first"]
    dismiss = with_class(area.widget, "rt-message-dismiss")[0]
    assert isinstance(dismiss, widgets.Button)
    dismiss.click()
    assert [m.text for m in area.messages] == ["first"]


def test_errors_are_sentences_with_the_traceback_one_click_away() -> None:
    area = MessageArea()
    try:
        raise RuntoolError("The raw bucket `x` was not found — check RUNTOOL_RAW_BUCKET.")
    except RuntoolError as exc:
        area.report(exc, "refreshing the inventory")
    message = area.messages[0]
    assert message.level == "error"
    assert message.text == "The raw bucket `x` was not found — check RUNTOOL_RAW_BUCKET."
    assert message.details is not None and "Traceback" in message.details
    details = with_class(area.widget, "rt-message-details")[0]
    assert isinstance(details, widgets.Accordion)
    assert details.selected_index is None


def test_an_unexpected_exception_is_explained_as_a_bug() -> None:
    area = MessageArea()
    area.report(ValueError("boom"), "drawing the chart")
    text = area.messages[0].text
    assert text.startswith("Something unexpected went wrong while drawing the chart (ValueError: boom).")


def test_old_messages_are_dropped_beyond_the_limit() -> None:
    area = MessageArea()
    for n in range(area.LIMIT + 5):
        area.info(str(n))
    assert len(area.messages) == area.LIMIT
    assert area.messages[0].text == str(area.LIMIT + 4)


def _cache(age: timedelta) -> CacheInfo:
    return CacheInfo(Path("x"), True, datetime.now(UTC) - age, 10, 2, 0, 100, "raw", "ml")


def test_the_header_links_carry_the_selection_and_show_the_cache_age() -> None:
    header = PageHeader(COVERAGE, read_only=False)
    header.set_selection(Filters(cid="c1", regionid="r1"))
    assert 'href="02_per_run_analysis.ipynb?cid=c1&amp;regionid=r1"' in header.nav.value
    assert 'href="03_download_manager.ipynb?cid=c1&amp;regionid=r1"' in header.nav.value
    assert "01_temporal_coverage" not in header.nav.value
    header.set_cache(_cache(timedelta(minutes=12, seconds=10)))
    assert header.cache_age.value == "cache 12 min old"
    header.set_cache(None)
    assert header.cache_age.value == "no inventory yet"


def test_refresh_becomes_a_progress_bar_and_back() -> None:
    header = PageHeader(COVERAGE, read_only=False)
    header.PROGRESS_INTERVAL_S = 0.0
    clicks: list[str] = []
    header.on_refresh(lambda: clicks.append("refresh"))
    assert header.refresh_button is not None
    header.refresh_button.click()
    assert clicks == ["refresh"]
    header.show_progress(None)
    assert header.refreshing and header.refresh_button not in header.refresh_area.children
    header.show_progress(RefreshProgress(objects=1234, shards_done=1, shards_total=4, stage="listing"))
    assert header.progress_bar is not None
    assert (header.progress_bar.value, header.progress_bar.max) == (1, 4)
    assert header.progress_text.value == "Scanning: 1/4 parts, 1,234 objects"
    header.show_idle(_cache(timedelta(seconds=5)))
    assert not header.refreshing and header.refresh_area.children == (header.refresh_button,)
    assert header.cache_age.value == "cache <1 min old"


def test_read_only_headers_have_no_refresh_controls_at_all() -> None:
    header = PageHeader(COVERAGE, read_only=True)
    assert with_class(header.widget, "rt-refresh") == []
    assert header.refresh_button is None and header.progress_bar is None
    header.show_progress(None)
    assert header.refresh_area.children == ()


def test_background_tasks_run_off_the_calling_thread_and_report_back() -> None:
    task: BackgroundTask[str] = BackgroundTask("test")
    results: list[str] = []
    task.start(lambda cancel: threading.current_thread().name, results.append, pytest.fail)
    assert task.join(5)
    assert results == ["test"]
    errors: list[Exception] = []
    task.start(lambda cancel: 1 / 0, pytest.fail, errors.append)
    assert task.join(5)
    assert isinstance(errors[0], ZeroDivisionError)


def test_a_task_runs_one_job_at_a_time_and_can_be_cancelled() -> None:
    task: BackgroundTask[bool] = BackgroundTask("test")
    started = threading.Event()
    outcome: list[bool] = []

    def work(cancel: threading.Event) -> bool:
        started.set()
        return cancel.wait(5)

    task.start(work, outcome.append, pytest.fail)
    assert started.wait(5)
    with pytest.raises(TaskBusyError):
        task.start(work, outcome.append, pytest.fail)
    task.cancel.set()
    assert task.join(5)
    assert outcome == [True]
