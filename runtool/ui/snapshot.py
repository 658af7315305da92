"""A page's first screen as static HTML, shown before its widgets are live.

Voila shows a widget only after the browser has loaded every widget model of the page from the kernel (a
round trip per model and the widget libraries' start-up); a plain HTML output shows as soon as the page itself
does. A served page therefore goes out twice: first as :func:`snapshot_html`, a static copy of its widget tree
(KPI cards, captions, messages, tables, and its controls drawn disabled), then as the live widgets, which take
its place as soon as they are drawn (a style rule hides the copy once the live page exists; the page's
:class:`~runtool.ui.drawn.DrawnSignal` then removes it).

The copy uses the live page's look (the same Jupyter widget classes and runtool's stylesheet) with every
``rt-`` class renamed ``rts-``, so nothing that finds the live page by its classes (a script, a test) finds the
copy too. Widgets without a static form (charts, grids, outputs) are left out: the live page brings them.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import ipywidgets as widgets

__all__ = ["SNAPSHOT_CLASS", "SNAPSHOT_MARK", "snapshot_html"]

SNAPSHOT_CLASS = "rts-snapshot"
SNAPSHOT_MARK = "<!-- runtool: first screen -->"
"""How the copy begins: runtool's Voila template sends an output that begins so as HTML the browser draws as it
reads the page, before Voila's scripts have loaded (they draw every other output)."""
_S = f":where(.{SNAPSHOT_CLASS})"
"""Scopes a rule to the copy without adding to its specificity: runtool's own rules win, as over ipywidgets'."""
_STYLE = (
    f"<style>body:has(.rt-page) .{SNAPSHOT_CLASS} {{ display: none; }}"
    # An HTML output keeps 20 px on its right that a widget output does not: the copy takes the live page's width.
    f".jp-RenderedHTMLCommon:has(> .{SNAPSHOT_CLASS}) {{ padding-right: 0; }}"
    # The look of the Jupyter widget classes the copy uses (ipywidgets' own rules come with its scripts, later).
    f"{_S} .jupyter-widgets {{ margin: 2px; box-sizing: border-box; color: var(--jp-content-font-color1); }}"
    f"{_S} .widget-box {{ display: flex; box-sizing: border-box; margin: 0; overflow: auto; }}"
    f"{_S} .widget-hbox {{ flex-direction: row; }} {_S} .widget-vbox {{ flex-direction: column; }}"
    f"{_S} .widget-inline-hbox {{ display: flex; flex-direction: row; align-items: baseline; box-sizing: border-box; }}"
    f"{_S} .widget-html, {_S} .widget-label, {_S} .jupyter-button {{ font-size: var(--jp-ui-font-size1); }}"
    f"{_S} .widget-html-content, {_S} .widget-label {{ line-height: 28px; }}"
    f"{_S} .widget-html-content {{ align-self: stretch; flex: 1 1 auto; }}"
    f"{_S} .widget-label {{ overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }}"
    f"{_S} .widget-inline-hbox .widget-label {{ text-align: right; margin-right: 8px; width: 80px; flex-shrink: 0; }}"
    f"{_S} .jupyter-button {{ height: 28px; padding: 0 10px; border: none; white-space: nowrap; overflow: hidden; "
    "color: var(--jp-ui-font-color1); background-color: var(--jp-layout-color2); opacity: 0.6; }"
    # The picked toggle button, as ipywidgets draws it (the link's family or filter shows before the widgets).
    f"{_S} .jupyter-button.mod-active {{ background-color: var(--jp-layout-color3, #bdbdbd); "
    "box-shadow: inset 0 1px 3px rgba(0, 0, 0, 0.25); }"
    f"{_S} .widget-dropdown, {_S} .widget-text {{ height: 28px; width: 300px; }}"
    f"{_S} .widget-dropdown > select, {_S} .widget-text > input {{ flex: 1 1 148px; min-width: 0; height: 28px; "
    "box-sizing: border-box; border: 1px solid var(--jp-border-color1); border-radius: 0; padding: 0 8px; "
    "background-color: var(--jp-layout-color1); color: var(--jp-ui-font-color1); "
    "font-size: var(--jp-ui-font-size1); appearance: none; opacity: 0.6; }"
    "</style>"
)
_CLASS_ATTRIBUTE = re.compile(r"""\bclass=(["'])(.*?)\1""", re.DOTALL)
_RT_CLASS = re.compile(r"(?<![\w-])rt-")
_RT_SELECTOR = re.compile(r"\.rt-")


