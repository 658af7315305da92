"""The static first screen of a page (runtool.ui.snapshot): what it copies, what it leaves to the live page."""

from __future__ import annotations

import html
import re

import bqplot
import ipywidgets as widgets

from runtool.serve import TEMPLATES_DIR
from runtool.services import ServiceContainer
from runtool.ui.coverage import CoveragePage
from runtool.ui.snapshot import SNAPSHOT_CLASS, SNAPSHOT_MARK, snapshot_html
from runtool.ui.theme import STYLESHEET


def test_the_copy_keeps_text_classes_and_layout_and_renames_every_rt_class() -> None:
    tree = widgets.VBox([
        widgets.HTML(STYLESHEET),
        widgets.HTML('<span class="rt-kpi-value sort-key">1,287</span>').add_class("rt-kpi"),
        widgets.HBox([widgets.Label("a < b")], layout=widgets.Layout(flex_flow="row wrap", width="50%")),
    ]).add_class("rt-page")
    copy = snapshot_html(tree)
    assert "1,287" in copy and "a &lt; b" in copy
    assert 'style="flex-flow: row wrap; width: 50%"' in copy
    classes = " ".join(re.findall(r'class="([^"]*)"', copy)).split()
    assert "rts-page" in classes and "rts-kpi" in classes and "rts-kpi-value" in classes
    assert "sort-key" in classes  # only whole rt- prefixes are renamed
    assert not [c for c in classes if c.startswith("rt-")]
    assert ".rts-kpi-value {" in copy and ".rt-kpi-value {" not in copy  # the stylesheet follows
    assert copy.count(f'class="{SNAPSHOT_CLASS}"') == 1


def test_the_copy_begins_with_the_mark_runtools_template_looks_for() -> None:
    """The template sends an output that begins with the mark as HTML the browser draws at once."""
    copy = snapshot_html(widgets.VBox([widgets.HTML("1,287")]).add_class("rt-page"))
    assert copy.startswith(SNAPSHOT_MARK)
    template = (TEMPLATES_DIR / "voila" / "templates" / "runtool" / "index.html.j2").read_text(encoding="utf-8")
    assert f"startswith('{SNAPSHOT_MARK}')" in template


def test_controls_are_drawn_disabled_with_their_current_value() -> None:
    tree = widgets.VBox([
        widgets.Dropdown(options=[("All", ""), ("client_001", "client_001")], value="client_001",
                         description="Client"),
        widgets.ToggleButtons(options=["Raw", "ML"], value="ML"),
        widgets.Button(description="Refresh", button_style="primary"),
        widgets.Text(value='x"y', placeholder="Find a run"),
        widgets.Checkbox(value=True, description="Verify"),
    ])
    copy = snapshot_html(tree)
    assert "<select disabled><option>client_001</option></select>" in copy and ">Client</label>" in copy
    assert 'mod-active" disabled>ML</button>' in copy and 'jupyter-button" disabled>Raw</button>' in copy
    assert "mod-primary" in copy and ">Refresh</button>" in copy
    assert 'value="x&quot;y"' in copy and 'placeholder="Find a run"' in copy
    assert '<input type="checkbox" disabled checked>' in copy
    assert copy.count("disabled") == 6


def test_hidden_parts_charts_and_unselected_tabs_are_left_to_the_live_page() -> None:
    tabs = widgets.Tab([widgets.HTML("first tab"), widgets.HTML("second tab")], selected_index=1)
    tree = widgets.VBox([
        widgets.HTML("a hidden part", layout=widgets.Layout(display="none")),
        bqplot.Figure(marks=[], title="a chart"),
        widgets.Output(),
        tabs,
    ])
    copy = snapshot_html(tree)
    assert "second tab" in copy
    assert "first tab" not in copy and "a hidden part" not in copy and "a chart" not in copy


def test_a_page_copy_holds_its_kpis_and_not_its_charts(services: ServiceContainer) -> None:
    page = CoveragePage(services=services, progressive=True)
    copy = snapshot_html(page.widget)
    values = re.findall(r'rts-kpi-value"><div class="widget-html-content">([^<]*)<', copy)
    assert values and values == [html.escape(value) for value in page.kpi_cards.values.values()]
    assert "Drawing…" in copy  # the live page brings the charts
