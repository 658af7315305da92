"""The coverage page (01_temporal_coverage.ipynb) driven in a real chromium against ``runtool serve``.

Every expectation is worked out from the services (``ServiceContainer.data_state``) and the shared number
formats, never from the page classes, so a page that shows other numbers than the services fails here.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from runtool.demo.emulator import Emulator
from runtool.formatting import format_count, format_pct, format_time
from runtool.models import LEVELS, CoverageSettings, CoverageStatistics, Filters, LaserBoxStats
from runtool.services import ServiceContainer
from runtool.ui.query import selection_query
from runtool.ui.theme import LINK_COLOUR
from tests.browser.conftest import (
    VoilaServer,
    crowded_axis_titles,
    overlapping_texts,
    screenshot,
    visible_links,
)
from tests.conftest import make_config, write_toml

pytestmark = pytest.mark.browser

COVERAGE = "01_temporal_coverage.ipynb"
PER_RUN = "02_per_run_analysis.ipynb"
PAGE_ROWS = 25
"""The run table of one laser box shows this many runs a page."""
WAIT_S = 30.0
"""How long a widget update may take to reach the browser (the kernel answers in well under a second)."""


# -- expectations from the services -----------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """One laser box of the demo fleet and what the services say about it."""

    filters: Filters
    stats: CoverageStatistics

    @property
    def query(self) -> str:
        return "&".join(f"{level}={getattr(self.filters, level)}" for level in LEVELS)

    @property
    def tw(self) -> Filters:
        return self.filters.replace(lbid=None)


def single_kpis(stats: CoverageStatistics) -> dict[str, str]:
    """The single-laser-box KPIs the brief names, formatted as the pages format numbers."""
    return {
        "Runs": format_count(stats.total_runs),
        "Bags": format_count(stats.total_bags),
        "Labelled samples": format_count(stats.total_labels),
        "Overall coverage": format_pct(stats.overall_coverage_pct),
        "Under-labelled runs": format_count(len(stats.under_labelled)),
    }


@pytest.fixture(scope="module")
def services(served_config: Path) -> ServiceContainer:
    return ServiceContainer.from_environment(served_config)


@pytest.fixture(scope="module")
def box(services: ServiceContainer) -> Box:
    """The laser box with the most under-labelled runs (at least two, so "worst first" is testable)."""
    data_state = services.data_state
    candidates = []
    for lb in data_state.laser_box_stats(Filters()):
        filters = Filters(**dict(zip(LEVELS, lb.lb_key.split("/"), strict=True)))
        candidates.append(Box(filters, data_state.coverage_statistics(filters)))
    chosen = max(candidates, key=lambda b: len(b.stats.under_labelled))
    assert len(chosen.stats.under_labelled) >= 2, "the demo fleet should have a laser box with 2+ under-labelled runs"
    return chosen


# -- reading the page ----------------------------------------------------------------------------------


def select(page: Any, level: str) -> Any:
    return page.locator(f".rt-filter-{level} select")


def read_kpis(page: Any) -> dict[str, str]:
    """Label → value of every KPI card shown."""
    return dict(
        page.eval_on_selector_all(
            ".rt-kpi",
            """cards => cards.map(card => [
                (card.querySelector('.rt-kpi-label')?.innerText ?? '').trim(),
                (card.querySelector('.rt-kpi-value')?.innerText ?? '').trim(),
            ])""",
        )
    )


def assert_kpis(page: Any, expected: dict[str, str], timeout: float = WAIT_S) -> dict[str, str]:
    """Wait until the cards named in ``expected`` show those values; fail with what was shown."""
    deadline = time.monotonic() + timeout
    shown = read_kpis(page)
    while any(shown.get(label) != value for label, value in expected.items()) and time.monotonic() < deadline:
        time.sleep(0.1)
        shown = read_kpis(page)
    assert {label: shown.get(label) for label in expected} == expected, f"all KPIs shown: {shown}"
    return shown


def assert_no_traceback(page: Any) -> None:
    html = page.content()
    assert "Traceback" not in html
    assert 'data-mime-type="application/vnd.jupyter.stderr"' not in html  # no raw error output from a cell


def open_coverage(page: Any, voila: VoilaServer, query: str = "") -> None:
    page.goto(voila.url(COVERAGE, query))
    page.wait_for_selector(".rt-page-coverage", state="visible")


def expect_options(page: Any, level: str, values: list[str]) -> None:
    """The level's dropdown offers "All" and exactly ``values`` (waits for the kernel to send them)."""
    expect(page.locator(f".rt-filter-{level} select option")).to_have_text(["All", *values], timeout=WAIT_S * 1000)