def snapshot_html(widget: widgets.Widget) -> str:
    """Static HTML of ``widget``'s tree as a browser would first draw it, its ``rt-`` classes renamed ``rts-``."""
    body = "".join(_render(widget))
    renamed = _CLASS_ATTRIBUTE.sub(lambda m: f"class={m[1]}{_RT_CLASS.sub('rts-', m[2])}{m[1]}", body)
    return f'{SNAPSHOT_MARK}{_STYLE}<div class="{SNAPSHOT_CLASS}">{_RT_SELECTOR.sub(".rts-", renamed)}</div>'


def _render(widget: widgets.Widget) -> Iterator[str]:
    layout = getattr(widget, "layout", None)
    if layout is not None and (layout.display == "none" or layout.visibility == "hidden"):
        return
    if isinstance(widget, widgets.Tab | widgets.Accordion | widgets.Stack):
        index = widget.selected_index
        if index is not None and 0 <= index < len(widget.children):
            yield from _box(widget, "widget-container", [widget.children[index]])
    elif isinstance(widget, widgets.Box):
        kind = "widget-hbox" if isinstance(widget, widgets.HBox) else "widget-vbox" if isinstance(
            widget, widgets.VBox) else "widget-box"
        yield from _box(widget, f"widget-container widget-box {kind}", widget.children)
    elif isinstance(widget, widgets.HTML | widgets.HTMLMath):
        yield _inline(widget, "widget-html", f'<div class="widget-html-content">{widget.value}</div>')
    elif isinstance(widget, widgets.Label):
        yield f'<div class="{_classes(widget, "widget-label")}"{_style(widget)}>{html.escape(widget.value)}</div>'
    elif isinstance(widget, widgets.ToggleButtons):
        buttons = "".join(
            f'<button class="widget-toggle-button jupyter-button{" mod-active" if label == widget.label else ""}"'
            f" disabled>{html.escape(label)}</button>"
            for label in widget._options_labels
        )
        yield _inline(widget, "widget-toggle-buttons", f'<div class="widget-toggle-buttons">{buttons}</div>')
    elif isinstance(widget, widgets.Button):
        style = f" mod-{widget.button_style}" if widget.button_style else ""
        yield (f'<button class="{_classes(widget, f"jupyter-button widget-button{style}")}"{_style(widget)} disabled>'
               f"{html.escape(widget.description)}</button>")
    elif isinstance(widget, widgets.Dropdown | widgets.Select):
        option = f"<option>{html.escape(str(widget.label or ''))}</option>"
        yield _inline(widget, "widget-dropdown", f"<select disabled>{option}</select>")
    elif isinstance(widget, widgets.Checkbox):
        checked = " checked" if widget.value else ""
        yield _inline(widget, "widget-checkbox", f'<input type="checkbox" disabled{checked}>')
    elif isinstance(widget, widgets.Text | widgets.Textarea | widgets.IntText | widgets.FloatText
                    | widgets.BoundedIntText | widgets.BoundedFloatText | widgets.DatePicker):
        value = "" if widget.value is None else _number(widget.value)
        placeholder = html.escape(str(getattr(widget, "placeholder", "") or ""), quote=True)
        yield _inline(widget, "widget-text",
                      f'<input type="text" disabled value="{html.escape(value, quote=True)}" '
                      f'placeholder="{placeholder}">')
    # Anything else (charts, grids, outputs, signals) has no static form: the live page brings it.


def _number(value: object) -> str:
    """A field's value as the live field shows it: 17.0 as 17."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _box(widget: widgets.Widget, kind: str, children: tuple[widgets.Widget, ...] | list[widgets.Widget]
         ) -> Iterator[str]:
    yield f'<div class="{_classes(widget, kind)}"{_style(widget)}>'
    for child in children:
        yield from _render(child)
    yield "</div>"


def _inline(widget: widgets.Widget, kind: str, content: str) -> str:
    description = getattr(widget, "description", "")
    label = ""
    if description:
        width = getattr(getattr(widget, "style", None), "description_width", "") or ""
        style = f' style="width: {html.escape(width, quote=True)}"' if width else ""
        label = f'<label class="widget-label"{style}>{html.escape(description)}</label>'
    return f'<div class="{_classes(widget, f"widget-inline-hbox {kind}")}"{_style(widget)}>{label}{content}</div>'


def _classes(widget: widgets.Widget, kind: str) -> str:
    return " ".join(["jupyter-widgets", kind, *widget._dom_classes])


def _style(widget: widgets.Widget) -> str:
    """The widget's layout as inline CSS, as ipywidgets applies it (``flex_flow`` → ``flex-flow``)."""
    layout = getattr(widget, "layout", None)
    if layout is None:
        return ""
    rules = [
        f"{name.replace('_', '-')}: {value}"
        for name in layout.keys
        if not name.startswith("_") and isinstance(value := getattr(layout, name), str) and value
    ]
    return f' style="{html.escape("; ".join(rules), quote=True)}"' if rules else ""
