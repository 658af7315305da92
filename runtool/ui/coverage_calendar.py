"""The fleet calendar: laser boxes × calendar days as an HTML table coloured by coverage, with its legend.

An HTML table rather than a bqplot heatmap because every cell has to be a link (a chart's cells cannot
open a page) and a hover text with the full coordinate; it also draws faster than an SVG of thousands of
rectangles and needs no JavaScript, so browser tests and static exports see it as it is.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import date

import ipywidgets as widgets

from runtool.models import LEVELS, AggregatedTemporalData, Filters, LaserBoxDay
from runtool.ui.formatting import format_count, format_pct
from runtool.ui.query import COVERAGE, page_url, run_url
from runtool.ui.tables import csv_link, csv_text
from runtool.ui.theme import COVERAGE_COLOUR_NAMES, COVERAGE_NONE, EMPTY_CELL_COLOUR, coverage_colour

__all__ = ["FleetCalendar", "coverage_legend", "laser_box_filters"]


def laser_box_filters(lb_key: str) -> Filters:
    """The selection of one laser box (``cid/regionid/fieldid/twid/lbid``)."""
    return Filters(**dict(zip(LEVELS, lb_key.split("/"), strict=True)))


def coverage_legend(threshold_pct: float) -> str:
    """The coverage scale as a gradient bar with its three stops, its two ranges in words, the grey and blank cells.

    The bar's colours and the words come from :func:`~runtool.ui.theme.coverage_colour` at the stops, the
    colours the cells get: under-labelled cells run from red (0 %) to amber (at the threshold), the others from
    amber to green (100 %).
    """
    stops = [0.0, float(threshold_pct), 100.0]
    colours = [coverage_colour(stop, threshold_pct) for stop in stops]
    gradient = ", ".join(f"{colour} {stop:g}%" for stop, colour in zip(stops, colours, strict=True))
    # The threshold's own tick only where it leaves room for the end ticks (the words name it anyway).
    ticks = "".join(
        f'<span class="rt-legend-tick" style="left:{stop:g}%">{stop:g} %</span>'
        for index, stop in enumerate(stops) if index != 1 or 12 <= stop <= 88
    )
    ranges = []
    if threshold_pct > 0:
        ranges.append(f"{_shades(colours[0], colours[1])}: under-labelled, below {threshold_pct:g} %")
    above = f"{threshold_pct:g}–100 %" if threshold_pct < 100 else "100 %"
    ranges.append(f"{_shades(colours[1], colours[2])}: {above}")
    return (
        '<div class="rt-legend">'
        '<span class="rt-legend-title">Coverage</span>'
        f'<span class="rt-legend-scale"><span class="rt-legend-bar" style="background:linear-gradient(to right, '
        f'{gradient})"></span>{ticks}</span>'
        f'<span class="rt-legend-note">{html.escape(" · ".join(ranges))}</span>'
        f'<span class="rt-swatch" style="background:{COVERAGE_NONE}"></span>ML only (no raw bags)'
        f'<span class="rt-swatch rt-swatch-empty" style="background:{EMPTY_CELL_COLOUR}"></span>no recording'
        "</div>"
    )


def _shades(start: str, end: str) -> str:
    """``red → amber``: the names of a range's end colours (one name when they are the same)."""
    first, last = COVERAGE_COLOUR_NAMES[start], COVERAGE_COLOUR_NAMES[end]
    return first if first == last else f"{first} → {last}"


def _months(days: Sequence[date]) -> list[tuple[str, int]]:
    """(``YYYY-MM``, number of consecutive days) for the month header row."""
    spans: list[tuple[str, int]] = []
    for day in days:
        month = day.strftime("%Y-%m")
        if spans and spans[-1][0] == month:
            spans[-1] = (month, spans[-1][1] + 1)
        else:
            spans.append((month, 1))
    return spans