def assert_under_labelled_table(page: Any, stats: CoverageStatistics) -> Any:
    """The run table lists every run, worst first (a page of them); returns the first row's link."""
    rows = page.locator(".rt-runs table tbody tr")
    expect(rows).to_have_count(min(stats.total_runs, PAGE_ROWS), timeout=WAIT_S * 1000)
    worst = stats.under_labelled[0]
    first = rows.first.locator("td")
    expect(first.nth(0)).to_have_text(format_time(worst.start_time))
    expect(first.nth(1)).to_have_text(format_count(worst.raw_bags))
    expect(first.nth(2)).to_have_text(format_count(worst.ml_labels))
    expect(first.nth(4)).to_have_text(format_pct(worst.coverage_pct))
    return rows.first.locator("a")


_BAR_LABELS = """() => [...document.querySelectorAll('.rt-lb-bars .bargroup')].flatMap(group => {
    const bar = group.querySelector('.bar'), label = group.querySelector('.bar_label');
    if (!bar || !label || !label.textContent) return [];
    const b = bar.getBoundingClientRect(), t = label.getBoundingClientRect();
    const plot = group.closest('svg').querySelector('.plotarea_background, .plotarea_events').getBoundingClientRect();
    return [{text: label.textContent, upright: getComputedStyle(label).textAnchor === 'middle',
             bar: [b.left, b.top, b.right, b.bottom],
             label: [t.left, t.top, t.right, t.bottom], plot: [plot.left, plot.top, plot.right, plot.bottom]}];
})"""


def bar_labels_in_the_way(page: Any) -> list[str]:
    """The laser box bars' value labels that sit on their bar (where a dark bar hides dark text), cross the value
    axis or leave the plot; each label must be past its bar's end, on the page's white."""
    found = []
    for one in page.evaluate(_BAR_LABELS):
        (_, bt, br, _), (tl, tt, tr, tb), (pl, pt, pr, pb) = one["bar"], one["label"], one["plot"]
        past_end = tb <= bt + 0.5 if one["upright"] else tl >= br - 0.5  # above an upright bar, right of a lying one
        inside_plot = pl - 0.5 <= tl and tr <= pr + 0.5 and pt - 0.5 <= tt and tb <= pb + 0.5
        if not (past_end and inside_plot):
            found.append(f"{one['text']}: label {one['label']} bar {one['bar']} plot {one['plot']}")
    return found


def numbers_without_separator(page: Any, where: str) -> list[str]:
    """Tick labels of bqplot axes under ``where`` written as a number of 1,000 or more without a separator."""
    texts = page.locator(f"{where} .axis .tick text").all_text_contents()
    return [t for t in texts if re.fullmatch(r"-?\d{4,}(\.\d+)?", t.strip())]


# -- tests -----------------------------------------------------------------------------------------------


def test_cascading_the_filters_to_a_laser_box_shows_its_kpis_and_worst_runs(
    page: Any, voila: VoilaServer, services: ServiceContainer, box: Box
) -> None:
    data_state = services.data_state
    open_coverage(page, voila)
    expect(page.locator(".rt-view-aggregated")).to_be_visible()
    expect(page.locator(".rt-refresh")).to_be_visible()  # a writable server (the read-only test relies on it)
    chosen = Filters()
    for level in LEVELS:
        # What the dropdown offers under the levels chosen so far, then pick the laser box's value.
        expect_options(page, level, data_state.filter_options(chosen)[level])
        value = getattr(box.filters, level)
        select(page, level).select_option(label=value)
        chosen = chosen.replace(**{level: value})
    page.wait_for_selector(".rt-view-single", state="visible")
    expect(page.locator(".rt-view-aggregated")).to_have_count(0)
    for level in LEVELS:
        expect(select(page, level)).to_have_value(getattr(box.filters, level))

    assert_kpis(page, single_kpis(data_state.coverage_statistics(box.filters)))
    expect(page.locator(".rt-timeline")).to_be_visible()
    assert_under_labelled_table(page, box.stats)
    # "Link to this view" carries the whole selection.
    href = page.locator(".rt-view-link a").get_attribute("href")
    assert parse_qs(urlsplit(href).query) == {level: [getattr(box.filters, level)] for level in LEVELS}
    assert_no_traceback(page)
    screenshot(page, "coverage-single")

    # A click on a run's coverage point opens that run on the per-run page.
    page.locator(".rt-timeline .bqplot.figure").nth(2).locator(".dot").first.click()
    page.wait_for_url(f"**/{PER_RUN}?*", timeout=WAIT_S * 1000)
    page.wait_for_selector(".rt-page-per-run .rt-view-run", state="visible", timeout=WAIT_S * 1000)
    for level in LEVELS:
        expect(select(page, level)).to_have_value(getattr(box.filters, level))
    assert_no_traceback(page)


