"""Small HTML builders for tables, links and status badges.

The pages use plain HTML tables where a reader wants to read, copy or click (links to runs): unlike a
canvas grid they need no JavaScript, render in static exports and are visible to browser tests.
Every function takes plain text and escapes it; only ``Cell.html`` carries ready-made markup.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from runtool.ui.formatting import format_count, format_pct
from runtool.ui.theme import StatusStyle, coverage_colour

__all__ = ["Cell", "Column", "badge", "coverage_cell", "csv_link", "csv_text", "html_table", "link", "text_cell"]


@dataclass(frozen=True)
class Column:
    """A table column; numeric columns are right-aligned."""

    title: str
    numeric: bool = False


@dataclass(frozen=True)
class Cell:
    """Ready-made HTML for one table cell (build it with the helpers below)."""

    html: str


def _title(title: str | None) -> str:
    return f' title="{html.escape(title, quote=True)}"' if title else ""


def text_cell(text: object, title: str | None = None) -> Cell:
    """Plain text; ``title`` is shown on hover (the full coordinate behind a short name)."""
    if title:
        return Cell(f"<span{_title(title)}>{html.escape(str(text))}</span>")
    return Cell(html.escape(str(text)))


def link(href: str, text: str, title: str | None = None) -> Cell:
    return Cell(f'<a href="{html.escape(href, quote=True)}" target="_self"{_title(title)}>{html.escape(text)}</a>')


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


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """CSV with a header line; ``None`` is an empty field."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if value is None else value for value in row] for row in rows)
    return buffer.getvalue()


def csv_link(text_csv: str, filename: str, text: str = "Download CSV", css_class: str = "rt-csv") -> str:
    """A link that downloads ``text_csv`` from a data: URI (no server round trip, works offline and read-only).

    A pandas table goes in as ``frame.to_csv(index=False)``.
    """
    payload = base64.b64encode(text_csv.encode("utf-8")).decode("ascii")
    return (f'<a class="{html.escape(css_class, quote=True)}" download="{html.escape(filename, quote=True)}" '
            f'href="data:text/csv;charset=utf-8;base64,{payload}">{html.escape(text)}</a>')