class FleetCalendar:
    """Laser boxes × every calendar day from the first to the last, coloured by coverage.

    A cell opens the per-run page on a day with one run, else the coverage page on that laser box; its hover
    text names the laser box in full with the day's runs, bags, labels and coverage. Days without recordings
    stay blank, so a week without recordings shows as a blank band across the fleet.
    """

    def __init__(self) -> None:
        self.legend = widgets.HTML().add_class("rt-heatmap-legend")
        self.table = widgets.HTML().add_class("rt-heatmap-table")
        self.csv = widgets.HTML().add_class("rt-csv")
        self.widget = widgets.VBox([self.legend, self.table, self.csv]).add_class("rt-heatmap")

    def show(self, data: AggregatedTemporalData, names: Mapping[str, str],
             settings_query: Mapping[str, str] | None = None) -> None:
        """``names`` maps each ``lb_key`` to its row label; ``settings_query`` travels in the coverage links."""
        threshold = data.settings.under_labelled_pct
        days = [d.day for d in data.days]
        keys = sorted({cell.lb_key for cell in data.cells})  # the order of the bars and the table above
        self.legend.value = coverage_legend(threshold)
        if not days or not keys:
            self.table.value = '<div class="rt-caption">No laser box recorded in this selection.</div>'
            self.csv.value = ""
            return
        cells = {(cell.lb_key, cell.day): cell for cell in data.cells}
        months = "".join(f'<th class="rt-cal-month" colspan="{span}">{html.escape(month)}</th>'
                         for month, span in _months(days))
        # A day number on Mondays only: every day's would not fit a cell's width.
        day_heads = "".join(
            f'<th class="rt-cal-day" title="{day.isoformat()}">'
            + (f"<span>{day.day}</span>" if day.weekday() == 0 else "") + "</th>"
            for day in days
        )
        rows = []
        for key in keys:
            name = names.get(key, key)
            href = page_url(COVERAGE, laser_box_filters(key), settings_query)
            head = (f'<th class="rt-cal-name"><a href="{html.escape(href, quote=True)}" target="_self" '
                    f'title="{html.escape(key, quote=True)}">{html.escape(name)}</a></th>')
            row = "".join(self._cell(cells.get((key, day)), name, threshold, settings_query) for day in days)
            rows.append(f"<tr>{head}{row}</tr>")
        self.table.value = (
            '<div class="rt-cal-scroll"><table class="rt-cal">'
            f'<thead><tr><th class="rt-cal-corner" rowspan="2">day (UTC) →</th>{months}</tr>'
            f"<tr>{day_heads}</tr></thead>"
            f'<tbody>{"".join(rows)}</tbody></table></div>'
        )
        self.csv.value = csv_link(self.csv_text(data), "coverage_calendar.csv",
                                  "Download the calendar as CSV (one line per laser box and day it recorded)")

    @staticmethod
    def _cell(cell: LaserBoxDay | None, name: str, threshold: float,
              settings_query: Mapping[str, str] | None) -> str:
        if cell is None:
            return "<td></td>"
        colour = coverage_colour(cell.coverage_pct, threshold) if cell.raw_bags else COVERAGE_NONE
        coverage = format_pct(cell.coverage_pct) if cell.raw_bags else "ML only (no raw bags)"
        runs = f"{format_count(cell.runs)} run" + ("" if cell.runs == 1 else "s")
        if cell.only_run is not None:
            href, action = run_url(cell.only_run), "Click to open the run."
        else:
            href, action = page_url(COVERAGE, laser_box_filters(cell.lb_key), settings_query), (
                "Click to open this laser box's runs.")
        title = (f"{name} · {cell.day.isoformat()}\n{cell.lb_key}\n{runs}, {format_count(cell.raw_bags)} bags, "
                 f"{format_count(cell.ml_labels)} labels, coverage {coverage}\n{action}")
        return (f'<td style="background:{colour}"><a href="{html.escape(href, quote=True)}" target="_self" '
                f'title="{html.escape(title, quote=True)}"></a></td>')

    @staticmethod
    def csv_text(data: AggregatedTemporalData) -> str:
        return csv_text(
            ["laser_box", "day", "runs", "raw_bags", "ml_labels", "coverage_pct", "run"],
            ([cell.lb_key, cell.day.isoformat(), cell.runs, cell.raw_bags, cell.ml_labels,
              None if cell.coverage_pct is None else round(cell.coverage_pct, 3),
              None if cell.only_run is None else cell.only_run.to_path_str()]
             for cell in sorted(data.cells, key=lambda c: (c.lb_key, c.day))),
        )