def test_laser_box_all_shows_the_aggregated_view_of_the_tw(
    page: Any, voila: VoilaServer, services: ServiceContainer, box: Box
) -> None:
    data_state = services.data_state
    open_coverage(page, voila, box.query)
    page.wait_for_selector(".rt-view-single", state="visible")
    select(page, "lbid").select_option(label="All")
    page.wait_for_selector(".rt-view-aggregated", state="visible")
    expect(page.locator(".rt-heatmap")).to_be_visible()
    expect(page.locator(".rt-heatmap table.rt-cal")).to_be_visible()
    expect(page.locator(".rt-view-single")).to_have_count(0)

    boxes: list[LaserBoxStats] = data_state.laser_box_stats(box.tw)
    tw_stats = data_state.coverage_statistics(box.tw)
    assert tw_stats.total_bags == sum(b.total_bags for b in boxes)
    assert_kpis(page, {
        "Laser boxes": format_count(len(boxes)),
        "Bags": format_count(tw_stats.total_bags),
        "Labelled samples": format_count(tw_stats.total_labels),
        "Under-labelled runs": format_count(len(tw_stats.under_labelled)),
    })
    # One row per laser box of the TW (named by its id below a TW selection), each with its totals.
    rows = page.locator(".rt-lb-table table tbody tr")
    expect(rows.locator("td:first-child")).to_have_text([b.lbid for b in boxes])
    expect(rows.locator("td:nth-child(2)")).to_have_text([format_count(b.runs) for b in boxes])
    expect(rows.locator("td:nth-child(3)")).to_have_text([format_count(b.total_bags) for b in boxes])
    expect(rows.locator("td:nth-child(5)")).to_have_text([format_pct(b.coverage_pct) for b in boxes])
    links = [rows.nth(i).locator("a").get_attribute("href") for i in range(len(boxes))]
    assert [parse_qs(urlsplit(h).query).get("lbid") for h in links] == [[b.lbid] for b in boxes]
    screenshot(page, "coverage-aggregated")


def test_changing_expected_samples_recomputes_the_coverage(
    page: Any, voila: VoilaServer, services: ServiceContainer, box: Box
) -> None:
    data_state = services.data_state
    default = services.coverage_settings
    before = data_state.coverage_statistics(box.filters, default)
    # A value of E for which the service gives another coverage than the default (so the KPI must move).
    expected_samples, after = next(
        (e, stats)
        for e in (10.0, 25.0, 40.0, 5.0)
        if e != default.expected_samples_per_bag
        and format_pct((stats := data_state.coverage_statistics(
            box.filters, CoverageSettings(e, default.under_labelled_pct))).overall_coverage_pct)
        != format_pct(before.overall_coverage_pct)
    )
    open_coverage(page, voila, box.query)
    page.wait_for_selector(".rt-view-single", state="visible")
    assert_kpis(page, {"Overall coverage": format_pct(before.overall_coverage_pct)})

    field = page.locator(".rt-expected-samples input")
    field.fill(f"{expected_samples:g}")
    field.press("Enter")
    # Wait for the page to react (the value must move, see above), then compare with the service.
    coverage_card = page.locator(".rt-kpi").filter(has=page.locator(".rt-kpi-label", has_text="Overall coverage"))
    expect(coverage_card.locator(".rt-kpi-value")).not_to_have_text(
        format_pct(before.overall_coverage_pct), timeout=WAIT_S * 1000
    )
    expect(coverage_card.locator(".rt-kpi-caption")).to_have_text(
        f"of {format_count(after.expected_samples)} expected samples"
    )
    assert_kpis(page, {
        "Overall coverage": format_pct(after.overall_coverage_pct),
        "Under-labelled runs": format_count(len(after.under_labelled)),
        "Bags": format_count(after.total_bags),
    })
    assert_under_labelled_table(page, after)
    # The changed E travels in "Link to this view".
    expect(page.locator(".rt-view-link a")).to_have_attribute(
        "href", re.compile(rf"[?&]expected_samples={expected_samples:g}(&|$)"), timeout=WAIT_S * 1000
    )
    screenshot(page, "coverage-expected-samples")


def test_bar_values_stay_readable_and_axes_group_thousands(page: Any, voila: VoilaServer, box: Box) -> None:
    """Bar values sat inside the bars' tops: a short bar's crossed the axis, dark text hid on dark red bars."""
    open_coverage(page, voila, selection_query(box.tw))
    page.wait_for_selector(".rt-view-aggregated", state="visible")
    expect(page.locator(".rt-lb-bars .bar_label").first).to_be_attached(timeout=WAIT_S * 1000)
    page.wait_for_timeout(1000)  # bqplot lays the labels out after the marks arrive
    assert page.evaluate(_BAR_LABELS), "the bars write their values"
    assert bar_labels_in_the_way(page) == []
    assert numbers_without_separator(page, ".rt-view-aggregated") == []
    screenshot(page, "coverage-tw-bars")


