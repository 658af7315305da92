"""Small HTML builders for tables, links and status badges.

The pages use plain HTML tables where a reader wants to read, copy or click (links to runs): unlike a
canvas grid they need no JavaScript, render in static exports and are visible to browser tests.
Every function takes plain text and escapes it; only ``Cell.html`` carries ready-made markup.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from runtool.ui.formatting import format_count, format_pct
from runtool.ui.theme import StatusStyle, coverage_colour

__all__ = ["Cell", "Column", "badge", "coverage_cell", "html_table", "link", "text_cell"]


@dataclass(frozen=True)
class Column:
    """A table column; numeric columns are right-aligned."""

    title: str
    numeric: bool = False


@dataclass(frozen=True)
class Cell:
    """Ready-made HTML for one table cell (build it with the helpers below)."""

    html: str


def text_cell(text: object) -> Cell:
    return Cell(html.escape(str(text)))


def link(href: str, text: str) -> Cell:
    return Cell(f'<a href="{html.escape(href, quote=True)}" target="_self">{html.escape(text)}</a>')


def badge(style: StatusStyle) -> Cell:
    """A coloured label that carries its words, so colour is never the only signal."""
    return Cell(f'<span class="rt-badge" style="background:{style.colour}">{html.escape(style.label)}</span>')


def coverage_cell(pct: float | None, threshold_pct: float) -> Cell:
    """A coverage percentage with a swatch of its colour on the coverage scale."""
    colour = coverage_colour(pct, threshold_pct)
    return Cell(f'<span class="rt-swatch" style="background:{colour}"></span>{html.escape(format_pct(pct))}')


def html_table(
    columns: Sequence[Column],
    rows: Iterable[Sequence[Cell]],
    css_class: str = "",
    limit: int | None = None,
) -> str:
    """A table of ``rows``; beyond ``limit`` rows a line says how many were left out."""
    head = "".join(
        f'<th class="rt-num">{html.escape(c.title)}</th>' if c.numeric else f"<th>{html.escape(c.title)}</th>"
        for c in columns
    )
    body: list[str] = []
    left_out = 0
    for index, row in enumerate(rows):
        if limit is not None and index >= limit:
            left_out += 1
            continue
        cells = "".join(
            f'<td class="rt-num">{cell.html}</td>' if column.numeric else f"<td>{cell.html}</td>"
            for column, cell in zip(columns, row, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    more = f'<div class="rt-more">… and {format_count(left_out)} more</div>' if left_out else ""
    table = f'<table class="rt-table {css_class}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    return table + more