@pytest.mark.parametrize("typed", ["1e", "--5", ""])
def test_a_number_field_says_what_was_typed_and_what_is_used(
    page: Any, voila: VoilaServer, services: ServiceContainer, box: Box, typed: str
) -> None:
    """A number field's browser side put the last number back without a word to the kernel (``1e``, ``--5``, an
    empty field): the value snapped back silently."""
    used = f"{services.coverage_settings.expected_samples_per_bag:g}"
    open_coverage(page, voila, box.query)
    page.wait_for_selector(".rt-view-single", state="visible")
    field = page.locator(".rt-expected-samples input")
    field.fill("")
    field.press_sequentially(typed)  # keys, as a user types them (fill refuses "1e" in a number input)
    field.press("Enter")
    said = f"'{typed}' is not a number" if typed else "The field is empty"
    expect(page.locator(".rt-settings-note")).to_have_text(
        f"{said}, so the expected samples per bag stays {used}.", timeout=WAIT_S * 1000)
    expect(field).to_have_value(used)
    screenshot(page, f"coverage-number-field-{'empty' if not typed else typed.replace('-', 'minus')}")


def test_a_link_reproduces_the_view_and_its_run_link_opens_the_per_run_page(
    page: Any, voila: VoilaServer, services: ServiceContainer, box: Box
) -> None:
    data_state = services.data_state
    open_coverage(page, voila, box.query)
    page.wait_for_selector(".rt-view-single", state="visible")
    for level in LEVELS:
        expect(select(page, level)).to_have_value(getattr(box.filters, level))
    assert_kpis(page, single_kpis(data_state.coverage_statistics(box.filters)))

    worst = box.stats.under_labelled[0]
    link = assert_under_labelled_table(page, box.stats)
    href = link.get_attribute("href")
    target = urlsplit(href)
    assert target.path.endswith(PER_RUN)
    assert parse_qs(target.query) == {**{level: [getattr(box.filters, level)] for level in LEVELS},
                                      "timestamp": [worst.coordinate.timestamp]}

    link.click()
    page.wait_for_url(f"**/{PER_RUN}?*")
    page.wait_for_selector(".rt-page-per-run .rt-view-run", state="visible")
    expect(page.locator(".rt-run-picker select option:checked")).to_have_text(format_time(worst.start_time))
    for level in LEVELS:
        expect(select(page, level)).to_have_value(getattr(box.filters, level))
    state = data_state.get_complete_run_state(worst.coordinate)
    expect(page.locator(".rt-card-cloud")).to_contain_text(
        f"Raw: {format_count(state.cloud_raw.bag_count)} bags", timeout=WAIT_S * 1000
    )
    assert_no_traceback(page)
    screenshot(page, "per-run-from-link")


@pytest.mark.parametrize(
    ("query", "says", "shown", "name"),
    [
        # A level value that could walk the bucket layout: refused, and the page falls back to All.
        ("cid=../x", "The client in the link could not be used (cid '../x' contains a path separator), so all data "
                     "is shown instead.", Filters(), "coverage-link-invalid"),
        # A percent-escape that is not UTF-8 text: refused, not read as "�".
        ("lbid=%ff", "The laser box in the link could not be used (lbid '%FF' has a percent-escape that is not UTF-8 "
                     "text), so all data is shown instead.", Filters(), "coverage-link-undecodable"),
        # A well-formed region nobody recorded in: named, and its client shown.
        ("cid=client_001&regionid=nope", "The region 'nope' in the link matches nothing in the inventory under "
                                         "client_001, so client_001 → All is shown instead.", Filters(cid="client_001"),
         "coverage-link-unknown-region"),
    ],
)
def test_a_bad_link_says_why_in_the_top_banner(
    page: Any, voila: VoilaServer, query: str, says: str, shown: Filters, name: str
) -> None:
    page.set_viewport_size({"width": 1440, "height": 900})
    open_coverage(page, voila, query)
    banner = page.locator(".rt-message-error .widget-html-content")
    expect(banner).to_have_text(f"Error: {says}", timeout=WAIT_S * 1000)
    box = banner.bounding_box()
    assert box is not None and box["y"] + box["height"] <= 900, f"below the first screen: {box}"
    expect(page.locator(".rt-view-aggregated")).to_be_visible(timeout=WAIT_S * 1000)
    for level in LEVELS:
        expect(select(page, level)).to_have_value(getattr(shown, level) or "All")
    assert "\ufffd" not in page.locator(".rt-page").inner_text()
    assert_no_traceback(page)
    screenshot(page, name)


def test_every_banner_reads_from_the_left(page: Any, voila: VoilaServer) -> None:
    """A short banner was centred on the page, a long one started at its left edge."""
    page.set_viewport_size({"width": 1440, "height": 900})
    open_coverage(page, voila, "cid=../x&expected_samples=0")
    expect(page.locator(".rt-messages .rt-message")).to_have_count(2, timeout=WAIT_S * 1000)
    # Where each banner's text and its dismiss button sit, from the banner's left and right edges.
    insets = page.eval_on_selector_all(".rt-messages .rt-message", """banners => banners.map(banner => {
        const edge = banner.getBoundingClientRect();
        const text = banner.querySelector('.widget-html-content b').getBoundingClientRect();
        const dismiss = banner.querySelector('.rt-message-dismiss').getBoundingClientRect();
        return [Math.round(text.left - edge.left), Math.round(edge.right - dismiss.right)];
    })""")
    assert all(left <= 16 and right <= 16 for left, right in insets), insets
    assert len(set(map(tuple, insets))) == 1, insets
    screenshot(page, "coverage-banners")


def test_the_settings_note_reads_under_the_fields(page: Any, voila: VoilaServer, box: Box) -> None:
    """The note on a refused value sat right of the threshold field, in what the row left it."""
    open_coverage(page, voila, box.query)
    page.wait_for_selector(".rt-view-single", state="visible")
    field = page.locator(".rt-under-labelled-pct input")
    field.fill("eighty-five percent")
    field.press("Enter")
    note = page.locator(".rt-settings-note .widget-html-content")
    expect(note).to_contain_text("is not a number", timeout=WAIT_S * 1000)
    for width in (1440, 1000, 760):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(200)
        fields = [page.locator(f".{css}").bounding_box() for css in ("rt-expected-samples", "rt-under-labelled-pct")]
        text = note.bounding_box()
        assert text is not None and all(fields), fields
        assert text["y"] >= max(f["y"] + f["height"] for f in fields) - 0.5, (width, text, fields)
        assert abs(text["x"] - fields[0]["x"]) <= 4, (width, text, fields)
        assert text["height"] <= 30, f"the note wraps at {width} px: {text}"  # one line (28 px)
        screenshot(page, f"coverage-settings-note-{width}")


@pytest.mark.parametrize("view", ["single", "tw", "all"])
def test_axis_titles_keep_clear_of_their_tick_labels(page: Any, voila: VoilaServer, box: Box, view: str) -> None:
    """Axis titles touched their tick labels ("bags" on "1,500", "run start (UTC)" under the dates)."""
    page.set_viewport_size({"width": 1440, "height": 900})
    query = {"single": box.query, "tw": selection_query(box.tw), "all": ""}[view]
    open_coverage(page, voila, query)
    where = ".rt-view-single" if view == "single" else ".rt-view-aggregated"
    page.wait_for_selector(where, state="visible")
    expect(page.locator(f"{where} .axis .tick text").first).to_be_attached(timeout=WAIT_S * 1000)
    page.wait_for_timeout(1000)  # bqplot lays the axes out after the marks arrive
    assert page.locator(f"{where} text.axislabel").count() >= 6
    crowded = crowded_axis_titles(page, f"{where} .axis")
    assert not crowded, "\n".join(crowded)
    screenshot(page, f"coverage-axis-titles-{view}")


_WRAPPED_HEADER = """() => {
    const found = [];
    const header = document.querySelector('.rt-header');
    const walker = document.createTreeWalker(header, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        if (!node.textContent.trim()) continue;
        const range = document.createRange();
        range.selectNodeContents(node);
        const tops = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
        if (tops.size > 1) found.push(node.textContent.trim());
    }
    const nav = [...header.querySelectorAll('.rt-nav a, .rt-nav .rt-nav-current')];
    if (new Set(nav.map(e => Math.round(e.getBoundingClientRect().top))).size > 1) found.push('the page links');
    const status = [...header.querySelectorAll('.rt-caption, .rt-cache-age, .rt-refresh')];
    const middles = status.map(e => { const r = e.getBoundingClientRect(); return r.top + r.height / 2; });
    if (Math.max(...middles) - Math.min(...middles) > 4) found.push('the time zone, cache age and Refresh');
    return found;
}"""


@pytest.mark.parametrize("width", [760, 1280])
def test_at_a_narrow_width_the_header_wraps_between_its_parts(page: Any, voila: VoilaServer, width: int) -> None:
    """At 760 px the header broke inside its parts: "Download | manager", "times in | UTC", "cache 2 min | old"."""
    page.set_viewport_size({"width": width, "height": 900})
    open_coverage(page, voila)
    page.wait_for_selector(".rt-header .rt-cache-age", state="visible")
    assert page.evaluate(_WRAPPED_HEADER) == []
    screenshot(page, f"coverage-header-{width}")


@pytest.mark.parametrize("width", [760, 1280])
def test_at_a_narrow_width_the_dates_under_the_charts_stay_apart(page: Any, voila: VoilaServer, width: int) -> None:
    """At 760 px the dates under the coverage charts ran into each other ("2025-05-292025-06-10")."""
    page.set_viewport_size({"width": width, "height": 900})
    open_coverage(page, voila)
    page.wait_for_selector(".rt-view-aggregated", state="visible")
    expect(page.locator(".rt-view-aggregated .axis .tick text").first).to_be_attached(timeout=WAIT_S * 1000)
    page.wait_for_timeout(1500)  # bqplot lays the axes out after the marks arrive
    assert overlapping_texts(page, ".rt-page .bqplot .axis") == []
    screenshot(page, f"coverage-all-{width}")


_CUT_TITLES_AND_NARROW_PLOTS = """([figures, narrowest]) => [...document.querySelectorAll(figures)].flatMap(figure => {
    const svg = figure.querySelector('svg').getBoundingClientRect();
    const title = figure.querySelector('text.mainheading');
    const plot = figure.querySelector('.plotarea_background, .plotarea_events').getBoundingClientRect();
    const found = [];
    if (title && title.textContent) {
        const t = title.getBoundingClientRect();
        if (t.left < svg.left - 0.5 || t.right > svg.right + 0.5) found.push(`${title.textContent}: title cut`);
    }
    if (plot.width < narrowest) found.push(`${title?.textContent}: plot ${plot.width.toFixed(0)} px wide`);
    return found;
})"""


@pytest.mark.parametrize("width", [760, 1440])
def test_at_a_narrow_width_the_laser_box_bars_keep_their_titles_and_values(page: Any, voila: VoilaServer,
                                                                           width: int) -> None:
    """At 760 px the three laser box charts shared the row in thirds, the first also holding the names: its plot was
    ~35 px wide, its values cut ("2" for 217), and the titles were cut ("Raw bags per laser b")."""
    page.set_viewport_size({"width": width, "height": 900})
    open_coverage(page, voila)
    page.wait_for_selector(".rt-view-aggregated", state="visible")
    expect(page.locator(".rt-lb-bars .bar_label").first).to_be_attached(timeout=WAIT_S * 1000)
    page.wait_for_timeout(1500)  # bqplot lays the labels out after the marks arrive
    assert page.evaluate(_CUT_TITLES_AND_NARROW_PLOTS, [".rt-lb-bars .bqplot.figure", 150]) == []
    assert bar_labels_in_the_way(page) == []
    assert overlapping_texts(page, ".rt-lb-bars svg .axis") == []
    screenshot(page, f"coverage-laser-box-bars-{width}")


LINK_RGB = "rgb({}, {}, {})".format(*(int(LINK_COLOUR[i:i + 2], 16) for i in (1, 3, 5)))


def test_every_link_is_drawn_in_the_link_colour(page: Any, voila: VoilaServer, box: Box) -> None:
    """The linked-run note's link was black: its class had no colour rule."""
    run = box.stats.under_labelled[0].coordinate
    page.set_viewport_size({"width": 1440, "height": 900})
    open_coverage(page, voila, selection_query(run.to_filters()))
    expect(page.locator(".rt-linked-run a")).to_be_visible(timeout=WAIT_S * 1000)
    page.locator(".rt-run-search input").fill(run.to_path_str())
    expect(page.locator(".rt-run-search-status a")).to_be_visible(timeout=WAIT_S * 1000)
    expect(page.locator(".rt-runs a").first).to_be_visible(timeout=WAIT_S * 1000)
    links = visible_links(page)
    areas = {area for link in links for area in link["areas"]}
    assert {"rt-nav", "rt-view-link", "rt-linked-run", "rt-run-search-status", "rt-table", "rt-csv"} <= areas, links
    assert [link for link in links if link["colour"] != LINK_RGB] == []
    screenshot(page, "coverage-links")


@pytest.fixture
def read_only_voila(served_config: Path) -> Iterator[VoilaServer]:
    server = VoilaServer(served_config, read_only=True)
    try:
        yield server
    finally:
        server.stop()


def test_read_only_server_has_no_refresh_button(
    page: Any, read_only_voila: VoilaServer, services: ServiceContainer
) -> None:
    fleet = services.data_state.coverage_statistics(Filters())
    open_coverage(page, read_only_voila)
    # The page is fully there (header, cache age, the fleet's data) ...
    expect(page.locator(".rt-cache-age")).to_contain_text("old", timeout=WAIT_S * 1000)
    assert_kpis(page, {"Bags": format_count(fleet.total_bags)})
    # ... but the write control is absent, not disabled (the writable server shows it: see the first test).
    expect(page.locator(".rt-refresh")).to_have_count(0)
    expect(page.locator(".rt-header button")).to_have_count(0)
    assert_no_traceback(page)
    screenshot(page, "coverage-read-only")


# -- fleet scale: the medium demo fleet, "All" at every level ---------------------------------------------


def tmpfs_folder() -> str | None:
    """``/dev/shm`` when it has room for an emulator's objects, else None (the system temp folder)."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and shutil.disk_usage(shm).free >= 2**30 else None


@pytest.fixture(scope="module")
def medium_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The medium demo fleet (51 laser boxes, laser box ids repeated across fields, ~37,000 objects).

    Written as files and preloaded by an emulator of its own (fake-gcs-server's ``-data``) rather than
    uploaded: the uploads alone took 2-3 minutes (2 cores). The filesystem backend, because the memory
    backend's load time grows with the square of a bucket's objects (~4 minutes for this fleet); its root
    on tmpfs when there is room, because the backend fsyncs every object it writes (minutes on a busy disk).
    """
    from runtool.demo.fleet import plan_fleet, write_fleet_tree

    root = tmp_path_factory.mktemp("coverage-medium")
    buckets = {"raw": "coverage-medium-raw", "ml": "coverage-medium-ml"}
    write_fleet_tree(make_config(root, **buckets), plan_fleet("medium", 7), root / "buckets")
    with tempfile.TemporaryDirectory(prefix="coverage-medium-gcs-", dir=tmpfs_folder()) as gcs, Emulator(
        data_dir=Path(gcs), preload=root / "buckets"
    ).start(timeout=MEDIUM_TIMEOUT_S / 2) as emulator:
        path = write_toml(make_config(root, emulator.url, **buckets), root / "runtool.toml")
        # Listing 37,000 objects from the filesystem backend on a loaded machine takes longer than 3 s a request.
        path.write_text(path.read_text(encoding="utf-8").replace("request_retry_s = 3\n", "request_retry_s = 120\n"),
                        encoding="utf-8")
        ServiceContainer.from_environment(path).inventory.refresh()
        yield path


@pytest.fixture(scope="module")
def medium_services(medium_config: Path) -> ServiceContainer:
    return ServiceContainer.from_environment(medium_config)


@pytest.fixture(scope="module")
def medium_voila(medium_config: Path) -> Iterator[VoilaServer]:
    server = VoilaServer(medium_config)
    yield server
    server.stop()


MEDIUM_TIMEOUT_S = 1800
"""The first medium test also sets up the fleet (about 1 minute on 2 cores, 3 on a heavily loaded machine)."""



def csv_of(page: Any, link: Any) -> list[list[str]]:
    """The rows of the CSV file the browser downloads from ``link``."""
    with page.expect_download() as download:
        link.click()
    return list(csv.reader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))


@pytest.mark.timeout(MEDIUM_TIMEOUT_S)
def test_at_fleet_scale_every_label_reads_and_every_table_downloads(
    page: Any, medium_voila: VoilaServer, medium_services: ServiceContainer
) -> None:
    boxes = medium_services.data_state.laser_box_stats(Filters())
    page.set_viewport_size({"width": 1440, "height": 900})
    open_coverage(page, medium_voila)
    page.wait_for_selector(".rt-view-aggregated", state="visible")
    expect(page.locator(".rt-lb-bars .axis .tick text").first).to_be_attached(timeout=WAIT_S * 2000)
    assert_kpis(page, {"Laser boxes": format_count(len(boxes))})
    # Every laser box has a bar label of its own, and no two tick labels of any axis overlap.
    ticks = page.locator(".rt-lb-bars .bqplot").first.locator(".axis .tick text")
    expect(ticks.filter(has_text=" · ")).to_have_count(len(boxes), timeout=WAIT_S * 1000)
    page.wait_for_timeout(1000)  # bqplot lays the labels out after the marks arrive
    assert overlapping_texts(page, ".rt-view-aggregated svg .axis") == []
    assert crowded_axis_titles(page, ".rt-view-aggregated .axis") == []
    assert bar_labels_in_the_way(page) == []
    assert numbers_without_separator(page, ".rt-view-aggregated") == []
    # Names use the same levels for every box (field · laser box: ids repeat across fields), numbers the rest.
    shown = [t for t in ticks.all_text_contents() if not t.replace(",", "").isdigit()]  # SVG: no innerText
    assert len(set(shown)) == len(boxes) and all(" · " in name for name in shown), shown

    # The laser box table: full coordinate on hover, and its CSV holds the same laser boxes and numbers.
    rows = page.locator(".rt-lb-table table tbody tr")
    expect(rows).to_have_count(len(boxes))
    titles = [rows.nth(i).locator("a").get_attribute("title") for i in range(len(boxes))]
    assert titles == [b.lb_key for b in boxes]
    table_csv = csv_of(page, page.locator(".rt-view-aggregated .rt-csv a").first)
    assert [row[:3] for row in table_csv[1:]] == [[b.lb_key, str(b.runs), str(b.total_bags)] for b in boxes]
    assert [row[1] for row in table_csv[1:]] == [t.replace(",", "") for t in
                                                 rows.locator("td:nth-child(2)").all_inner_texts()]

    # The calendar: a legend, one row per laser box, and a CSV of its cells.
    expect(page.locator(".rt-heatmap .rt-legend")).to_be_visible()
    expect(page.locator(".rt-heatmap table.rt-cal tbody tr")).to_have_count(len(boxes))
    calendar_csv = csv_of(page, page.locator(".rt-heatmap .rt-csv a"))
    cells = medium_services.data_state.aggregated_coverage(Filters()).cells
    assert len(calendar_csv) - 1 == len(cells) == page.locator(".rt-heatmap table.rt-cal td a").count()
    assert_no_traceback(page)
    screenshot(page, "coverage-medium-all")


@pytest.mark.timeout(MEDIUM_TIMEOUT_S)
def test_a_calendar_cell_opens_its_run_on_the_per_run_page(
    page: Any, medium_voila: VoilaServer, medium_services: ServiceContainer
) -> None:
    cell = next(c for c in medium_services.data_state.aggregated_coverage(Filters()).cells if c.only_run is not None)
    run = cell.only_run
    assert run is not None
    open_coverage(page, medium_voila)
    link = page.locator(f'.rt-heatmap td a[href="{PER_RUN}?{selection_query(run.to_filters())}"]')
    expect(link).to_have_count(1, timeout=WAIT_S * 2000)
    assert run.to_path_str().rsplit("/", 1)[0] in (link.get_attribute("title") or "")
    link.click()
    page.wait_for_url(f"**/{PER_RUN}?*")
    page.wait_for_selector(".rt-page-per-run .rt-view-run", state="visible")
    expect(page.locator(".rt-run-picker select option:checked")).to_have_text(format_time(run.start_time))
    for level in LEVELS:
        expect(select(page, level)).to_have_value(getattr(run, level))
    assert_no_traceback(page)

    # Part of another run's coordinate (field to minute, the time as the tables write it) finds that run among
    # the fleet's and opens it here.
    target = next(c for c in medium_services.data_state.generate_coordinates_from_filters(Filters())
                  if c.fieldid != run.fieldid)
    page.locator(".rt-run-search input").fill(
        f"{target.fieldid}/{target.twid}/{target.lbid}/{format_time(target.start_time)}")
    hit = page.locator(".rt-run-search-hit").first
    expect(hit).to_have_text(f"Run {'/'.join(target.to_path_tuple()[:-1])} · {format_time(target.start_time)}",
                             timeout=WAIT_S * 1000)
    hit.click()
    expect(page.locator(".rt-run-picker select option:checked")).to_have_text(
        format_time(target.start_time), timeout=WAIT_S * 1000)
    for level in LEVELS:
        expect(select(page, level)).to_have_value(getattr(target, level))
    assert_no_traceback(page)
    screenshot(page, "run-search-medium-per-run")


@pytest.mark.timeout(MEDIUM_TIMEOUT_S)
def test_a_busy_laser_box_lists_every_run_a_page_at_a_time(
    page: Any, medium_voila: VoilaServer, medium_services: ServiceContainer
) -> None:
    data_state = medium_services.data_state
    stats = {b.lb_key: b for b in data_state.laser_box_stats(Filters())}
    busiest = max(stats.values(), key=lambda b: b.runs)
    filters = Filters(**dict(zip(LEVELS, busiest.lb_key.split("/"), strict=True)))
    points = data_state.temporal_coverage(filters).points
    best = max((p for p in points if p.coverage_pct is not None), key=lambda p: (p.coverage_pct, p.start_time))
    open_coverage(page, medium_voila, selection_query(filters))
    page.wait_for_selector(".rt-view-single", state="visible")
    rows = page.locator(".rt-runs table tbody tr")
    expect(rows).to_have_count(min(busiest.runs, PAGE_ROWS), timeout=WAIT_S * 2000)
    expect(page.locator(".rt-runs").locator("xpath=..").locator(".rt-section-title").first).to_have_text(
        f"Runs ({format_count(busiest.runs)}), worst coverage first")
    # The best-covered run is on the last page (worst first) and opens like any other.
    pager = page.locator(".rt-pager")
    if busiest.runs > PAGE_ROWS:
        expect(pager).to_contain_text(f"of {format_count(busiest.runs)}")
        for _ in range((busiest.runs - 1) // PAGE_ROWS):
            pager.locator("button", has_text="Better").click()
        expect(pager).to_contain_text(f"{format_count(busiest.runs)} of {format_count(busiest.runs)}")
    link = page.locator(f'.rt-runs a[title="{best.coordinate.to_path_str()}"]')
    expect(link).to_have_count(1, timeout=WAIT_S * 1000)
    assert parse_qs(urlsplit(link.get_attribute("href")).query)["timestamp"] == [best.coordinate.timestamp]
    runs_csv = csv_of(page, page.locator(".rt-view-single .rt-csv a"))
    assert len(runs_csv) - 1 == busiest.runs
    assert {row[0] for row in runs_csv[1:]} == {p.coordinate.to_path_str() for p in points}
    assert_no_traceback(page)
    screenshot(page, "coverage-medium-single")
